"""ShapeProp and tensor metadata, compared with torch.fx's ShapeProp on the zoo models and on
tensors of many layouts; fake-tensor runs; errors."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.passes import shape_prop as tsp

import fxkit
from fxkit.immutable_collections import immutable_dict, immutable_list
from fxkit.interpreter import Interpreter
from fxkit.passes.shape_prop import ShapeProp, TensorMetadata, _extract_tensor_metadata
from zoo import CASES, example, trace

# Cases whose inputs can be given positionally, in placeholder order.
POSITIONAL = [c for c in CASES if c.name != "var_args"]


def normalise(value):
    """Metadata made comparable across libraries (their immutable containers differ)."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__, tuple(normalise(v) for v in value))
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return (kind, [normalise(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: normalise(v) for k, v in value.items()})
    return value


def type_name(t):
    # Each library has its own immutable_list/immutable_dict; compare those by name.
    return t.__name__ if t.__module__.startswith(("fxkit", "torch.fx")) else t


def recorded(gm):
    return [
        (n.name, normalise(n.meta.get("tensor_meta")), type_name(n.meta["type"]))
        for n in gm.graph.nodes
    ]


def inputs_of(case):
    args, kwargs = example(case)
    return args + tuple(kwargs.values())


@pytest.mark.parametrize("case", POSITIONAL, ids=lambda c: c.name)
def test_same_metadata_as_torch_fx_on_the_zoo(case):
    ours, theirs = trace(case, fxkit), trace(case, tfx)
    args = inputs_of(case)
    out_ours = ShapeProp(ours).propagate(*args)
    out_theirs = tsp.ShapeProp(theirs).propagate(*args)
    assert recorded(ours) == recorded(theirs)
    assert any("tensor_meta" in n.meta for n in ours.graph.nodes)
    flat_ours = torch.utils._pytree.tree_leaves(out_ours)
    flat_theirs = torch.utils._pytree.tree_leaves(out_theirs)
    for a, b in zip(flat_ours, flat_theirs, strict=True):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_example_from_the_docstring():
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    gm = fxkit.symbolic_trace(model)
    ShapeProp(gm).propagate(torch.randn(5, 16))
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes}
    assert shapes == {
        "input_1": (5, 16),
        "_0": (5, 8),
        "_1": (5, 8),
        "_2": (5, 2),
        "output": (5, 2),
    }
    meta = gm.graph.output_node().meta["tensor_meta"]
    assert isinstance(meta, TensorMetadata)
    assert meta.dtype == torch.float32 and meta.requires_grad
    assert meta.memory_format == torch.contiguous_format and meta.stride == (2, 1)
    assert not meta.is_quantized and meta.qparams == {}


