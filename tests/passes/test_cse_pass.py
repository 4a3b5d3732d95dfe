"""CSEPass compared with torch.fx's on the zoo, on make_fx (aten) graphs and on random graphs;
the cases where fxkit deliberately differs (random, in-place and impure ops are never merged);
errors."""

from __future__ import annotations

import operator
import sys

import pytest
import torch
import torch.fx as tfx
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.dialect.common import cse_pass as tcse

import fxkit
from fxkit.interop import from_torch_fx, to_torch_fx
from fxkit.passes.dialect.common.cse_pass import CSEPass, get_CSE_banned_ops
from zoo import CASES, example, graph_signature, tensors_of, trace

aten = torch.ops.aten


def both(result_ours, result_theirs):
    """Signatures and generated code of two PassResults, after checking they agree."""
    assert result_ours.modified == result_theirs.modified
    ours, theirs = result_ours.graph_module, result_theirs.graph_module
    assert graph_signature(ours, meta=False) == graph_signature(theirs, meta=False)
    assert ours.code.replace("fxkit.", "torch.fx.") == theirs.code
    return ours


def run_all(gm, args, seed=0):
    """Outputs and the generator state after running ``gm`` on copies of ``args``."""
    torch.manual_seed(seed)
    out = gm(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    return tensors_of(out), torch.get_rng_state()


def assert_same_run(before, after, args):
    out_a, rng_a = run_all(before, args)
    out_b, rng_b = run_all(after, args)
    assert len(out_a) == len(out_b)
    for a, b in zip(out_a, out_b):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(rng_a, rng_b)  # as many random draws after CSE as before


def calls(gm, name):
    return sum(1 for n in gm.graph.nodes if n.op != "output" and name in str(n.target))


# --- same result as torch.fx ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_zoo_matches_torch_fx(case):
    ours_in, theirs_in = trace(case, fxkit), trace(case, tfx)
    before = graph_signature(ours_in)
    ours = CSEPass()(ours_in)
    assert graph_signature(ours_in) == before  # the input module is left alone
    try:
        theirs = tcse.CSEPass()(theirs_in)
    except TypeError as e:
        # torch.fx hashes slice constants, which Python 3.11 cannot; fxkit keys them.
        assert "slice" in str(e) and sys.version_info < (3, 12)
        args, kwargs = example(case)
        expected = tensors_of(ours_in(*args, **kwargs))
        got = tensors_of(ours.graph_module(*args, **kwargs))
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
        return
    both(ours, theirs)
    if not ours.modified:
        assert ours.graph_module is ours_in


def _dupes(a, b):
    x = a * b
    y = a * b
    s = torch.sin(x) + torch.sin(y)
    c = torch.cat([s, x], 0)
    d = torch.cat([s, x], 0)
    return c.sum(0, keepdim=True) + d.sum(0, keepdim=True) + s.sum(dim=0) + y.sum(dim=0)


def _no_dupes(a, b):
    return torch.relu(a) + b


@pytest.mark.parametrize("fn", [_dupes, _no_dupes])
def test_make_fx_graphs_match_torch_fx(fn):
    args = (torch.randn(3, 4), torch.randn(3, 4))
    theirs_in = make_fx(fn)(*args)
    ours_in = from_torch_fx(theirs_in)
    ours = both(CSEPass()(ours_in), tcse.CSEPass()(theirs_in))
    assert isinstance(ours, fxkit.GraphModule)
    assert torch.equal(ours(*args), fn(*args))
    # A torch.fx module goes through fxkit's pass too and stays a torch.fx module.
    mixed = CSEPass()(theirs_in).graph_module
    assert isinstance(mixed, tfx.GraphModule)
    assert graph_signature(mixed, meta=False) == graph_signature(ours, meta=False)


@pytest.mark.parametrize("name", ["mlp", "resnet", "math_ops", "operators", "torch_calls"])
def test_make_fx_of_zoo_models_matches_torch_fx(name):
    case = next(c for c in CASES if c.name == name)
    model = trace(case, tfx).eval()  # training-mode batch norm writes running stats
    args, _ = example(case)
    theirs_in = make_fx(model)(*args)
    ours_in = from_torch_fx(theirs_in)
    ours = both(CSEPass()(ours_in), tcse.CSEPass()(theirs_in))
    assert_same_run(ours_in, ours, args)


def _symbolic(a):
    b = a.relu()
    c = a.relu()
    return b + c + torch.neg(b) + torch.neg(c) + F.dropout(a, 0.5, False) * F.dropout(a, 0.5, False)


def test_symbolic_trace_with_methods_and_eval_dropout_matches_torch_fx():
    ours = both(
        CSEPass()(fxkit.symbolic_trace(_symbolic)), tcse.CSEPass()(tfx.symbolic_trace(_symbolic))
    )
    assert calls(ours, "relu") == 1 and calls(ours, "dropout") == 1


def test_banned_ops_match_torch_fx():
    assert get_CSE_banned_ops() == tcse.get_CSE_banned_ops()
    assert get_CSE_banned_ops() is not get_CSE_banned_ops()
    args = (torch.randn(3, 4), torch.randn(3, 4))
    theirs_in = make_fx(_dupes)(*args)
    banned = {aten.mul, aten.sin}
    ours = both(CSEPass(banned)(from_torch_fx(theirs_in)), tcse.CSEPass(banned)(theirs_in))
    assert calls(ours, "mul") == 2 and calls(ours, "sin") == 2 and calls(ours, "cat") == 1
    assert CSEPass().banned_ops == set() and CSEPass(banned).banned_ops is banned


def test_is_an_fxkit_pass():
    from fxkit.passes.infra.pass_base import PassBase, PassResult

    result = CSEPass()(fxkit.symbolic_trace(_symbolic))
    assert isinstance(CSEPass(), PassBase) and isinstance(result, PassResult)
    gm, modified = result
    assert modified is True and isinstance(gm, fxkit.GraphModule)


def test_meta_is_kept():
    gm = fxkit.symbolic_trace(_symbolic)
    for n in gm.graph.nodes:
        n.meta["tag"] = n.name
    out = CSEPass()(gm).graph_module
    assert all(n.meta["tag"] == n.name for n in out.graph.nodes)


# --- never merged by fxkit (torch.fx merges some of these) -----------------------------


def _random_functional(a):
    return (
        F.dropout(a, 0.5) + F.dropout(a, 0.5) + torch.dropout(a, 0.5, True)
        + torch.dropout(a, 0.5, True) + torch.rand_like(a) + torch.rand_like(a)
        + torch.randn_like(a) + torch.randn_like(a) + torch.randint_like(a, 5)
        + torch.randint_like(a, 5) + torch.rand(3, 4) + torch.rand(3, 4)
        + torch.bernoulli(a.sigmoid()) + torch.bernoulli(a.sigmoid())
        + torch.normal(a, 1.0) + torch.normal(a, 1.0)
        + torch.multinomial(a.abs() + 0.1, 2, True).float().sum() * 2
        + torch.multinomial(a.abs() + 0.1, 2, True).float().sum()
        + F.rrelu(a, training=True) + F.rrelu(a, training=True)
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["symbolic", "aten"])
def test_random_ops_are_never_merged(kind):
    a = torch.randn(3, 4)
    if kind == "symbolic":
        gm = fxkit.symbolic_trace(_random_functional)
        theirs = tcse.CSEPass()(tfx.symbolic_trace(_random_functional)).graph_module
        # torch.fx merges the two dropouts and the two rand calls: fewer draws.
        assert calls(theirs, "dropout") < calls(gm, "dropout")
        assert calls(theirs, "rand") < calls(gm, "rand")
    else:
        gm = from_torch_fx(make_fx(_random_functional)(a))
    result = CSEPass()(gm)
    names = [
        "rand_like",
        "randn_like",
        "randint_like",
        "bernoulli",
        "normal",
        "multinomial",
        "rrelu",
    ]
    names += ["dropout"] if kind == "symbolic" else ["rand.default", "bernoulli_"]
    for name in names:
        assert calls(result.graph_module, name) == calls(gm, name) >= 2, name
    assert calls(result.graph_module, "sigmoid") == 1  # pure neighbours still merge
    assert_same_run(gm, result.graph_module, (a,))


def test_training_modules_are_not_merged_but_eval_ones_are():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)
            self.bn = torch.nn.BatchNorm1d(4)
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.drop(x) + self.drop(x) + self.bn(x) + self.bn(x) + self.lin(x) + self.lin(x)

    m = M()
    train = CSEPass()(fxkit.symbolic_trace(m)).graph_module
    assert [calls(train, k) for k in ("drop", "bn", "lin")] == [2, 2, 1]
    m.eval()
    ours, theirs = CSEPass()(fxkit.symbolic_trace(m)), tcse.CSEPass()(tfx.symbolic_trace(m))
    assert [calls(both(ours, theirs), k) for k in ("drop", "bn", "lin")] == [1, 1, 1]


