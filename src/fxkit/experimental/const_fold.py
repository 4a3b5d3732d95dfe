"""Constant folding: precompute the part of a graph that reads only attributes.

:func:`split_const_subgraphs` finds the nodes whose inputs are all parameters, buffers or other
such nodes, moves them into a separate *constant subgraph*, and returns a
:class:`FoldedGraphModule` whose graph reads the subgraph's results from one attribute
(``_FX_CONST_FOLDED_ATTRS``: a Parameter, or a ParameterList for several results). The
subgraph runs once, on the first call or on :meth:`FoldedGraphModule.run_folding`. Graphs,
names and generated code are those of torch.fx's ``experimental.const_fold``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import torch

from fxkit._symbolic_trace import symbolic_trace
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node, map_arg

__all__ = ["FoldedGraphModule", "get_unique_attr_name_in_module", "split_const_subgraphs"]

_CONST_PART, _REST_PART = 0, 1
# split_module names each partition's module "submod_<partition id>"
_CONST_MOD, _REST_MOD = f"submod_{_CONST_PART}", f"submod_{_REST_PART}"


class FoldedGraphModule(GraphModule):
    """A GraphModule with a ``const_subgraph_module`` that computes, from attributes only, the
    values its graph reads from the attribute ``fx_const_folded_attrs_name``.

    The constant subgraph runs once, before the first call (or when :meth:`run_folding` is
    called); its results become Parameters on ``device_for_folded_attrs`` (integers) or keep
    the device they were computed on (tensors).
    """

    def __init__(
        self,
        root: torch.nn.Module,
        graph: Graph,
        const_subgraph: Graph | None = None,
        fx_const_folded_attrs_name: str | None = None,
        device_for_folded_attrs: str = "cuda",
    ) -> None:
        super().__init__(root, graph)
        self.device_for_folded_attrs = device_for_folded_attrs
        self.fx_const_folded_attrs_name = fx_const_folded_attrs_name
        self.has_folding_been_run = False
        self.const_subgraph_module: GraphModule | None = None
        if const_subgraph is not None:
            self.const_subgraph_module = GraphModule(root, const_subgraph)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.has_folding_been_run:
            self.run_folding()
        # torch.fx drops keyword arguments here; passing them on only matters to calls that
        # would otherwise fail or silently use a default.
        return super().__call__(*args, **kwargs)

    def run_folding(self) -> None:
        """Run the constant subgraph and store its results as Parameters under
        ``fx_const_folded_attrs_name``. Raises ``AssertionError`` if folding already ran;
        does nothing when there is nothing to fold."""
        if self.const_subgraph_module is None or self.fx_const_folded_attrs_name is None:
            return
        if self.has_folding_been_run:
            raise AssertionError("Folding has already been run")
        self.has_folding_been_run = True
        folded = self.const_subgraph_module()
        if isinstance(folded, tuple):
            value: torch.nn.Module | torch.nn.Parameter = torch.nn.ParameterList(
                [self._as_parameter(v) for v in folded]
            )
        else:
            value = self._as_parameter(folded)
        setattr(self, self.fx_const_folded_attrs_name, value)

    def _as_parameter(self, value: torch.Tensor | int) -> torch.nn.Parameter:
        if isinstance(value, int):
            boxed = torch.Tensor([value]).to(device=self.device_for_folded_attrs)
            return torch.nn.Parameter(boxed, requires_grad=False)
        return torch.nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad)


def get_unique_attr_name_in_module(mod_traced: torch.nn.Module, name: str) -> str:
    """``name`` made a valid identifier (runs of other characters become ``_``, a leading
    digit gets a ``_`` prefix) and then unique on ``mod_traced`` by adding or incrementing
    a ``_<n>`` suffix."""
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", name)
    if name[:1].isdigit():
        name = "_" + name
    while hasattr(mod_traced, name):
        stem, sep, count = name.rpartition("_")
        if sep and count.isdigit() and count.isascii():
            name = f"{stem}_{int(count) + 1}"
        else:
            name = f"{name}_1"
    return name


def _graph_module_of(module: Any) -> GraphModule:
    if isinstance(module, GraphModule):
        return module
    graph = getattr(module, "graph", None)
    if isinstance(module, torch.nn.Module) and hasattr(graph, "nodes") and hasattr(graph, "lint"):
        # a torch.fx GraphModule (what torch.export or make_fx hand out): use its graph as is
        from fxkit.interop import from_torch_fx

        return from_torch_fx(module)  # type: ignore[arg-type]
    return symbolic_trace(module)


def _has_impure_node(gm: GraphModule) -> bool:
    """True if ``gm``'s graph, or a GraphModule it calls (at any depth), has an impure call."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.is_impure():
            return True
        if node.op == "call_module":
            sub = gm.get_submodule(node.target)
            if isinstance(sub, GraphModule) and _has_impure_node(sub):
                return True
    return False


