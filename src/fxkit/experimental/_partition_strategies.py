"""The partitioning algorithms behind :class:`~fxkit.experimental.accelerator_partitioner.
Partitioner`'s ``*_partition`` methods, one function per mode.

Each function takes the partitioner, fills ``partitioner.partitions`` and
``partitioner.node_to_partition`` (kl_based leaves the size_based assignment there, as torch.fx
does) and assigns logical devices. The decisions, and
the order they are taken in, follow torch.fx's partitioner so both give the same partitions;
only ties that torch.fx breaks by set iteration order are broken here by graph order.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from fxkit.experimental.accelerator_partitioner import (
    check_dependency,
    combine_two_partitions,
    get_bfs_level_partition,
    get_device_to_partitions_mapping,
    get_node_to_partition_mapping,
    reorganize_partitions,
    reset_partition_device,
    set_parents_and_children,
)
from fxkit.experimental.partitioner_utils import (
    Device,
    NodeLatency,
    Partition,
    get_extra_size_of,
    get_latency_of_partitioned_graph,
    get_partition_to_latency_mapping,
)

Node = Any
Latencies = Dict[Node, NodeLatency]
_CALL_OPS = frozenset(("call_module", "call_method", "call_function"))
_INPUT_OPS = frozenset(("placeholder", "get_attr"))
_NON_COMPUTE_OPS = frozenset(("placeholder", "get_attr", "output"))
_INF = float("inf")


def _call_nodes(partitioner: Any) -> List[Node]:
    return [n for n in partitioner.graph_module.graph.nodes if n.op in _CALL_OPS]


# --- size_based -----------------------------------------------------------------------------


class _DeviceClaims:
    """Devices handed to partitions so far; gives out the first unclaimed one that fits."""

    def __init__(self, devices: List[Device]) -> None:
        self.devices = devices
        self.claimed: List[Device] = []

    def claim_for(self, node: Node) -> Device:
        needed = get_extra_size_of(node, set())
        # ``in`` compares devices by value (they are NamedTuples), as torch.fx does.
        for d in self.devices:
            if d not in self.claimed and d.available_mem_bytes >= needed:
                self.claimed.append(d)
                return d
        raise RuntimeError(
            f"{node} is too large to fit any device (it needs {needed} bytes; no unused "
            "device has that much available_mem_bytes)"
        )


def size_based(partitioner: Any) -> None:
    """Greedy fill in graph order; see ``Partitioner.size_based_partition``."""
    devices = partitioner.devices
    partitions: List[Partition] = partitioner.partitions
    claims = _DeviceClaims(devices)
    room: Dict[Partition, int] = {}

    def open_on(device: Device, partition: Partition) -> None:
        room[partition] = device.available_mem_bytes
        partition.logical_device_ids.append(device.logical_id)

    current = partitioner.create_partition()
    for node in _call_nodes(partitioner):
        if len(partitions) > len(devices):
            # Every device has a partition: the rest go one node per partition.
            partitioner.create_single_node_partition(node)
            continue
        cost = get_extra_size_of(node, current.nodes)
        if current.used_mem_bytes == 0:
            open_on(claims.claim_for(node), current)
        elif room[current] < cost:
            if len(partitions) == len(devices):
                partitioner.create_single_node_partition(node)
                continue
            device = claims.claim_for(node)
            current = partitioner.create_partition()
            cost = get_extra_size_of(node, current.nodes)
            open_on(device, current)
        current.add_node(node)
        room[current] -= cost
    reorganize_partitions(partitions)
    partitioner.node_to_partition = get_node_to_partition_mapping(partitions)
    if not get_device_to_partitions_mapping(partitions, devices):
        raise RuntimeError(
            "Cannot Get a Valid Partition to Logical Device Mapping (the nodes left over "
            "after every device got a partition do not fit the memory left; add devices "
            "or memory)"
        )


# --- sparse_nn ------------------------------------------------------------------------------


class _EmbeddingTest:
    """Is a node a call to (a module path through) an embedding module? torch.fx's test:
    the printed form of some module along the target path mentions ``Embedding``."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.known: Dict[str, bool] = {}

    def __call__(self, node: Node) -> bool:
        if node.op != "call_module":
            return False
        target = str(node.target)
        if target in self.known:
            return self.known[target]
        module = self.root
        found = False
        for atom in target.split("."):
            if not hasattr(module, atom):
                raise RuntimeError(f"Module {module} has no attribute {atom}")
            module = getattr(module, atom)
            if "Embedding" in str(module):
                found = True
                break
        self.known[target] = found
        return found