def _mutating(a):
    b = a + 1
    c = a + 1  # merged with b: nothing wrote to ``a`` in between
    a.add_(1)
    d = a + 1  # after the write: a different value
    a.add_(1)
    e = torch.add(a, 1, out=torch.empty(3))
    f = torch.add(a, 1, out=torch.empty(3))
    g = F.relu(a, inplace=True)
    h = F.relu(a, True)
    return b, c, d, e, f, g, h


def test_mutations_are_never_merged_and_split_pure_ops():
    gm = fxkit.symbolic_trace(_mutating)
    result = CSEPass()(gm).graph_module
    assert calls(result, "add_") == 2 and calls(result, "relu") == 2
    assert sum(n.target is torch.add for n in result.graph.nodes) == 2
    assert sum(n.target is operator.add for n in result.graph.nodes) == 2
    assert_same_run(gm, result, (torch.randn(3),))
    aten_gm = from_torch_fx(make_fx(_mutating)(torch.randn(3)))
    out = CSEPass()(aten_gm).graph_module
    assert calls(out, "add_") == calls(aten_gm, "add_") == 2
    assert_same_run(aten_gm, out, (torch.randn(3),))


def test_impure_nodes_are_never_merged():
    g = fxkit.Graph()
    x = g.placeholder("x")
    for _ in range(2):
        g.call_function(operator.setitem, (x, 0, 1.0))
    a = g.call_function(torch._assert, (True, "msg"))
    b = g.call_function(torch._assert, (True, "msg"))
    g.output((a, b))
    gm = fxkit.GraphModule(torch.nn.Module(), g)
    assert all(n.is_impure() for n in gm.graph.nodes if n.op == "call_function")
    assert CSEPass()(gm).modified is False


