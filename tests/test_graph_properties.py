"""Property tests: random edit sequences keep graphs well formed and code faithful.

After every edit the graph must lint, its generated code must compute what a direct
node-by-node evaluation computes, and pickling must round-trip the printed graph.
Refused edits (erasing a used node, a self-loop) must raise and leave the graph unchanged.
The last property drives the order keys: random runs of inserts before/after random nodes
(with a tiny label spacing, so relabelling happens constantly) keep ``graph.nodes`` in the
order the keys say, place each node where torch.fx would, and lint clean.
"""

import operator
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxkit import _order as order_module
from fxkit import node as node_module
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule

UNARY = [torch.neg, torch.tanh, torch.sigmoid]
BINARY = [operator.add, operator.mul, operator.sub, torch.maximum]

edit = st.one_of(
    st.tuples(
        st.just("add"),
        st.integers(0, 6),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
    ),  # fmt: skip
    st.tuples(st.just("erase"), st.integers(0, 99)),
    st.tuples(st.just("rauw"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("update_arg"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("cycle"), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.just("output"), st.lists(st.integers(0, 99), min_size=1, max_size=3)),
    st.tuples(st.just("move"), st.integers(0, 99)),
    st.tuples(
        st.just("copy"),
    ),
    st.just(("dce",)),
)


def reference_eval(graph, inputs):
    env = {}
    feed = iter(inputs)
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node] = next(feed)
        elif node.op == "call_function":
            args = [env[a] for a in node.args]
            env[node] = node.target(*args)
        elif node.op == "output":
            return tuple(env[a] for a in node.args[0])
    raise AssertionError("no output node")


def body(graph):
    return [n for n in graph.nodes if n.op == "call_function"]


def check(graph, inputs):
    graph.lint()
    gm = GraphModule(torch.nn.Module(), graph)
    got = gm(*inputs)
    want = reference_eval(graph, inputs)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert str(pickle.loads(pickle.dumps(graph))) == str(graph)


def apply(graph, step):
    nodes = [n for n in graph.nodes if n.op != "output"]
    out = graph.output_node()
    kind = step[0]
    if kind == "add":
        _, fn_index, pos, i, j = step
        anchor = nodes[pos % len(nodes)]
        earlier = [n for n in nodes if n <= anchor]
        fns = UNARY + BINARY
        fn = fns[fn_index % len(fns)]
        args = (earlier[i % len(earlier)],)
        if fn in BINARY:
            args += (earlier[j % len(earlier)],)
        with graph.inserting_after(anchor):
            graph.call_function(fn, args)
    elif kind == "erase":
        candidates = body(graph)
        if candidates:
            victim = candidates[step[1] % len(candidates)]
            if victim.users:
                before = str(graph)
                try:
                    graph.erase_node(victim)
                except RuntimeError:
                    assert str(graph) == before
                else:
                    raise AssertionError("erasing a used node must fail")
            else:
                graph.erase_node(victim)
    elif kind == "rauw":
        candidates = body(graph)
        if candidates:
            old = candidates[step[1] % len(candidates)]
            earlier = [n for n in nodes if n < old]
            new = earlier[step[2] % len(earlier)]
            old.replace_all_uses_with(new)
            assert not old.users
    elif kind == "update_arg":
        candidates = body(graph)
        if candidates:
            node = candidates[step[1] % len(candidates)]
            earlier = [n for n in nodes if n < node]
            node.update_arg(0, earlier[step[2] % len(earlier)])
    elif kind == "cycle":
        candidates = body(graph)
        if candidates:
            node = candidates[step[1] % len(candidates)]
            later = [n for n in nodes if n >= node and _depends_on(n, node)]
            target = later[step[2] % len(later)]
            before, old_args = str(graph), node.args
            if target is node:
                try:
                    node.update_arg(0, target)
                except ValueError as exc:
                    assert "self-loop" in str(exc)
                    assert str(graph) == before
                else:
                    raise AssertionError("a self-loop must be refused")
            else:
                node.update_arg(0, target)  # accepted, as in torch.fx; lint() reports it
                with pytest.raises(RuntimeError, match="was used before it has been defined"):
                    graph.lint()  # lint must report the cycle
                node.args = old_args
                assert str(graph) == before
    elif kind == "output":
        out.args = (tuple(nodes[i % len(nodes)] for i in step[1]),)
    elif kind == "move":
        # move a node as early as its inputs allow
        candidates = body(graph)
        if candidates:
            node = candidates[step[1] % len(candidates)]
            latest_input = max(node.all_input_nodes, key=lambda n: n._order)
            latest_input.append(node)
    elif kind == "copy":
        clone = Graph()
        out_value = clone.graph_copy(graph, {})
        clone.output(out_value)
        return clone
    elif kind == "dce":
        graph.eliminate_dead_code()
    return graph


def _depends_on(n, node):
    stack, seen = [n], set()
    while stack:
        cur = stack.pop()
        if cur is node:
            return True
        for inp in cur.all_input_nodes:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=25))
