"""Record the shape, dtype and layout of every value a graph computes.

:class:`ShapeProp` runs the graph on example inputs (real tensors, or fake ones under a
``FakeTensorMode``) and stores a :class:`TensorMetadata` per tensor in
``node.meta["tensor_meta"]`` and the Python type of each result in ``node.meta["type"]``.
"""

from __future__ import annotations

import copy
import traceback
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch

from fxkit.graph_module import GraphModule
from fxkit.immutable_collections import immutable_dict, immutable_list
from fxkit.interpreter import Interpreter
from fxkit.node import Node

__all__ = ["TensorMetadata", "ShapeProp"]

# fmt: off
TensorMetadata = NamedTuple("TensorMetadata", [
    ("shape", torch.Size), ("dtype", torch.dtype), ("requires_grad", bool),
    ("stride", Tuple[int, ...]), ("memory_format", Optional[torch.memory_format]),
    ("is_quantized", bool), ("qparams", Dict[str, Any]),
])
# fmt: on
TensorMetadata.__doc__ = """What a pass needs to know about a tensor without holding it: shape,
dtype, requires_grad, stride, the memory format it is contiguous in (None if none), and its
quantization scheme and parameters (``qparams``: qscheme, scale, zero_point, axis)."""

_new_tuple = tuple.__new__
_SPARSE_LAYOUTS = frozenset(
    (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)
)
# Probe order matters: a tensor with size-1 dims can be contiguous in several formats, and the
# plain layout wins.
_FORMATS_BY_RANK = {
    4: (torch.contiguous_format, torch.channels_last),
    5: (torch.contiguous_format, torch.channels_last_3d),
}
_PLAIN_FORMAT = (torch.contiguous_format,)
_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (
    torch.per_channel_affine,
    torch.per_channel_affine_float_qparams,
    torch.per_channel_symmetric,
)


def _memory_format(t: torch.Tensor) -> Optional[torch.memory_format]:
    formats = _FORMATS_BY_RANK.get(t.dim(), _PLAIN_FORMAT)
    if type(t) is torch.Tensor or type(t) is torch.nn.Parameter:
        # Plain tensors have concrete sizes: the flags torch keeps per tensor are exact.
        for fmt in formats:
            if t.is_contiguous(memory_format=fmt):
                return fmt
        return None
    # Subclasses (fake tensors with symbolic sizes among them) may not be able to answer
    # without guarding; ask the reference check that answers "no" instead.
    from torch._prims_common import is_contiguous_for_memory_format_or_false as contiguous

    for fmt in formats:
        if contiguous(t, memory_format=fmt):
            return fmt
    return None


def _qparams(t: torch.Tensor) -> Dict[str, Any]:
    scheme = t.qscheme()
    if scheme in _PER_TENSOR:
        return {"qscheme": scheme, "scale": t.q_scale(), "zero_point": t.q_zero_point()}
    if scheme in _PER_CHANNEL:
        return {
            "qscheme": scheme,
            "scale": t.q_per_channel_scales().tolist(),
            "zero_point": t.q_per_channel_zero_points().tolist(),
            "axis": t.q_per_channel_axis(),
        }
    return {"qscheme": scheme}


def _extract_tensor_metadata(
    result: torch.Tensor, include_contiguity: bool = True
) -> TensorMetadata:
    """The :class:`TensorMetadata` of ``result``. Sparse tensors get an empty stride and no
    memory format; ``include_contiguity=False`` skips the memory-format probe."""
    dense = result.layout not in _SPARSE_LAYOUTS
    quantized = result.is_quantized
    # tuple.__new__ skips the named tuple's Python-level __new__: this runs once per node.
    return _new_tuple(
        TensorMetadata,
        (
            result.shape,
            result.dtype,
            result.requires_grad,
            result.stride() if dense else (),
            _memory_format(result) if include_contiguity and dense else None,
            quantized,
            _qparams(result) if quantized else {},
        ),
    )


