"""fxkit.passes.runtime_assert against torch.fx.passes.runtime_assert: the same assert nodes,
names, messages and example values on graphs with unbacked and symbolic sizes, and the
asserts fire on inputs that break them."""

from __future__ import annotations

import operator
import re
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.fx.passes.runtime_assert import (
    insert_deferred_runtime_asserts as torch_insert_asserts,
)

import fxkit
from fxkit.interop import from_torch_fx
from fxkit.passes.runtime_assert import insert_deferred_runtime_asserts

aten = torch.ops.aten
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor"),
]


def _fake_traced(f, *args):
    """make_fx under an explicit FakeTensorMode with a ShapeEnv: unbacked symbols get
    ``meta["unbacked_bindings"]`` and their facts are deferred to the ShapeEnv."""
    mode = FakeTensorMode(shape_env=ShapeEnv())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mode:
            fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            gm = make_fx(f)(*fake)
    return gm, mode.shape_env


def _symbolic_traced(f, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = make_fx(f, tracing_mode="symbolic")(*args)
    return gm, gm.shape_env


def f_item_bounds(x, y):
    a = x.item()
    torch._check(a >= 2)
    torch._check(a <= 10)
    b = x.sum().item()
    torch._check(a + b < 100)
    return torch.zeros(a), y * y.shape[0]


def f_nonzero(x, y):
    n = x.nonzero()
    torch._check(n.shape[0] > 1, lambda: "need two")
    return n.sum() + y.shape[0] * 2, torch.cat([y, y]).shape[0] + 1


def f_size_like(x, y):
    u = x.item()
    torch._check_is_size(u)
    torch._check(u < y.shape[0])
    return y[:u] * 2, torch.ones(u * 2 + y.shape[0])


def f_constrain(x):
    u = x.item()
    torch.ops.aten.sym_constrain_range_for_size.default(u, min=1, max=6)
    return torch.ones(u) * 3


def f_two_items(x):
    a, b = x.tolist()
    torch._check(a >= 0)
    torch._check(b >= a)
    torch._check(a * b <= 50)
    return torch.zeros(b - a)


def f_bool_item(x):
    b = (x > 0).any().item()  # an unbacked SymBool, bound through an int conversion
    return torch.ones(3) * b


def f_repeat(x, y):
    u = x.item()
    torch._check(u >= 1)
    torch._check(u <= 4)
    z = y.repeat(u, 1)
    return z.sum(0), z.shape[0] * 3  # size of an intermediate: recomputed from u


def f_masked(x):
    m = x[x > 0]
    torch._check(m.shape[0] % 2 == 0)
    return m.view(-1, 2)


def f_no_asserts(x):
    return x * 2 + 1


CASES = {
    "item_bounds": (f_item_bounds, lambda: (torch.tensor(4), torch.randn(3, 2))),
    "nonzero": (f_nonzero, lambda: (torch.tensor([1, 0, 2, 3]), torch.randn(5, 2))),
    "size_like": (f_size_like, lambda: (torch.tensor(3), torch.randn(6))),
    "constrain": (f_constrain, lambda: (torch.tensor(3),)),
    "two_items": (f_two_items, lambda: (torch.tensor([2, 5]),)),
    "bool_item": (f_bool_item, lambda: (torch.randn(3),)),
    "repeat": (f_repeat, lambda: (torch.tensor(2), torch.randn(2, 3))),
    "masked": (f_masked, lambda: (torch.tensor([1.0, -1.0, 2.0, 3.0, 4.0]),)),
    "no_asserts": (f_no_asserts, lambda: (torch.randn(3),)),
}
TRACERS = {"fake": _fake_traced, "symbolic": _symbolic_traced}


def _run_both(case, tracer, export=False):
    f, make_args = CASES[case]
    theirs, their_env = TRACERS[tracer](f, *make_args())
    torch_insert_asserts(theirs, their_env, "test", export=export)
    theirs.recompile()
    ours_torch_gm, env = TRACERS[tracer](f, *make_args())
    insert_deferred_runtime_asserts(ours_torch_gm, env, "test", export=export)
    ours_torch_gm.recompile()
    traced, env = TRACERS[tracer](f, *make_args())
    ours = from_torch_fx(traced)
    insert_deferred_runtime_asserts(ours, env, "test", export=export)
    ours.recompile()
    return theirs, ours_torch_gm, ours


def _signature(gm):
    """Graph as (op, target, args) with nodes named by position, so that a converted graph
    (which does not reserve the names torch.fx keeps for erased nodes) compares equal."""
    nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    by_name = {n.name: i for i, n in enumerate(nodes)}

    def arg(a):
        if hasattr(a, "op") and hasattr(a, "users"):
            return ("%", position[a])
        if isinstance(a, str):
            return re.sub(r"on node '(\w+)'", lambda m: f"on node #{by_name[m.group(1)]}", a)
        if isinstance(a, (list, tuple)):
            return tuple(arg(x) for x in a)
        if isinstance(a, dict):
            return tuple((k, arg(v)) for k, v in a.items())
        return a

    return [(n.op, n.target, arg(n.args), arg(n.kwargs)) for n in nodes]


def _vals(gm):
    return [(sorted(n.meta), repr(n.meta.get("val"))) for n in gm.graph.nodes]


@pytest.mark.parametrize("tracer", list(TRACERS))
@pytest.mark.parametrize("case", list(CASES))
def test_same_asserts_as_torch(case, tracer):
    theirs, ours_torch_gm, ours = _run_both(case, tracer)
    assert ours_torch_gm.code == theirs.code
    assert _vals(ours_torch_gm) == _vals(theirs)
    assert _signature(ours) == _signature(theirs)
    assert isinstance(ours, fxkit.GraphModule)
    _, make_args = CASES[case]
    args = make_args()
    expected = theirs(*args)
    torch.testing.assert_close(ours(*args), expected)


@pytest.mark.parametrize("case", ["item_bounds", "two_items"])
def test_export_lowering_same_as_torch(case):
    theirs, ours_torch_gm, ours = _run_both(case, "fake", export=True)
    assert ours_torch_gm.code == theirs.code
    assert _signature(ours) == _signature(theirs)


def _assert_nodes(gm):
    return [n for n in gm.graph.nodes if n.target is aten._assert_scalar.default]


def test_expected_asserts_present():
    _, _, ours = _run_both("item_bounds", "fake")
    messages = [n.args[1] for n in _assert_nodes(ours)]
    assert [m.split(" on node")[0] for m in messages] == [
        "Runtime assertion failed for expression u0 >= 2",
        "Runtime assertion failed for expression u0 <= 10",
        "Runtime assertion failed for expression u1 <= 97",
        "Runtime assertion failed for expression u0 + u1 < 100",
    ]
    # The asserts come right after the .item() that binds their symbols.
    order = [n.target for n in ours.graph.nodes]
    assert order.index(aten._local_scalar_dense.default) < order.index(aten._assert_scalar.default)


def test_explicit_constrain_calls_are_replaced():
    _, _, ours = _run_both("constrain", "fake")
    targets = [n.target for n in ours.graph.nodes]
    assert aten.sym_constrain_range_for_size.default not in targets
    messages = [n.args[1].split(" on node")[0] for n in _assert_nodes(ours)]
    assert messages == [
        "Runtime assertion failed for expression u0 >= 1",
        "Runtime assertion failed for expression u0 <= 6",
    ]


@pytest.mark.parametrize(
    "case, bad_args",
    [
        ("item_bounds", lambda: (torch.tensor(1), torch.randn(3, 2))),  # u0 >= 2
        ("item_bounds", lambda: (torch.tensor(11), torch.randn(3, 2))),  # u0 <= 10
        ("constrain", lambda: (torch.tensor(9),)),  # u0 <= 6
        ("two_items", lambda: (torch.tensor([3, 1]),)),  # b >= a
        ("two_items", lambda: (torch.tensor([6, 9]),)),  # a * b <= 50
        ("nonzero", lambda: (torch.tensor([0, 0, 5]), torch.randn(5, 2))),  # two nonzeros
        ("repeat", lambda: (torch.tensor(5), torch.randn(2, 3))),  # u <= 4
        ("masked", lambda: (torch.tensor([1.0, 2.0, 3.0]),)),  # even count
    ],
    ids=[
        "too-small",
        "too-large",
        "constrained",
        "order",
        "product",
        "nonzero-count",
        "repeat-bound",
        "masked-even",
    ],
)
def test_asserts_fire_on_bad_inputs(case, bad_args):
    theirs, _, ours = _run_both(case, "fake")
    with pytest.raises(RuntimeError) as their_error:
        theirs(*bad_args())
    with pytest.raises(type(their_error.value)):
        ours(*bad_args())


def test_graph_without_shape_facts_is_unchanged():
    _, _, ours = _run_both("no_asserts", "fake")
    assert [n.target for n in ours.graph.nodes if n.op == "call_function"] == [
        aten.mul.Tensor,
        aten.add.Tensor,
    ]


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return type(e)
    return None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda gm, env: (gm, None, "t"), id="no-shape-env"),
        pytest.param(lambda gm, env: (gm.graph, env, "t"), id="graph-not-module"),
        pytest.param(lambda gm, env: (None, env, "t"), id="none-module"),
        pytest.param(lambda gm, env: (gm, object(), "t"), id="not-a-shape-env"),
    ],
)
def test_bad_input_same_exception_type(bad):
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    theirs = _raised(lambda: torch_insert_asserts(*bad(gm, env)))
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    ours = _raised(lambda: insert_deferred_runtime_asserts(*bad(from_torch_fx(gm), env)))
    assert theirs is not None
    assert ours is not None and issubclass(ours, theirs), (ours, theirs)


