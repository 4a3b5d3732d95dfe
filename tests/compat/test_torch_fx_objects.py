"""fxkit's Interpreter, Transformer, ShapeProp, matchers, source partitions and rewriter on
torch.fx objects (what plain torch.fx tracing, make_fx and torch.export produce).

Each test runs torch.fx's own class and fxkit's on two copies of the same torch.fx object
and compares what they compute: outputs, node meta, matches, rewritten code.
"""

from __future__ import annotations

import copy
import operator

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp
from torch.fx.passes.utils.matcher_utils import SubgraphMatcher as TorchMatcher
from torch.fx.passes.utils.matcher_with_name_node_map_utils import (
    SubgraphMatcherWithNameNodeMap as TorchNameMatcher,
)
from torch.fx.passes.utils.source_matcher_utils import (
    get_source_partitions as torch_source_partitions,
)

import fxkit
from fxkit.interpreter import Interpreter, Transformer
from fxkit.passes.shape_prop import ShapeProp
from fxkit.passes.utils.matcher_utils import SubgraphMatcher
from fxkit.passes.utils.matcher_with_name_node_map_utils import SubgraphMatcherWithNameNodeMap
from fxkit.passes.utils.source_matcher_utils import get_source_partitions
from fxkit.subgraph_rewriter import replace_pattern, replace_pattern_with_filters


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.lin(x)) + x.sin()


X = torch.randn(2, 4)


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    return torch.export.export(Net(), (X,)).module()


def _make(kind, exported):
    torch.manual_seed(0)
    if kind == "symbolic_trace":
        return tfx.symbolic_trace(Net())
    if kind == "make_fx":
        return make_fx(Net())(X)
    return copy.deepcopy(exported)


KINDS = ["symbolic_trace", "make_fx", "export"]


def describe(graph):
    """A graph as comparable data: op, name, target, args, kwargs per node, in order."""
    return [(n.op, n.name, str(n.target), repr(n.args), repr(n.kwargs)) for n in graph.nodes]


# --- Interpreter / Transformer ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gc", [True, False])
def test_interpreter_runs_torch_fx_modules(kind, gc, exported):
    gm = _make(kind, exported)
    ours = Interpreter(gm, garbage_collect_values=gc)
    theirs = tfx.Interpreter(gm, garbage_collect_values=gc)
    torch.testing.assert_close(ours.run(X), theirs.run(X))
    torch.testing.assert_close(ours.run(X), gm(X))
    if not gc:
        assert {n.name for n in ours.env} == {n.name for n in theirs.env}


@pytest.mark.parametrize("kind", KINDS)
def test_interpreter_graph_argument_and_initial_env(kind, exported):
    gm = _make(kind, exported)
    relu = next(n for n in gm.graph.nodes if "relu" in str(n.target))
    env = {relu: torch.zeros(2, 4)}
    ours = Interpreter(gm, graph=gm.graph).run(X, initial_env=dict(env))
    theirs = tfx.Interpreter(gm, graph=gm.graph).run(X, initial_env=dict(env))
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("kind", KINDS)
def test_transformer_rebuilds_torch_fx_modules(kind, exported):
    gm = _make(kind, exported)
    ours = Transformer(gm).transform()
    theirs = tfx.Transformer(gm).transform()
    assert isinstance(ours, fxkit.GraphModule)
    assert describe(ours.graph) == describe(theirs.graph)
    torch.testing.assert_close(ours(X), theirs(X))


def _swap(base):
    class SwapReluForSigmoid(base):
        def call_function(self, target, args, kwargs):
            if target in (torch.relu, torch.ops.aten.relu.default):
                target = torch.sigmoid
            return super().call_function(target, args, kwargs)

    return SwapReluForSigmoid


@pytest.mark.parametrize("kind", KINDS)
def test_transformer_subclass_on_torch_fx_modules(kind, exported):
    gm = _make(kind, exported)
    ours = _swap(Transformer)(gm).transform()
    theirs = _swap(tfx.Transformer)(gm).transform()
    assert describe(ours.graph) == describe(theirs.graph)
    torch.testing.assert_close(ours(X), theirs(X))
    torch.testing.assert_close(_swap(Interpreter)(gm).run(X), _swap(tfx.Interpreter)(gm).run(X))