def test_constants_of_different_types_are_not_merged():
    g = fxkit.Graph()
    x = g.placeholder("x")
    g.output((g.call_function(torch.add, (x, 1)), g.call_function(torch.add, (x, 1.0))))
    gm = fxkit.GraphModule(torch.nn.Module(), g)
    result = CSEPass()(gm)
    assert result.modified is False  # torch.fx merges them, changing the int result's dtype
    assert [t.dtype for t in result.graph_module(torch.ones(2, dtype=torch.long))] == [
        torch.long,
        torch.float32,
    ]


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 3, torch.nn.Linear(2, 2)])
def test_bad_module_raises_like_torch_fx(bad):
    with pytest.raises(Exception) as theirs:
        tcse.CSEPass()(bad)
    with pytest.raises(type(theirs.value)) as ours:
        CSEPass()(bad)
    assert str(theirs.value) in str(ours.value)


def test_bad_banned_ops_raises_like_torch_fx():
    gm_t = tfx.symbolic_trace(_no_dupes)
    with pytest.raises(TypeError) as theirs:
        tcse.CSEPass(banned_ops=5)(gm_t)
    with pytest.raises(TypeError) as ours:
        CSEPass(banned_ops=5)(fxkit.symbolic_trace(_no_dupes))
    assert str(theirs.value) in str(ours.value)


# --- random graphs ----------------------------------------------------------------------

