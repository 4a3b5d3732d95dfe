"""Fuse groups of nodes ("partitions") of a GraphModule into submodules.

:func:`fuse_by_partitions` is the entry point: each partition becomes a submodule
``<prefix><i>`` called from the parent graph, which is then put back in topological order.
It is built from the smaller steps, also public: :func:`topo_sort` orders a partition,
:func:`validate_partition` checks that fusing it cannot create a cycle,
:func:`fuse_as_graphmodule` copies it out as a GraphModule, :func:`insert_subgm` calls that
module from the parent graph and :func:`erase_nodes` removes the originals.

Partition cycle checks walk the graph forward from the partition's outside users. Fusing many
partitions in one call bounds each walk by graph position and depth (see :class:`_Spans`),
so the whole call stays near-linear in the graph size.
"""

from __future__ import annotations

import copy
import heapq
import math
import operator
from collections.abc import Iterable
from typing import Any

from fxkit._compatibility import compatibility
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node
from fxkit.passes.tools_common import NodeList, NodeSet, legalize_graph, stable_topological_sort  # noqa: F401
from fxkit.passes.utils.common import lift_subgraph_as_module

__all__ = [
    "topo_sort",
    "validate_partition",
    "fuse_as_graphmodule",
    "insert_subgm",
    "erase_nodes",
    "fuse_by_partitions",
]


@compatibility(is_backward_compatible=False)
def topo_sort(nodes: NodeList) -> NodeList:
    """Order ``nodes`` so each comes after those of its inputs that are also in the list,
    otherwise keeping the given order (a stable topological sort). Raises
    ``AssertionError`` if the nodes depend on each other in a cycle."""
    position = {node: i for i, node in enumerate(nodes)}
    blockers = [sum(inp in position for inp in node.all_input_nodes) for node in nodes]
    ready = [i for i, count in enumerate(blockers) if count == 0]
    heapq.heapify(ready)
    ordered: NodeList = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        ordered.append(node)
        for user in node.users:
            i = position.get(user)
            if i is None:
                continue
            blockers[i] -= 1
            if blockers[i] == 0:
                heapq.heappush(ready, i)
    if len(ordered) != len(nodes):
        raise AssertionError("topological sorted nodes doesn't have same length as input nodes")
    return ordered


def _outside_users(members: Iterable[Node], inside: Any) -> list[Node]:
    return [user for node in members for user in node.users if user not in inside]


def _leaves_and_returns(inside: Any, spans: Any = None, limits: Any = None) -> bool:
    """Whether some path leaves the node set ``inside`` and comes back into it.

    Walks forward from the outside users. With ``spans``/``limits`` (see :class:`_Spans`),
    nodes beyond the limits are not walked past: they cannot lead back.
    """
    pending = _outside_users(inside, inside)
    seen: set[Node] = set(pending)
    while pending:
        node = pending.pop()
        if node in inside:
            return True
        if spans is not None and spans.beyond(node, limits):
            continue
        for user in node.users:
            if user not in seen:
                seen.add(user)
                pending.append(user)
    return False


@compatibility(is_backward_compatible=False)
def validate_partition(partition: NodeList) -> bool:
    """True if fusing ``partition`` into one node keeps the graph acyclic, i.e. no path leaves
    the partition and re-enters it."""
    return not _leaves_and_returns(set(partition))


def _check_fusable(gm: GraphModule, nodes: NodeList) -> None:
    # (is the node unusable?, what to say) - checked in this order, as torch.fx does.
    problems = (
        (lambda n: n.graph.owning_module is not gm, "doesn't belong to passed in graph module {}"),
        (lambda n: n._erased, "has been removed from owning graph"),
        (lambda n: n.graph is not gm.graph, "is not found in graph module {}"),
    )
    for node in nodes:
        for is_bad, text in problems:
            if is_bad(node):
                raise AssertionError(f"{node} " + text.format(gm._get_name()))


