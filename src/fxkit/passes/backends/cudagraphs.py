"""Partition a graph into the pieces that can run under CUDA graphs.

A CUDA graph replays a recorded sequence of CUDA kernels, so only nodes whose inputs and
outputs are all CUDA tensors can be captured. :func:`partition_cudagraphs` propagates fake
tensors through the module to learn every value's device, then fuses the nodes that qualify
(:class:`CudaGraphsSupport`) into ``fused_<i>`` submodules with the capability-based
partitioner. A graph that works on CPU tensors gets no partitions.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils import _pytree as pytree

from fxkit.graph_module import GraphModule
from fxkit.node import Node
from fxkit.passes.fake_tensor_prop import FakeTensorProp
from fxkit.passes.infra.partitioner import CapabilityBasedPartitioner
from fxkit.passes.operator_support import OperatorSupport
from fxkit.passes.tools_common import CALLABLE_NODE_OPS

__all__ = ["CudaGraphsSupport", "partition_cudagraphs"]


# Targets answered without looking at devices: tuple indexing is free to capture; the
# embedding backward kernel is not capturable.
_FIXED_ANSWERS = {
    operator.getitem: True,
    torch.ops.aten.embedding_dense_backward.default: False,
}


def _recorded_value(meta: Mapping[str, Any]) -> Any:
    """The fake value propagation left on a node (``val``, or the older ``fake_result``)."""
    return meta["val"] if "val" in meta else meta["fake_result"]


def _all_on_cuda(value: Any) -> bool:
    return all(
        leaf.device.type == "cuda"
        for leaf in pytree.tree_leaves(value)
        if isinstance(leaf, torch.Tensor)
    )


class CudaGraphsSupport(OperatorSupport):
    """Supports a call when every tensor it reads or produces is on a CUDA device (as fake
    tensor propagation recorded in ``meta["val"]``). ``getitem`` is always supported;
    ``aten.embedding_dense_backward`` never is. Factory calls qualify by their result."""

    def is_node_supported(self, submodules: Mapping[str, torch.nn.Module], node: Node) -> bool:
        """Whether ``node`` can be captured in a CUDA graph."""
        fixed = _FIXED_ANSWERS.get(node.target) if node.op in CALLABLE_NODE_OPS else False
        if fixed is not None:
            return fixed
        # Every value must have been recorded (KeyError otherwise), even after a CPU one.
        values = [_recorded_value(n.meta) for n in node.all_input_nodes]
        values.append(_recorded_value(node.meta))
        return all(_all_on_cuda(v) for v in values)


def partition_cudagraphs(gm: GraphModule, inputs: Sequence[object]) -> GraphModule:
    """Fuse the parts of ``gm`` that only touch CUDA tensors into ``fused_<i>`` submodules
    (single-node partitions included) and return ``gm``, changed in place.

    ``inputs`` are example inputs (real or fake tensors) used to propagate fake values and so
    learn each node's device.
    """
    FakeTensorProp(gm).propagate(*inputs)
    partitioner = CapabilityBasedPartitioner(
        gm, CudaGraphsSupport(), allows_single_node_partition=True
    )
    return partitioner.fuse_partitions(partitioner.propose_partitions())
