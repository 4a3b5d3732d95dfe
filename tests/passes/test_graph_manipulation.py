"""graph_manipulation against torch.fx's: target replacement on the zoo and on random picks,
node sizes (plain, module parameters, quantized, many dtypes), and errors."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import graph_manipulation as tgm
from torch.fx.passes.shape_prop import TensorMetadata as TorchTensorMetadata

import fxkit
from fxkit.passes import graph_manipulation as gm_
from fxkit.passes.shape_prop import TensorMetadata
from zoo import CASES, example, trace

POSITIONAL = [c for c in CASES if c.name != "var_args"]


def inputs_of(case):
    args, kwargs = example(case)
    return args + tuple(kwargs.values())


def shape(gm):
    """What a rewrite can change, comparable across libraries. fxkit's tracer records
    its own source meta (fxkit_source) and names its own module in wrap() lines; those differences come
    from tracing, not from the pass."""
    return (
        gm.code.replace("fxkit._symbolic_trace", "torch.fx._symbolic_trace"),
        [
            (n.name, n.op, named(n.target), repr(n.args), sorted(n.kwargs), n.type)
            for n in gm.graph.nodes
        ],
        [sorted(k for k in n.meta if k != "fxkit_source") for n in gm.graph.nodes],
    )


def named(target):
    # the tracers' helper functions (_assert_is_none, ...) are different objects in each library
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def same_results(a, b):
    flat_a, flat_b = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    for x, y in zip(flat_a, flat_b, strict=True):
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def assert_same_error(ours_fn, theirs_fn):
    ours, theirs = raised(ours_fn), raised(theirs_fn)
    assert isinstance(ours, type(theirs)), (ours, theirs)
    assert str(theirs).split("\n")[0] in str(ours)


# --- replace_target_nodes_with -----------------------------------------------------------------


def test_replacing_a_function_changes_code_and_results_like_torch_fx():
    def fn(x):
        return torch.relu(x) + torch.relu(x * 2).sum(dim=0, keepdim=True)

    x = torch.randn(3, 4)
    results = []
    for lib, mod in ((fxkit, gm_), (tfx, tgm)):
        gm = lib.symbolic_trace(fn)
        for n in gm.graph.nodes:
            n.meta["tag"] = n.name
        mod.replace_target_nodes_with(gm, "call_function", torch.relu, "call_function", torch.neg)
        results.append((shape(gm), gm(x)))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][1], -x + (-(x * 2)).sum(dim=0, keepdim=True))
    # the rewritten nodes lost their meta, the copied ones kept it
    assert results[0][0][2][1] == [] and results[0][0][2][0] == ["tag"]


def test_changing_the_op_too():
    def fn(x):
        return x.relu().neg()

    for lib, mod in ((fxkit, gm_), (tfx, tgm)):
        gm = lib.symbolic_trace(fn)
        mod.replace_target_nodes_with(gm, "call_method", "relu", "call_function", torch.sigmoid)
        assert "torch.sigmoid(x)" in gm.code
        assert torch.allclose(gm(torch.ones(2)), -torch.sigmoid(torch.ones(2)))


@pytest.mark.parametrize("case", POSITIONAL, ids=lambda c: c.name)
def test_replacing_every_kind_of_node_on_the_zoo_matches_torch_fx(case):
    ours, theirs = trace(case, fxkit), trace(case, tfx)
    picks = {(n.op, n.target) for n in ours.graph.nodes if n.op not in ("placeholder", "output")}
    for op, target in sorted(picks, key=repr)[:4]:
        gm_.replace_target_nodes_with(ours, op, target, op, target)
        tgm.replace_target_nodes_with(theirs, op, target, op, target)
        assert shape(ours) == shape(theirs)
    args = inputs_of(case)
    try:
        expected = theirs(*args)
    except Exception as e:  # the rebuilt graph has plain input handling in both libraries
        with pytest.raises(type(e)):
            ours(*args)
    else:
        same_results(ours(*args), expected)


def chain(fx, ops):
    g = fx.Graph()
    x = g.placeholder("x")
    cur = x
    for op in ops:
        cur = g.call_function(op, (cur, x) if op is operator.add else (cur,))
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


OPS = [torch.relu, torch.neg, torch.sigmoid, operator.add]


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=8),
    old=st.sampled_from(OPS[:3]),
    new=st.sampled_from(OPS[:3]),
)
def test_replacement_property(ops, old, new):
    ours, theirs = chain(fxkit, ops), chain(tfx, ops)
    before = [(n.name, n.target) for n in ours.graph.nodes]
    gm_.replace_target_nodes_with(ours, "call_function", old, "call_function", new)
    tgm.replace_target_nodes_with(theirs, "call_function", old, "call_function", new)
    assert shape(ours) == shape(theirs)
    after = [(n.name, n.target) for n in ours.graph.nodes]
    # names and order are kept; exactly the matching targets changed
    assert [a for a, _ in after] == [b for b, _ in before]
    assert [t for _, t in after] == [new if t is old else t for _, t in before]
    ours.graph.lint()
    x = torch.randn(3)
    torch.testing.assert_close(ours(x), theirs(x))


def test_no_match_leaves_the_code_alone():
    ours = chain(fxkit, [torch.relu])
    code = ours.code
    gm_.replace_target_nodes_with(ours, "call_module", "nothing", "call_function", torch.neg)
    assert ours.code == code


def test_replace_bad_inputs():
    assert_same_error(
        lambda: gm_.replace_target_nodes_with("nope", "call_function", torch.relu, "x", None),
        lambda: tgm.replace_target_nodes_with("nope", "call_function", torch.relu, "x", None),
    )
    assert_same_error(
        lambda: gm_.replace_target_nodes_with(
            chain(fxkit, [torch.relu]), "call_function", torch.relu, "bogus_op", torch.neg
        ),
        lambda: tgm.replace_target_nodes_with(
            chain(tfx, [torch.relu]), "call_function", torch.relu, "bogus_op", torch.neg
        ),
    )


# --- sizes --------------------------------------------------------------------------------------


def sizes(gm):
    return [(n.name, getattr(n, "size_bytes", None)) for n in gm.graph.nodes]


@pytest.mark.parametrize("case", POSITIONAL, ids=lambda c: c.name)
def test_sizes_of_all_nodes_match_torch_fx_on_the_zoo(case, capsys):
    ours, theirs = trace(case, fxkit), trace(case, tfx)
    args = list(inputs_of(case))
    try:
        tgm.get_size_of_all_nodes(theirs, args)
    except Exception as e:
        with pytest.raises(type(e)) as info:
            gm_.get_size_of_all_nodes(ours, args)
        assert str(e).split("\n")[0] in str(info.value)
    else:
        gm_.get_size_of_all_nodes(ours, args)
    assert sizes(ours) == sizes(theirs)
    capsys.readouterr()  # ShapeProp failures print tracebacks


def test_module_parameters_count_in_the_total():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    gm = fxkit.symbolic_trace(model)
    gm_.get_size_of_all_nodes(gm, [torch.randn(2, 4)])
    by_name = {n.name: n for n in gm.graph.nodes}
    assert by_name["_0"].size_bytes == gm_.size_bytes(2 * 3 * 4, (2 * 3 + 4 * 3 + 3) * 4)
    assert by_name["_1"].size_bytes == gm_.size_bytes(24, 24)
    assert not hasattr(by_name["output"], "size_bytes")
    # recorded metadata is reused when no args are given
    del by_name["_0"].size_bytes
    gm_.get_size_of_all_nodes(gm)
    assert by_name["_0"].size_bytes.total_size == 84
    assert gm_.get_size_of_node(gm, by_name["_0"]) == by_name["_0"].size_bytes


def test_size_bytes_is_the_same_named_tuple():
    assert gm_.size_bytes._fields == tgm.size_bytes._fields
    s = gm_.size_bytes(1, 2)
    assert s == (1, 2) and s.output_size == 1 and s.total_size == 2


DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
    torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128,
]  # fmt: skip
QDTYPES = [torch.qint8, torch.quint8, torch.qint32]


def node_with_meta(fx, meta_cls, dtype, quantized, shape_=(2, 3)):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(x)
    x.meta["tensor_meta"] = meta_cls(torch.Size(shape_), dtype, False, (3, 1), None, quantized, {})
    return fx.GraphModule(torch.nn.Module(), g), x


@pytest.mark.parametrize(
    "dtype,quantized", [(d, False) for d in DTYPES] + [(d, True) for d in QDTYPES], ids=str
)
def test_size_of_a_node_for_every_dtype(dtype, quantized):
    with warnings.catch_warnings(record=True) as ours_w:
        warnings.simplefilter("always")
        ours = gm_.get_size_of_node(*node_with_meta(fxkit, TensorMetadata, dtype, quantized))
    with warnings.catch_warnings(record=True) as theirs_w:
        warnings.simplefilter("always")
        theirs = tgm.get_size_of_node(*node_with_meta(tfx, TorchTensorMetadata, dtype, quantized))
    assert tuple(ours) == tuple(theirs)
    # quantized dtypes reach torch's deprecation warning in both; torch gives it once per
    # process, so only its kind can be compared
    for w in ours_w + theirs_w:
        assert quantized and w.category is UserWarning and "deprecated" in str(w.message)
    assert ours.output_size == 6 * torch.empty(0, dtype=dtype).element_size() or quantized


def test_missing_or_empty_metadata():
    for fx, mod in ((fxkit, gm_), (tfx, tgm)):
        g = fx.Graph()
        x = g.placeholder("x")
        g.output(x)
        with pytest.raises(RuntimeError, match="Node x has no tensor metadata") as info:
            mod.get_tensor_meta(x)
        assert "Check that shape propagation has run." in str(info.value)
        x.meta["tensor_meta"] = ()
        with pytest.raises(RuntimeError, match="no tensor metadata"):
            mod.get_tensor_meta(x)
        meta = TensorMetadata(torch.Size([1]), torch.float32, False, (1,), None, False, {})
        x.meta["tensor_meta"] = meta
        assert mod.get_tensor_meta(x) is meta


def unknown_module(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_module("missing", (x,)))
    gm = fx.GraphModule(torch.nn.Module(), g)
    return gm, list(gm.graph.nodes)[1]


def test_size_errors_match_torch_fx():
    assert_same_error(
        lambda: gm_.get_size_of_node(*unknown_module(fxkit)),
        lambda: tgm.get_size_of_node(*unknown_module(tfx)),
    )
    ours, theirs = chain(fxkit, [torch.relu]), chain(tfx, [torch.relu])
    assert_same_error(
        lambda: gm_.get_size_of_all_nodes(ours), lambda: tgm.get_size_of_all_nodes(theirs)
    )
    assert_same_error(
        lambda: gm_.get_size_of_all_nodes(ours, []), lambda: tgm.get_size_of_all_nodes(theirs, [])
    )

    # a node producing a tuple of tensors has no single shape
    def pair(fx):
        g = fx.Graph()
        x = g.placeholder("x")
        g.output(g.call_function(torch.chunk, (x, 2)))
        return fx.GraphModule(torch.nn.Module(), g)

    assert_same_error(
        lambda: gm_.get_size_of_all_nodes(pair(fxkit), [torch.randn(4)]),
        lambda: tgm.get_size_of_all_nodes(pair(tfx), [torch.randn(4)]),
    )
