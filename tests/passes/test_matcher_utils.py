"""SubgraphMatcher and SubgraphMatcherWithNameNodeMap, differentially against torch.fx."""

from __future__ import annotations

import operator
import random
import time
from typing import Any, List

import pytest
import torch
import torch.fx as tfx
from torch.fx.passes.utils.matcher_utils import SubgraphMatcher as TorchMatcher
from torch.fx.passes.utils.matcher_with_name_node_map_utils import (
    SubgraphMatcherWithNameNodeMap as TorchNamedMatcher,
)

import fxkit
from fxkit._symbolic_trace import symbolic_trace
from fxkit.passes.utils.matcher_utils import InternalMatch, SubgraphMatcher
from fxkit.passes.utils.matcher_with_name_node_map_utils import SubgraphMatcherWithNameNodeMap


def _name(v: Any) -> Any:
    return v.name if isinstance(v, (fxkit.Node, tfx.Node)) else repr(v)


def summary(matches) -> List[tuple]:
    return [
        (
            [a.name for a in m.anchors],
            sorted((pn.name, _name(gn)) for pn, gn in m.nodes_map.items()),
            [_name(n) for n in m.placeholder_nodes],
            [_name(n) for n in m.returning_nodes],
        )
        for m in matches
    ]


def both(make):
    return make(fxkit), make(tfx)


def check(make_pattern, make_graph, **flags) -> list:
    """Run both matchers with ``flags``; assert the same matches; return fxkit's."""
    p_ours, p_theirs = both(make_pattern)
    g_ours, g_theirs = both(make_graph)
    ours = SubgraphMatcher(p_ours, **flags).match(g_ours)
    theirs = TorchMatcher(p_theirs, **flags).match(g_theirs)
    assert summary(ours) == summary(theirs)
    return ours


# --- patterns and graphs -----------------------------------------------------------------


def add_relu(fx):
    g = fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")
    s = g.create_node("call_function", operator.add, (a, b), name="s")
    g.output(g.create_node("call_function", torch.relu, (s,), name="r"))
    return g


def relu_chain_host(fx):
    """add/relu pairs in a chain; the middle pair's add leaks (used twice)."""
    g = fx.Graph()
    x, y = g.placeholder("x"), g.placeholder("y")
    cur = x
    for i in range(5):
        s = g.create_node("call_function", operator.add, (cur, y), name=f"s{i}")
        cur = g.create_node("call_function", torch.relu, (s,), name=f"r{i}")
        if i == 2:
            cur = g.create_node("call_function", operator.mul, (cur, s), name="leak")
    g.output(cur)
    return g


def overlapping_host(fx):
    """relu(relu(relu(x))): the pattern relu(relu(a)) overlaps itself."""
    g = fx.Graph()
    cur = g.placeholder("x")
    for i in range(4):
        cur = g.create_node("call_function", torch.relu, (cur,), name=f"r{i}")
    g.output(cur)
    return g


def relu_relu(fx):
    g = fx.Graph()
    a = g.placeholder("a")
    r1 = g.create_node("call_function", torch.relu, (a,), name="p1")
    g.output(g.create_node("call_function", torch.relu, (r1,), name="p2"))
    return g


@pytest.mark.parametrize("remove_overlapping_matches", [True, False])
def test_overlap_handling(remove_overlapping_matches):
    found = check(
        relu_relu, overlapping_host, remove_overlapping_matches=remove_overlapping_matches
    )
    assert len(found) == (2 if remove_overlapping_matches else 3)


def test_escaping_internal_node_is_not_matched():
    found = check(add_relu, relu_chain_host)
    assert [m.returning_nodes[0].name for m in found] == ["r0", "r1", "r3", "r4"]


def test_internal_match_fields():
    [m, *_] = check(add_relu, relu_chain_host)
    assert isinstance(m, InternalMatch)
    assert [a.name for a in m.anchors] == ["r"]
    assert [n.name for n in m.placeholder_nodes] == ["x", "y"]
    assert m.name_node_map == {}
    copied = m.__copy__()
    assert copied.nodes_map == m.nodes_map and copied.nodes_map is not m.nodes_map


def output_pattern(fx):
    g = fx.Graph()
    a = g.placeholder("a")
    g.output(g.create_node("call_function", torch.relu, (a,), name="r"))
    return g


@pytest.mark.parametrize("match_output", [False, True])
@pytest.mark.parametrize("match_placeholder", [False, True])
def test_output_and_placeholder_flags(match_output, match_placeholder):
    def host(fx):
        g = fx.Graph()
        x = g.placeholder("x")
        r0 = g.create_node("call_function", torch.relu, (x,), name="r0")
        n = g.create_node("call_function", torch.neg, (r0,), name="n")
        r1 = g.create_node("call_function", torch.relu, (n,), name="r1")
        g.output(r1)
        return g

    found = check(
        output_pattern, host, match_output=match_output, match_placeholder=match_placeholder
    )
    expected = {(False, False): 2, (False, True): 1, (True, False): 1, (True, True): 0}
    assert len(found) == expected[(match_output, match_placeholder)]