def test_random_edit_sequences_keep_graph_valid(steps):
    torch.manual_seed(0)
    inputs = (torch.randn(4), torch.randn(4))
    graph = Graph()
    x = graph.placeholder("x")
    y = graph.placeholder("y")
    graph.output((graph.call_function(operator.add, (x, y)),))
    check(graph, inputs)
    for step in steps:
        graph = apply(graph, step)
        check(graph, inputs)


insert_run = st.tuples(
    st.sampled_from(["after", "before", "end", "start"]),
    st.integers(0, 10_000),  # which node to anchor at
    st.integers(1, 40),  # how many nodes to create in one block
)


def _expected_order(order: list, kind: str, anchor, new: list) -> list:
    """Where torch.fx puts a block of new nodes: after(n) and start push each right next to
    the anchor (latest first); before(n) and end keep creation order."""
    if kind == "after":
        i = order.index(anchor) + 1
        return order[:i] + new[::-1] + order[i:]
    if kind == "start":
        return new[::-1] + order
    if kind == "before":
        i = order.index(anchor)
        return order[:i] + new + order[i:]
    return order[:-1] + new + order[-1:]  # end: before nothing, i.e. after the output


@pytest.mark.parametrize("gap", [2, 1 << 32])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(insert_run, min_size=1, max_size=30))
def test_random_insert_positions_keep_order_keys_consistent(gap, runs):
    saved = node_module._GAP
    node_module._GAP = order_module._GAP = gap  # appends and end-of-list respacing
    try:
        graph = Graph()
        x = graph.placeholder("x")
        out = graph.output(x)
        order = [x, out]
        for kind, pick, count in runs:
            # Anchors keep every node after x: "before" never picks x, "after" never the end.
            choices = order[1:] if kind == "before" else order[:-1]
            anchor = choices[pick % len(choices)]
            point = {
                "after": lambda: graph.inserting_after(anchor),
                "before": lambda: graph.inserting_before(anchor),
                "end": lambda: graph.inserting_after(None),
                "start": lambda: graph.inserting_before(None),
            }[kind]
            if kind == "start":
                anchor = x
            with point():
                new = [graph.call_function(torch.neg, (x,)) for _ in range(count)]
            if kind == "start":  # new nodes come before x: keep the graph valid
                for n in new:
                    graph.erase_node(n)
                continue
            if kind == "end":
                order = order + new
            else:
                order = _expected_order(order, kind, anchor, new)
            assert list(graph.nodes) == order
            keys = [n._order for n in graph.nodes]
            assert all(a < b for a, b in zip(keys, keys[1:]))
            assert all((a < b) for a, b in zip(order, order[1:]))
        graph.lint()
    finally:
        node_module._GAP = order_module._GAP = saved