def _symbolic_fill_value(node: Node) -> bool:
    fill = node.kwargs.get("fill_value")
    if fill is None or isinstance(fill, (int, float, bool)):
        return False
    import sympy

    return isinstance(fill, sympy.Expr)


def _foldable_nodes(gm: GraphModule, skip: Callable[[Node], bool] | None) -> tuple[set[Node], bool]:
    """The constant nodes of ``gm`` (attributes, and nodes computed only from constant
    nodes, except skipped or impure ones), and whether any of them computes something."""
    const: set[Node] = set()
    computes = False
    for node in gm.graph.nodes:
        op = node.op
        if op in ("placeholder", "output"):
            continue
        if op != "get_attr" and not all(inp in const for inp in node.all_input_nodes):
            continue
        if skip is not None and skip(node):
            continue
        if node.is_impure() or _symbolic_fill_value(node):
            continue
        if op == "call_module":
            sub = gm.get_submodule(node.target)
            if isinstance(sub, GraphModule) and _has_impure_node(sub):
                continue
        const.add(node)
        computes = computes or op != "get_attr"
    return const, computes


def _inline_module(gm: GraphModule, inline_mod_name: str, run_dce: bool = True) -> dict[Node, Any]:
    """Replace the (first) call of the GraphModule ``inline_mod_name`` in ``gm``'s graph by a
    copy of its nodes; returns ``{node of the inlined graph: what replaced it in gm}``."""
    inlined = dict(gm.named_modules())[inline_mod_name]
    if not isinstance(inlined, GraphModule):
        raise AssertionError(f"Expected GraphModule, got {type(inlined)}")
    call = next(
        (n for n in gm.graph.nodes if n.op == "call_module" and n.target == inline_mod_name),
        None,
    )
    if call is None:
        raise AssertionError(f"Could not find call_module node for {inline_mod_name}")

    mapping: dict[Node, Any] = {}

    def translate(inner: Node) -> Any:
        # Every node read through the mapping takes the inner node's meta, as torch.fx does.
        outer = mapping[inner]
        outer.meta = inner.meta.copy()
        return outer

    positional = iter(call.args)
    graph = gm.graph
    for inner in inlined.graph.nodes:
        if inner.op == "placeholder":
            # a placeholder consumes a positional slot even when it is passed by keyword
            slot = next(positional, None)
            mapping[inner] = call.kwargs[inner.name] if inner.name in call.kwargs else slot
        elif inner.op == "output":
            _redirect_users(graph, call, map_arg(inner.args[0], translate), mapping)
        else:
            with graph.inserting_before(call):
                mapping[inner] = graph.node_copy(inner, translate)
    # The module may hold impure ops, so dead-code elimination would keep the call: drop it.
    graph.erase_node(call)
    if run_dce:
        graph.eliminate_dead_code()
    return mapping


def _redirect_users(graph: Graph, call: Node, result: Any, mapping: dict[Node, Any]) -> None:
    """Make the users of ``call`` read ``result`` (a node, or a tuple/list of them), taking
    ``getitem(call, i)`` users straight to ``result[i]``."""
    if isinstance(result, Node) or not isinstance(result, (tuple, list)):
        call.replace_all_uses_with(result)
        return
    for user in list(call.users):
        index = user.args[1] if len(user.args) > 1 else None
        if user.op == "call_function" and user.target is operator.getitem and type(index) is int:
            user.replace_all_uses_with(result[index])
            graph.erase_node(user)
            mapping[user] = result[index]
        else:  # any other reader sees the tuple of results itself
            user.args = map_arg(user.args, lambda n: result if n is call else n)
            user.kwargs = map_arg(user.kwargs, lambda n: result if n is call else n)