# (name, kind, builder): builder(graph, a, b) adds one node.
PURE = [
    ("sin", lambda g, a, b: g.call_function(torch.sin, (a,))),
    ("add", lambda g, a, b: g.call_function(torch.add, (a, b))),
    ("mul2", lambda g, a, b: g.call_function(operator.mul, (a, 2))),
    ("relu", lambda g, a, b: g.call_method("relu", (a,))),
    ("cumsum", lambda g, a, b: g.call_function(torch.cumsum, (a,), {"dim": 0})),
]
RANDOM = [
    ("rand_like", lambda g, a, b: g.call_function(torch.rand_like, (a,))),
    ("dropout", lambda g, a, b: g.call_function(F.dropout, (a, 0.5, True))),
    ("normal", lambda g, a, b: g.call_function(torch.normal, (a, 1.0))),
]
IMPURE = [
    ("add_", lambda g, a, b: g.call_method("add_", (a, 1))),
    ("mul_", lambda g, a, b: g.call_method("mul_", (a, b))),
]


def _programs(pool):
    step = st.tuples(st.integers(0, len(pool) - 1), st.integers(0, 4), st.integers(0, 4))
    # Each program runs twice over, so most steps have a duplicate (or a second draw).
    return st.lists(step, min_size=1, max_size=8).map(lambda p: p + p)


def _build(lib, program, pool):
    g = lib.Graph()
    values = [g.placeholder("x"), g.placeholder("y")]
    for op, i, j in program:
        a, b = values[i % len(values)], values[j % len(values)]
        values.append(pool[op][1](g, a, b))
    g.output(tuple(values[2:]))
    return lib.GraphModule(torch.nn.Module(), g)


MIXED = PURE + RANDOM + IMPURE


@settings(max_examples=60, deadline=None)
@given(_programs(MIXED))
def test_property_mixed_graphs_keep_outputs_and_draws(program):
    gm = _build(fxkit, program, MIXED)
    result = CSEPass()(gm)
    for name, *_ in RANDOM + IMPURE:
        assert calls(result.graph_module, name) == calls(gm, name)
    args = (torch.randn(2, 3), torch.randn(2, 3))
    assert_same_run(gm, result.graph_module, args)


@settings(max_examples=60, deadline=None)
@given(_programs(PURE))
def test_property_pure_graphs_match_torch_fx(program):
    ours = CSEPass()(_build(fxkit, program, PURE))
    theirs = tcse.CSEPass()(_build(tfx, program, PURE))
    both(ours, theirs)


def test_buffers_written_later_are_not_merged():
    g = fxkit.Graph()
    a = g.placeholder("a")
    first = g.call_function(aten.empty_like.default, (a,))
    second = g.call_function(aten.empty_like.default, (a,))
    g.output(
        (
            g.call_function(aten.bernoulli_.float, (first, 0.5)),
            g.call_function(aten.bernoulli_.float, (second, 0.5)),
        )
    )
    gm = fxkit.GraphModule(torch.nn.Module(), g)
    result = CSEPass()(gm)
    assert result.modified is False
    assert_same_run(gm, result.graph_module, (torch.zeros(64),))
    # torch.fx fills one buffer twice: both outputs become the same tensor.
    theirs = tcse.CSEPass()(to_torch_fx(gm)).graph_module
    out = theirs(torch.zeros(64))
    assert out[0] is out[1]


@pytest.mark.parametrize(
    "target, extra",
    [
        (aten.dropout.default, (0.5, True)),
        (aten.native_dropout.default, (0.5, True)),
        (aten.bernoulli.p, (0.5,)),
        ("bernoulli", ()),
        (F.dropout, ()),
        (F.alpha_dropout, (0.5, True)),
    ],
    # stable ids (a function's repr holds its address, which differs between xdist workers)
    ids=lambda v: getattr(v, "__name__", None) or str(v),
)
def test_random_targets_of_each_kind_are_not_merged(target, extra):
    graphs = []
    for lib in (fxkit, tfx):
        g = lib.Graph()
        x = g.placeholder("x")
        kind = g.call_method if isinstance(target, str) else g.call_function
        g.output((kind(target, (x, *extra)), kind(target, (x, *extra))))
        graphs.append(lib.GraphModule(torch.nn.Module(), g))
    assert CSEPass()(graphs[0]).modified is False
    assert CSEPass()(graphs[1]).modified is False
    assert tcse.CSEPass()(graphs[1]).modified is True  # torch.fx merges the two draws
