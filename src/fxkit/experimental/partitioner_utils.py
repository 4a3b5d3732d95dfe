"""Data types and a cost model for splitting a graph across accelerators.

A :class:`Partition` is a set of graph nodes that will run on one or more logical devices
(:class:`Device`). Sizes come from ``node.size_bytes`` (set by
:func:`fxkit.passes.graph_manipulation.get_size_of_all_nodes`); latencies come from a
user-supplied ``{node: NodeLatency}`` map. The latency of a partition is its critical path;
the latency of a partitioned graph is the critical path through the partitions plus the time
to ship tensors between partitions that sit on different devices.

:class:`~fxkit.experimental.accelerator_partitioner.Partitioner` consumes these types.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Set

__all__ = [
    "Device",
    "NodeLatency",
    "Partition",
    "PartitionLatency",
    "PartitionMode",
    "PartitionerConfig",
    "get_comm_latency_between",
    "get_extra_size_of",
    "get_latency_of_one_partition",
    "get_latency_of_partitioned_graph",
    "get_partition_to_latency_mapping",
]

Node = Any  # an fxkit or torch.fx Node; only the documented Node API is used
# Ops whose values are inputs to the graph rather than computations: a partition pulls them
# in alongside the first node that reads them, and they carry no latency.
_INPUT_OPS = frozenset(("placeholder", "get_attr"))
_NO_SIZE = "node has no size_bytes attr"


def _size_of(node: Node) -> Any:
    """``node.size_bytes``, or torch.fx's ``RuntimeError`` with what to run first."""
    found = getattr(node, "size_bytes", None)
    if not found:
        raise RuntimeError(
            f"{_NO_SIZE} (node {getattr(node, 'name', node)!s}: run "
            "fxkit.passes.graph_manipulation.get_size_of_all_nodes(module, example_args) "
            "before partitioning)"
        )
    return found


class Partition:
    """A group of nodes placed together: its ``nodes``, ``parents``/``children`` partitions
    (data flows parent -> child), ``bfs_level`` in the partition DAG, ``used_mem_bytes`` and
    the ``logical_device_ids`` it runs on.

    ``used_mem_bytes`` is the sum of :func:`get_extra_size_of` over the nodes: each node's own
    size plus the outputs it reads from outside the partition.
    """

    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id
        self.nodes: Set[Node] = set()
        self.used_mem_bytes: int = 0
        self.logical_device_ids: List[int] = []
        # Links in the partition DAG, filled in by set_parents_and_children.
        self.parents: Set[Partition] = set()
        self.children: Set[Partition] = set()
        self.bfs_level: int = -1
        # The node set and byte count last accounted for. While ``nodes`` and
        # ``used_mem_bytes`` still equal them, add/remove update the count by the change
        # alone instead of re-summing every node (which made greedy filling quadratic).
        self._counted: Optional[Set[Node]] = set()
        self._counted_bytes = 0

    def __str__(self) -> str:
        return str(self.partition_id)

    def recalculate_mem_size(self) -> None:
        """Recompute ``used_mem_bytes`` from scratch over ``nodes``."""
        nodes = self.nodes
        self.used_mem_bytes = sum(get_extra_size_of(n, nodes) for n in nodes)
        self._remember()

    def add_node(self, node: Node) -> None:
        """Add ``node`` and any placeholder/get_attr nodes it reads, then update the size."""
        joining = [n for n in node.all_input_nodes if n.op in _INPUT_OPS and n not in self.nodes]
        if node not in self.nodes:
            joining.append(node)
        if not self._accounting_is_current():
            self.nodes.update(joining)
            self.recalculate_mem_size()
            return
        self.nodes.update(joining)
        self._counted.update(joining)  # type: ignore[union-attr]
        self._shift_by(self._entry_cost, joining)

    def remove_node(self, node: Node) -> None:
        """Remove ``node`` (if present) and the placeholder/get_attr inputs that no remaining
        member reads, then update the size."""
        if node not in self.nodes:
            return
        current = self._accounting_is_current()
        self.nodes.remove(node)
        leaving = [node]
        for n in node.all_input_nodes:
            if n.op in _INPUT_OPS and not any(u in self.nodes for u in n.users):
                # ``remove`` (not ``discard``): an input missing from the set is an error,
                # as it is for torch.fx's.
                self.nodes.remove(n)
                leaving.append(n)
        if not current:
            self.recalculate_mem_size()
            return
        self._counted.difference_update(leaving)  # type: ignore[union-attr]
        self._shift_by(self._exit_cost, leaving)

    def _entry_cost(self, joined_list: List[Node]) -> int:
        joined = set(joined_list)
        delta = 0
        for n in joined:
            delta += get_extra_size_of(n, self.nodes)
            # Older members that read ``n`` no longer pay to bring it in.
            shared = sum(1 for u in n.users if u in self.nodes and u not in joined)
            if shared:
                delta -= shared * _size_of(n).output_size
        return delta

    def _exit_cost(self, left: List[Node]) -> int:
        before = self.nodes.union(left)
        delta = 0
        for n in left:
            delta -= get_extra_size_of(n, before)
            # Remaining members that read ``n`` now bring it in from outside.
            readers = sum(1 for u in n.users if u in self.nodes)
            if readers:
                delta += readers * _size_of(n).output_size
        return delta

    def _shift_by(self, cost_fn: Any, changed: List[Node]) -> None:
        try:
            delta = cost_fn(changed)
        except BaseException:
            self._counted = None  # the count is stale: the next change re-sums
            raise
        self.used_mem_bytes += delta
        self._counted_bytes = self.used_mem_bytes

    def _accounting_is_current(self) -> bool:
        counted = self._counted
        return (
            counted is not None
            and self.used_mem_bytes == self._counted_bytes
            and counted == self.nodes
        )

    def _remember(self) -> None:
        self._counted = set(self.nodes)
        self._counted_bytes = self.used_mem_bytes


