"""fxkit.passes.reinplace against torch.fx.passes.reinplace on make_fx(functionalize(f)) graphs:
same resulting graph (ops, targets, args, names), same outputs, inputs left alone."""

from __future__ import annotations

import copy
import operator
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functionalize
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.reinplace import reinplace as torch_reinplace

import fxkit
from fxkit.interop import from_torch_fx
from fxkit.passes.reinplace import (
    _get_view_type,
    _maybe_get_inplace_op,
    _ViewType,
    reinplace,
)

aten = torch.ops.aten

# FakeTensor storages are compared through StorageWeakRef, which reads a data pointer; torch's
# own pass triggers the same deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")


def _trace(f, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_fx(functionalize(f))(*args)


def _signature(gm):
    """The graph as (op, target, args) with nodes named by position: independent of names
    that torch.fx's graphs reserve for erased nodes and a converted graph does not."""
    position = {n: i for i, n in enumerate(gm.graph.nodes)}

    def arg(a):
        if hasattr(a, "op") and hasattr(a, "users"):
            return ("%", position[a])
        if isinstance(a, (list, tuple)):
            return tuple(arg(x) for x in a)
        if isinstance(a, dict):
            return tuple((k, arg(v)) for k, v in a.items())
        return a

    return [(n.op, n.target, arg(n.args), arg(n.kwargs)) for n in gm.graph.nodes]


def _check(f, *args):
    """Run both passes; return the fxkit result (on a converted graph)."""
    traced = _trace(f, *args)
    theirs = torch_reinplace(copy.deepcopy(traced), *args)
    ours_on_torch_gm = reinplace(copy.deepcopy(traced), *args)
    ours = reinplace(from_torch_fx(copy.deepcopy(traced)), *args)
    assert isinstance(ours, fxkit.GraphModule)
    assert ours_on_torch_gm.code == theirs.code
    assert [n.name for n in ours_on_torch_gm.graph.nodes] == [n.name for n in theirs.graph.nodes]
    assert _signature(ours) == _signature(theirs)
    snapshot = [a.clone() for a in args]
    torch.testing.assert_close(ours(*args), f(*[a.clone() for a in args]))
    for before, after in zip(snapshot, args):
        torch.testing.assert_close(before, after)  # inputs are never mutated
    return ours


def _targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def f_chain(x):
    a = x.clone()
    return a.add(1).mul(2).relu()


def f_input_only(x):
    return x.add(1)  # x is an input: never written


def f_view_read_later(x):
    a = x.clone()
    v = a.view(-1)
    b = a.add(1)
    return v, b  # v aliases a and is read after the add


def f_self_read_later(x):
    a = x.clone()
    b = a.add(1)
    return b, a.sum()


def f_select_mutation(x):
    a = x.clone()
    a[0].add_(1)
    return a


def f_slice_and_diag(x):
    a = torch.zeros(4, 4)
    a[1:3, :].mul_(2)
    a.diagonal().add_(x[0])
    return a


def f_slice_scatter(x):
    a = x.clone()
    return torch.slice_scatter(a, x[:2] * 3, 0, 0, 2)


def f_select_scatter(x):
    a = x.clone()
    return torch.select_scatter(a, x[1] + 1, 0, 1)


def f_diagonal_scatter(x):
    a = x.clone()
    return torch.diagonal_scatter(a, x.diagonal() * 2)


def f_as_strided_scatter(x):
    a = x.clone()
    return torch.as_strided_scatter(a, x[0] * 2, (4,), (1,), 0)


def f_index_put(x):
    a = x.clone()
    return torch.index_put(a, (torch.tensor([0, 2]),), torch.ones(2, 4))


def f_square(x):
    a = x.clone()
    return torch.mul(a, a)  # mul_(a, a) is not guaranteed sound


def f_broadcast(x):
    s = x.sum()
    return s.add(x)  # self would have to grow


def f_dtype_change(x):
    a = x.to(torch.int64)
    return torch.add(a, 0.5)  # the result is float


def f_overlap(x):
    a = torch.ones(1).expand(4, 4)
    return a.add(x)  # self has internal overlap


def f_split(x):
    a = x.clone()
    p, q = a.split(2)
    p.add_(1)
    return a, q


def f_nested_views(x):
    a = x.clone()
    a[1][2:].mul_(3)
    a.t()[0].add_(1)
    return a


CASES = [
    f_chain,
    f_input_only,
    f_view_read_later,
    f_self_read_later,
    f_select_mutation,
    f_slice_and_diag,
    f_slice_scatter,
    f_select_scatter,
    f_diagonal_scatter,
    f_as_strided_scatter,
    f_index_put,
    f_square,
    f_broadcast,
    f_dtype_change,
    f_overlap,
    f_split,
    f_nested_views,
]


@pytest.mark.parametrize("f", CASES, ids=[f.__name__ for f in CASES])
def test_same_graph_and_outputs_as_torch(f):
    _check(f, torch.randn(4, 4))


def test_chain_becomes_inplace():
    gm = _check(f_chain, torch.randn(3, 3))
    assert _targets(gm) == [
        aten.clone.default,
        aten.add_.Tensor,
        aten.mul_.Tensor,
        aten.relu_.default,
    ]


def test_aliasing_and_inputs_forbid():
    assert aten.add_.Tensor not in _targets(_check(f_input_only, torch.randn(2, 2)))
    assert aten.add_.Tensor not in _targets(_check(f_view_read_later, torch.randn(2, 2)))
    assert aten.add_.Tensor not in _targets(_check(f_self_read_later, torch.randn(2, 2)))
    assert aten.mul_.Tensor not in _targets(_check(f_square, torch.randn(2, 2)))


def test_scatter_becomes_view_copy():
    gm = _check(f_slice_scatter, torch.randn(4, 4))
    targets = _targets(gm)
    assert aten.slice_scatter.default not in targets
    assert aten.copy_.default in targets


def test_functionalized_mutation_round_trips():
    gm = _check(f_select_mutation, torch.randn(3, 2))
    targets = _targets(gm)
    assert aten.select_scatter.default not in targets
    assert aten.add_.Tensor in targets


def test_metadata_recorded():
    gm = reinplace(from_torch_fx(_trace(f_select_mutation, torch.randn(3, 2))), torch.randn(3, 2))
    nodes = list(gm.graph.nodes)
    # Positions from before the pass: strictly increasing, with a gap for the deleted scatter.
    positions = [n.meta["node_idx"] for n in nodes if "node_idx" in n.meta]
    assert positions == sorted(set(positions)) and positions[0] == 0
    assert len(positions) < positions[-1] + 1
    select = next(n for n in nodes if n.target is aten.select.int)
    assert select.meta["view_of"].target is aten.clone.default
    assert isinstance(select.meta["fake_result"], torch._subclasses.FakeTensor)


def test_meta_val_left_alone():
    traced = from_torch_fx(_trace(f_chain, torch.randn(3)))
    before = {n.name: n.meta.get("val") for n in traced.graph.nodes}
    reinplace(traced, torch.randn(3))
    assert all(n.meta.get("val") is before[n.name] for n in traced.graph.nodes)


def test_on_fxkit_make_fx_output():
    from fxkit.experimental.proxy_tensor import make_fx as fxkit_make_fx

    x = torch.randn(4, 4)
    for f in (f_chain, f_select_mutation, f_slice_and_diag, f_view_read_later):
        ours = reinplace(fxkit_make_fx(functionalize(f))(x), x)
        theirs = torch_reinplace(_trace(f, x), x)
        assert _signature(ours) == _signature(theirs)
        torch.testing.assert_close(ours(x), f(x))


def test_helpers():
    assert _get_view_type(aten.view.default) is _ViewType.SingleOutputView
    assert _get_view_type(aten.split.Tensor) is _ViewType.MultiOutputView
    assert _get_view_type(aten.add.Tensor) is _ViewType.NonView
    assert _get_view_type(operator.add) is _ViewType.NonView
    assert _maybe_get_inplace_op(aten.add.Tensor) is aten.add_.Tensor
    assert _maybe_get_inplace_op(aten.pow.Scalar) is None  # pow_ has no matching overload
    assert _maybe_get_inplace_op(aten.view.default) is None
    assert _maybe_get_inplace_op(operator.add) is None


# --- bad input --------------------------------------------------------------------------------


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e)
    return None


