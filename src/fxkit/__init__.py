"""fxkit: capture, inspect, transform and regenerate PyTorch modules.

The public API mirrors torch.fx (``import fxkit as fx``): a graph IR (:class:`Graph`,
:class:`Node`), Python code generation (:class:`GraphModule`, :class:`CodeGen`), and, as
they land, the symbolic tracer, the interpreter and the subgraph rewriter.
"""

from fxkit import immutable_collections
from fxkit.graph import CodeGen, Graph, PythonCode
from fxkit.graph_module import GraphModule
from fxkit.node import Node, has_side_effect, map_arg

__version__ = "0.1.0"

__all__ = [
    "CodeGen",
    "Graph",
    "GraphModule",
    "Node",
    "PythonCode",
    "has_side_effect",
    "immutable_collections",
    "map_arg",
]
