"""Interpreter and Transformer: opcodes, value freeing, partial evaluation, error notes,
subclass hooks, and agreement with torch.fx on the same graphs."""

from __future__ import annotations

import operator
import random

import pytest
import torch
import torch.fx as tfx

import fxkit
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.interpreter import Interpreter, Transformer
from fxkit.node import Node

# --- building the same graph in fxkit and torch.fx ------------------------------------------


class Root(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.act = torch.nn.ReLU()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.sub = torch.nn.Module()
        self.sub.bias = torch.nn.Parameter(torch.ones(4))


def all_opcodes(fx):
    """A graph with every opcode: placeholders (one with a default), get_attr (nested),
    call_function, call_module, call_method (with kwargs) and output."""
    g = fx.Graph()
    x = g.placeholder("x")
    k = g.placeholder("k", default_value=3)
    w = g.get_attr("scale")
    b = g.get_attr("sub.bias")
    lin = g.call_module("lin", (x,))
    act = g.call_module("act", (lin,))
    mul = g.call_function(operator.mul, (act, w))
    add = g.call_function(torch.add, (mul, b), {"alpha": 0.5})
    s = g.call_method("sum", (add,), {"dim": -1, "keepdim": True})
    p = g.call_function(operator.mul, (s, k))
    g.output((p, [add, {"s": s}]))
    return g


def chain(fx, n: int):
    g = fx.Graph()
    cur = g.placeholder("x")
    ops = [torch.relu, torch.neg, torch.sigmoid, torch.tanh]
    for i in range(n):
        cur = g.call_function(ops[i % len(ops)], (cur,))
    g.output(cur)
    return g


def random_dag(fx, seed: int, size: int = 30):
    rng = random.Random(seed)
    g = fx.Graph()
    vals = [g.placeholder("a"), g.placeholder("b")]
    for _ in range(size):
        kind = rng.random()
        if kind < 0.4:
            fn = rng.choice([torch.relu, torch.sigmoid, torch.neg, torch.tanh])
            vals.append(g.call_function(fn, (rng.choice(vals),)))
        elif kind < 0.8:
            fn = rng.choice([operator.add, operator.mul, torch.sub])
            vals.append(g.call_function(fn, (rng.choice(vals), rng.choice(vals))))
        elif kind < 0.9:
            vals.append(g.call_method(rng.choice(["relu", "neg", "exp"]), (rng.choice(vals),)))
        else:
            vals.append(g.call_function(operator.add, (rng.choice(vals), rng.randint(-2, 2))))
    g.output(tuple(rng.sample(vals[2:], 3)))
    return g


def both(make, *args):
    root = Root()
    ours = GraphModule(root, make(fxkit, *args))
    theirs = tfx.GraphModule(root, make(tfx, *args))
    return ours, theirs


def assert_same(a, b) -> None:
    fa = torch.utils._pytree.tree_leaves(a)
    fb = torch.utils._pytree.tree_leaves(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y)
        else:
            assert x == y


# --- running -----------------------------------------------------------------------------


def test_all_opcodes_match_generated_code_and_torch_fx():
    ours, theirs = both(all_opcodes)
    x = torch.randn(2, 4)
    got = Interpreter(ours).run(x)
    assert_same(got, ours(x))
    assert_same(got, tfx.Interpreter(theirs).run(x))
    assert_same(Interpreter(ours).run(x, 5), tfx.Interpreter(theirs).run(x, 5))


@pytest.mark.parametrize("seed", range(8))
def test_random_dags_agree_with_torch_fx(seed):
    ours, theirs = both(random_dag, seed)
    a, b = torch.randn(3), torch.randn(3)
    assert_same(Interpreter(ours).run(a, b), tfx.Interpreter(theirs).run(a, b))
    assert_same(Interpreter(ours).run(a, b), ours(a, b))


def test_star_args_placeholder_takes_the_rest():
    g = Graph()
    first = g.placeholder("first")
    rest = g.placeholder("*rest")
    g.output((first, rest))
    gm = GraphModule(torch.nn.Module(), g)
    assert Interpreter(gm).run(1, 2, 3) == (1, [2, 3])


def test_missing_input_without_default_is_a_clear_error():
    gm = GraphModule(Root(), all_opcodes(fxkit))
    with pytest.raises(RuntimeError, match="Expected positional argument for parameter x"):
        Interpreter(gm).run()


def test_graph_argument_runs_another_graph_against_the_module():
    root = Root()
    gm = GraphModule(root, all_opcodes(fxkit))
    g = Graph()
    w = g.get_attr("scale")
    g.output(g.call_function(operator.add, (w, 1)))
    assert Interpreter(gm, graph=g).run().item() == pytest.approx(3.0)


def test_io_processing_uses_the_codegen():
    class Doubling(fxkit.CodeGen):
        def process_inputs(self, *args):
            return [a * 2 for a in args]

        def process_outputs(self, out):
            return out + 1

    g = Graph()
    x = g.placeholder("x")
    g.output(g.call_function(operator.add, (x, 0)))
    g.set_codegen(Doubling())
    gm = GraphModule(torch.nn.Module(), g)
    assert Interpreter(gm).run(5) == 11
    assert Interpreter(gm).run(5, enable_io_processing=False) == 5


# --- freeing values --------------------------------------------------------------------------


def probe_chain(n: int, sizes: list, holder: list) -> GraphModule:
    """A chain whose every other node records how many values the interpreter holds."""

    def probe(v):
        sizes.append(len(holder[0].env))
        return v

    g = Graph()
    cur = g.placeholder("x")
    for i in range(n):
        cur = g.call_function(probe if i % 2 else torch.neg, (cur,))
    g.output(cur)
    return GraphModule(torch.nn.Module(), g)


@pytest.mark.parametrize("subclassed", [False, True])
def test_values_are_freed_after_their_last_use(subclassed):
    sizes: list = []
    holder: list = []
    gm = probe_chain(40, sizes, holder)

    class Wrapping(Interpreter):
        def run_node(self, n):
            return super().run_node(n)

    interp = (Wrapping if subclassed else Interpreter)(gm)
    holder.append(interp)
    out = interp.run(torch.ones(2))
    torch.testing.assert_close(out, torch.ones(2))
    assert len(sizes) == 20
    assert max(sizes) <= 2  # only the value being consumed is alive in a chain
    assert len(interp.env) == 1  # just the output node's value


def test_without_gc_every_value_stays_in_env():
    sizes: list = []
    holder: list = []
    gm = probe_chain(10, sizes, holder)
    interp = Interpreter(gm, garbage_collect_values=False)
    holder.append(interp)
    interp.run(torch.ones(2))
    assert sizes == [2, 4, 6, 8, 10]
    assert set(interp.env) == set(gm.graph.nodes)


def test_fan_out_value_lives_until_its_last_reader():
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.neg, (x,))
    b = g.call_function(torch.relu, (a,))
    c = g.call_function(torch.sigmoid, (b,))
    d = g.call_function(operator.add, (c, a))  # a's last use
    g.output(d)
    interp = Interpreter(GraphModule(torch.nn.Module(), g))
    assert interp.user_to_last_uses[d] == [c, a] or set(interp.user_to_last_uses[d]) == {c, a}
    t = torch.randn(3)
    torch.testing.assert_close(interp.run(t), torch.sigmoid(torch.relu(-t)) - t)


