"""Split a GraphModule into partitions that each fit one accelerator.

:meth:`Partitioner.partition_graph` tags every node with its size, groups the nodes into
:class:`~fxkit.experimental.partitioner_utils.Partition` s by the algorithm that
``PartitionerConfig.mode`` names, assigns logical devices, cuts the module into one
submodule per partition (:func:`fxkit.passes.split_module.split_module`) and describes the
result as a :class:`DAG`.

If the whole module fits the largest device it becomes a single partition, whatever the mode
(except ``aot_based``, which always uses the given assignment). Otherwise:

- ``size_based``: fill one device after another in graph order.
- ``sparse_nn``: like size_based, but embedding and dense regions get separate partitions;
  each embedding partition gets its own device and the dense ones are replicated on all.
- ``cost_aware``: start from one node per partition, keep merging the pair that lowers the
  estimated latency most.
- ``kl_based``: start from size_based, then try moving/swapping nodes between partitions
  (Kernighan-Lin style) where that lowers the latency.
- ``aot_based``: partitions and devices given ahead of time in the config.

The helper functions below operate on lists of partitions and are public, as torch.fx does.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Set, Tuple

import torch

# Some of these are imported only so that code written against torch.fx's module, which
# exposes them here too, finds them.
from fxkit.experimental.partitioner_utils import (  # noqa: F401
    Device,
    NodeLatency,
    Partition,
    PartitionerConfig,
    PartitionMode,
    get_extra_size_of,
    get_latency_of_partitioned_graph,
    get_partition_to_latency_mapping,
)
from fxkit.graph_module import GraphModule
from fxkit.passes.graph_manipulation import get_size_of_all_nodes
from fxkit.passes.split_module import split_module

__all__ = [
    "DAG",
    "DAGNode",
    "PartitionResult",
    "Partitioner",
    "check_dependency",
    "combine_two_partitions",
    "get_bfs_level_partition",
    "get_device_partition_stats",
    "get_device_to_partitions_mapping",
    "get_logical_id_to_device",
    "get_node_to_partition_mapping",
    "reorganize_partitions",
    "reset_partition_device",
    "set_parents_and_children",
]

Node = Any  # an fxkit or torch.fx Node
_NON_COMPUTE_OPS = frozenset(("placeholder", "get_attr", "output"))


@dataclass(eq=False)  # compared and hashed by identity, like torch.fx's
class DAGNode:
    """One partition of the split module: the ``submod_<i>`` call node, the nodes it reads,
    the nodes that carry its results, its logical devices and its size in bytes."""

    submodule_node: Node
    input_nodes: List[Node]
    output_nodes: List[Node]
    logical_device_ids: List[int]
    size_bytes: int

    def __str__(self) -> str:
        return str(self.submodule_node)


@dataclass(eq=False)
class DAG:
    """The partitions of a split module, in the order the module calls them (``nodes``)."""

    nodes: List[DAGNode] = field(default_factory=list)

    def create_node(
        self,
        submodule_node: Node,
        input_nodes: List[Node],
        output_nodes: List[Node],
        logical_devices: List[int],
        size_bytes: int,
    ) -> None:
        """Append a :class:`DAGNode` built from the arguments."""
        entry = DAGNode(submodule_node, input_nodes, output_nodes, logical_devices, size_bytes)
        self.nodes.append(entry)


class PartitionResult(NamedTuple):
    """What :meth:`Partitioner.partition_graph` returns: the :class:`DAG` and the module
    whose ``submod_<i>`` children are the partitions."""

    dag: DAG
    module_with_submodules: GraphModule


# --- helpers over lists of partitions -------------------------------------------------------


def combine_two_partitions(partition_0: Partition, partition_1: Partition,
                           partitions: List[Partition]) -> None:  # fmt: skip
    """Replace ``partition_0`` and ``partition_1`` in ``partitions`` by one partition holding
    both node sets, appended at the end; ids, parents and children are then recomputed."""
    merged = Partition(len(partitions))
    merged.nodes = partition_0.nodes | partition_1.nodes
    merged.recalculate_mem_size()
    for absorbed in (partition_0, partition_1):
        partitions.remove(absorbed)
    partitions.append(merged)
    reorganize_partitions(partitions)


def reset_partition_device(partitions: List[Partition]) -> None:
    """Clear every partition's ``logical_device_ids``."""
    # A fresh list each: device-id lists may be shared between partitions.
    for partition in partitions:
        partition.logical_device_ids = []