def _add_user_checks(gm):
    """Add what a dynamo graph holds: ``torch._check`` calls on a SymBool (one with a lazy
    message stored as an attribute) and a ``torch._check(True)``."""

    graph = gm.graph
    item = next(n for n in graph.nodes if n.target is aten._local_scalar_dense.default)
    gm.check_message = lambda: "u0 must be at least 2"
    with graph.inserting_after(item):
        trivial = graph.call_function(torch._check, (True,))
    with graph.inserting_after(item):
        message = graph.get_attr("check_message")
    with graph.inserting_after(message):
        ge = graph.call_function(operator.ge, (item, 2))
        ge.meta["val"] = item.meta["val"] >= 2
    with graph.inserting_after(ge):
        graph.call_function(torch._check, (ge,), {"message": message})
    with graph.inserting_after(trivial):
        lt = graph.call_function(operator.lt, (item, 50))
        lt.meta["val"] = item.meta["val"] < 50
    with graph.inserting_after(lt):
        graph.call_function(torch._check, (lt, "below fifty"))
    return gm


@pytest.mark.filterwarnings("ignore:Attempted to insert a get_attr Node")
def test_user_checks_become_aten_asserts():
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    theirs = _add_user_checks(gm)
    torch_insert_asserts(theirs, env, "test")
    theirs.recompile()
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    ours_torch_gm = _add_user_checks(gm)
    insert_deferred_runtime_asserts(ours_torch_gm, env, "test")
    ours_torch_gm.recompile()
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    ours = _add_user_checks(from_torch_fx(gm))
    insert_deferred_runtime_asserts(ours, env, "test")
    ours.recompile()
    assert ours_torch_gm.code == theirs.code
    assert _signature(ours) == _signature(theirs)
    assert torch._check not in [n.target for n in ours.graph.nodes]
    messages = [n.args[1] for n in _assert_nodes(ours)]
    assert "u0 must be at least 2" in messages and "below fifty" in messages
    with pytest.raises(RuntimeError, match="u0 must be at least 2"):
        ours(torch.tensor(1), torch.randn(3, 2))


