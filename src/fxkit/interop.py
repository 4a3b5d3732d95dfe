"""Convert graphs and GraphModules between fxkit and torch.fx, in both directions.

This is the only fxkit module that imports ``torch.fx``. Conversion copies each node's op,
target, arguments, name, type and meta, and the pytree calling convention when there is one;
the module's parameters, buffers and submodules are shared, not copied.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
import torch.fx as tfx
from torch.fx.graph import _PyTreeCodeGen as _TorchPyTreeCodeGen
from torch.fx.graph import _PyTreeInfo as _TorchPyTreeInfo

from fxkit.codegen import _PyTreeCodeGen, _PyTreeInfo
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node

__all__ = ["to_torch_fx", "from_torch_fx", "graph_to_torch_fx", "graph_from_torch_fx"]


def _copy_nodes(source: Any, dest: Any, node_type: type) -> None:
    """Append copies of ``source``'s nodes to ``dest`` (graphs of either library)."""
    mapping: Dict[Any, Any] = {}

    def convert(a: Any) -> Any:
        # The two libraries' map_arg only recognise their own Node class.
        if isinstance(a, node_type):
            return mapping[a]
        if isinstance(a, tuple):
            items = [convert(x) for x in a]
            return type(a)(*items) if hasattr(a, "_fields") else tuple(items)
        if isinstance(a, list):
            return [convert(x) for x in a]
        if isinstance(a, dict):
            return {k: convert(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(convert(a.start), convert(a.stop), convert(a.step))
        return a

    for node in source.nodes:
        new = dest.create_node(
            node.op, node.target, convert(node.args), convert(node.kwargs), node.name, node.type
        )
        if new.name != node.name:
            raise RuntimeError(f"node name {node.name!r} changed to {new.name!r} in conversion")
        new.meta = dict(node.meta)
        mapping[node] = new


def graph_to_torch_fx(graph: Graph) -> tfx.Graph:
    """A torch.fx Graph with the same nodes as the fxkit ``graph``."""
    if not isinstance(graph, Graph):
        raise TypeError(f"graph_to_torch_fx expects a fxkit Graph, got {type(graph).__name__}")
    out = tfx.Graph()
    _copy_nodes(graph, out, Node)
    codegen = graph._codegen
    if isinstance(codegen, _PyTreeCodeGen) and codegen.pytree_info is not None:
        info = codegen.pytree_info
        out.set_codegen(_TorchPyTreeCodeGen(_TorchPyTreeInfo(info.orig_args, info.in_spec,
                                                             info.out_spec)))  # fmt: skip
    return out


def graph_from_torch_fx(graph: tfx.Graph) -> Graph:
    """An fxkit Graph with the same nodes as the torch.fx ``graph``."""
    if not isinstance(graph, tfx.Graph):
        raise TypeError(f"graph_from_torch_fx expects a torch.fx Graph, got {type(graph).__name__}")
    out = Graph()
    _copy_nodes(graph, out, tfx.Node)
    codegen = graph._codegen
    if isinstance(codegen, _TorchPyTreeCodeGen) and codegen.pytree_info is not None:
        info = codegen.pytree_info
        out.set_codegen(_PyTreeCodeGen(_PyTreeInfo(info.orig_args, info.in_spec, info.out_spec)))
    return out


def _convert_module(gm: torch.nn.Module, graph: Any, make: Callable[..., Any]) -> Any:
    result = make(gm, graph, type(gm).__name__)
    result.meta = dict(getattr(gm, "meta", {}))
    return result


def to_torch_fx(gm: GraphModule) -> tfx.GraphModule:
    """A torch.fx GraphModule running the same graph over the same parameters and submodules."""
    if not isinstance(gm, GraphModule):
        raise TypeError(f"to_torch_fx expects a fxkit GraphModule, got {type(gm).__name__}")
    return _convert_module(gm, graph_to_torch_fx(gm.graph), tfx.GraphModule)


def from_torch_fx(gm: tfx.GraphModule) -> GraphModule:
    """An fxkit GraphModule running the same graph over the same parameters and submodules."""
    if not isinstance(gm, tfx.GraphModule):
        raise TypeError(f"from_torch_fx expects a torch.fx GraphModule, got {type(gm).__name__}")
    return _convert_module(gm, graph_from_torch_fx(gm.graph), GraphModule)