# fmt: off
Device = NamedTuple("Device", [
    ("name", str), ("available_mem_bytes", int), ("logical_id", int),
])
Device.__doc__ = "An accelerator: a ``name``, the bytes a partition may use on it, and its id."

NodeLatency = NamedTuple("NodeLatency", [
    ("mem_latency_sec", float), ("computer_latency_sec", float),
])
NodeLatency.__doc__ = "Estimated time of one node: bound by memory traffic and by compute."

PartitionLatency = NamedTuple("PartitionLatency", [
    ("mem_latency_sec", float), ("computer_latency_sec", float), ("overall_latency_sec", float),
])
PartitionLatency.__doc__ = """Latency of a partition's critical path: its memory and compute
parts summed along the path, and the overall time (each node contributing the larger of its
two parts)."""
# fmt: on

PartitionMode = Enum(
    "PartitionMode",
    [("size_based", 0), ("sparse_nn", 1), ("cost_aware", 2), ("kl_based", 3), ("aot_based", 4)],
    module=__name__,
)
PartitionMode.__doc__ = (
    "Which algorithm :class:`Partitioner` uses when the module does not fit one device."
)


# Shorthands for the table-valued fields of PartitionerConfig.
_DeviceList = List["Device"]
_LatencyTable = Dict[Node, "NodeLatency"]
_PlacementTable = Dict[Node, int]
_DeviceIdTable = Dict[int, List[int]]


class PartitionerConfig(NamedTuple):
    """Input to ``Partitioner.partition_graph``: the devices, the mode, and what the mode
    needs (``transfer_rate_bytes_per_sec`` and ``node_to_latency_mapping`` for cost_aware and
    kl_based; the two ``*_mapping`` dicts for aot_based). ``saturate_host`` replicates the
    partitions onto idle devices afterwards."""

    devices: _DeviceList
    mode: PartitionMode = PartitionMode.size_based  # type: ignore[valid-type]
    # What cost_aware and kl_based read:
    transfer_rate_bytes_per_sec: float = 0.0
    node_to_latency_mapping: _LatencyTable = {}
    # What aot_based reads:
    node_to_partition_mapping: _PlacementTable = {}
    partition_to_logical_device_mapping: _DeviceIdTable = {}
    saturate_host: bool = False


def get_extra_size_of(node: Node, nodes: Set[Node]) -> int:
    """Bytes that adding ``node`` to a partition holding ``nodes`` costs: its own
    ``total_size`` plus the ``output_size`` of each input it reads that is not in ``nodes``."""
    extra = 0
    for n in node.all_input_nodes:
        if n not in nodes:
            extra += _size_of(n).output_size
    return extra + _size_of(node).total_size


class _MissingLatency(KeyError):
    """torch.fx's ``KeyError(node)`` for a node without a latency, with a hint in ``str``."""

    def __str__(self) -> str:
        node = self.args[0]
        return (
            f"{node!r} (no NodeLatency for node {getattr(node, 'name', node)!s}: "
            "node_to_latency_mapping must cover every node the partitions compute)"
        )


def _latency_of(node: Node, node_to_latency_mapping: Dict[Node, NodeLatency]) -> NodeLatency:
    try:
        return node_to_latency_mapping[node]
    except KeyError:
        raise _MissingLatency(node) from None


