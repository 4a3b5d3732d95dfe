"""Group graph nodes by the source call (function or leaf module) they came from.

The tracer records where each node came from in ``node.meta["source_fn_stack"]`` (a list
of ``(unique_name, fn_or_module_type)``, innermost last) and ``node.meta["nn_module_stack"]``
(``{key: (qualified_name, module_type)}``, innermost last). :func:`get_source_partitions`
collects, for each wanted source, one :class:`SourcePartition` per distinct call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from fxkit.graph import Graph
from fxkit.interpreter import _node_class
from fxkit.node import Node

__all__ = ["get_source_partitions", "check_subgraphs_connected", "SourcePartition"]


def _starts_empty(kind: type) -> Any:
    """A dataclass field that gets a fresh empty ``kind`` per instance."""
    return field(default_factory=kind)


@dataclass
class SourcePartition:
    """The nodes one call of ``source`` decomposed into, with its boundary."""

    nodes: List[Node]
    """Nodes in the partition, in graph order."""
    source: Any
    """The function or leaf module type the nodes came from."""
    input_nodes: List[Node] = _starts_empty(list)
    """Nodes outside the partition whose values it reads (parameters excluded)."""
    output_nodes: List[Node] = _starts_empty(list)
    """Partition nodes whose values are read outside it."""
    params: List[Node] = _starts_empty(list)
    """get_attr nodes (parameters, buffers) inside the partition."""


def _module_type_matches(wanted: Any, recorded: Any) -> bool:
    if isinstance(wanted, type):
        if isinstance(recorded, type):
            return issubclass(recorded, wanted)
        if isinstance(recorded, str):
            return recorded == f"{wanted.__module__}.{wanted.__qualname__}"
        return False
    return recorded == wanted


def _make_partition(nodes: List[Node], source: Any, node_cls: type) -> SourcePartition:
    members = set(nodes)
    inputs: Dict[Node, None] = {}
    outputs: Dict[Node, None] = {}
    params: Dict[Node, None] = {}
    for n in nodes:
        for arg in n.args:
            if isinstance(arg, node_cls) and arg not in members and arg.op != "get_attr":
                inputs[arg] = None
        if n.op == "get_attr":
            params[n] = None
            continue
        if any(user not in members for user in n.users):
            outputs[n] = None
    return SourcePartition(nodes, source, list(inputs), list(outputs), list(params))


def get_source_partitions(
    graph: Graph,
    wanted_sources: List[Any],
    filter_fn: Optional[Callable[[Node], bool]] = None,
) -> Dict[Any, List[SourcePartition]]:
    """Partition ``graph``'s nodes by source call, for the sources in ``wanted_sources``.

    A source is a function (e.g. ``torch.nn.functional.linear``) or a leaf module type (e.g.
    ``torch.nn.Linear``). Nodes are grouped by the innermost ``source_fn_stack`` entry; nodes
    without one fall back to ``meta["torch_fn"]`` and then (call_function nodes only) to the
    innermost ``nn_module_stack`` entry. ``filter_fn``, if given, drops every partition with a
    node it rejects. Returns ``{source: [SourcePartition, ...]}`` for the sources found.
    """
    # fxkit's Graph or torch.fx's (torch.export, make_fx): only the Graph API is used.
    if not hasattr(graph, "nodes"):
        raise TypeError(f"get_source_partitions expects a Graph, got {type(graph).__name__}")
    if not isinstance(wanted_sources, (list, tuple, set)):
        raise TypeError(
            f"wanted_sources must be a list of functions or module types, got "
            f"{type(wanted_sources).__name__}"
        )
    groups: Dict[Any, Dict[Any, List[Node]]] = {}
    node_cls = _node_class(graph)

    def add(source: Any, key: Any, node: Node) -> None:
        groups.setdefault(source, {}).setdefault(key, []).append(node)

    for node in graph.nodes:
        stack = node.meta.get("source_fn_stack")
        if stack:
            name, fn = stack[-1]
            if fn in wanted_sources:
                add(fn, name, node)
            continue
        torch_fn = node.meta.get("torch_fn")
        if torch_fn is not None:
            fqn, qualified = torch_fn
            short = qualified.split(".")[1] if "." in qualified else qualified
            if short in wanted_sources:
                add(short, fqn, node)
                continue
        if node.op != "call_function":
            continue
        module_stack = node.meta.get("nn_module_stack")
        if not module_stack:
            continue
        fqn, recorded = list(module_stack.values())[-1]
        for wanted in wanted_sources:
            if _module_type_matches(wanted, recorded):
                add(wanted, fqn, node)
                break

    result: Dict[Any, List[SourcePartition]] = {}
    for source, by_call in groups.items():
        parts = by_call.values()
        if filter_fn is not None:
            parts = [p for p in parts if all(filter_fn(n) for n in p)]  # type: ignore[assignment]
        result[source] = [_make_partition(p, source, node_cls) for p in parts]
    return result


def check_subgraphs_connected(subgraph1: SourcePartition, subgraph2: SourcePartition) -> bool:
    """True if some node of ``subgraph2`` reads a node of ``subgraph1`` (direction matters)."""
    targets = set(subgraph2.nodes)
    return any(user in targets for node in subgraph1.nodes for user in node.users)