def _graph_like(graph: Any) -> Any:
    """An empty graph of ``graph``'s library: fxkit's, or a torch.fx graph's own class."""
    return Graph() if isinstance(graph, Graph) else type(graph)()


def _lift(gm: Any, subgraph: Any, class_name: str) -> Any:
    """The submodule running ``subgraph``, a GraphModule of the same library as ``gm``."""
    return lift_subgraph_as_module(gm, subgraph, comp_name="", class_name=class_name)[0]


def _copy_out(
    gm: GraphModule, nodes: NodeList, inside: Any, always_return_tuple: bool
) -> tuple[Graph, tuple[Node, ...], tuple[Node, ...]]:
    """Copy ``nodes`` (topologically sorted) into a new graph whose placeholders stand for
    their inputs from outside and whose output returns the values used outside."""
    subgraph = _graph_like(gm.graph)
    copies: dict[Node, Node] = {}
    stand_ins: dict[Node, Node] = {}  # outside node -> placeholder, in first-use order

    def lookup(arg: Node) -> Node:
        if arg in inside:
            return copies[arg]
        stand_in = stand_ins.get(arg)
        if stand_in is None:
            stand_in = subgraph.placeholder(arg.name, type_expr=arg.type)
            stand_in.meta = copy.copy(arg.meta)
            stand_ins[arg] = stand_in
        return stand_in

    for node in nodes:
        copies[node] = subgraph.node_copy(node, lookup)
    escaping = [n for n in nodes if any(user not in inside for user in n.users)]
    results = tuple(copies[n] for n in escaping)
    single = len(results) == 1 and not always_return_tuple
    subgraph.output(results[0] if single else results)
    subgraph.lint()
    return subgraph, tuple(stand_ins), tuple(escaping)


# fmt: off
@compatibility(is_backward_compatible=False)
def fuse_as_graphmodule(gm: GraphModule, nodes: NodeList, module_name: str,
                        partition_lookup_table: dict[Node, int | None] | None = None, *,
                        always_return_tuple: bool = False,
                        ) -> tuple[GraphModule, tuple[Node, ...], tuple[Node, ...]]:
    # fmt: on
    """Copy ``nodes`` of ``gm`` (topologically sorted) out into a new GraphModule named
    ``module_name``. The parent graph is not changed.

    ``partition_lookup_table`` is an optional ``{node: anything}`` of the same nodes, for fast
    membership tests. The new module takes the values the nodes read from outside as inputs,
    and returns the values used outside: one value bare, several (or any number with
    ``always_return_tuple``) as a tuple.

    Returns ``(module, inputs, outputs)``: the module, the nodes of ``gm`` that feed its inputs
    and the nodes of ``gm`` whose values it returns, in order. Raises ``AssertionError`` for a
    node not (or no longer) in ``gm``'s graph, or a partition whose fusion would create a cycle.
    """
    return _fuse_checked(gm, nodes, module_name, partition_lookup_table, always_return_tuple)


def _fuse_checked(
    gm: GraphModule,
    nodes: NodeList,
    module_name: str,
    inside: Any,
    always_return_tuple: bool,
    has_cycle: Any = None,
) -> tuple[GraphModule, tuple[Node, ...], tuple[Node, ...]]:
    _check_fusable(gm, nodes)
    if inside is None:
        inside = dict.fromkeys(nodes)
    cyclic = has_cycle(inside) if has_cycle is not None else _leaves_and_returns(set(nodes))
    if cyclic:
        raise AssertionError("Invalid partition, found dependency cycles")
    subgraph, inputs, outputs = _copy_out(gm, nodes, inside, always_return_tuple)
    return _lift(gm, subgraph, module_name), inputs, outputs


