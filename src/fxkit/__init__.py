"""fxkit: capture, inspect, transform and regenerate PyTorch modules.

The public API mirrors torch.fx (``import fxkit as fx``): the symbolic tracer
(:func:`symbolic_trace`, :class:`Tracer`, :class:`Proxy`, :func:`wrap`), a graph IR
(:class:`Graph`, :class:`Node`), Python code generation (:class:`GraphModule`,
:class:`CodeGen`), node-by-node execution (:class:`Interpreter`, :class:`Transformer`) and
the subgraph rewriter (:func:`replace_pattern`).
"""

from fxkit import immutable_collections, subgraph_rewriter, traceback
from fxkit._explain import explain
from fxkit._symbolic_trace import PH, ProxyableClassMeta, Tracer, symbolic_trace, wrap
from fxkit.graph import CodeGen, Graph, PythonCode
from fxkit.graph_module import GraphModule
from fxkit.interpreter import Interpreter, Transformer
from fxkit.node import Node, has_side_effect, map_arg
from fxkit.proxy import Proxy
from fxkit.serialize import load, save
from fxkit.subgraph_rewriter import replace_pattern

__version__ = "0.1.0"

__all__ = [
    "PH",
    "CodeGen",
    "Graph",
    "GraphModule",
    "Interpreter",
    "Node",
    "Proxy",
    "ProxyableClassMeta",
    "PythonCode",
    "Tracer",
    "Transformer",
    "explain",
    "has_side_effect",
    "immutable_collections",
    "load",
    "map_arg",
    "replace_pattern",
    "save",
    "subgraph_rewriter",
    "symbolic_trace",
    "traceback",
    "wrap",
]