def set_parents_and_children(partitions: List[Partition]) -> None:
    """Recompute ``parents``/``children``: ``a`` is a parent of ``b`` when a node of ``a``
    that ``b`` does not hold is read by a node of ``b``."""
    holders: Dict[Node, List[Partition]] = {}
    for p in partitions:
        p.parents = set()
        p.children = set()
        for node in p.nodes:
            holders.setdefault(node, []).append(p)
    for p in partitions:
        for node in p.nodes:
            for user in node.users:
                for other in holders.get(user, ()):
                    if other is not p and node not in other.nodes:
                        p.children.add(other)
                        other.parents.add(p)


def reorganize_partitions(partitions: List[Partition]) -> None:
    """Renumber ``partition_id`` by list position and recompute parents and children."""
    for position, p in enumerate(partitions):
        p.partition_id = position
    set_parents_and_children(partitions)


def get_bfs_level_partition(partitions: List[Partition]) -> None:
    """Set ``bfs_level``: 0 for partitions without parents, otherwise one more than the
    deepest parent (the last breadth-first wave from the roots that reaches it)."""
    roots = [p for p in partitions if not p.parents]
    reachable: Dict[Partition, int] = dict.fromkeys(roots, 0)
    stack = list(roots)
    while stack:
        for child in stack.pop().children:
            if child not in reachable:
                reachable[child] = 0
                stack.append(child)
    # Count each reachable partition's reachable parents, then relax in topological order.
    pending = dict.fromkeys(reachable, 0)
    for p in reachable:
        for child in p.children:
            pending[child] += 1
    ready = [p for p in reachable if pending[p] == 0]
    while ready:
        p = ready.pop()
        p.bfs_level = reachable[p]
        for child in p.children:
            reachable[child] = max(reachable[child], reachable[p] + 1)
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    # Partitions on a cycle never become ready and keep their old level (torch.fx's
    # breadth-first walk would not terminate on them).


def get_node_to_partition_mapping(partitions: List[Partition]) -> Dict[Node, int]:
    """``{node: partition_id}``; a node held by several partitions maps to the last one."""
    return {node: p.partition_id for p in partitions for node in p.nodes}


def get_logical_id_to_device(devices: List[Device]) -> Dict[int, Device]:
    """``{device.logical_id: device}``."""
    return {d.logical_id: d for d in devices}


def get_device_partition_stats(
    partitions: List[Partition], devices: List[Device]
) -> Tuple[Dict[Device, List[Partition]], Dict[Device, int], List[Partition]]:
    """For partitions placed so far: the partitions on each device, each device's memory
    left, and the partitions that have no device yet."""
    by_id = get_logical_id_to_device(devices)
    on_device: Dict[Device, List[Partition]] = {d: [] for d in devices}
    mem_left: Dict[Device, int] = {d: d.available_mem_bytes for d in devices}
    unplaced: List[Partition] = []
    for p in partitions:
        if not p.logical_device_ids:
            unplaced.append(p)
            continue
        for logical_id in p.logical_device_ids:
            device = by_id[logical_id]
            on_device[device].append(p)
            mem_left[device] -= p.used_mem_bytes
    return on_device, mem_left, unplaced


def get_device_to_partitions_mapping(partitions: List[Partition], devices: List[Device]) -> bool:
    """Give every partition without a device one: the device with the least memory left
    that still has more than the partition would add to it. ``False`` (and stop) when some
    partition fits nowhere."""
    on_device, mem_left, unplaced = get_device_partition_stats(partitions, devices)
    # Nodes already resident per device, kept up to date so each fit test is one pass over
    # the candidate partition.
    resident: Dict[Device, Set[Node]] = {}
    for d, held in on_device.items():
        resident[d] = set().union(*(p.nodes for p in held))
    # Re-sorted before each placement; the sort is stable, so ties keep the previous order.
    candidates = list(mem_left)
    for p in unplaced:
        candidates.sort(key=mem_left.__getitem__)
        for d in candidates:
            already = resident[d]
            if already:
                both = already | p.nodes
                extra = sum(get_extra_size_of(n, both) for n in p.nodes)
            else:
                extra = p.used_mem_bytes
            if extra < mem_left[d]:
                on_device[d].append(p)
                p.logical_device_ids.append(d.logical_id)
                mem_left[d] -= extra
                already.update(p.nodes)
                break
        else:
            return False
    return True


def check_dependency(partition: Partition) -> bool:
    """``True`` if following ``children`` from ``partition`` leads back to it (a cycle)."""
    seen = {partition}
    queue = deque([partition])
    while queue:
        for child in queue.popleft().children:
            if child is partition:
                return True
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return False


# --- the partitioner ------------------------------------------------------------------------