@pytest.mark.parametrize(
    "make_args",
    [
        pytest.param(lambda gm: (gm,), id="missing-sample-args"),
        pytest.param(lambda gm: (gm, torch.randn(2), torch.randn(2)), id="extra-args-accepted"),
        pytest.param(lambda gm: (gm, "not a tensor"), id="string-sample-arg"),
        pytest.param(lambda gm: (gm.graph, torch.randn(2)), id="graph-not-module"),
        pytest.param(lambda gm: (torch.nn.Linear(2, 2), torch.randn(2)), id="not-a-graph-module"),
    ],
)
def test_bad_input_same_exception_type(make_args):
    traced = _trace(f_chain, torch.randn(2))
    theirs = _raised(lambda: torch_reinplace(*make_args(copy.deepcopy(traced))))
    ours = _raised(lambda: reinplace(*make_args(from_torch_fx(copy.deepcopy(traced)))))
    if theirs is None:
        assert ours is None
    else:
        assert ours is not None and issubclass(ours, theirs), (ours, theirs)


# --- property: random functional aten programs -------------------------------------------------

_UNARY = ("add", "mul", "neg", "relu", "sub_x", "from_input")
_VIEWS = ("rows", "cols", "t")


def _program(steps):
    """A function doing ``steps`` (op, which-value) steps on clones and views of its input,
    mixing out-of-place ops with in-place writes through views (functionalized into
    scatters), so the pass sees chains, aliases and values read again later."""

    def view(t, kind):  # 2-d views, so every value can be combined with x
        if kind == "rows":
            return t[1:3]
        if kind == "cols":
            return t[:, 1:3]
        return t.t()

    def write_target(t, kind):  # where an in-place write lands: also select and diagonal
        if kind == "rows":
            return t[1]
        if kind == "cols":
            return t[:, 1:3]
        return t.diagonal()

    def f(x):
        values = [x.clone()]
        for op, pick, kind in steps:
            src = values[pick % len(values)]
            if op == "add":
                values.append(src + 1)
            elif op == "mul":
                values.append(src * 2)
            elif op == "neg":
                values.append(-src)
            elif op == "relu":
                values.append(torch.relu(src))
            elif op == "from_input":
                values.append(x[: src.shape[0], : src.shape[1]] + src)  # self is an input
            elif op == "sub_x":
                values.append(src - x[: src.shape[0], : src.shape[1]])
            elif op == "write":
                write_target(src, kind).mul_(3)  # functionalize: a *_scatter back into src
            else:
                values.append(view(src, kind))
        return tuple(v * 1 for v in values[-3:]) + (values[0],)

    return f


_STEP = st.tuples(
    st.sampled_from(_UNARY + ("write", "view")),
    st.integers(0, 7),
    st.sampled_from(_VIEWS),
)


@settings(max_examples=20, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=8))
def test_property_random_programs(steps):
    f = _program(steps)
    x = torch.randn(4, 4)
    gm = _check(f, x)
    # Structural: no in-place op writes an input.
    placeholders = {n for n in gm.graph.nodes if n.op == "placeholder"}
    for n in gm.graph.nodes:
        if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload):
            if n.target._schema.name.endswith("_"):
                assert n.args[0] not in placeholders