def containers(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    mx = g.call_function(torch.max, (x,), {"dim": 1})
    size = g.call_method("size", (x,))
    pair = g.call_function(torch.chunk, (x, 2))
    as_list = g.call_function(list, (pair,))
    table = g.call_function(dict, (), {"a": x, "n": 3})
    sl = g.call_function(slice, (1, 2))
    g.output((mx, size, as_list, table, sl))
    return fx.GraphModule(torch.nn.Module(), g)


def test_containers_of_tensors_are_described_like_torch_fx():
    ours, theirs = containers(fxkit), containers(tfx)
    x = torch.randn(4, 6)
    ShapeProp(ours).propagate(x)
    tsp.ShapeProp(theirs).propagate(x)
    assert recorded(ours) == recorded(theirs)
    by_name = {n.name: n for n in ours.graph.nodes}
    assert "tensor_meta" not in by_name["size"].meta  # no tensor in a torch.Size
    assert by_name["size"].meta["type"] is torch.Size
    assert "tensor_meta" not in by_name["slice_1"].meta
    assert type(by_name["max_1"].meta["tensor_meta"]) is tuple  # a structseq is no namedtuple
    assert isinstance(by_name["list_1"].meta["tensor_meta"], immutable_list)
    table = by_name["dict_1"].meta["tensor_meta"]
    assert isinstance(table, immutable_dict) and table["n"] == 3


# --- tensor metadata on many layouts ------------------------------------------------------------


def assert_same_metadata(t, **kw):
    assert normalise(_extract_tensor_metadata(t, **kw)) == normalise(
        tsp._extract_tensor_metadata(t, **kw)
    )


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=5),
    data=st.data(),
)
def test_metadata_matches_torch_fx_for_any_strided_view(shape, data):
    t = torch.zeros(shape)
    if t.dim() >= 2:
        t = t.permute(data.draw(st.permutations(range(t.dim()))))
    if t.dim() >= 1 and data.draw(st.booleans()):
        t = t[..., :: data.draw(st.integers(1, 2))]
    if t.dim() in (4, 5) and data.draw(st.booleans()):
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        t = t.contiguous(memory_format=fmt)
    assert_same_metadata(t)
    assert_same_metadata(t, include_contiguity=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        lambda: torch.randn(2, 3, 2, 4, 5).to(memory_format=torch.channels_last_3d),
        lambda: torch.randn(2, 3, 1, 1),  # contiguous in two formats: the plain one wins
        lambda: torch.randn(3, 4).t(),
        lambda: torch.randn(3, requires_grad=True),
        lambda: torch.nn.Parameter(torch.randn(2, 2)),
        lambda: torch.randn(3, 3).to_sparse(),
        lambda: torch.randn(3, 3).to_sparse(layout=torch.sparse_csr),
        lambda: torch.zeros(0, 3, 2, 2),
        lambda: torch.tensor(1.5, dtype=torch.float64),
    ],
    ids=["channels_last", "channels_last_3d", "ambiguous", "transposed", "grad", "param",
         "sparse_coo", "sparse_csr", "empty", "scalar"],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_metadata_matches_torch_fx_on_special_tensors(make):
    t = make()
    assert_same_metadata(t)
    assert_same_metadata(t, include_contiguity=False)