# fmt: off
@compatibility(is_backward_compatible=False)
def insert_subgm(gm: GraphModule, sub_gm: GraphModule, orig_inputs: tuple[Node, ...],
                 orig_outputs: tuple[Node, ...], insertion_point: Node | None = None,
                 ) -> GraphModule:
    # fmt: on
    """Install ``sub_gm`` in ``gm`` (under its class name) and call it right after
    ``insertion_point`` (default: the last node of ``orig_outputs`` in the graph) with
    ``orig_inputs``; users of ``orig_outputs`` then read the call's results (through
    ``getitem`` nodes when it returns a tuple). The replaced nodes are left in place.
    """
    name = type(sub_gm).__name__
    gm.add_submodule(name, sub_gm)
    graph = gm.graph
    if insertion_point is None:
        wanted = set(orig_outputs)
        insertion_point = next((n for n in reversed(graph.nodes) if n in wanted), None)
        if insertion_point is None:
            raise AssertionError(
                "Cannot determine insertion point: no insertion_point provided and "
                "orig_outputs is empty. Pass the last partition node as insertion_point."
            )
    with graph.inserting_after(insertion_point):
        call = graph.call_module(name, args=orig_inputs, kwargs=None)
    if not orig_outputs:
        return gm
    returns_tuple = isinstance(sub_gm.graph.output_node().args[0], tuple)
    if len(orig_outputs) == 1 and not returns_tuple:
        orig_outputs[0].replace_all_uses_with(call, propagate_meta=True)
        return gm
    anchor = call
    for i, original in enumerate(orig_outputs):
        with graph.inserting_after(anchor):
            anchor = graph.call_function(operator.getitem, (call, i))
        original.replace_all_uses_with(anchor, propagate_meta=True)
    call.meta["val"] = tuple(original.meta.get("val", None) for original in orig_outputs)
    return gm


@compatibility(is_backward_compatible=False)
def erase_nodes(gm: GraphModule, nodes: NodeList) -> None:
    """Erase ``nodes`` (topologically sorted) from ``gm``'s graph, last first."""
    graph = gm.graph
    for node in reversed(nodes):
        graph.erase_node(node)


class _SpanIndex:
    """Spans ``[start, end]`` of node groups; answers "the furthest end among spans starting
    before ``x``" in O(log n) (a max segment tree over starts).

    Spans are never removed: callers only ever replace a group by a bigger one whose span
    covers the old one, so an outdated span never changes an answer.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.tree = [-1] * (2 * self.size)

    def add(self, start: int, end: int) -> None:
        tree = self.tree
        i = start + self.size
        while i and tree[i] < end:
            tree[i] = end
            i >>= 1

    def furthest_end_before(self, x: int) -> int:
        tree = self.tree
        best = -1
        lo, hi = self.size, min(x, self.size) + self.size
        while lo < hi:
            if lo & 1:
                best = max(best, tree[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                best = max(best, tree[hi])
            lo >>= 1
            hi >>= 1
        return best


class _Spans:
    """Bounds for walks that look for a path leaving a node set and coming back, in a graph
    where some node groups count as single nodes (fused, or to be fused).

    Every node has a *place*: its position in the (topologically sorted) graph and its depth
    (longest path from the inputs). Both grow along every edge; only a group can lead back to
    a smaller one, and only within its own span. So when a walk starts from a set ending at
    ``x``, nodes beyond ``x`` cannot lead back unless some group spans across ``x``; widening
    ``x`` to the end of every such group gives a bound past which nothing is walked. Either
    measure alone is a valid bound: chains of blocks suit positions, side-by-side lanes
    suit depths. For a graph that is not topologically sorted there are no bounds.
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.place: dict[Node, tuple[int, int]] = {}
        deepest = 0
        for i, node in enumerate(nodes):
            depth = 0
            for arg in node.all_input_nodes:
                spot = self.place.get(arg)
                if spot is None:  # an input placed later: not topologically sorted
                    self.place = {}
                    break
                depth = max(depth, spot[1] + 1)
            else:
                self.place[node] = (i, depth)
                deepest = max(deepest, depth)
                continue
            break
        self.sorted = bool(self.place) or not nodes
        self.index = (_SpanIndex(len(self.place)), _SpanIndex(deepest + 1))

    def add(self, lo: tuple[int, int], hi: tuple[int, int]) -> None:
        """Record a group whose members' places range from ``lo`` to ``hi`` (per measure)."""
        if self.sorted:
            self.index[0].add(lo[0], hi[0])
            self.index[1].add(lo[1], hi[1])

    def _widen(self, measure: int, bound: int) -> float:
        spans = self.index[measure]
        for _ in range(4):  # give up on long staircases of overlapping groups
            furthest = spans.furthest_end_before(bound)
            if furthest <= bound:
                return bound
            bound = furthest
        return math.inf

    def limits(self, hi: tuple[int, int]) -> tuple[float, float]:
        """Bounds (position, depth) for a walk from a set whose places end at ``hi``."""
        if not self.sorted:
            return math.inf, math.inf
        pos_bound = self._widen(0, hi[0])
        # A position bound that needed no widening is as tight as it gets.
        depth_bound = self._widen(1, hi[1]) if pos_bound > hi[0] else math.inf
        return pos_bound, depth_bound

    def beyond(self, node: Node, limits: tuple[float, float]) -> bool:
        spot = self.place.get(node)
        return spot is not None and (spot[0] > limits[0] or spot[1] > limits[1])


