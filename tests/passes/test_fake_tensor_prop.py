"""FakeTensorProp against torch.fx's on the zoo models, nested outputs, symbolic sizes and
aliasing; bad inputs and failing nodes."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv
from torch.fx.passes import fake_tensor_prop as tftp
from torch.multiprocessing.reductions import StorageWeakRef

import fxkit
from fxkit.interpreter import Interpreter
from fxkit.passes.fake_tensor_prop import FakeTensorProp
from zoo import CASES, example, trace

POSITIONAL = [c for c in CASES if c.name != "var_args"]


def mode() -> FakeTensorMode:
    return FakeTensorMode(allow_non_fake_inputs=True)


def described(value):
    """A meta value made comparable across libraries and modes."""
    if isinstance(value, torch.Tensor):
        return (
            type(value).__name__,
            tuple(str(s) for s in value.shape),
            tuple(str(s) for s in value.stride()),
            value.dtype,
            value.device,
            value.requires_grad,
            value.grad_fn is None,
        )
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return ("sym", type(value).__name__, str(value))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__, tuple(described(v) for v in value))
    if isinstance(value, (list, tuple, dict)):
        # each library has its own immutable_list/immutable_dict: compare them by name
        name = type(value).__name__
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return (name, [(k, described(v)) for k, v in items])
    if isinstance(value, slice):
        return ("slice", described(value.start), described(value.stop), described(value.step))
    return (type(value), value)


def recorded(gm):
    return [(n.name, "val" in n.meta, described(n.meta.get("val"))) for n in gm.graph.nodes]


def inputs_of(case):
    args, kwargs = example(case)
    return args + tuple(kwargs.values())


@pytest.mark.parametrize("case", POSITIONAL, ids=lambda c: c.name)
def test_same_values_as_torch_fx_on_the_zoo(case):
    ours, theirs = trace(case, fxkit), trace(case, tfx)
    args = inputs_of(case)
    try:
        out_theirs = tftp.FakeTensorProp(theirs, mode()).propagate(*args)
    except Exception as e:  # data-dependent Python control flow cannot run on fake tensors
        with pytest.raises(type(e)):
            FakeTensorProp(ours, mode()).propagate(*args)
        assert recorded(ours) == recorded(theirs)  # the nodes before the failure agree
        return
    out_ours = FakeTensorProp(ours, mode()).propagate(*args)
    assert recorded(ours) == recorded(theirs)
    assert described(out_ours) == described(out_theirs)
    assert any(isinstance(n.meta.get("val"), FakeTensor) for n in ours.graph.nodes)


def nested(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    mx = g.call_function(torch.max, (x,), {"dim": 1})
    size = g.call_method("size", (x,))
    dim0 = g.call_method("size", (x, 0))
    pair = g.call_function(torch.chunk, (x, 2))
    as_list = g.call_function(list, (pair,))
    table = g.call_function(dict, (), {"a": x, "n": 3, "s": "text"})
    sl = g.call_function(slice, (1, dim0))
    ratio = g.call_function(float, (dim0,))
    flag = g.call_function(bool, (dim0,))
    nothing = g.call_function(print, ("",))
    g.output((mx, size, as_list, table, sl, ratio, flag, nothing))
    return fx.GraphModule(torch.nn.Module(), g)


@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
def test_nested_and_scalar_results_match_torch_fx(symbolic, capsys):
    ours, theirs = nested(fxkit), nested(tfx)
    x = torch.randn(4, 6)

    def make():
        return FakeTensorMode(shape_env=ShapeEnv()) if symbolic else FakeTensorMode()

    FakeTensorProp(ours, make()).propagate(x)
    tftp.FakeTensorProp(theirs, make()).propagate(x)
    assert recorded(ours) == recorded(theirs)
    by_name = {n.name: n.meta for n in ours.graph.nodes}
    assert "val" not in by_name["print_1"]  # a None result records nothing
    assert type(by_name["max_1"]["val"]) is tuple  # a structseq is no named tuple
    assert by_name["dict_1"]["val"]["s"] is None  # a string leaf is not a value
    size0 = by_name["size_1"]["val"]
    assert isinstance(size0, torch.SymInt if symbolic else int)
    capsys.readouterr()


def test_values_are_detached_snapshots_that_keep_aliasing():
    def fn(x):
        y = x.view(-1)
        z = y + 1
        return z[1:]

    for lib, prop in ((fxkit, FakeTensorProp), (tfx, tftp.FakeTensorProp)):
        gm = lib.symbolic_trace(fn)
        x = torch.randn(3, 4, requires_grad=True)
        out = prop(gm, FakeTensorMode()).propagate(x)
        vals = {n.name: n.meta["val"] for n in gm.graph.nodes if "val" in n.meta}
        assert vals["output"] is not out  # a snapshot, not the result itself
        assert out.grad_fn is not None and vals["add"].grad_fn is None
        same = StorageWeakRef(vals["x"].untyped_storage()) == StorageWeakRef(
            vals["view"].untyped_storage()
        )
        other = StorageWeakRef(vals["add"].untyped_storage()) == StorageWeakRef(
            vals["view"].untyped_storage()
        )
        assert same and not other, lib


def test_propagate_dont_convert_inputs_takes_fake_inputs_as_given():
    gm = fxkit.symbolic_trace(torch.nn.Linear(4, 3))
    m = mode()
    fake = m.from_tensor(torch.randn(2, 4))
    out = FakeTensorProp(gm, m).propagate_dont_convert_inputs(fake)
    assert isinstance(out, FakeTensor) and out.fake_mode is m and out.shape == (2, 3)
    x = next(iter(gm.graph.nodes))
    assert x.meta["val"].fake_mode is m and x.meta["val"] is not fake
    # A real input is not converted here: the mode refuses it, as in torch.fx.
    strict = FakeTensorMode()
    with pytest.raises(Exception) as ours:
        FakeTensorProp(gm, strict).propagate_dont_convert_inputs(torch.randn(2, 4))
    with pytest.raises(Exception) as theirs:
        tftp.FakeTensorProp(tfx.symbolic_trace(torch.nn.Linear(4, 3)), FakeTensorMode()).propagate(
            torch.randn(2, 4)
        )
    assert type(ours.value) is type(theirs.value)


def test_default_mode_and_epoch_bump():
    gm = fxkit.symbolic_trace(torch.nn.ReLU())
    prop = FakeTensorProp(gm)
    assert isinstance(prop._mode, FakeTensorMode) and isinstance(prop, Interpreter)
    m = FakeTensorMode()
    before = m.epoch
    FakeTensorProp(gm, m)
    FakeTensorProp(gm, m)
    assert m.epoch == before + 2
    out = prop.propagate(torch.randn(5))
    assert isinstance(out, FakeTensor) and out.shape == (5,)


def test_runs_torch_fx_graph_modules_too():
    theirs = tfx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()))
    out = FakeTensorProp(theirs, mode()).propagate(torch.randn(3, 4))
    assert out.shape == (3, 2)
    assert [tuple(n.meta["val"].shape) for n in theirs.graph.nodes] == [
        (3, 4),
        (3, 2),
        (3, 2),
        (3, 2),
    ]


# --- bad inputs ---------------------------------------------------------------------------------


def failing(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.matmul, (x, x)))
    return fx.GraphModule(torch.nn.Module(), g)


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.value


@pytest.mark.parametrize(
    "call",
    [
        lambda lib, prop: prop("not a module"),
        lambda lib, prop: prop(lib.symbolic_trace(torch.nn.ReLU()), mode="not a mode"),
        lambda lib, prop: prop(lib.symbolic_trace(torch.nn.ReLU())).propagate(),
        lambda lib, prop: prop(failing(lib)).propagate(torch.randn(2, 3)),
        lambda lib, prop: prop(lib.symbolic_trace(torch.nn.Linear(3, 3)), FakeTensorMode())
        .propagate(torch.randn(2, 3)),
    ],
    ids=["not_a_module", "bad_mode", "missing_input", "shape_error", "real_parameters"],
)  # fmt: skip
def test_bad_inputs_raise_like_torch_fx(call):
    ours = raised(lambda: call(fxkit, FakeTensorProp))
    theirs = raised(lambda: call(tfx, tftp.FakeTensorProp))
    assert isinstance(ours, type(theirs))
    assert str(theirs).split("\n")[0] in str(ours)


# --- invoke_subgraph ----------------------------------------------------------------------------


def with_subgraph(fx, key="k0"):
    body = fx.symbolic_trace(lambda a, b: (a * b + 1,))
    g = fx.Graph()
    x, y = g.placeholder("x"), g.placeholder("y")
    sub = g.get_attr("body")
    first = g.call_function(torch.ops.higher_order.invoke_subgraph, (sub, key, x, y))
    item = g.call_function(operator.getitem, (first, 0))
    second = g.call_function(torch.ops.higher_order.invoke_subgraph, (sub, key, item, y))
    g.output((first, second))
    root = torch.nn.Module()
    root.body = body
    return fx.GraphModule(root, g)


def test_invoke_subgraph_bodies_are_propagated_once_like_torch_fx():
    ours, theirs = with_subgraph(fxkit), with_subgraph(tfx)
    args = (torch.randn(3), torch.randn(3))
    prop = FakeTensorProp(ours, FakeTensorMode())
    out_ours = prop.propagate(*args)
    out_theirs = tftp.FakeTensorProp(theirs, FakeTensorMode()).propagate(*args)
    assert described(out_ours) == described(out_theirs)
    assert recorded(ours) == recorded(theirs)
    assert recorded(ours.body) == recorded(theirs.body)
    assert all("val" in n.meta for n in ours.body.graph.nodes)  # the body got values
    assert list(prop.seen_subgraphs) == ["k0"]
    # the first call returns the body's result directly: its node records no value
    assert "val" not in next(n for n in ours.graph.nodes if n.name == "invoke_subgraph").meta


def test_invoke_subgraph_with_a_bad_key_fails_like_torch_fx():
    args = (torch.randn(3), torch.randn(3))
    ours = raised(lambda: FakeTensorProp(with_subgraph(fxkit, 7)).propagate(*args))
    theirs = raised(lambda: tftp.FakeTensorProp(with_subgraph(tfx, 7)).propagate(*args))
    assert type(ours) is type(theirs) is AssertionError
    assert str(theirs).split("\n")[0] in str(ours)
