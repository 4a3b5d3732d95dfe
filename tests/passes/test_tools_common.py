"""tools_common compared with torch.fx's: node typenames on the zoo, tensor-output checks after
ShapeProp, fusion groups, and both topological rebuilds (order, code, cycle errors)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import tools_common as ttc
from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp

import fxkit
from fxkit.passes import tools_common as tc
from fxkit.passes.shape_prop import ShapeProp
from zoo import CASES, example, trace

LIBS = {"fxkit": (fxkit, tc), "torch.fx": (tfx, ttc)}


def _typenames(gm, module) -> list:
    mods = dict(gm.named_modules())
    return [
        module.get_node_target(mods, n) for n in gm.graph.nodes if n.op in module.CALLABLE_NODE_OPS
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_get_node_target_matches_on_zoo(case):
    # fxkit's own tracing helpers (``_assert_is_none``) live in fxkit rather than torch.fx.
    ours = [t.replace("fxkit.", "torch.fx.") for t in _typenames(trace(case, fxkit), tc)]
    assert ours == _typenames(trace(case, tfx), ttc)


def test_get_node_target_rejects_non_callable_ops():
    gm = fxkit.symbolic_trace(torch.nn.ReLU())
    placeholder = next(iter(gm.graph.nodes))
    with pytest.raises(AssertionError, match="Expect op types of .*but found placeholder"):
        tc.get_node_target({}, placeholder)


def test_get_node_target_uses_base_class_origin():
    class Fancy(torch.nn.ReLU):
        _base_class_origin = torch.nn.ReLU

    g = fxkit.Graph()
    node = g.call_module("act", (g.placeholder("x"),))
    assert tc.get_node_target({"act": Fancy()}, node) == "torch.nn.modules.activation.ReLU"
    assert tc.get_node_target({"act": torch.nn.ReLU()}, node) == ttc.get_node_target(
        {"act": Fancy()}, node
    )


@pytest.mark.parametrize(
    "key", ["already.a.name", torch.nn.Linear, torch.ops.aten.relu.default, operator.add]
)
def test_get_acc_ops_name(key):
    assert tc.get_acc_ops_name(key) == ttc.get_acc_ops_name(key)


def test_acc_ops_names_are_shortened():
    def relu(x):
        return x

    relu.__module__ = "my_backend.acc_ops"
    assert tc.get_acc_ops_name(relu) == "acc_ops.relu"
    g = fxkit.Graph()
    g.output(g.call_function(relu, (g.placeholder("x"),)))
    node = g.find_nodes(op="call_function", target=relu)[0]
    assert tc.get_node_target({}, node) == "acc_ops.relu"


class SizesAndTuples(torch.nn.Module):
    """Non-tensor values flow between nodes: sizes, a tuple split, arithmetic on ints."""

    def forward(self, x):
        n = x.size(0)
        a, b = torch.split(x, 2, dim=1)
        m = n * 2
        y = a.relu().reshape(m, -1)
        return y + 1, b.sum(), x.shape[1]


@pytest.mark.parametrize("lib", sorted(LIBS))
def test_is_node_output_tensor_after_shape_prop(lib):
    fx, module = LIBS[lib]
    gm = fx.symbolic_trace(SizesAndTuples())
    (ShapeProp if fx is fxkit else TorchShapeProp)(gm).propagate(torch.randn(4, 4))
    flags = {n.name: module.is_node_output_tensor(n) for n in gm.graph.nodes}
    assert flags["relu"] and flags["x"] and not flags["size"] and not flags["split"]
    assert not flags["mul"]


def test_is_node_output_tensor_without_meta_is_false():
    gm = fxkit.symbolic_trace(torch.nn.ReLU())
    assert not any(tc.is_node_output_tensor(n) for n in gm.graph.nodes)


def _fusion_groups(lib, model, inputs, acc_filter):
    fx, module = LIBS[lib]
    gm = fx.symbolic_trace(model)
    (ShapeProp if fx is fxkit else TorchShapeProp)(gm).propagate(*inputs)
    acc = {n for n in gm.graph.nodes if n.op in module.CALLABLE_NODE_OPS and acc_filter(n)}
    groups = module.FxNetAccFusionsFinder(gm, acc)()
    named = {n.name: frozenset(m.name for m in g) for n, g in groups.items()}
    return named, sorted(n.name for n in acc)


@pytest.mark.parametrize(
    "acc_filter",
    [lambda n: True, lambda n: n.name != "mul", lambda n: n.name != "add"],
    ids=["all_acc", "mul_on_cpu", "add_on_cpu"],
)
def test_fusion_groups_match_torch_fx(acc_filter):
    args = (torch.randn(4, 4),)
    ours = _fusion_groups("fxkit", SizesAndTuples(), args, acc_filter)
    theirs = _fusion_groups("torch.fx", SizesAndTuples(), args, acc_filter)
    assert ours == theirs


def test_fusion_group_pulls_in_nodes_between_members():
    # size -> (relu -> view) and size -> mul -> view: relu lies between size's users.
    class M(torch.nn.Module):
        def forward(self, x):
            n = x.size(0)
            y = torch.relu(x + n)
            return y.view(n, -1)

    ours = _fusion_groups("fxkit", M(), (torch.randn(2, 3),), lambda n: True)
    theirs = _fusion_groups("torch.fx", M(), (torch.randn(2, 3),), lambda n: True)
    assert ours == theirs
    assert ours[0]["size"] == {"size", "add", "relu", "view"}


def test_recursive_add_node_finds_paths_back_into_group():
    class M(torch.nn.Module):
        def forward(self, x):
            a = x.relu()
            b = a.sin()
            return a + b

    for lib in LIBS:
        fx, module = LIBS[lib]
        gm = fx.symbolic_trace(M())
        nodes = {n.name: n for n in gm.graph.nodes}
        finder = module.FxNetAccFusionsFinder(gm, set())
        group = finder.FusionGroup(
            top_node_idx=finder.node_index[nodes["relu"]],
            nodes={nodes["relu"], nodes["add"]},
            inputs={nodes["x"], nodes["sin"]},
            nodes_need_process=set(),
        )
        assert finder.recursive_add_node(group, [nodes["sin"]], visited=set())
        assert {n.name for n in group.nodes} == {"relu", "sin", "add"}


# --- topological rebuilds ------------------------------------------------------------------------


def _scrambled(fx, moves):
    """A graph whose list order is not topological: ``moves`` puts node i after node j."""
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.placeholder("y")
    a = g.call_function(torch.sin, (x,))
    b = g.call_function(operator.add, (a, y))
    c = g.call_function(torch.cos, (b,))
    d = g.call_function(operator.mul, (c, a))
    e = g.call_function(torch.relu, (y,))
    f = g.call_function(operator.sub, (d, e))
    g.output((f, e))
    nodes = [x, y, a, b, c, d, e, f]
    for i, j in moves:
        if i != j:
            nodes[j].append(nodes[i])
    return fx.GraphModule(torch.nn.Module(), g)


MOVE = st.tuples(st.integers(2, 7), st.integers(0, 7))


@settings(max_examples=30, deadline=None)
@given(st.lists(MOVE, max_size=4))
def test_sorts_match_torch_fx_on_scrambled_graphs(moves):
    for sort_name in ("legalize_graph", "stable_topological_sort"):
        ours = _scrambled(fxkit, moves)
        theirs = _scrambled(tfx, moves)
        getattr(tc, sort_name)(ours)
        getattr(ttc, sort_name)(theirs)
        assert [n.name for n in ours.graph.nodes] == [n.name for n in theirs.graph.nodes]
        assert ours.code == theirs.code
        ours.graph.lint()
        args = (torch.randn(3), torch.randn(3))
        torch.testing.assert_close(ours(*args), theirs(*args))


def test_sorts_on_zoo_models_keep_code():
    for case in CASES[:4]:
        ours = trace(case, fxkit)
        before = ours.code
        tc.stable_topological_sort(ours)
        assert ours.code == before
        args, kwargs = example(case)
        torch.testing.assert_close(ours(*args, **kwargs), trace(case, fxkit)(*args, **kwargs))


def test_legalize_graph_moves_assertion_ops_first():
    def build(fx):
        g = fx.Graph()
        x = g.placeholder("x")
        s = g.call_method("size", (x, 0))
        r = g.call_function(torch.relu, (x,))
        m = g.call_function(operator.mul, (s, 2))
        g.output((r, m))
        return fx.GraphModule(torch.nn.Module(), g)

    ours, theirs = build(fxkit), build(tfx)
    tc.legalize_graph(ours)
    ttc.legalize_graph(theirs)
    assert [n.name for n in ours.graph.nodes] == [n.name for n in theirs.graph.nodes]


def _cyclic(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.sin, (x,))
    b = g.call_function(torch.cos, (a,))
    g.output(b)
    a.args = (b,)
    return fx.GraphModule(torch.nn.Module(), g)


@pytest.mark.parametrize(
    "sort_name,error",
    [("legalize_graph", RuntimeError), ("stable_topological_sort", AssertionError)],
)
def test_sorts_reject_cycles_like_torch_fx(sort_name, error):
    with pytest.raises(error, match="Input graph has cycles"):
        getattr(ttc, sort_name)(_cyclic(tfx))
    gm = _cyclic(fxkit)
    before = gm.graph
    with pytest.raises(error, match="Input graph has cycles, unable to add"):
        getattr(tc, sort_name)(gm)
    assert gm.graph is before


def test_sorts_accept_torch_fx_graph_modules():
    gm = _scrambled(tfx, [(6, 1), (3, 7)])
    expected = _scrambled(tfx, [(6, 1), (3, 7)])
    ttc.stable_topological_sort(expected)
    out = tc.stable_topological_sort(gm)
    assert out is gm and isinstance(gm.graph, tfx.Graph)
    assert gm.code == expected.code


def test_rebuild_keeps_codegen_and_meta():
    gm = fxkit.symbolic_trace(SizesAndTuples())
    ShapeProp(gm).propagate(torch.randn(4, 4))
    codegen = gm.graph._codegen
    tc.legalize_graph(gm)
    assert gm.graph._codegen is codegen
    assert all("type" in n.meta for n in gm.graph.nodes if n.op != "output")