def _span_of(places: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], tuple[int, int]]:
    spots = list(places)
    lo = (min(p for p, _ in spots), min(d for _, d in spots))
    hi = (max(p for p, _ in spots), max(d for _, d in spots))
    return lo, hi


class _FusedSoFar:
    """What :func:`fuse_by_partitions` knows while it fuses: the places of the original nodes
    and the spans of the partitions fused so far (their call and getitem nodes take the
    smallest place of their partition)."""

    def __init__(self, gm: GraphModule) -> None:
        self.spans = _Spans(gm.graph.nodes)

    def has_cycle(self, inside: Any) -> bool:
        places = [self.spans.place[n] for n in inside if n in self.spans.place]
        if not places or not self.spans.sorted:
            return _leaves_and_returns(inside)
        limits = self.spans.limits(_span_of(places)[1])
        return _leaves_and_returns(inside, self.spans, limits)

    def record(self, nodes: NodeList, call: Node) -> None:
        if not self.spans.sorted:
            return
        lo, hi = _span_of(self.spans.place[n] for n in nodes)
        self.spans.add(lo, hi)
        self.spans.place[call] = lo
        for user in call.users:  # the getitem nodes
            self.spans.place[user] = lo


# fmt: off
@compatibility(is_backward_compatible=False)
def fuse_by_partitions(gm: GraphModule, partitions: list[dict[Node, int | None]],
                       prefix: str = "fused_", always_return_tuple: bool = False,
                       ) -> GraphModule:
    # fmt: on
    """Fuse each partition (a dict whose keys are nodes of ``gm``) into a submodule
    ``<prefix><index>`` called where the partition's last node was, then sort the graph
    topologically (stably), lint it and return ``gm`` (changed in place).

    Raises ``AssertionError`` for a partition that would create a cycle or a node that is not
    in the graph (for instance one already fused by an earlier partition).
    """
    fused = _FusedSoFar(gm)
    for index, partition in enumerate(partitions):
        ordered = topo_sort(list(partition))
        name = f"{prefix}{index}"
        sub_gm, inputs, outputs = _fuse_checked(
            gm, ordered, name, partition, always_return_tuple, fused.has_cycle
        )
        insert_subgm(gm, sub_gm, inputs, outputs, ordered[-1])
        call = ordered[-1].next
        erase_nodes(gm, ordered)
        fused.record(ordered, call)
    stable_topological_sort(gm)
    gm.graph.lint()
    return gm