def _order_within(members: Iterable[Node], edges_of: Any) -> List[Node]:
    """``members`` in an order where each comes after every member it has an edge from.

    ``edges_of(m)`` lists the members that ``m`` feeds. Kahn's algorithm, iterative, so long
    chains do not hit the recursion limit.
    """
    members = list(members)
    waiting = dict.fromkeys(members, 0)
    for m in members:
        for succ in edges_of(m):
            waiting[succ] += 1
    ready = [m for m in members if waiting[m] == 0]
    ordered: List[Node] = []
    while ready:
        m = ready.pop()
        ordered.append(m)
        for succ in edges_of(m):
            waiting[succ] -= 1
            if waiting[succ] == 0:
                ready.append(succ)
    if len(ordered) != len(members):
        raise RecursionError("the partitions form a cycle; no critical path exists")
    return ordered


def get_latency_of_one_partition(
    partition: Partition, node_to_latency_mapping: Dict[Node, NodeLatency]
) -> PartitionLatency:
    """The :class:`PartitionLatency` of the slowest chain of computing nodes in
    ``partition`` (placeholder and get_attr nodes cost nothing)."""
    inside = partition.nodes
    computing = [n for n in inside if n.op not in _INPUT_OPS]

    def feeds(n: Node) -> List[Node]:
        return [u for u in n.users if u in inside]

    # Longest path, summed front to back along each chain so the float results are the
    # sums a path-by-path walk would give. A node's best chain continues the best chain
    # ending at one of its computing inputs inside the partition.
    best_into: Dict[Node, PartitionLatency] = {}
    zero = PartitionLatency(0.0, 0.0, 0.0)
    slowest = zero
    ends = [n for n in computing if not any(u in inside for u in n.users)]
    ends_set = set(ends)
    for n in _order_within(computing, feeds):
        lat = _latency_of(n, node_to_latency_mapping)
        start = best_into.get(n, zero)
        done = PartitionLatency(
            start.mem_latency_sec + lat.mem_latency_sec,
            start.computer_latency_sec + lat.computer_latency_sec,
            start.overall_latency_sec + max(lat.computer_latency_sec, lat.mem_latency_sec),
        )
        for u in feeds(n):
            seen = best_into.get(u)
            if seen is None or done.overall_latency_sec > seen.overall_latency_sec:
                best_into[u] = done
        if n in ends_set and done.overall_latency_sec > slowest.overall_latency_sec:
            slowest = done
    return slowest


def get_partition_to_latency_mapping(
    partitions: List[Partition], node_to_latency_mapping: Dict[Node, NodeLatency]
) -> Dict[Partition, PartitionLatency]:
    """``{partition: get_latency_of_one_partition(partition, ...)}`` for every partition."""
    return {p: get_latency_of_one_partition(p, node_to_latency_mapping) for p in partitions}


def get_comm_latency_between(
    parent_partition: Partition,
    child_partition: Partition,
    transfer_rate_bytes_per_sec: float,
) -> float:
    """Seconds to send the parent outputs that the child reads, at the given rate; 0.0 when
    both partitions sit on the same (non-empty) list of devices."""
    parent_ids = parent_partition.logical_device_ids
    if parent_ids and parent_ids == child_partition.logical_device_ids:
        return 0.0
    source = parent_partition.nodes
    sent: Set[Node] = set()
    for node in child_partition.nodes:
        sent.update(n for n in node.all_input_nodes if n in source)
    total = 0
    for n in sent:
        size = getattr(n, "size_bytes", None)
        if size is not None:
            total += size.output_size
    return total / transfer_rate_bytes_per_sec


def get_latency_of_partitioned_graph(partitions: List[Partition],
                                     partition_to_latency_mapping: Dict[Partition, PartitionLatency],
                                     transfer_rate_bytes_per_sec: float) -> float:  # fmt: skip
    """Latency of the slowest chain of partitions, from one without parents to one without
    children: partition latencies plus the communication between consecutive ones."""
    # Every partition reachable from a root, each edge's comm latency computed once.
    roots = [p for p in partitions if not p.parents]
    reachable: Dict[Partition, None] = dict.fromkeys(roots)
    frontier = list(roots)
    while frontier:
        for child in frontier.pop().children:
            if child not in reachable:
                reachable[child] = None
                frontier.append(child)
    arrive: Dict[Partition, float] = {}
    slowest = 0.0
    for p in _order_within(reachable, lambda q: q.children):
        done = arrive.get(p, 0.0) + partition_to_latency_mapping[p].overall_latency_sec
        if not p.children and done > slowest:
            slowest = done
        for child in p.children:
            reach = done + get_comm_latency_between(p, child, transfer_rate_bytes_per_sec)
            if reach > arrive.get(child, float("-inf")):
                arrive[child] = reach
    return slowest