def _as_dynamo_meta(gm):
    """Dynamo's convention: example values under ``example_value`` instead of ``val``."""
    for n in gm.graph.nodes:
        if "val" in n.meta:
            n.meta["example_value"] = n.meta.pop("val")
    return gm


def test_example_value_key_same_as_torch():
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    theirs = _as_dynamo_meta(gm)
    torch_insert_asserts(theirs, env, "test")
    theirs.recompile()
    gm, env = _fake_traced(f_item_bounds, torch.tensor(4), torch.randn(3, 2))
    ours = _as_dynamo_meta(gm)
    insert_deferred_runtime_asserts(ours, env, "test")
    ours.recompile()
    assert ours.code == theirs.code
    new_nodes = [n for n in ours.graph.nodes if n.target in (operator.ge, operator.le)]
    assert new_nodes and all("example_value" in n.meta for n in new_nodes)
    assert [sorted(n.meta) for n in ours.graph.nodes] == [
        sorted(n.meta) for n in theirs.graph.nodes
    ]


# --- fxkit's own make_fx output -------------------------------------------------------------
# The pass reads ``meta["unbacked_bindings"]``, so running it on fxkit's make_fx output checks
# that fxkit's tracer binds unbacked symbols exactly where torch's does.


def _outer_fake(make):
    """make_fx("real") on inputs the user fakified under their own FakeTensorMode."""

    def trace(f, *args):
        mode = FakeTensorMode(shape_env=ShapeEnv())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mode:
                fake = [mode.from_tensor(a) for a in args]
                gm = make(f)(*fake)
        return gm, mode.shape_env

    return trace