def test_last_use_table_is_built_once_not_per_run(monkeypatch):
    import fxkit.interpreter as mod

    calls = []
    real = mod._last_uses
    monkeypatch.setattr(mod, "_last_uses", lambda g: calls.append(1) or real(g))
    interp = Interpreter(GraphModule(torch.nn.Module(), chain(fxkit, 5)))
    for _ in range(3):
        interp.run(torch.ones(1))
    assert calls == [1]


# --- partial evaluation and boxed calls ----------------------------------------------------


def test_initial_env_short_circuits_nodes():
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.neg, (x,))
    b = g.call_function(operator.add, (a, 1))
    g.output(b)
    gm = GraphModule(torch.nn.Module(), g)
    env = {x: torch.zeros(1), a: torch.full((1,), 10.0)}
    interp = Interpreter(gm)
    assert interp.run(initial_env=env).item() == 11.0
    assert interp.env is env


def test_boxed_run_clears_the_argument_list():
    gm = GraphModule(Root(), all_opcodes(fxkit))
    x = torch.randn(2, 4)
    args = [x, 2]
    got = Interpreter(gm).boxed_run(args)
    assert args == []
    assert_same(got, gm(x, 2))


@pytest.mark.parametrize("args,detail", [([1], "missing arguments"), ([1, 2, 3], "extra")])
def test_boxed_run_checks_the_argument_count(args, detail):
    gm = GraphModule(Root(), all_opcodes(fxkit))
    before = list(args)
    with pytest.raises(RuntimeError, match=detail):
        Interpreter(gm).boxed_run(args)
    assert args == before  # nothing consumed on error