def quantized(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized creation functions are deprecated
        x = torch.randn(2, 3)
        if kind == "per_tensor":
            return torch.quantize_per_tensor(x, 0.1, 3, torch.qint8)
        return torch.quantize_per_channel(
            x, torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8
        )


@pytest.mark.parametrize("kind", ["per_tensor", "per_channel"])
def test_quantized_parameters(kind):
    q = quantized(kind)
    assert_same_metadata(q)
    meta = _extract_tensor_metadata(q)
    assert meta.is_quantized and meta.qparams["qscheme"] == q.qscheme()
    if kind == "per_tensor":
        assert meta.qparams["zero_point"] == 3
    else:
        assert meta.qparams["axis"] == 0 and meta.qparams["zero_point"] == [0, 1]


# --- fake tensors -------------------------------------------------------------------------------


def test_fake_mode_records_the_same_metadata_without_touching_the_model():
    case = next(c for c in CASES if c.name == "resnet")
    real, fake = trace(case, fxkit), trace(case, fxkit)
    args = inputs_of(case)
    ShapeProp(real).propagate(*args)
    weights = {k: v.clone() for k, v in fake.state_dict().items()}
    out = ShapeProp(fake, fake_mode=FakeTensorMode()).propagate(*args)
    assert isinstance(out, FakeTensor)
    metas = [[normalise(n.meta.get("tensor_meta")) for n in gm.graph.nodes] for gm in (fake, real)]
    assert metas[0] == metas[1]
    for k, v in fake.state_dict().items():  # the real module kept its real tensors
        assert not isinstance(v, FakeTensor) and torch.equal(v, weights[k])


def test_fake_mode_matches_torch_fx():
    case = next(c for c in CASES if c.name == "encoder")
    ours, theirs = trace(case, fxkit), trace(case, tfx)
    args = inputs_of(case)
    ShapeProp(ours, fake_mode=FakeTensorMode()).propagate(*args)
    tsp.ShapeProp(theirs, fake_mode=FakeTensorMode()).propagate(*args)
    assert recorded(ours) == recorded(theirs)


def test_the_active_fake_mode_is_picked_up_from_fake_inputs():
    gm = fxkit.symbolic_trace(torch.nn.Linear(4, 3))
    # Copying real parameters while the mode is active needs allow_non_fake_inputs (torch.fx
    # fails the same way without it).
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    x = mode.from_tensor(torch.randn(2, 4))
    sp = ShapeProp(gm)
    assert sp.fake_mode is None  # nothing active at construction
    with mode:
        sp = ShapeProp(gm)
    assert sp.fake_mode is mode
    out = sp.propagate(x)
    assert isinstance(out, FakeTensor) and out.shape == (2, 3)
    assert gm.graph.output_node().meta["tensor_meta"].shape == (2, 3)


# --- errors and subclassing -----------------------------------------------------------------


def mismatched(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.call_function(torch.relu, (x,))
    bad = g.call_function(torch.matmul, (y, y))
    g.output(bad)
    return fx.GraphModule(torch.nn.Module(), g)


def test_a_failing_node_raises_runtime_error_naming_it(capsys):
    gm = mismatched(fxkit)
    with pytest.raises(RuntimeError, match=r"ShapeProp error for: node=%matmul") as info:
        ShapeProp(gm).propagate(torch.randn(2, 3))
    assert isinstance(info.value.__cause__, RuntimeError)  # the shape error from matmul
    ours = capsys.readouterr().err
    with pytest.raises(RuntimeError, match=r"ShapeProp error for: node=%matmul"):
        tsp.ShapeProp(mismatched(tfx)).propagate(torch.randn(2, 3))
    theirs = capsys.readouterr().err
    # both print the original traceback to stderr, ending in the same error line
    assert ours.startswith("Traceback") and theirs.startswith("Traceback")
    assert ours.strip().splitlines()[-1] == theirs.strip().splitlines()[-1]
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    assert relu.meta["tensor_meta"].shape == (2, 3)  # nodes before the failure are recorded


def test_bad_inputs():
    with pytest.raises(TypeError, match="nn.Module"):
        ShapeProp("not a module")  # type: ignore[arg-type]
    gm = fxkit.symbolic_trace(torch.nn.ReLU())
    before = gm.code
    with pytest.raises(RuntimeError, match="ShapeProp error"):
        ShapeProp(gm).propagate()  # missing input
    assert gm.code == before
    assert all("tensor_meta" not in n.meta for n in gm.graph.nodes)


def test_subclass_hooks_still_run():
    seen = []

    class Counting(ShapeProp):
        def call_function(self, target, args, kwargs):
            seen.append(target)
            return super().call_function(target, args, kwargs)

    gm = mismatched(fxkit)
    gm.graph.erase_node(gm.graph.output_node())
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    gm.graph.erase_node(relu.next)
    gm.graph.output(relu)
    gm.recompile()
    Counting(gm).propagate(torch.randn(3))
    assert seen == [torch.relu]
    assert isinstance(Counting(gm), Interpreter)


def test_a_subclass_run_node_override_is_called_for_every_node():
    # ShapeProp takes the interpreter's inline loop only while its own run_node is in effect.
    seen = []

    class Watching(ShapeProp):
        def run_node(self, n):
            seen.append(n.name)
            return super().run_node(n)

    gm = fxkit.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU()))
    Watching(gm).propagate(torch.randn(2, 3))
    assert seen == [n.name for n in gm.graph.nodes]
    assert all(n.meta["tensor_meta"].shape == (2, 3) for n in gm.graph.nodes)


def test_propagate_keeps_non_tensor_inputs():
    def fn(x, k: int):
        return x * k + operator.neg(k)

    gm = fxkit.symbolic_trace(fn)
    out = ShapeProp(gm).propagate(torch.ones(2), 3)
    assert torch.equal(out, torch.full((2,), 0.0))
    k = next(n for n in gm.graph.nodes if n.name == "k")
    assert k.meta["type"] is int and "tensor_meta" not in k.meta