# --- ShapeProp ---------------------------------------------------------------------------------


def _metas(gm):
    return {n.name: (n.meta.get("tensor_meta"), n.meta.get("type")) for n in gm.graph.nodes}


@pytest.mark.parametrize("kind", KINDS)
def test_shape_prop_on_torch_fx_modules(kind, exported):
    ours, theirs = _make(kind, exported), _make(kind, exported)
    out_ours = ShapeProp(ours).propagate(X)
    out_theirs = TorchShapeProp(theirs).propagate(X)
    torch.testing.assert_close(out_ours, out_theirs)
    assert _metas(ours) == _metas(theirs)
    assert any(m[0] is not None for m in _metas(ours).values())


def test_shape_prop_fake_mode_on_export_module(exported):
    from torch._subclasses.fake_tensor import FakeTensorMode

    ours, theirs = _make("export", exported), _make("export", exported)
    ShapeProp(ours, fake_mode=FakeTensorMode()).propagate(X)
    TorchShapeProp(theirs, fake_mode=FakeTensorMode()).propagate(X)
    assert _metas(ours) == _metas(theirs)


# --- matchers ------------------------------------------------------------------------------


def _match_data(matches):
    return [
        (
            sorted((p.name, getattr(g, "name", g)) for p, g in m.nodes_map.items()),
            [getattr(n, "name", n) for n in m.placeholder_nodes],
            [n.name for n in m.returning_nodes],
            [a.name for a in m.anchors],
            sorted((k, v.name) for k, v in m.name_node_map.items()),
        )
        for m in matches
    ]


def _aten_pattern(a, b):
    return torch.ops.aten.add.Tensor(torch.ops.aten.relu.default(a), b)


@pytest.mark.parametrize("kind", ["make_fx", "export"])
@pytest.mark.parametrize("match_output", [False, True])
def test_matcher_with_make_fx_pattern(kind, match_output, exported):
    gm = _make(kind, exported)
    pattern = make_fx(_aten_pattern)(X, X.clone()).graph
    opts = dict(match_output=match_output)
    ours = SubgraphMatcher(pattern, **opts).match(gm.graph)
    theirs = TorchMatcher(pattern, **opts).match(gm.graph)
    assert _match_data(ours) == _match_data(theirs)
    if kind == "export":  # in make_fx's graph relu also feeds a detach: no match
        assert bool(ours) == (not match_output)


def test_matcher_fxkit_pattern_on_torch_fx_graph():
    # A pattern traced by fxkit, matched against a graph torch.fx traced (and the reverse).
    def pattern(x):
        return torch.relu(x)

    theirs_gm = tfx.symbolic_trace(Net())
    ours = SubgraphMatcher(fxkit.symbolic_trace(pattern).graph).match(theirs_gm.graph)
    theirs = TorchMatcher(tfx.symbolic_trace(pattern).graph).match(theirs_gm.graph)
    assert _match_data(ours) == _match_data(theirs) != []
    back = SubgraphMatcher(tfx.symbolic_trace(pattern).graph).match(
        fxkit.symbolic_trace(Net()).graph
    )
    assert _match_data(back) == _match_data(theirs)


def test_matcher_with_name_node_map_on_export_pattern(exported):
    class Pattern(torch.nn.Module):
        def forward(self, a, b):
            r = torch.ops.aten.relu.default(a)
            s = torch.ops.aten.add.Tensor(r, b)
            return s, {"r": r, "s": s}

    pattern = torch.export.export(Pattern(), (X, X.clone())).module()
    gm = _make("export", exported)
    theirs = TorchNameMatcher(copy.deepcopy(pattern)).match(gm.graph)
    ours = SubgraphMatcherWithNameNodeMap(pattern).match(gm.graph)
    assert _match_data(ours) == _match_data(theirs)
    assert ours and ours[0].name_node_map["r"].name == "relu"


