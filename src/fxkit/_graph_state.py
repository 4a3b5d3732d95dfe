"""Flat, non-recursive state for pickling and copying graphs.

Pickling the linked list node by node would recurse once per node (a 50k-node chain exceeds
the recursion limit), so a graph is stored as a list of records whose node references are
indices into that list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List

from fxkit.node import Node, map_arg

if TYPE_CHECKING:
    from fxkit.graph import Graph

_STATE_VERSION = 1


class _Ref:
    """Stands for "the node at this index" inside pickled arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple:
        return (_Ref, (self.index,))


def graph_to_state(graph: "Graph") -> Dict[str, Any]:
    position: Dict[Node, int] = {}
    records: List[tuple] = []
    refs: Dict[int, _Ref] = {}

    def ref(n: Node) -> _Ref:
        i = position[n]
        r = refs.get(i)
        if r is None:
            r = refs[i] = _Ref(i)
        return r

    for i, node in enumerate(graph.nodes):
        position[node] = i
        records.append(
            (node.op, node.name, node.target, map_arg(node.args, ref),
             map_arg(node.kwargs, ref), node.type, node.meta)
        )  # fmt: skip
    return {
        "version": _STATE_VERSION,
        "nodes": records,
        "codegen": graph._codegen,
        "tracer_cls": graph._tracer_cls,
        "tracer_extras": graph._tracer_extras,
    }


def graph_from_state(graph: "Graph", state: Dict[str, Any]) -> None:
    from fxkit.graph import Graph

    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"unsupported pickled graph version {state.get('version')!r}")
    Graph.__init__(graph, tracer_cls=state["tracer_cls"], tracer_extras=state["tracer_extras"])
    graph._codegen = state["codegen"]
    built: List[Node] = []

    def deref(a: Any) -> Any:
        return built[a.index] if isinstance(a, _Ref) else a

    from fxkit.node import map_aggregate

    for op, name, target, args, kwargs, type_expr, meta in state["nodes"]:
        node = graph.create_node(
            op, target, map_aggregate(args, deref), map_aggregate(kwargs, deref), name, type_expr
        )
        node.meta = meta
        built.append(node)