def _describe(value: Any) -> Tuple[Any, bool]:
    """``value`` with every tensor replaced by its metadata, and whether it held any.

    Containers are rebuilt the way node arguments are: lists and dicts become immutable,
    named tuples keep their type, other tuple subclasses become plain tuples.
    """
    if isinstance(value, torch.Tensor):
        return _extract_tensor_metadata(value), True
    if isinstance(value, tuple):
        parts = [_describe(v) for v in value]
        items = [p[0] for p in parts]
        found = any(p[1] for p in parts)
        return (type(value)(*items) if hasattr(value, "_fields") else tuple(items)), found
    if isinstance(value, list):
        parts = [_describe(v) for v in value]
        return immutable_list(p[0] for p in parts), any(p[1] for p in parts)
    if isinstance(value, dict):
        described = {k: _describe(v) for k, v in value.items()}
        found = any(p[1] for p in described.values())
        return immutable_dict({k: p[0] for k, p in described.items()}), found
    if isinstance(value, slice):
        parts = [_describe(v) for v in (value.start, value.stop, value.step)]
        return slice(*(p[0] for p in parts)), any(p[1] for p in parts)
    return value, False


class ShapeProp(Interpreter):
    """Run ``gm`` on example inputs, recording tensor metadata on every node.

    After :meth:`propagate`, each node whose result holds a tensor has
    ``node.meta["tensor_meta"]`` (a :class:`TensorMetadata`, or a container of them shaped
    like the result), and every node has ``node.meta["type"]``::

        gm = fxkit.symbolic_trace(model)
        ShapeProp(gm).propagate(torch.randn(8, 16))
        for node in gm.graph.nodes:
            print(node.name, node.meta["tensor_meta"].shape)

    Args:
        gm: the module to run.
        fake_mode: a ``FakeTensorMode`` to run in, so no real compute or memory is spent;
            inputs are converted with it and a fake copy of ``gm`` supplies parameters.
            Defaults to the fake mode active around the call, if any.

    A node that fails prints its traceback to stderr and raises
    ``RuntimeError("ShapeProp error for: node=...")`` chained to the original exception.
    """

    def __init__(self, gm: GraphModule, fake_mode: Any = None) -> None:
        super().__init__(gm)
        if fake_mode is None:
            from torch._guards import detect_fake_mode

            fake_mode = detect_fake_mode()
        self.fake_mode = fake_mode
        self.fake_module: Optional[torch.nn.Module] = None
        if fake_mode is not None:
            from torch._subclasses.fake_tensor import FakeCopyMode

            # The metadata goes on the real module's nodes, so only a copy is made fake.
            with FakeCopyMode(fake_mode):
                self.fake_module = copy.deepcopy(self.module)
        self.real_module = self.module

    def run_node(self, n: Node) -> Any:
        """Run ``n`` (under the fake mode, if any) and record its metadata."""
        try:
            if self.fake_module is None:
                result = super().run_node(n)
            else:
                result = self._run_fake(n)
        except Exception as e:
            raise self._node_failed(n, e) from e
        self._record(n, result)
        return result

    def _inline_hooks(self) -> Any:
        # Real tensors and ShapeProp's own run_node: the interpreter's inline loop runs each
        # node and reports back here, which spares a method call and an arguments check per
        # node. A fake mode needs its context around every node, so it takes run_node.
        if self.fake_module is not None or type(self).run_node is not ShapeProp.run_node:
            return None
        return self._record, self._node_failed

    @staticmethod
    def _record(n: Node, result: Any) -> None:
        if isinstance(result, torch.Tensor):
            n.meta["tensor_meta"] = _extract_tensor_metadata(result)
        else:
            meta, has_tensor = _describe(result)
            if has_tensor:
                n.meta["tensor_meta"] = meta
        n.meta["type"] = type(result)

    @staticmethod
    def _node_failed(n: Node, e: Exception) -> Exception:
        traceback.print_exc()  # torch.fx prints the failure to stderr too; scripts see it
        return RuntimeError(f"ShapeProp error for: node={n.format_node()} with meta={n.meta}")

    def _run_fake(self, n: Node) -> Any:
        from torch._dispatch.python import enable_python_dispatcher

        # Attributes and submodules come from the fake copy while the node runs.
        self.module = self.fake_module  # type: ignore[assignment]
        try:
            with self.fake_mode, enable_python_dispatcher():
                return super().run_node(n)
        finally:
            self.module = self.real_module

    def propagate(self, *args: Any) -> Any:
        """Run the graph on ``args`` (converted to fake tensors under a fake mode) and return
        its result, filling in node metadata along the way."""
        if self.fake_mode is not None:
            args = tuple(
                self.fake_mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args
            )
        return self.run(*args)