class Partitioner:
    """Splits a GraphModule across devices; see :meth:`partition_graph`.

    After a run, ``partitions`` holds the :class:`Partition` s and ``node_to_partition``
    maps each node of the input graph to its partition id.
    """

    def __init__(self) -> None:
        self.devices: List[Device] = []
        # Filled by a run; kept afterwards for inspection.
        self.partitions: List[Partition] = []
        self.node_to_partition: Dict[Node, int] = {}

    def partition_graph(self, fx_module: GraphModule, torch_module: torch.nn.Module,
                        partitioner_config: PartitionerConfig) -> PartitionResult:  # fmt: skip
        """Partition ``fx_module`` (whose nodes need ShapeProp's ``tensor_meta``) as
        ``partitioner_config`` says and return the :class:`PartitionResult`.

        ``torch_module`` is the module the submodules' parameters are taken from (usually
        ``fx_module`` itself or the module it was traced from).
        """
        self.devices = partitioner_config.devices
        self.graph_module, self.torch_module = fx_module, torch_module
        if not self.devices:
            raise RuntimeError(
                "No devices (PartitionerConfig.devices is empty: list at least one Device)"
            )
        get_size_of_all_nodes(self.graph_module)
        nodes = self.graph_module.graph.nodes
        if all(n.op in _NON_COMPUTE_OPS for n in nodes):
            raise RuntimeError(
                "No Partition since no operations in the module "
                "(the graph only has placeholder, get_attr and output nodes)"
            )
        body = itertools.takewhile(lambda n: n.op != "output", nodes)
        total = sum(n.size_bytes.total_size for n in body)  # type: ignore[attr-defined]
        largest = max(self.devices, key=lambda d: d.available_mem_bytes)
        self._choose_partitions(partitioner_config, total, largest)
        if partitioner_config.saturate_host:
            self.saturate_host()
        module_with_submodules = self.do_partition()
        return PartitionResult(self.dump_dag(module_with_submodules), module_with_submodules)

    def _choose_partitions(self, config: PartitionerConfig, total: int, largest: Device) -> None:
        # By name, so a torch.fx PartitionerConfig (another PartitionMode class) works too.
        mode = getattr(config.mode, "name", None)
        if mode == "aot_based":
            self.aot_based_partition(
                config.node_to_partition_mapping, config.partition_to_logical_device_mapping
            )
            return
        if total <= largest.available_mem_bytes:
            self.find_single_partition(total, logical_device_id=largest.logical_id)
            return
        capacity = sum(d.available_mem_bytes for d in self.devices)
        if total > capacity:
            raise RuntimeError(
                "Devices do not have enough memory for the module "
                f"(it needs {total} bytes, the devices offer {capacity} in all)"
            )
        if mode == "sparse_nn":
            sizes = {d.available_mem_bytes for d in self.devices}
            if len(sizes) != 1:
                raise RuntimeError(
                    "All devices must have same memory size! (sparse_nn mode needs equal "
                    f"available_mem_bytes, got {sorted(sizes)})"
                )
            self.sparse_nn_partition(self.devices[0].available_mem_bytes)
        elif mode == "cost_aware":
            self.cost_aware_partition(
                config.transfer_rate_bytes_per_sec, config.node_to_latency_mapping
            )
        elif mode == "kl_based":
            self.kl_based_partition(
                config.transfer_rate_bytes_per_sec, config.node_to_latency_mapping
            )
        else:
            self.size_based_partition()

    def find_single_partition(self, total_size_of_graph: int, logical_device_id: int = 0) -> None:
        """Put every node (except output nodes) in one partition on ``logical_device_id``."""
        only = self.create_partition()
        only.nodes.update(n for n in self.graph_module.graph.nodes if n.op != "output")
        only.used_mem_bytes = total_size_of_graph
        only.logical_device_ids = [logical_device_id]
        self.node_to_partition = get_node_to_partition_mapping(self.partitions)

    def size_based_partition(self) -> None:
        """Greedy fill: nodes in graph order go into the current partition until its device
        is full, then into a new partition on the next device that fits the node. Once every
        device has a partition, each remaining node gets its own partition, and those are
        placed wherever memory is left (``RuntimeError`` if that fails)."""
        from fxkit.experimental import _partition_strategies

        _partition_strategies.size_based(self)

    def saturate_host(self) -> None:
        """Replicate the partitions onto idle devices: while at least as many devices are
        idle as in use, give every used device the smallest idle device that can hold what
        it holds, and add that device's id to its partitions. A round where some used device
        finds no such replica is dropped and ends the search.

        Unlike torch.fx, nothing is printed.
        """
        on_device, mem_left, unplaced = get_device_partition_stats(self.partitions, self.devices)
        if len(unplaced) != 0:
            raise AssertionError(
                f"Expect no_device_partitions has 0 device, but get {len(unplaced)}"
            )
        used = [d for d in self.devices if on_device[d]]
        replica_to_original: Dict[Device, Device] = {}
        while used and 2 * len(used) + len(replica_to_original) <= len(self.devices):
            round_pairs = self._replicas_for(used, mem_left, replica_to_original)
            if round_pairs is None:
                break
            replica_to_original.update(round_pairs)
        for replica, original in replica_to_original.items():
            for p in on_device[original]:
                p.logical_device_ids.append(replica.logical_id)

    def _replicas_for(
        self,
        used: List[Device],
        mem_left: Dict[Device, int],
        taken: Dict[Device, Device],
    ) -> Dict[Device, Device] | None:
        idle = [d for d in self.devices if d not in used and d not in taken]
        chosen: Dict[Device, Device] = {}
        for original in used:
            needed = original.available_mem_bytes - mem_left[original]
            fitting = [d for d in idle if d.available_mem_bytes >= needed]
            if not fitting:
                return None
            pick = min(fitting, key=lambda d: d.available_mem_bytes)
            idle.remove(pick)
            chosen[pick] = original
        return chosen

    def do_partition(self) -> GraphModule:
        """Cut the module into ``submod_<partition id>`` children by ``node_to_partition``."""
        assignment = self.node_to_partition
        return split_module(self.graph_module, self.torch_module, lambda n: assignment[n])

    def dump_dag(self, module_with_submodules: GraphModule) -> DAG:
        """Describe the submodule calls of ``module_with_submodules`` as a :class:`DAG`."""
        dag = DAG()
        calls = itertools.takewhile(lambda n: n.op != "output", module_with_submodules.graph.nodes)
        for node in calls:
            if node.op in ("placeholder", "get_attr") or node.target is operator.getitem:
                continue
            # A submodule with several results is read through getitem nodes; those carry
            # its outputs. Otherwise the call node itself is the output.
            outputs = list(node.users) if len(node.users) > 1 else [node]
            partition = self.partitions[int(node.name.rsplit("_", 1)[-1])]
            dag.create_node(
                node,
                list(node.all_input_nodes),
                outputs,
                partition.logical_device_ids,
                partition.used_mem_bytes,
            )
        return dag

    def create_partition(self) -> Partition:
        """Append a new empty partition (id = its position) and return it."""
        partition = Partition(len(self.partitions))
        self.partitions.append(partition)
        return partition

    def create_single_node_partition(self, node: Node) -> None:
        """Append a new partition holding ``node`` (and its placeholder/get_attr inputs)."""
        self.create_partition().add_node(node)

    def sparse_nn_partition(self, available_mem_bytes: int) -> None:
        """Size-based partitioning that never mixes embedding and dense nodes in one
        partition; small partitions of the same kind are merged afterwards. Each embedding
        partition gets its own device, and every dense partition is placed on all of them."""
        from fxkit.experimental import _partition_strategies

        _partition_strategies.sparse_nn(self, available_mem_bytes)

    def cost_aware_partition(
        self,
        transfer_rate_bytes_per_sec: float,
        node_to_latency_mapping: Dict[Node, NodeLatency],
    ) -> None:
        """Start with one partition per computing node and repeatedly merge the pair whose
        merge gives the lowest estimated latency (not above the current one), until no
        merge helps."""
        from fxkit.experimental import _partition_strategies

        _partition_strategies.cost_aware(self, transfer_rate_bytes_per_sec, node_to_latency_mapping)

    def kl_based_partition(
        self,
        transfer_rate_bytes_per_sec: float,
        node_to_latency_mapping: Dict[Node, NodeLatency],
    ) -> None:
        """Start from :meth:`size_based_partition`, then for each computing node try moving
        it to, or swapping it with a node of, every other partition, and keep the change that
        lowers the estimated latency."""
        from fxkit.experimental import _partition_strategies

        _partition_strategies.kl_based(self, transfer_rate_bytes_per_sec, node_to_latency_mapping)

    def aot_based_partition(
        self,
        node_to_partition_mapping: Dict[Node, int],
        partition_to_logical_device_mapping: Dict[int, List[int]],
    ) -> None:
        """Build the partitions exactly as the two mappings say."""
        self.node_to_partition = node_to_partition_mapping
        by_id: Dict[int, Partition] = {}
        for node, partition_id in node_to_partition_mapping.items():
            partition = by_id.get(partition_id)
            if partition is None:
                partition = by_id[partition_id] = Partition(partition_id)
                self.partitions.append(partition)
                partition.logical_device_ids = partition_to_logical_device_mapping[partition_id]
            partition.add_node(node)