def test_cycle_rule_rejects_matches_that_would_cycle_when_fused():
    # pattern: a -> neg -> relu and a -> relu's sibling... a two-output pattern whose
    # outputs are connected outside the match in the host: fusing would form a cycle.
    def pattern(fx):
        g = fx.Graph()
        a = g.placeholder("a")
        n = g.create_node("call_function", torch.neg, (a,), name="pn")
        b = g.placeholder("b")
        r = g.create_node("call_function", torch.relu, (b,), name="pr")
        g.output((n, r))
        return g

    def host(fx):
        g = fx.Graph()
        x, y = g.placeholder("x"), g.placeholder("y")
        n = g.create_node("call_function", torch.neg, (x,), name="n")
        mid = g.create_node("call_function", torch.sigmoid, (n,), name="mid")  # outside
        r = g.create_node("call_function", torch.relu, (mid,), name="r")
        r2 = g.create_node("call_function", torch.relu, (y,), name="r2")
        g.output((r, r2))
        return g

    found = check(pattern, host)
    pairs = [(m.returning_nodes[0].name, m.returning_nodes[1].name) for m in found]
    assert ("n", "r") not in pairs  # n -> mid -> r leaves and re-enters
    assert ("n", "r2") in pairs


def test_literals_and_ignore_literals():
    def pattern(fx):
        g = fx.Graph()
        a = g.placeholder("a")
        g.output(g.create_node("call_function", operator.add, (a, 3), name="p"))
        return g

    def host(fx):
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.create_node("call_function", operator.add, (x, 3), name="a")
        b = g.create_node("call_function", operator.add, (a, 4), name="b")
        c = g.create_node("call_function", operator.add, (b, a), name="c")
        g.output(c)
        return g

    assert len(check(pattern, host)) == 1
    assert len(check(pattern, host, ignore_literals=True)) == 3


def test_nested_list_arguments():
    def pattern(fx):
        g = fx.Graph()
        a, b = g.placeholder("a"), g.placeholder("b")
        g.output(g.create_node("call_function", torch.cat, ([a, b],), {"dim": 0}, name="p"))
        return g

    def host(fx):
        g = fx.Graph()
        x, y = g.placeholder("x"), g.placeholder("y")
        c1 = g.create_node("call_function", torch.cat, ([x, y],), {"dim": 0}, name="c1")
        c2 = g.create_node("call_function", torch.cat, ([x, y, c1],), {"dim": 0}, name="c2")
        c3 = g.create_node("call_function", torch.cat, ([c2, x],), {"dim": 1}, name="c3")
        g.output(c3)
        return g

    assert len(check(pattern, host)) == 1


def random_host(fx, seed: int):
    rng = random.Random(seed)
    g = fx.Graph()
    vals = [g.placeholder("x"), g.placeholder("y")]
    for i in range(40):
        r = rng.random()
        if r < 0.5:
            t = rng.choice([torch.relu, torch.neg])
            vals.append(g.create_node("call_function", t, (rng.choice(vals),), name=f"u{i}"))
        else:
            args = (rng.choice(vals), rng.choice(vals))
            vals.append(g.create_node("call_function", operator.add, args, name=f"b{i}"))
    g.output(tuple(vals[-3:]))
    return g


def two_output_pattern(fx):
    g = fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")
    s = g.create_node("call_function", operator.add, (a, b), name="s")
    r = g.create_node("call_function", torch.relu, (s,), name="r")
    n = g.create_node("call_function", torch.neg, (s,), name="n")
    g.output((r, n))
    return g


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("pattern", [add_relu, relu_relu, two_output_pattern])
@pytest.mark.parametrize("dedupe", [True, False])
def test_random_graphs_agree_with_torch_fx(seed, pattern, dedupe):
    check(pattern, lambda fx: random_host(fx, seed), remove_overlapping_matches=dedupe)


# --- no blow-up with interchangeable anchors ---------------------------------------------------


def fan_pattern(k: int):
    def make(fx):
        g = fx.Graph()
        a = g.placeholder("a")
        outs = [g.create_node("call_function", torch.relu, (a,), name=f"p{i}") for i in range(k)]
        g.output(tuple(outs))
        return g

    return make