def test_boxed_run_rejects_non_lists():
    gm = GraphModule(Root(), all_opcodes(fxkit))
    with pytest.raises(TypeError, match="list"):
        Interpreter(gm).boxed_run((1, 2))


# --- errors ----------------------------------------------------------------------------------


def failing_graph(fn, stack_trace=None):
    g = Graph()
    x = g.placeholder("x")
    bad = g.create_node("call_function", fn, (x,), name="boom")
    if stack_trace:
        bad.meta["stack_trace"] = stack_trace
    g.output(bad)
    return GraphModule(torch.nn.Module(), g)


def explode(v):
    raise ValueError("kaput")


def test_exception_keeps_its_type_and_gets_a_note_naming_the_node():
    trace = '  File "/home/me/model.py", line 12, in forward\n    y = explode(x)\n'
    gm = failing_graph(explode, trace)
    with pytest.raises(ValueError, match="kaput") as info:
        Interpreter(gm).run(1)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "boom" in notes
    assert "call_function" in notes
    assert "explode" in notes
    # torch.fx's text goes into the message itself: the node, then the user's line
    message = str(info.value)
    assert message.startswith("kaput\n\nWhile executing %boom")
    assert "model.py" in message and "line 12" in message


def test_key_error_becomes_runtime_error_as_in_torch_fx():
    gm = failing_graph(lambda d: {}["nope"])
    with pytest.raises(RuntimeError) as info:
        Interpreter(gm).run(1)
    assert isinstance(info.value.__cause__, KeyError)
    assert any("boom" in n for n in info.value.__notes__)


def test_extra_traceback_off_adds_no_note():
    gm = failing_graph(explode)
    interp = Interpreter(gm)
    interp.extra_traceback = False
    with pytest.raises(ValueError) as info:
        interp.run(1)
    assert not getattr(info.value, "__notes__", None)


def test_subclass_exception_is_annotated_too():
    class Failing(Interpreter):
        def run_node(self, n):
            if n.op == "call_function":
                raise ArithmeticError("from hook")
            return super().run_node(n)

    with pytest.raises(ArithmeticError) as info:
        Failing(failing_graph(torch.neg)).run(1)
    assert any("boom" in n for n in info.value.__notes__)


def test_bad_get_attr_target():
    g = Graph()
    g.output(g.create_node("get_attr", "sub.nothing"))
    with pytest.raises(RuntimeError, match="nonexistent target sub.nothing"):
        Interpreter(Root(), graph=g).run()


def test_reading_a_freed_or_missing_value_is_reported():
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.neg, (x,))
    g.output(a)
    interp = Interpreter(GraphModule(torch.nn.Module(), g))
    interp.env = {}
    with pytest.raises(RuntimeError, match="nonexistent value x"):
        interp.map_nodes_to_values(a.args, a)


@pytest.mark.parametrize(
    "module,graph,exc",
    [
        (42, None, TypeError),
        (torch.nn.Linear(2, 2), None, TypeError),
        (torch.nn.Linear(2, 2), "not a graph", TypeError),
    ],
)
def test_bad_constructor_arguments(module, graph, exc):
    with pytest.raises(exc):
        Interpreter(module, graph=graph)


def test_wrong_target_types_in_hooks():
    # torch.fx asserts on these.
    interp = Interpreter(GraphModule(torch.nn.Module(), chain(fxkit, 1)))
    with pytest.raises(AssertionError):
        interp.call_function("relu", (1,), {})
    with pytest.raises(AssertionError):
        interp.call_method(torch.relu, (1,), {})
    with pytest.raises(AssertionError):
        interp.call_module(torch.relu, (1,), {})
    with pytest.raises(AssertionError):
        interp.get_attr(3, (), {})


# --- subclassing, as the seeds do ---------------------------------------------------------


def neg_sigmoid_graph():
    # torch.sigmoid(x).neg()
    g = Graph()
    x = g.placeholder("x")
    s = g.call_function(torch.sigmoid, (x,))
    g.output(g.call_method("neg", (s,)))
    return GraphModule(torch.nn.Module(), g)