def sparse_nn(partitioner: Any, available_mem_bytes: int) -> None:
    """See ``Partitioner.sparse_nn_partition``."""
    is_embedding = _EmbeddingTest(partitioner.graph_module)
    groups: Dict[bool, List[Partition]] = {True: [], False: []}
    in_embedding = False

    def close_and_open(partition: Partition) -> Partition:
        groups[in_embedding].append(partition)
        fresh = partitioner.create_partition()
        fresh.left_mem_bytes = available_mem_bytes
        return fresh

    current = partitioner.create_partition()
    for node in _call_nodes(partitioner):
        if is_embedding(node) != in_embedding:
            # A region boundary: start a new partition unless the current one is empty.
            if current.used_mem_bytes != 0:
                current = close_and_open(current)
            in_embedding = not in_embedding
        cost = get_extra_size_of(node, current.nodes)
        if cost + current.used_mem_bytes > available_mem_bytes:
            current = close_and_open(current)
            cost = get_extra_size_of(node, current.nodes)
            if cost > available_mem_bytes:
                raise RuntimeError(
                    f"{node.target} is too large to fit into a device ({cost} bytes needed, "
                    f"{available_mem_bytes} available per device)"
                )
        current.add_node(node)
    groups[in_embedding].append(current)
    set_parents_and_children(partitioner.partitions)
    embedding, dense = groups[True], groups[False]
    _merge_small_partitions(partitioner, dense, available_mem_bytes)
    _merge_small_partitions(partitioner, embedding, available_mem_bytes)
    _place_sparse_nn(partitioner, embedding, dense, available_mem_bytes)
    partitioner.node_to_partition = get_node_to_partition_mapping(partitioner.partitions)


def _merge_small_partitions(partitioner: Any, group: List[Partition], capacity: int) -> None:
    """Repeatedly merge the smallest partition of ``group`` into the largest one within one
    BFS level of it whose union fits ``capacity``; stop when the smallest merges nowhere."""
    while group:
        by_size = sorted(group, key=lambda p: p.used_mem_bytes)
        get_bfs_level_partition(partitioner.partitions)
        smallest = by_size[0]
        partner = _merge_partner(smallest, by_size[1:], capacity)
        if partner is None:
            return
        combine_two_partitions(partner, smallest, partitioner.partitions)
        group.remove(smallest)
        group.remove(partner)
        group.append(partitioner.partitions[-1])


def _merge_partner(
    smallest: Partition, others: List[Partition], capacity: int
) -> Optional[Partition]:
    for candidate in reversed(others):
        if abs(smallest.bfs_level - candidate.bfs_level) > 1:
            continue
        union = candidate.nodes | smallest.nodes
        if sum(get_extra_size_of(n, union) for n in union) <= capacity:
            return candidate
    return None


def _place_sparse_nn(
    partitioner: Any, embedding: List[Partition], dense: List[Partition], capacity: int
) -> None:
    devices = partitioner.devices
    if len(embedding) > len(devices):
        raise RuntimeError(
            f"Need {len(embedding)} devices, but only {len(devices)} provided "
            "(sparse_nn gives each embedding partition its own device)"
        )
    dense_bytes = sum(p.used_mem_bytes for p in dense)
    # One list shared by all dense partitions, as in torch.fx: they run on every device
    # that holds an embedding partition.
    everywhere: List[int] = []
    for device, partition in zip(devices, embedding):
        if dense_bytes + partition.used_mem_bytes > capacity:
            raise RuntimeError(
                f"partition_{partition.partition_id}(embedding partition) and non embedding "
                "partitions can not fit into one device (each device holds one embedding "
                f"partition plus all {dense_bytes} dense bytes)"
            )
        partition.logical_device_ids = [device.logical_id]
        everywhere.append(device.logical_id)
    for partition in dense:
        partition.logical_device_ids = everywhere


# --- cost_aware -----------------------------------------------------------------------------


def _graph_latency(partitions: List[Partition], latencies: Latencies, rate: float) -> float:
    per_partition = get_partition_to_latency_mapping(partitions, latencies)
    return get_latency_of_partitioned_graph(partitions, per_partition, rate)


def cost_aware(partitioner: Any, rate: float, latencies: Latencies) -> None:
    """See ``Partitioner.cost_aware_partition``."""
    for node in partitioner.graph_module.graph.nodes:
        if node.op not in _NON_COMPUTE_OPS:
            partitioner.create_single_node_partition(node)
    set_parents_and_children(partitioner.partitions)
    get_bfs_level_partition(partitioner.partitions)
    while _merge_best_pair(partitioner, rate, latencies):
        pass
    reorganize_partitions(partitioner.partitions)
    partitioner.node_to_partition = get_node_to_partition_mapping(partitioner.partitions)


def _merge_best_pair(partitioner: Any, rate: float, latencies: Latencies) -> bool:
    partitions: List[Partition] = partitioner.partitions
    best_cost = _graph_latency(partitions, latencies, rate)
    if len(partitions) == 1:
        return False
    best: Optional[Tuple[int, int]] = None
    count = len(partitions)
    for i in range(count - 1):
        for j in range(i + 1, count):
            trial = _cost_if_merged(partitioner, partitions[:], i, j, rate, latencies)
            # ``<=``: among equal costs the last pair tried wins, as torch.fx does.
            if trial <= best_cost:
                best, best_cost = (i, j), trial
            # The trial renumbered and relinked the shared Partition objects; undo that.
            reorganize_partitions(partitions)
    if best is not None:
        combine_two_partitions(partitions[best[0]], partitions[best[1]], partitions)
    get_bfs_level_partition(partitions)
    reset_partition_device(partitions)
    get_device_to_partitions_mapping(partitions, partitioner.devices)
    return best is not None