def _attrs_for_const_graph(root_const_gm: GraphModule, call_args: tuple) -> bool:
    """Turn the constant graph's placeholders into ``get_attr`` nodes of the attributes the
    outer graph passed in ``call_args`` (in the same order); returns whether the graph
    returns several values."""
    graph = root_const_gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for index, placeholder in enumerate(placeholders):
        if index >= len(call_args):
            raise AssertionError(
                f"Placeholder index {index} out of range for args (len={len(call_args)})"
            )
        source = call_args[index]
        if source.op != "get_attr":
            raise AssertionError(f"Expected get_attr, got {source.op}")
        with graph.inserting_before(placeholder):
            attr = graph.get_attr(source.target)
        attr.meta = placeholder.meta.copy()
        placeholder.replace_all_uses_with(attr)
        graph.erase_node(placeholder)
    return isinstance(graph.output_node().args[0], tuple)


def split_const_subgraphs(
    module: torch.nn.Module | GraphModule,
    skip_folding_node_fn: Callable[[Node], bool] | None = None,
    device_for_folded_attrs: str = "cpu",
) -> FoldedGraphModule:
    """Split ``module`` (traced first unless it is a GraphModule) into a constant subgraph,
    computed from attributes only, and the rest, which reads the folded values from one
    attribute. Nodes for which ``skip_folding_node_fn(node)`` is true, impure nodes and
    their dependents stay unfolded. With nothing to fold the result runs the original graph.

    Example::

        folded = split_const_subgraphs(model)
        folded.run_folding()          # or let the first call do it
        out = folded(x)
    """
    from fxkit.passes.split_module import split_module

    traced = _graph_module_of(module)
    const_nodes, computes = _foldable_nodes(traced, skip_folding_node_fn)
    if not computes:
        return FoldedGraphModule(traced, traced.graph)

    split = split_module(traced, module, lambda n: _CONST_PART if n in const_nodes else _REST_PART)
    const_gm = getattr(split, _CONST_MOD)
    if not isinstance(const_gm, GraphModule):
        raise AssertionError(f"Expected GraphModule for {_CONST_MOD}, got {type(const_gm)}")
    rest_gm = getattr(split, _REST_MOD, None)
    if rest_gm is not None and not isinstance(rest_gm, GraphModule):
        raise AssertionError(f"Expected GraphModule for {_REST_MOD}, got {type(rest_gm)}")

    # split_module copies each called leaf module into the partition that calls it under a
    # flattened name; the folded module calls them from ``split`` itself.
    for part in (rest_gm, const_gm):
        if part is None:
            continue
        for node in part.graph.nodes:
            if node.op == "call_module":
                setattr(split, node.target, getattr(part, node.target))

    const_call = next(
        (n for n in split.graph.nodes if n.op == "call_module" and n.target == _CONST_MOD), None
    )
    if const_call is None:
        raise AssertionError("Could not find call_module node for const_gm")
    # The constant graph reads its attributes from ``split`` directly, so it can run with no
    # arguments.
    root_const_gm = GraphModule(split, const_gm.graph)
    several = _attrs_for_const_graph(root_const_gm, const_call.args)

    attrs_name = get_unique_attr_name_in_module(traced, "_FX_CONST_FOLDED_ATTRS")
    placeholder_value = torch.nn.ParameterList() if several else torch.nn.Parameter()
    setattr(split, attrs_name, placeholder_value)
    with split.graph.inserting_before(const_call):
        folded = split.graph.get_attr(attrs_name)
    folded.meta = const_call.meta.copy()
    const_call.replace_all_uses_with(folded)

    if hasattr(split, _REST_MOD):
        _inline_module(split, _REST_MOD)
    split.graph.eliminate_dead_code()
    return FoldedGraphModule(
        split, split.graph, root_const_gm.graph, attrs_name, device_for_folded_attrs
    )