def test_source_partitions_on_export_graph(exported):
    gm = _make("export", exported)

    def data(parts):
        return {
            src: [
                (
                    [n.name for n in p.nodes],
                    sorted(n.name for n in p.input_nodes),
                    sorted(n.name for n in p.output_nodes),
                    sorted(n.name for n in p.params),
                )
                for p in ps
            ]
            for src, ps in parts.items()
        }

    wanted = [torch.nn.Linear, Net]
    ours = get_source_partitions(gm.graph, wanted)
    assert data(ours) == data(torch_source_partitions(gm.graph, wanted))
    assert ours[torch.nn.Linear]


# --- replace_pattern -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["make_fx", "export"])
def test_replace_pattern_with_torch_fx_graphs(kind, exported):
    def replacement(a, b):
        return torch.ops.aten.mul.Tensor(torch.ops.aten.sigmoid.default(a), b)

    ours, theirs = _make(kind, exported), _make(kind, exported)
    pattern = make_fx(_aten_pattern)(X, X.clone()).graph
    rep = make_fx(replacement)(X, X.clone()).graph
    got = replace_pattern(ours, pattern, rep)
    want = tfx.replace_pattern(theirs, pattern, rep)
    assert ours.code == theirs.code
    assert [sorted(p.name for p in m.nodes_map) for m in got] == [
        sorted(p.name for p in m.nodes_map) for m in want
    ]
    torch.testing.assert_close(ours(X), theirs(X))
    ours.graph.lint()


def test_replace_pattern_with_callables_on_symbolic_trace():
    def pattern(x):
        return torch.relu(x)

    def replacement(x):
        return torch.sigmoid(x)

    ours, theirs = tfx.symbolic_trace(Net()), tfx.symbolic_trace(Net())
    replace_pattern(ours, pattern, replacement)
    tfx.replace_pattern(theirs, pattern, replacement)
    assert ours.code == theirs.code
    assert describe(ours.graph) == describe(theirs.graph)


def test_replace_pattern_with_filters_on_make_fx():
    from torch.fx.subgraph_rewriter import replace_pattern_with_filters as torch_rpwf

    def graph_fn(x, y):
        return torch.ops.aten.relu.default(x) + y, torch.ops.aten.relu.default(y) + x

    def pattern(a, b):
        return torch.ops.aten.add.Tensor(torch.ops.aten.relu.default(a), b)

    def replacement(a, b):
        return torch.ops.aten.sub.Tensor(a, b)

    def only_first(match, original_graph, pattern_graph):
        return any(n.name == "add" for n in match.nodes_map.values())

    ours, theirs = make_fx(graph_fn)(X, X.clone()), make_fx(graph_fn)(X, X.clone())
    args = (
        make_fx(pattern)(X, X.clone()).graph,
        make_fx(replacement)(X, X.clone()).graph,
        [only_first],
    )
    got = replace_pattern_with_filters(ours, *args)
    want = torch_rpwf(theirs, *args)
    assert ours.code == theirs.code
    assert [[n.name for n in r.replacements] for r in got] == [
        [n.name for n in r.replacements] for r in want
    ]


_OPS = [torch.relu, torch.sigmoid, torch.neg, operator.add]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(range(len(_OPS))), min_size=1, max_size=12))
def test_replace_pattern_random_torch_fx_graphs(picks):
    """Random chains traced by torch.fx; fxkit's rewrite equals torch.fx's, code and all."""

    def build():
        g = tfx.Graph()
        x = g.placeholder("x")
        cur = x
        for i in picks:
            op = _OPS[i]
            cur = g.call_function(op, (cur, x) if op is operator.add else (cur,))
        g.output(cur)
        return tfx.GraphModule(torch.nn.Module(), g)

    def pattern(a, b):
        return torch.relu(a) + b

    def replacement(a, b):
        return torch.sub(b, a)

    ours, theirs = build(), build()
    got = replace_pattern(ours, pattern, replacement)
    want = tfx.replace_pattern(theirs, pattern, replacement)
    assert len(got) == len(want)
    assert ours.code == theirs.code
    ours.graph.lint()


# --- errors on bad input: torch.fx's type, torch.fx's text ---------------------------------------


def _failure(fn):
    try:
        fn()
    except Exception as e:
        return e
    raise AssertionError("did not raise")