def _own_mode(make, tracing_mode):
    """make_fx building its own fake mode; the ShapeEnv is the placeholders' one."""

    def trace(f, *args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = make(f, tracing_mode=tracing_mode)(*args)
        first = next(n for n in gm.graph.nodes if n.op == "placeholder")
        return gm, first.meta["val"].fake_mode.shape_env

    return trace


MAKE_FX_SETUPS = {"outer-fake": _outer_fake, "fake": lambda mk: _own_mode(mk, "fake"),
                  "symbolic": lambda mk: _own_mode(mk, "symbolic")}  # fmt: skip


def _bindings(gm):
    return [
        (n.name, {str(s): path for s, path in n.meta["unbacked_bindings"].items()})
        for n in gm.graph.nodes
        if "unbacked_bindings" in n.meta
    ]


def _pass_on_both_make_fx(case, setup):
    from fxkit.experimental.proxy_tensor import make_fx as fxkit_make_fx

    f, make_args = CASES[case]
    theirs, their_env = MAKE_FX_SETUPS[setup](make_fx)(f, *make_args())
    ours, our_env = MAKE_FX_SETUPS[setup](fxkit_make_fx)(f, *make_args())
    assert isinstance(ours, fxkit.GraphModule)
    assert _bindings(ours) == _bindings(theirs)
    torch_insert_asserts(theirs, their_env, "test")
    theirs.recompile()
    insert_deferred_runtime_asserts(ours, our_env, "test")
    ours.recompile()
    return theirs, ours


@pytest.mark.parametrize("setup", list(MAKE_FX_SETUPS))
@pytest.mark.parametrize("case", list(CASES))
def test_fxkit_make_fx_same_asserts_as_torch(case, setup):
    theirs, ours = _pass_on_both_make_fx(case, setup)
    assert ours.code == theirs.code
    assert [n.name for n in ours.graph.nodes] == [n.name for n in theirs.graph.nodes]
    args = CASES[case][1]()
    torch.testing.assert_close(ours(*args), theirs(*args))


def test_fxkit_make_fx_binds_item_and_nonzero_under_user_fake_mode():
    theirs, ours = _pass_on_both_make_fx("item_bounds", "outer-fake")
    assert len(_assert_nodes(ours)) == len(_assert_nodes(theirs)) == 4
    _, ours = _pass_on_both_make_fx("nonzero", "outer-fake")
    (bound,) = [n for n in ours.graph.nodes if "unbacked_bindings" in n.meta]
    assert bound.target is aten.nonzero.default


@pytest.mark.parametrize(
    "case, bad_args",
    [
        ("item_bounds", lambda: (torch.tensor(1), torch.randn(3, 2))),
        ("nonzero", lambda: (torch.tensor([0, 0, 5]), torch.randn(5, 2))),
        ("two_items", lambda: (torch.tensor([6, 9]),)),
        ("masked", lambda: (torch.tensor([1.0, 2.0, 3.0]),)),
    ],
    ids=["item-too-small", "nonzero-count", "product", "masked-even"],
)
def test_fxkit_make_fx_asserts_fire_on_bad_inputs(case, bad_args):
    theirs, ours = _pass_on_both_make_fx(case, "outer-fake")
    with pytest.raises(RuntimeError) as their_error:
        theirs(*bad_args())
    with pytest.raises(type(their_error.value)):
        ours(*bad_args())
