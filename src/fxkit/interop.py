"""Convert graphs and GraphModules between fxkit and torch.fx, in both directions.

This is the only fxkit module that imports ``torch.fx``. Conversion copies each node's op,
target, arguments, name, type and meta, and the pytree calling convention when there is one;
the module's parameters, buffers and submodules are shared, not copied.
"""

from __future__ import annotations

import copy
import sys
from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.fx as tfx
from torch.fx.graph import _PyTreeCodeGen as _TorchPyTreeCodeGen
from torch.fx.graph import _PyTreeInfo as _TorchPyTreeInfo

from fxkit.codegen import _PyTreeCodeGen, _PyTreeInfo
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node, _map_nodes_of_class

__all__ = [
    "to_torch_fx",
    "from_torch_fx",
    "graph_to_torch_fx",
    "graph_from_torch_fx",
    "torch_symbolic_shapes",
    "torch_sym_node",
    "torch_fx_experimental",
    "is_torch_fx_proxy",
    "torch_fx_node_class",
    "torch_fx_unification_var_class",
    "torch_fx_side_effectful",
    "torch_make_fx",
]


def torch_fx_wrap_registry() -> Tuple[List[Tuple[dict, str]], List[Tuple[type, str]]]:
    """What other libraries registered with ``torch.fx.wrap``, for fxkit's tracer to honour.

    Returns ``([(module globals, function name), ...], [(class, method name), ...])``: the
    functions torch.fx would record as ``call_function`` nodes, and the methods it would record
    as ``call_method`` nodes. Read on every trace (libraries register at import time), from
    the tables of the already loaded ``torch.fx._symbolic_trace`` module; empty if it is not
    loaded or a future torch renames them.
    """
    tracer_module = sys.modules.get("torch.fx._symbolic_trace")
    if tracer_module is None:
        return [], []
    fns = getattr(tracer_module, "_wrapped_fns_to_patch", None)
    methods = getattr(tracer_module, "_wrapped_methods_to_patch", None)
    # copy() first: another thread may be importing a module that registers right now.
    fn_items = [(ns, key[1]) for key, ns in fns.copy().items()] if isinstance(fns, dict) else []
    return fn_items, list(methods) if isinstance(methods, list) else []


def _copy_nodes(source: Any, dest: Any, node_type: type) -> None:
    """Append copies of ``source``'s nodes to ``dest`` (graphs of either library)."""
    mapping: Dict[Any, Any] = {}

    def convert(a: Any) -> Any:
        # The two libraries' map_arg only recognise their own Node class.
        return _map_nodes_of_class(a, mapping.__getitem__, node_type)

    for node in source.nodes:
        new = dest.create_node(
            node.op, node.target, convert(node.args), convert(node.kwargs), node.name, node.type
        )
        if new.name != node.name:
            raise RuntimeError(f"node name {node.name!r} changed to {new.name!r} in conversion")
        new.meta = _copy_meta(node.meta)
        mapping[node] = new


def _copy_meta(meta: Dict[str, Any]) -> Dict[str, Any]:
    """A deep copy of a node's (or module's) meta, so editing one side leaves the other alone.

    A value that cannot be deep-copied (an open handle, a fake tensor of a finished mode) is
    shared instead of failing the whole conversion.
    """
    memo: Dict[int, Any] = {}
    try:
        return copy.deepcopy(meta, memo)
    except Exception:
        pass
    out = {}
    for key, value in meta.items():
        try:
            out[key] = copy.deepcopy(value, memo)
        except Exception:
            out[key] = copy.copy(value) if isinstance(value, (dict, list)) else value
    return out


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
    _reserve_names(graph, out)
    codegen = graph._codegen
    if isinstance(codegen, _TorchPyTreeCodeGen) and codegen.pytree_info is not None:
        info = codegen.pytree_info
        out.set_codegen(_PyTreeCodeGen(_PyTreeInfo(info.orig_args, info.in_spec, info.out_spec)))
    return out


def _reserve_names(source: Any, dest: Graph) -> None:
    # torch.fx keeps the names of erased nodes taken; so must the copy, or a pass that adds
    # nodes afterwards would pick names torch.fx would not (``ge`` where torch.fx says ``ge_1``).
    namespace = getattr(source, "_graph_namespace", None)
    names = dest._names
    for name in getattr(namespace, "_used_names", ()):
        if name not in names.live:
            names.retired.add(name)
    for base, count in getattr(namespace, "_base_count", {}).items():
        if count > names.next_suffix.get(base, 0):
            names.next_suffix[base] = count


def _convert_module(gm: torch.nn.Module, graph: Any, make: Callable[..., Any]) -> Any:
    result = make(gm, graph, type(gm).__name__)
    result.meta = _copy_meta(getattr(gm, "meta", {}))
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


# --- torch's symbolic-shape machinery ------------------------------------------------------------
# FakeTensorMode creates its symbols in a torch ShapeEnv and a SymInt wraps a torch SymNode; both
# live under torch.fx. fxkit's aten-level modules (make_fx, sym_node, recording, validator,
# runtime asserts) must hand torch these very objects, so they reach them through here.


def torch_symbolic_shapes() -> Any:
    """``torch.fx.experimental.symbolic_shapes``: ``ShapeEnv``, ``free_symbols``, guards and
    the other helpers FakeTensorMode's symbolic sizes are made of."""
    import torch.fx.experimental.symbolic_shapes as symbolic_shapes

    return symbolic_shapes


def torch_sym_node() -> Any:
    """``torch.fx.experimental.sym_node``: the ``SymNode`` class inside every SymInt/SymFloat/
    SymBool and its magic-method tables."""
    import torch.fx.experimental.sym_node as sym_node

    return sym_node


def torch_fx_experimental(name: str) -> Any:
    """``torch.fx.experimental.<name>`` (e.g. ``"recording"``, ``"validator"``,
    ``"_config"``), for the few torch-owned registries and flags fxkit must read or write."""
    import importlib

    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a module name: {name!r}")
    return importlib.import_module(f"torch.fx.experimental.{name}")


def is_torch_fx_proxy(value: Any) -> bool:
    """Whether ``value`` is a torch.fx ``Proxy`` (libraries test for it to skip checks)."""
    return isinstance(value, tfx.Proxy)


def torch_fx_node_class() -> type:
    """torch.fx's ``Node`` class, for code that accepts nodes of either library."""
    return tfx.Node


def torch_fx_unification_var_class() -> Any:
    """torch.fx's unification ``Var`` class if that module is loaded, else None (then no such
    variable can exist, and nothing is imported to find out)."""
    variables = sys.modules.get("torch.fx.experimental.unification.variable")
    return None if variables is None else variables.Var


def torch_fx_side_effectful() -> set:
    """torch.fx's registry of functions dead-code elimination must keep (the live set, so
    later ``torch.fx.node.has_side_effect`` registrations count too)."""
    import torch.fx.node as fx_node

    return fx_node._side_effectful_functions


def torch_make_fx(f: Callable[..., Any], **options: Any) -> Callable[..., GraphModule]:
    """torch's own ``make_fx(f, **options)``, its result converted to an fxkit GraphModule.

    For the tracing modes fxkit's make_fx does not implement itself (``pre_dispatch=True``:
    torch's pre-dispatch mode stack accepts only torch's own proxy mode class)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    traced = make_fx(f, **options)

    def run(*args: Any) -> GraphModule:
        return from_torch_fx(traced(*args))

    return run