def fan_host(m: int, chains: int = 1):
    def make(fx):
        g = fx.Graph()
        x = g.placeholder("x")
        outs = []
        for c in range(chains):
            src = g.create_node("call_function", torch.neg, (x,), name=f"src{c}")
            outs += [
                g.create_node("call_function", torch.relu, (src,), name=f"r{c}_{i}")
                for i in range(m)
            ]
        g.output(tuple(outs))
        return g

    return make


@pytest.mark.parametrize("dedupe", [True, False])
def test_interchangeable_anchors_agree_with_torch_fx_on_small_sizes(dedupe):
    found = check(fan_pattern(3), fan_host(4, chains=2), remove_overlapping_matches=dedupe)
    assert len(found) == (2 if dedupe else 2 * 4 * 3 * 2)


def test_interchangeable_anchors_do_not_blow_up():
    # 4 interchangeable outputs over 40 candidates each, in 20 independent places: a full
    # product would be 800^4 combinations; only local, non-overlapping ones are explored.
    pattern, host = fan_pattern(4)(fxkit), fan_host(40, chains=20)(fxkit)
    start = time.perf_counter()
    found = SubgraphMatcher(pattern).match(host)
    elapsed = time.perf_counter() - start
    assert len(found) == 20 * 10
    assert elapsed < 10  # generous: the point is finishing at all (torch.fx would not)
    claimed = [gn for m in found for pn, gn in m.nodes_map.items() if pn.op != "placeholder"]
    assert len(claimed) == len(set(claimed))


# --- the name -> node map variant ----------------------------------------------------------


def named_pattern(x, w):
    conv = torch.nn.functional.linear(x, w)
    relu = torch.relu(conv)
    return relu, {"conv": conv, "relu": relu}


def named_host(x, w):
    y = torch.relu(torch.nn.functional.linear(x, w))
    return torch.relu(torch.nn.functional.linear(y, w)) * 2


def test_name_node_map_matcher_agrees_with_torch_fx():
    ours = SubgraphMatcherWithNameNodeMap(symbolic_trace(named_pattern)).match(
        symbolic_trace(named_host).graph
    )
    theirs_pattern = tfx.symbolic_trace(named_pattern)
    # torch.fx only accepts pytree-codegen (exported) patterns; give it the same shape.
    theirs = _torch_named(theirs_pattern).match(tfx.symbolic_trace(named_host).graph)
    assert summary(ours) == summary(theirs)
    assert len(ours) == 2
    for m in ours:
        assert set(m.name_node_map) == {"conv", "relu"}
        assert m.name_node_map["relu"].target is torch.relu
        assert m.name_node_map["conv"] is m.name_node_map["relu"].args[0]


def _torch_named(gm):
    from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
    from torch.utils._pytree import tree_flatten

    out = gm.graph.output_node()
    flat, spec = tree_flatten(out.args[0])
    out.args = (flat,)
    _, in_spec = tree_flatten(((None, None), {}))
    gm.graph._codegen = _PyTreeCodeGen(_PyTreeInfo(["x", "w"], in_spec, spec))
    gm.recompile()
    return TorchNamedMatcher(gm)


def _two_tensors(x):
    return torch.relu(x), torch.neg(x)


def _one_tensor(x):
    return torch.relu(x)


def test_name_node_map_pattern_must_return_a_dict_last():
    with pytest.raises(ValueError, match="dict"):
        SubgraphMatcherWithNameNodeMap(symbolic_trace(_two_tensors))
    with pytest.raises(ValueError, match="tuple"):
        SubgraphMatcherWithNameNodeMap(symbolic_trace(_one_tensor))
    with pytest.raises(TypeError, match="GraphModule"):
        SubgraphMatcherWithNameNodeMap(add_relu(fxkit))


# --- bad input --------------------------------------------------------------------------------


def test_bad_matcher_input():
    with pytest.raises(TypeError, match="Graph"):
        SubgraphMatcher("not a graph")
    with pytest.raises(ValueError, match="empty"):
        SubgraphMatcher(fxkit.Graph())
    g = fxkit.Graph()
    g.placeholder("a")
    with pytest.raises(ValueError, match="no output"):
        SubgraphMatcher(g)
    with pytest.raises(TypeError, match="Graph"):
        SubgraphMatcher(add_relu(fxkit)).match("not a graph")


def test_matching_does_not_modify_either_graph():
    p, h = add_relu(fxkit), relu_chain_host(fxkit)
    before = [(n.name, n.op, n.target, n.args, n.kwargs) for n in h.nodes]
    before_p = [(n.name, n.op, n.target, n.args) for n in p.nodes]
    SubgraphMatcher(p).match(h)
    assert [(n.name, n.op, n.target, n.args, n.kwargs) for n in h.nodes] == before
    assert [(n.name, n.op, n.target, n.args) for n in p.nodes] == before_p
