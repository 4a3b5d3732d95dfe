"""Small graph utilities: swap the op/target of matching nodes, and estimate node sizes in
bytes from the metadata :class:`~fxkit.passes.shape_prop.ShapeProp` records.

The size estimate counts a node's output elements plus, for a ``call_module`` node, the
elements of every parameter of the called module; all counted at the output's element size.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, NamedTuple, Optional

import torch

from fxkit.node import _map_nodes_of_class
from fxkit.passes.shape_prop import ShapeProp, TensorMetadata

__all__ = ["get_size_of_all_nodes", "get_size_of_node", "get_tensor_meta"]
__all__ += ["replace_target_nodes_with", "size_bytes"]


def replace_target_nodes_with(
    fx_module: Any, old_op: str, old_target: Any, new_op: str, new_target: Any
) -> None:
    """Give every node of ``fx_module`` with op ``old_op`` and target ``old_target`` the op
    ``new_op`` and target ``new_target`` instead.

    The graph is rebuilt (and assigned back to ``fx_module.graph``, which regenerates its
    code): rewritten nodes keep their name, args and kwargs but start with empty meta and
    no type annotation; all other nodes are copied as they are.
    """
    old_graph = fx_module.graph
    # A new graph of the module's own kind, so torch.fx modules get a torch.fx graph.
    new_graph = type(old_graph)()
    copies: Dict[Any, Any] = {}
    node_cls: Optional[type] = None
    for node in old_graph.nodes:
        if node_cls is None:
            node_cls = type(node)
        if node.op == old_op and node.target == old_target:
            args = _map_nodes_of_class(node.args, copies.__getitem__, node_cls)
            kwargs = _map_nodes_of_class(node.kwargs, copies.__getitem__, node_cls)
            copies[node] = new_graph.create_node(new_op, new_target, args, kwargs, node.name)
        else:
            copies[node] = new_graph.node_copy(node, copies.__getitem__)
    fx_module.graph = new_graph


class size_bytes(NamedTuple):
    """A node's estimated memory: ``output_size`` for its result alone, ``total_size`` for
    the result plus the parameters of the module it calls (both in bytes)."""

    output_size: int
    total_size: int


def get_size_of_all_nodes(fx_module: Any, args: Optional[List[torch.Tensor]] = None) -> None:
    """Set ``node.size_bytes`` (a :class:`size_bytes`) on every node before the output.

    With ``args``, :class:`ShapeProp` is run on them first to record the tensor metadata the
    sizes come from; without, that metadata must already be there.
    """
    if args is not None:
        ShapeProp(fx_module).propagate(*args)
    body = itertools.takewhile(lambda n: n.op != "output", fx_module.graph.nodes)
    for node in body:
        node.size_bytes = get_size_of_node(fx_module, node)


def get_tensor_meta(node: Any) -> TensorMetadata:
    """``node.meta["tensor_meta"]``; a ``RuntimeError`` if it is missing or empty."""
    found = node.meta.get("tensor_meta")
    if not found:
        raise RuntimeError(
            f"Node {node} has no tensor metadata associated with it! "
            "Check that shape propagation has run."
        )
    return found


def _element_size(dtype: torch.dtype, quantized: bool) -> int:
    # Bytes per element, asked of an empty tensor of the dtype (quantized dtypes need a
    # quantized tensor to answer).
    if quantized:
        return torch._empty_affine_quantized([], dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).element_size()


def get_size_of_node(fx_module: Any, node: Any) -> size_bytes:
    """The :class:`size_bytes` of ``node``, from its recorded tensor metadata and, for a
    ``call_module`` node, the parameters of the module ``fx_module`` holds at its target."""
    elements = 0
    if node.op == "call_module":
        module = dict(fx_module.named_modules())[node.target]
        elements += sum(p.numel() for _, p in module.named_parameters())
    meta = get_tensor_meta(node)
    output_elements = meta.shape.numel()
    per_element = _element_size(meta.dtype, meta.is_quantized)
    return size_bytes(per_element * output_elements, per_element * (elements + output_elements))
