"""backends.cudagraphs compared with torch.fx's: no partitions on a CPU graph; with fake CUDA
tensors (no GPU needed) the same fused submodules and code; the support rules; bad input."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.backends import cudagraphs as tcg

import fxkit
from fxkit.passes.backends import cudagraphs as cg


def two_segments(x, w1, w2, scale):
    h = torch.relu(x @ w1)
    h = h.sin() * 2 + x
    u = h * scale  # reads a CPU scalar tensor: not capturable
    return torch.tanh(u @ w2) + 1, h.sum(dim=0)


def _fake_inputs(device="cuda"):
    with FakeTensorMode(allow_non_fake_inputs=True):
        return (
            torch.empty(8, 16, device=device),
            torch.empty(16, 16, device=device),
            torch.empty(16, 4, device=device),
            torch.empty((), device="cpu"),
        )


def test_cpu_graph_gets_no_partitions():
    args = (torch.randn(8, 16), torch.randn(16, 16), torch.randn(16, 4), torch.tensor(0.5))
    gm = fxkit.symbolic_trace(two_segments)
    before = gm.code
    out = cg.partition_cudagraphs(gm, args)
    assert out is gm and gm.code == before
    assert not [n for n, _ in gm.named_children() if n.startswith("fused_")]
    torch.testing.assert_close(gm(*args), two_segments(*args))


def test_fake_cuda_graph_partitions_like_torch_fx():
    ours = cg.partition_cudagraphs(fxkit.symbolic_trace(two_segments), _fake_inputs())
    theirs = tcg.partition_cudagraphs(tfx.symbolic_trace(two_segments), _fake_inputs())
    assert ours.code == theirs.code
    assert ours.fused_0.code == theirs.fused_0.code
    assert ours.fused_1.code == theirs.fused_1.code
    assert {"fused_0", "fused_1"} <= {n for n, _ in ours.named_children()}


def test_single_node_partitions_are_kept():
    def f(x, scale):
        return (x * scale).sin() * scale

    def inputs():
        with FakeTensorMode(allow_non_fake_inputs=True):
            return torch.empty(3, device="cuda"), torch.empty((), device="cpu")

    ours = cg.partition_cudagraphs(fxkit.symbolic_trace(f), inputs())
    theirs = tcg.partition_cudagraphs(tfx.symbolic_trace(f), inputs())
    assert ours.code == theirs.code
    assert "fused_0" in ours.code


def _node(op, target, args=()):
    g = fxkit.Graph()
    x = g.placeholder("x")
    node = g.create_node(op, target, (x, *args))
    return g, x, node


def test_support_rules():
    support = cg.CudaGraphsSupport()
    with FakeTensorMode(allow_non_fake_inputs=True):
        on_gpu = torch.empty(2, device="cuda")
    on_cpu = torch.empty(2)
    _, x, node = _node("call_function", torch.relu)
    x.meta["val"], node.meta["val"] = on_gpu, on_gpu
    assert support.is_node_supported({}, node)
    node.meta["val"] = (on_gpu, on_cpu)  # any CPU tensor in a (nested) result refuses
    assert not support.is_node_supported({}, node)
    node.meta["val"] = 3  # non-tensor results do not matter
    assert support.is_node_supported({}, node)
    x.meta = {"fake_result": on_cpu}  # the older meta key
    assert not support.is_node_supported({}, node)
    assert not support.is_node_supported({}, x)  # placeholders are never captured
    _, _, getitem = _node("call_function", operator.getitem, (0,))
    assert support.is_node_supported({}, getitem)  # even without meta
    _, _, emb = _node("call_function", torch.ops.aten.embedding_dense_backward.default)
    assert not support.is_node_supported({}, emb)


def test_support_matches_torch_fx_on_same_meta():
    ours, theirs = cg.CudaGraphsSupport(), tcg.CudaGraphsSupport()
    with FakeTensorMode(allow_non_fake_inputs=True):
        on_gpu = torch.empty(2, device="cuda")
    for in_val, out_val in [(on_gpu, on_gpu), (torch.empty(2), on_gpu), (on_gpu, [on_gpu, 1])]:
        _, x, node = _node("call_method", "add", (1,))
        x.meta["val"], node.meta["val"] = in_val, out_val
        assert ours.is_node_supported({}, node) == theirs.is_node_supported({}, node)


def test_missing_meta_raises_key_error_like_torch_fx():
    _, x, node = _node("call_function", torch.relu)
    x.meta["val"] = torch.empty(2)  # a CPU input, yet the missing result meta still raises
    for support in (cg.CudaGraphsSupport(), tcg.CudaGraphsSupport()):
        with pytest.raises(KeyError):
            support.is_node_supported({}, node)


def test_bad_inputs_raise_like_torch_fx():
    for fx, partition in ((fxkit, cg.partition_cudagraphs), (tfx, tcg.partition_cudagraphs)):
        with pytest.raises(RuntimeError):
            partition(fx.symbolic_trace(two_segments), [torch.randn(8, 16)])  # too few
