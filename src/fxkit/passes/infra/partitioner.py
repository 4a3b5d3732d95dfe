"""Capability-based partitioning: group the nodes a backend supports into submodules.

:class:`CapabilityBasedPartitioner` asks an
:class:`~fxkit.passes.operator_support.OperatorSupportBase` about every node, grows partitions
of supported nodes and fuses each into a ``fused_<i>`` submodule. It proposes the same
partitions as torch.fx's partitioner for the same graph and operator support.

How partitions are proposed (the rules torch.fx's partitioner follows): nodes are visited from
the last to the first. Each supported node starts a new partition; then partitions are merged
greedily, oldest first, whenever the union of the two would still be *convex* (no path leaves
it and comes back, so fusing it cannot create a cycle). Afterwards ``getitem`` nodes join the
partition of the tuple they read, and partitions with a single compute node are dropped unless
allowed.

Deciding merges quickly is what keeps this near-linear. Other partitions count as single
nodes in the test (fusing them later must not create a cycle either), and merges keep that
contracted graph acyclic, so a merge fails exactly when a path leads from one group to the
other through something else; the walk looking for one is bounded by position and depth
(``_Spans`` in fuser_utils). :class:`_Reach` gives every visited node bit masks of the
supported nodes (and group priorities) it reaches through an unsupported node: those can
never join it, so such candidates are skipped a whole bit mask at a time.
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Iterable, Sequence

from fxkit._codegen_body import qualified_name
from fxkit.graph_module import GraphModule
from fxkit.node import Node
from fxkit.passes.operator_support import OperatorSupportBase
from fxkit.passes.utils.fuser_utils import _Spans, fuse_by_partitions

__all__ = ["Partition", "CapabilityBasedPartitioner"]

logger = logging.getLogger(__name__)
logger.setLevel(logging.WARNING)

_DEFAULT_NON_COMPUTE_OPS = frozenset({"torch.ops.aten.view", "_operator.getitem"})


class Partition:
    """A proposed partition: an ``id`` and an insertion-ordered ``{node: order}`` dict, where
    ``order`` is the node's index counted from the end of the graph (``None`` for nodes added
    afterwards, such as ``getitem`` nodes)."""

    # fmt: off
    def __init__(self, id: int | None = None, nodes: Iterable[Node] | None = None,
                 node_orders: Iterable[int] | None = None) -> None:
        # fmt: on
        self.nodes: dict[Node, int | None] = {}
        self.id = id
        if nodes is None:
            return
        members = list(nodes)
        if node_orders is None:
            self.nodes = dict.fromkeys(members)
            return
        orders = list(node_orders)
        if len(members) != len(orders):
            raise AssertionError("nodes and node_orders must have the same length")
        self.nodes = dict(zip(members, orders))

    def __repr__(self) -> str:
        return str(self.nodes)

    def add_node(self, node: Node, node_order: int | None = None) -> None:
        """Add ``node`` (or update its order)."""
        self.nodes[node] = node_order

    def remove_node(self, node: Node) -> None:
        """Remove ``node``; ``KeyError`` if it is not a member."""
        del self.nodes[node]

    def size(self) -> int:
        """Number of member nodes."""
        return len(self.nodes)


class _Group:
    """A partition while proposals are made: members, outside users, bit masks, spans."""

    __slots__ = (
        "members", "outside_users", "bits", "blocked", "blocked_keys", "blocked_by_keys",
        "order", "lo", "hi",
    )  # fmt: skip

    def __init__(
        self, node: Node, order: int, blocked: tuple[int, int], place: tuple[int, int]
    ) -> None:
        self.members: dict[Node, int] = {}
        self.outside_users: set[Node] = set(node.users)
        self.bits = 1 << order  # creation numbers of the members
        # Supported nodes (and group priorities) the members reach through unsupported nodes.
        self.blocked, self.blocked_keys = blocked
        # Priorities of groups found to reach this one through unsupported nodes.
        self.blocked_by_keys = 0
        self.order = order  # merge priority: the oldest creation number among the members
        # Smallest and largest (position, depth) of the members, each measure on its own.
        self.lo = self.hi = place


class _Reach:
    """Bit masks for the visited nodes, over supported nodes (bit = creation number) and over
    group priorities (bit = the priority of the node's group when it was visited).

    Per node ``v``: what it reaches (``v`` included), and what it reaches along a path that
    passes an unsupported node, i.e. what can never share a partition with ``v``. Priority
    masks may go stale when groups merge; they only serve to skip candidates, so a stale bit
    just means a candidate gets the full test. A node's masks are dropped once all its inputs
    have been visited, so memory follows the graph's width, not its length.
    """

    def __init__(self) -> None:
        # node -> (reach bits, through bits, reach priorities, through priorities)
        self.masks: dict[Node, tuple[int, int, int, int]] = {}
        self.unvisited_inputs: dict[Node, int] = {}

    def blocked_from(self, node: Node, supported: dict[Node, bool]) -> tuple[int, int]:
        bits = keys = 0
        for user in node.users:
            masks = self.masks.get(user)
            if masks is None:
                continue
            if supported.get(user, False):
                bits |= masks[1]
                keys |= masks[3]
            else:
                bits |= masks[0]
                keys |= masks[2]
        return bits, keys

    def visit(self, node: Node, bit: int, key: int, through: tuple[int, int]) -> None:
        bits, keys = bit, key
        for user in node.users:
            masks = self.masks.get(user)
            if masks is not None:
                bits |= masks[0]
                keys |= masks[2]
            left = self.unvisited_inputs.get(user)
            if left is None:
                continue
            if left > 1:
                self.unvisited_inputs[user] = left - 1
            else:
                del self.unvisited_inputs[user]
                self.masks.pop(user, None)
        inputs = len(node.all_input_nodes)
        if inputs:
            self.masks[node] = (bits, through[0], keys, through[1])
            self.unvisited_inputs[node] = inputs


class _Proposer:
    """One run of the proposal loop (see the module docstring)."""

    def __init__(self, partitioner: CapabilityBasedPartitioner, nodes: list[Node]) -> None:
        self.partitioner = partitioner
        self.nodes = nodes
        self.spans = _Spans(nodes)
        self.groups: dict[int, _Group] = {}  # id -> group, in creation order (as torch.fx)
        self.assignment: dict[Node, int] = {}
        self.key_owner: dict[int, int] = {}  # merge priority -> group id
        self.live_keys = 0  # bit mask of the merge priorities of live groups
        self.supported: dict[Node, bool] = {}
        self.reach = _Reach()
        self.settled = False  # the oldest-first merge pass has nothing left to merge

    # -- the merge test ----------------------------------------------------------------------

    def _creates_cycle(self, a: _Group, b: _Group, a_id: int, b_id: int) -> bool:
        """Whether some path leaves ``a`` + ``b`` and comes back, other groups counting as
        single nodes (entering one anywhere leads to all its outside users). The walk stops
        at nodes that cannot lead back (see ``_Spans`` in fuser_utils)."""
        # A path through an unsupported node: that node stays outside forever, so the two
        # can never merge; remember it by priority for the bulk skip in ``_chain``.
        if a.blocked & b.bits:
            a.blocked_keys |= 1 << b.order
            b.blocked_by_keys |= 1 << a.order
            return True
        if b.blocked & a.bits:
            b.blocked_keys |= 1 << a.order
            a.blocked_by_keys |= 1 << b.order
            return True
        # Groups keep the contracted graph acyclic (every merge is checked), so a cycle
        # through the union needs a path from one group to the other via something else.
        return self._leads_to(a, b, b_id) or self._leads_to(b, a, a_id)

    def _leads_to(self, src: _Group, dst: _Group, dst_id: int) -> bool:
        """Whether a path goes from ``src`` to ``dst`` through some node outside both, other
        groups counting as single nodes (entering one leads to all its outside users)."""
        spans = self.spans
        limits = spans.limits(dst.hi)
        if src.lo[0] >= limits[0] or src.lo[1] >= limits[1]:
            return False  # every outside user of src lies beyond the walk's bounds
        target, assignment, groups = dst.members, self.assignment, self.groups
        pending = [u for u in src.outside_users if u not in target]
        seen = set(pending)
        entered = {dst_id}
        while pending:
            node = pending.pop()
            if node in target:
                return True
            if spans.beyond(node, limits):
                continue
            gid = assignment.get(node)
            if gid is None:
                nexts: Iterable[Node] = node.users
            elif gid in entered:
                continue
            else:
                entered.add(gid)
                group = groups[gid]
                if group.lo[0] >= limits[0] or group.lo[1] >= limits[1]:
                    continue
                nexts = group.outside_users
            for user in nexts:
                if user not in seen:
                    seen.add(user)
                    pending.append(user)
        return False

    # -- merging ---------------------------------------------------------------------------

    def _merge(self, self_id: int, other_id: int) -> int:
        a, b = self.groups[self_id], self.groups[other_id]
        keep_id, gone_id = (other_id, self_id) if len(a.members) < len(b.members) else (
            self_id, other_id
        )  # fmt: skip
        keep, gone = self.groups[keep_id], self.groups[gone_id]
        users = (a.outside_users | b.outside_users) - a.members.keys() - b.members.keys()
        keep.members.update(gone.members)
        for node in gone.members:
            self.assignment[node] = keep_id
        keep.outside_users = users
        keep.bits |= gone.bits
        keep.blocked |= gone.blocked
        keep.blocked_keys |= gone.blocked_keys
        keep.blocked_by_keys |= gone.blocked_by_keys
        high, low = max(keep.order, gone.order), min(keep.order, gone.order)
        self.live_keys &= ~(1 << high)
        del self.key_owner[high]
        self.key_owner[low] = keep_id
        keep.order = low
        keep.lo = (min(keep.lo[0], gone.lo[0]), min(keep.lo[1], gone.lo[1]))
        keep.hi = (max(keep.hi[0], gone.hi[0]), max(keep.hi[1], gone.hi[1]))
        self.spans.add(keep.lo, keep.hi)
        del self.groups[gone_id]
        return keep_id

    def _try_merge(self, self_id: int, other_id: int) -> tuple[int, bool]:
        a, b = self.groups[self_id], self.groups[other_id]
        if self._creates_cycle(a, b, self_id, other_id):
            return self_id, False
        return self._merge(self_id, other_id), True

    def _chain(self, self_id: int, keys: int) -> bool:
        """Try to merge ``self_id`` with the groups whose priorities are set in ``keys``, in
        priority order; the group carried forward is whichever survives each merge.
        Candidates that can never join (``blocked``) are skipped a whole mask at a time."""
        # Candidates are fixed when the pass starts; merges only re-key the group carried
        # forward, whose priorities are no longer in ``keys``.
        merged = False
        owner = self.key_owner
        while keys:
            carried = self.groups[self_id]
            open_keys = keys & ~(carried.blocked_keys | carried.blocked_by_keys)
            if not open_keys:
                break
            lowest = open_keys & -open_keys
            keys &= ~((lowest << 1) - 1)
            self_id, did = self._try_merge(self_id, owner[lowest.bit_length() - 1])
            merged |= did
        return merged

    # -- the visit ---------------------------------------------------------------------------

    def _create(self, node: Node, order: int, new_id: int, blocked: tuple[int, int]) -> None:
        group = _Group(node, new_id, blocked, self.spans.place.get(node, (0, 0)))
        group.members[node] = order
        self.groups[new_id] = group
        self.assignment[node] = new_id
        self.key_owner[new_id] = new_id
        self.live_keys |= 1 << new_id
        self.spans.add(group.lo, group.hi)

    def run(self) -> dict[int, _Group]:
        ids = itertools.count()
        for order, node in enumerate(reversed(self.nodes)):
            supported = bool(self.partitioner._is_node_supported(node))
            self.supported[node] = supported
            new_id = None
            through = self.reach.blocked_from(node, self.supported)
            if supported and node not in self.assignment:
                new_id = next(ids)
                self._create(node, order, new_id, through)
            self._merge_pass(node, new_id)
            gid = self.assignment.get(node)
            key = 0 if gid is None else 1 << self.groups[gid].order
            self.reach.visit(node, 0 if new_id is None else 1 << new_id, key, through)
        return self.groups

    def _merge_pass(self, node: Node, new_id: int | None) -> None:
        if self.partitioner.skip_horizontal_fusion:
            if new_id is not None:
                self._merge_with_users(node, new_id)
        elif new_id is not None:
            # The new group has the highest priority number: it leads, the rest follow.
            merged = self._chain(new_id, self.live_keys & ~(1 << new_id))
            self.settled = self.settled and not merged
        elif not self.settled and len(self.groups) > 1:
            lowest = self.live_keys & -self.live_keys
            first = self.key_owner[lowest.bit_length() - 1]
            self.settled = not self._chain(first, self.live_keys & ~lowest)
        else:
            self.settled = True

    def _merge_with_users(self, node: Node, new_id: int) -> None:
        candidates = dict.fromkeys(self.assignment[u] for u in node.users if u in self.assignment)
        candidates.pop(new_id, None)
        self_id = new_id
        for other_id in candidates:
            self_id, _ = self._try_merge(self_id, other_id)


def _is_getitem(node: Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem


class CapabilityBasedPartitioner:
    """Partition ``graph_module`` into groups of nodes that ``operator_support`` accepts and
    fuse each group into a submodule.

    ``allows_single_node_partition``: keep partitions with a single compute node (by default
    they are dropped); ``non_compute_ops``: qualified names of ops that do not count as compute
    (``torch.ops.aten.view`` and ``_operator.getitem`` never do) and that
    :meth:`remove_bookend_non_compute_ops` trims from partition edges;
    ``allowed_single_node_partition_ops``: ops that may form a partition on their own;
    ``skip_horizontal_fusion``: only merge a new partition with its users' partitions, not with
    independent ones.
    """

    # fmt: off
    def __init__(self, graph_module: GraphModule, operator_support: OperatorSupportBase,
                 allows_single_node_partition: bool = False,
                 non_compute_ops: Sequence[str] | None = None,
                 allowed_single_node_partition_ops: Sequence[str] | None = None,
                 skip_horizontal_fusion: bool = False) -> None:
        # fmt: on
        self.graph_module, self.operator_support = graph_module, operator_support
        # The op-name lists are copied (``None``: empty) so later edits by the caller
        # do not change this partitioner.
        self.non_compute_ops = list(non_compute_ops or ())
        self.allowed_single_node_partition_ops = list(allowed_single_node_partition_ops or ())
        self.allows_single_node_partition = allows_single_node_partition
        self.skip_horizontal_fusion = skip_horizontal_fusion
        self._submodules: dict | None = None

    def _is_node_supported(self, node: Node) -> bool:
        submodules = self._submodules
        if submodules is None:
            submodules = dict(self.graph_module.named_modules())
        return self.operator_support.is_node_supported(submodules, node)

    def propose_partitions(self) -> list[Partition]:
        """Propose partitions of supported nodes (see the module docstring for the rules);
        the graph is not changed. Empty partitions are left out."""
        nodes = list(self.graph_module.graph.nodes)
        self._submodules = dict(self.graph_module.named_modules())
        try:
            groups = _Proposer(self, nodes).run()
        finally:
            self._submodules = None
        partitions: dict[int, Partition] = {}
        assignment: dict[Node, int] = {}
        for pid, group in groups.items():
            ordered = sorted(group.members.items(), key=operator.itemgetter(1), reverse=True)
            partitions[pid] = Partition(id=pid)
            partitions[pid].nodes = dict(ordered)
            assignment.update(dict.fromkeys(group.members, pid))
        self._pull_getitems_into_producers(nodes, partitions, assignment)
        if not self.allows_single_node_partition:
            self._drop_single_compute_node_partitions(partitions)
        for pid, partition in partitions.items():
            logger.debug("partition #%s: %s", pid, [n.name for n in partition.nodes])
        return [p for p in partitions.values() if p.size() > 0]

    def _pull_getitems_into_producers(
        self, nodes: list[Node], partitions: dict[int, Partition], assignment: dict[Node, int]
    ) -> None:
        """Put the getitem users of a tuple-producing node into its partition (or out of any,
        when the producer has none), repeating until nothing moves (nested tuples). Where two
        producers keep claiming one getitem (torch.fx never stops then), stop once the claims
        repeat."""
        producers = [n for n in nodes if all(_is_getitem(u) for u in n.users)]
        rounds: set[frozenset] = set()
        while True:
            moves: dict[Node, int | None] = {}
            for producer in producers:
                home = assignment.get(producer)
                for user in producer.users:
                    if assignment.get(user) != home:
                        moves[user] = home
            if not moves:
                return
            claims = frozenset(moves.items())
            if claims in rounds:
                # Producers disagree about a getitem and keep undoing each other (torch.fx
                # loops forever here): settle each such getitem in a producer's partition.
                moves = self._settle_contested(producers, moves, assignment)
                if not moves:
                    return
            rounds.add(claims)
            moved = False
            for node, home in moves.items():
                if assignment.get(node) == home:
                    continue  # two producers claim this getitem; the later one keeps it
                moved = True
                if node in assignment:
                    partitions[assignment[node]].remove_node(node)
                if home is None:
                    del assignment[node]
                else:
                    assignment[node] = home
                    partitions[home].add_node(node, None)
            if not moved:
                return

    @staticmethod
    def _settle_contested(
        producers: list[Node], moves: dict[Node, int | None], assignment: dict[Node, int]
    ) -> dict[Node, int | None]:
        """For each getitem in ``moves``, the partition of its last producer that has one
        (joining keeps the partition that reads the getitem intact), else no partition."""
        settled: dict[Node, int | None] = {}
        for producer in producers:
            home = assignment.get(producer)
            for user in producer.users:
                if user in moves and (home is not None or user not in settled):
                    settled[user] = home
        return {n: h for n, h in settled.items() if assignment.get(n) != h}

    def _drop_single_compute_node_partitions(self, partitions: dict[int, Partition]) -> None:
        non_compute = _DEFAULT_NON_COMPUTE_OPS.union(self.non_compute_ops)
        single_ok = self.allowed_single_node_partition_ops
        doomed = []
        for pid, partition in partitions.items():
            compute = 0
            for node in partition.nodes:
                if node.op != "call_function":
                    continue
                if not callable(node.target):
                    raise AssertionError(f"Expected callable target, got {type(node.target)}")
                name = qualified_name(node.target)
                compute += (name not in non_compute) + (name in single_ok)
            if compute <= 1:
                doomed.append(pid)
        for pid in doomed:
            del partitions[pid]

    def fuse_partitions(self, partitions: list[Partition], prefix: str = "fused_") -> GraphModule:
        """Fuse each partition into a ``<prefix><i>`` submodule of the graph module (changed
        in place and returned)."""
        return fuse_by_partitions(self.graph_module, [p.nodes for p in partitions], prefix=prefix)

    def remove_bookend_non_compute_ops(self, partitions: list[Partition]) -> None:
        """Drop non-compute ops (``non_compute_ops``) from the edges of each partition: those
        fed only by placeholders, outside or dropped nodes (through other non-compute ops), or
        whose values are used only outside or by dropped nodes."""
        non_compute = set(self.non_compute_ops)

        def non_compute_node(node: Node) -> bool:
            return node.op == "call_function" and qualified_name(node.target) in non_compute

        # Memos shared by all partitions, as torch.fx's are.
        memo_in: dict[Node, bool] = {}
        memo_out: dict[Node, bool] = {}

        def transparent(node, members, dropped, neighbours, memo) -> bool:
            if node.op == "placeholder" or node not in members or node in dropped:
                return True
            if node in memo:
                return memo[node]
            answer = non_compute_node(node) and all(
                transparent(n, members, dropped, neighbours, memo) for n in neighbours(node)
            )
            memo[node] = answer
            return answer

        def inputs_of(node: Node) -> list[Node]:
            return node.all_input_nodes

        def users_of(node: Node) -> Iterable[Node]:
            return node.users

        for partition in partitions:
            members = set(partition.nodes)
            dropped: set[Node] = set()
            for node in partition.nodes:
                if non_compute_node(node) and (
                    transparent(node, members, dropped, inputs_of, memo_in)
                    or transparent(node, members, dropped, users_of, memo_out)
                ):
                    dropped.add(node)
            for node in dropped:
                partition.nodes.pop(node, None)

    def partition_and_fuse(self, prefix: str = "fused_") -> GraphModule:
        """:meth:`propose_partitions` then :meth:`fuse_partitions`."""
        return self.fuse_partitions(self.propose_partitions(), prefix=prefix)