class NegSigmSwapInterpreter(Interpreter):
    def call_function(self, target, args, kwargs):
        if target is torch.sigmoid:
            return torch.neg(*args, **kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target == "neg":
            call_self, *args_tail = args
            return call_self.sigmoid(*args_tail, **kwargs)
        return super().call_method(target, args, kwargs)


def test_seed_negate_sigmoid_interpreter():
    x = torch.randn(3, 4)
    result = NegSigmSwapInterpreter(neg_sigmoid_graph()).run(x)
    torch.testing.assert_close(result, torch.neg(x).sigmoid())


def test_run_node_override_sees_every_node_in_order():
    seen = []

    class Recording(Interpreter):
        def run_node(self, n):
            seen.append(n.op)
            return super().run_node(n)

    gm = GraphModule(Root(), all_opcodes(fxkit))
    Recording(gm).run(torch.randn(1, 4))
    assert seen == [n.op for n in gm.graph.nodes]


def test_fetch_and_map_overrides_are_honoured():
    class Doubling(Interpreter):
        def map_nodes_to_values(self, args, n):
            vals = super().map_nodes_to_values(args, n)
            if n.op == "call_function":
                vals = fxkit.node.map_aggregate(vals, lambda v: v * 2 if isinstance(v, int) else v)
            return vals

    g = Graph()
    x = g.placeholder("x")
    g.output(g.call_function(operator.add, (x, 1)))
    gm = GraphModule(torch.nn.Module(), g)
    assert Doubling(gm).run(3) == 8

    class Fetching(Interpreter):
        def fetch_args_kwargs_from_env(self, n):
            args, kwargs = super().fetch_args_kwargs_from_env(n)
            return (args + (10,))[:2] if n.op == "call_function" else args, kwargs

    assert Fetching(gm).run(3) == 4


def test_shape_recording_subclass_like_shape_prop():
    class ShapeRecorder(Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                n.meta["shape"] = result.shape
            return result

    gm = GraphModule(Root(), all_opcodes(fxkit))
    ShapeRecorder(gm).run(torch.randn(5, 4))
    shapes = {n.name: n.meta.get("shape") for n in gm.graph.nodes}
    assert shapes["lin"] == torch.Size([5, 4])
    assert shapes["sum_1"] == torch.Size([5, 1])


def test_attributes_exposed():
    gm = GraphModule(Root(), all_opcodes(fxkit))
    interp = Interpreter(gm)
    assert interp.module is gm
    assert interp.graph is gm.graph
    assert set(interp.submodules) >= {"", "lin", "act"}
    assert interp.garbage_collect_values is True
    assert interp.extra_traceback is True
    assert isinstance(interp.env, dict)
    assert all(isinstance(k, Node) for k in interp.user_to_last_uses)


# --- Transformer ---------------------------------------------------------------------------

from fxkit._symbolic_trace import symbolic_trace  # noqa: E402


def canon(g):
    idx: dict = {}

    def norm(a):
        if isinstance(a, (Node, tfx.Node)):
            return ("%", idx[a])
        if isinstance(a, (list, tuple)):
            return (type(a) is tuple, tuple(norm(x) for x in a))
        if isinstance(a, dict):
            return tuple((k, norm(v)) for k, v in a.items())
        return a

    rows = []
    for i, n in enumerate(g.nodes):
        idx[n] = i
        rows.append((n.op, n.target, norm(n.args), norm(n.kwargs)))
    return rows


class NegSigmSwapXformer(Transformer):
    def call_function(self, target, args, kwargs):
        if target is torch.sigmoid:
            return torch.neg(*args, **kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target == "neg":
            call_self, *args_tail = args
            return call_self.sigmoid(*args_tail, **kwargs)
        return super().call_method(target, args, kwargs)


def sigmoid_neg(x):
    return torch.sigmoid(x).neg()


def test_seed_negate_sigmoid_with_traced_function():
    gm = symbolic_trace(sigmoid_neg)
    x = torch.randn(3, 4)
    torch.testing.assert_close(NegSigmSwapInterpreter(gm).run(x), torch.neg(x).sigmoid())
    transformed = NegSigmSwapXformer(gm).transform()
    assert isinstance(transformed, GraphModule)
    torch.testing.assert_close(transformed(x), torch.neg(x).sigmoid())
    transformed.graph.lint()


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.p = torch.nn.Parameter(torch.ones(3))

    def forward(self, x, y=2):
        return torch.relu(self.lin(x)).sigmoid() + self.p * y


def relu_to_gelu(base):
    class Relu2Gelu(base):
        def call_function(self, target, args, kwargs):
            if target is torch.relu:
                return torch.nn.functional.gelu(*args, **kwargs)
            return super().call_function(target, args, kwargs)

    return Relu2Gelu


def test_relu_to_gelu_matches_torch_fx_transformer():
    net = Net()
    ours = relu_to_gelu(Transformer)(symbolic_trace(net)).transform()
    theirs = relu_to_gelu(tfx.Transformer)(tfx.symbolic_trace(net)).transform()
    assert canon(ours.graph) == canon(theirs.graph)
    x = torch.randn(2, 3)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours(x, 5), theirs(x, 5))
    assert [n.target for n in ours.graph.nodes if n.op == "call_module"] == ["lin"]
    assert ours.lin is net.lin  # state is shared, not copied


def test_identity_transform_reproduces_the_graph():
    gm = GraphModule(Root(), all_opcodes(fxkit))
    new = Transformer(gm).transform()
    assert canon(new.graph) == canon(gm.graph)
    x = torch.randn(2, 4)
    assert_same(new(x), gm(x))


def test_transformer_keeps_node_meta():
    gm = symbolic_trace(Net())
    for n in gm.graph.nodes:
        n.meta["custom_tag"] = n.name  # not a field that is carried over
    out = gm.graph.output_node()
    out.meta["note"] = "kept"
    new = relu_to_gelu(Transformer)(gm).transform()
    by_name = {n.name: n for n in new.graph.nodes}
    old = {n.name: n for n in gm.graph.nodes}
    gelu = by_name["gelu"]
    assert gelu.meta.get("fxkit_source") == old["relu"].meta.get("fxkit_source")
    assert gelu.meta["fxkit_source"] and "relu" in gelu.meta["fxkit_source"]
    assert by_name["lin"].meta["nn_module_stack"]["lin"][1] is torch.nn.Linear
    [source] = gelu.meta["from_node"]
    assert source.name == "relu"
    assert new.graph.output_node().meta["note"] == "kept"


def test_transformer_rejects_plain_modules():
    with pytest.raises(AttributeError, match="GraphModule"):
        Transformer(torch.nn.Linear(2, 2))


def test_transformer_decomposition_through_proxies():
    class Decompose(Transformer):
        def call_function(self, target, args, kwargs):
            if target is torch.relu:
                (x,) = args
                return (x > 0) * x
            return super().call_function(target, args, kwargs)

    gm = symbolic_trace(Net())
    new = Decompose(gm).transform()
    assert not any(n.target is torch.relu for n in new.graph.nodes)
    x = torch.randn(4, 3)
    torch.testing.assert_close(new(x), gm(x))


class _Shadowed(torch.nn.Module):
    # A class attribute shadows the registered submodule of the same name for plain
    # attribute access; the interpreter must resolve targets exactly as getattr does.
    blocked = torch.nn.Identity()

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Module()
        self.inner.neg = torch.nn.Identity()
        self.blocked = torch.nn.ReLU()  # registered in _modules, hidden by the class attr


@pytest.mark.parametrize("fx", [fxkit, tfx], ids=["fxkit", "torch.fx"])
def test_module_targets_resolve_like_getattr(fx):
    root = _Shadowed()
    g = fx.Graph()
    x = g.placeholder("x")
    g.output((g.call_module("blocked", (x,)), g.call_module("inner.neg", (x,))))
    gm = fx.GraphModule(root, g)
    interp = (Interpreter if fx is fxkit else tfx.Interpreter)(gm)
    interp.module = root  # resolve against the shadowing module itself
    x_val = torch.tensor([-1.0, 2.0])
    blocked, neg = interp.run(x_val)
    assert torch.equal(blocked, x_val)  # the class attribute (Identity), not the ReLU
    assert torch.equal(neg, x_val)
    root.inner.neg = torch.nn.ReLU()  # a replaced submodule is seen on the next run
    assert torch.equal(interp.run(x_val)[1], torch.relu(x_val))


def test_a_failing_traced_node_notes_the_users_line():
    def f(x):
        y = torch.relu(x)
        return y @ y  # the failing line

    gm = symbolic_trace(f)
    with pytest.raises(RuntimeError) as info:
        Interpreter(gm).run(torch.randn(2, 3))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "node 'matmul'" in notes and "# the failing line" in notes