def _cost_if_merged(
    partitioner: Any, trial: List[Partition], i: int, j: int, rate: float, latencies: Latencies
) -> float:
    first, second = trial[i], trial[j]
    adjacent = first in second.parents or first in second.children
    if abs(first.bfs_level - second.bfs_level) > 1 and not adjacent:
        return _INF
    combine_two_partitions(first, second, trial)
    if check_dependency(trial[-1]):
        return _INF
    reset_partition_device(trial)
    if not get_device_to_partitions_mapping(trial, partitioner.devices):
        return _INF
    return _graph_latency(trial, latencies, rate)


# --- kl_based -------------------------------------------------------------------------------


def _move(leaving: Optional[Node], arriving: Optional[Node], home: Partition,
          away: Partition) -> None:  # fmt: skip
    """Send ``leaving`` from ``home`` to ``away`` and ``arriving`` from ``away`` to ``home``
    (either may be None)."""
    for node, source, destination in ((leaving, home, away), (arriving, away, home)):
        if node is not None:
            source.remove_node(node)
            destination.add_node(node)


class _KLSearch:
    def __init__(self, partitioner: Any, rate: float, latencies: Latencies) -> None:
        self.partitioner = partitioner
        self.partitions: List[Partition] = partitioner.partitions
        self.devices = partitioner.devices
        self.rate = rate
        self.latencies = latencies
        self.position = {n: i for i, n in enumerate(partitioner.graph_module.graph.nodes)}

    def remap_devices(self) -> bool:
        reset_partition_device(self.partitions)
        return get_device_to_partitions_mapping(self.partitions, self.devices)

    def cost_after(
        self, node: Node, other: Optional[Node], home: Partition, away: Partition
    ) -> float:
        """Latency with ``node`` and ``other`` exchanged; everything is put back after."""
        partitions = self.partitions
        _move(node, other, home, away)
        reorganize_partitions(partitions)
        cost = _INF
        if not check_dependency(home) and not check_dependency(away):
            reset_partition_device(partitions)
            per_partition = get_partition_to_latency_mapping(partitions, self.latencies)
            if get_device_to_partitions_mapping(partitions, self.devices):
                cost = get_latency_of_partitioned_graph(partitions, per_partition, self.rate)
        _move(other, node, home, away)
        reorganize_partitions(partitions)
        self.remap_devices()
        return cost

    def best_exchange(
        self, node: Node, home: Partition, away: Partition
    ) -> Tuple[float, List[Optional[Node]]]:
        """The exchange partner in ``away`` (None: just move ``node``) with the lowest cost.

        As in torch.fx, the cost returned is the last one tried (moving ``node`` alone),
        not the lowest; the partner is the lowest-cost one.
        """
        partners: List[Optional[Node]] = sorted(
            (n for n in away.nodes if n.op not in _INPUT_OPS), key=self.position.__getitem__
        )
        partners.append(None)
        lowest = _INF
        pair: List[Optional[Node]] = []
        cost = _INF
        for other in partners:
            cost = self.cost_after(node, other, home, away)
            if cost < lowest:
                lowest, pair = cost, [node, other]
        return cost, pair


def kl_based(partitioner: Any, rate: float, latencies: Latencies) -> None:
    """See ``Partitioner.kl_based_partition``. ``node_to_partition`` keeps the size_based
    assignment (torch.fx does not refresh it after the exchanges)."""
    partitioner.size_based_partition()
    search = _KLSearch(partitioner, rate, latencies)
    partitions = search.partitions
    cost = _graph_latency(partitions, latencies, rate)
    chosen_pair: List[Optional[Node]] = []
    chosen_parts: List[Partition] = []
    computing = [n for n in partitioner.graph_module.graph.nodes if n.op not in _NON_COMPUTE_OPS]
    for node in computing:
        home_index = partitioner.node_to_partition[node]
        home = partitions[home_index]
        for away_index, away in enumerate(partitions):
            if away_index == home_index:
                continue
            trial_cost, pair = search.best_exchange(node, home, away)
            if trial_cost < cost:
                cost, chosen_pair, chosen_parts = trial_cost, pair, [home, away]
        # The last improving exchange found so far is (re)applied after every node.
        if chosen_pair:
            _move(chosen_pair[0], chosen_pair[1], chosen_parts[0], chosen_parts[1])
            reorganize_partitions(partitions)
            get_device_to_partitions_mapping(partitions, search.devices)
    reorganize_partitions(partitions)
    get_device_to_partitions_mapping(partitions, search.devices)