def _same_failure(ours_fn, theirs_fn, same_cause=True):
    ours, theirs = _failure(ours_fn), _failure(theirs_fn)
    assert isinstance(ours, type(theirs)), (ours, theirs)
    # torch.fx appends "While executing <node>..." to the message; fxkit puts that in a note.
    text = str(theirs).split("\n\nWhile executing")[0]
    assert text in str(ours)
    if same_cause:
        assert type(ours.__cause__) is type(theirs.__cause__)
    return ours


def _graph_module(lib, build):
    g = lib.Graph()
    build(g)
    root = torch.nn.Module()
    root.missing = torch.nn.Linear(4, 4)
    root.sub = torch.nn.Linear(4, 4)
    gm = lib.GraphModule(root, g)
    # Attributes the graph names but the module no longer has.
    for name in ("missing", "sub"):
        if hasattr(gm, name):
            delattr(gm, name)
    return gm


def _boom(x):
    return {}[x]


@pytest.mark.parametrize(
    "build,args",
    [
        (lambda g: g.output(g.placeholder("x")), ()),  # too few inputs
        (lambda g: g.output(g.get_attr("missing.weight")), ()),  # missing attribute
        (lambda g: g.output(g.call_function(_boom, (g.placeholder("x"),))), (1,)),  # KeyError
        (lambda g: g.output(g.call_method("nope", (g.placeholder("x"),))), (X,)),
        (lambda g: g.output(g.call_module("sub", (g.placeholder("x"),))), (X,)),
    ],
)
def test_interpreter_errors_equal_torch_fx(build, args):
    ours_gm, theirs_gm = _graph_module(fxkit, build), _graph_module(tfx, build)
    # Running out of inputs: torch.fx chains the StopIteration, fxkit does not.
    cause = bool(args)
    _same_failure(
        lambda: Interpreter(ours_gm).run(*args),
        lambda: tfx.Interpreter(theirs_gm).run(*args),
        same_cause=cause,
    )
    # And on the torch.fx module itself.
    _same_failure(
        lambda: Interpreter(theirs_gm).run(*args),
        lambda: tfx.Interpreter(theirs_gm).run(*args),
        same_cause=cause,
    )


def test_interpreter_boxed_run_and_env_errors_equal_torch_fx():
    gm = tfx.symbolic_trace(Net())
    _same_failure(
        lambda: Interpreter(gm).boxed_run([X, X]), lambda: tfx.Interpreter(gm).boxed_run([X, X])
    )
    lin = next(n for n in gm.graph.nodes if n.op == "call_module")
    _same_failure(
        lambda: Interpreter(gm).map_nodes_to_values(lin.args, lin),
        lambda: tfx.Interpreter(gm).map_nodes_to_values(lin.args, lin),
    )


@pytest.mark.parametrize("hook,target", [("call_function", "relu"), ("call_method", torch.relu),
                                         ("call_module", torch.relu), ("get_attr", 3),
                                         ("placeholder", 3)])  # fmt: skip
def test_interpreter_hook_target_types_equal_torch_fx(hook, target):
    gm = tfx.symbolic_trace(Net())
    _same_failure(
        lambda: getattr(Interpreter(gm), hook)(target, (X,), {}),
        lambda: getattr(tfx.Interpreter(gm), hook)(target, (X,), {}),
    )


@pytest.mark.parametrize("make", [lambda: 42, lambda: torch.nn.Linear(2, 2)])
def test_constructor_errors_equal_torch_fx(make):
    _same_failure(lambda: Interpreter(make()), lambda: tfx.Interpreter(make()))
    _same_failure(lambda: Transformer(make()), lambda: tfx.Transformer(make()))
    _same_failure(lambda: ShapeProp(make()), lambda: TorchShapeProp(make()))


def test_shape_prop_error_equals_torch_fx(capsys):
    def build(g):
        g.output(g.call_function(torch.matmul, (g.placeholder("x"), g.placeholder("y"))))

    ours_gm, theirs_gm = _graph_module(tfx, build), _graph_module(tfx, build)
    bad = (torch.randn(2, 3), torch.randn(4, 5))
    err = _same_failure(
        lambda: ShapeProp(ours_gm).propagate(*bad),
        lambda: TorchShapeProp(theirs_gm).propagate(*bad),
    )
    assert str(err).startswith("ShapeProp error for: node=%matmul")
