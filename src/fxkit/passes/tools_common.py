"""Small helpers shared by the splitter, minimizer and partitioner passes.

* naming: :func:`get_node_target` / :func:`get_acc_ops_name` give the "typename" of what a
  node runs, the key that :class:`~fxkit.passes.operator_support.OperatorSupport` tables use;
* :func:`is_node_output_tensor` reads the type ``ShapeProp`` recorded;
* :class:`FxNetAccFusionsFinder` finds groups of accelerated nodes that must stay together
  because they hand non-tensor values to each other;
* :func:`legalize_graph` and :func:`stable_topological_sort` rebuild a module's graph in a
  topological order (the second keeps the existing order wherever dependencies allow).

Everything here works on fxkit and torch.fx graphs alike (only the documented node API is used).
"""

from __future__ import annotations

import collections
import heapq
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fxkit._codegen_body import qualified_name
from fxkit._compatibility import compatibility
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node

__all__ = ["FxNetAccFusionsFinder", "get_acc_ops_name", "get_node_target"]
__all__ += ["is_node_output_tensor", "legalize_graph", "stable_topological_sort"]

# Aliases used in signatures across the splitter / minimizer passes.
NodeList, NodeSet, Names = list[Node], set[Node], list[str]
Tensors = tuple[torch.Tensor] | list[torch.Tensor]
TensorOrTensors = torch.Tensor | Tensors
CALLABLE_NODE_OPS = set(("call_module", "call_function", "call_method"))

# The same op kinds in a fixed order, so error messages do not depend on set hashing.
_CALLABLE_OPS_TEXT = ", ".join(("call_module", "call_function", "call_method"))


def _from_acc_ops(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    return bool(module) and "acc_ops" in module


@compatibility(is_backward_compatible=False)
def get_acc_ops_name(k: str | type) -> str:
    """The typename for ``k``: strings as they are, ``acc_ops.<name>`` for acc ops, otherwise
    ``<module>.<name>`` (with ``torch._ops`` spelled ``torch.ops``)."""
    if isinstance(k, str):
        return k
    if _from_acc_ops(k):
        return f"acc_ops.{k.__name__}"
    module = (k.__module__ or "").replace("torch._ops", "torch.ops")
    return f"{module}.{k.__name__}"


@compatibility(is_backward_compatible=False)
def get_node_target(submodules: Mapping[str, torch.nn.Module], node: Node) -> str:
    """The typename of what ``node`` runs, the key used by operator-support tables.

    ``call_module``: the class of the submodule (its ``_base_class_origin`` if it has one);
    ``call_function``: the function's qualified name (``torch.relu``, ``_operator.add``);
    ``call_method``: the method name. Other ops raise ``AssertionError``.
    """
    op = node.op
    if op == "call_function":
        fn = node.target
        return f"acc_ops.{fn.__name__}" if _from_acc_ops(fn) else qualified_name(fn)
    if op not in CALLABLE_NODE_OPS:
        raise AssertionError(f"Expect op types of {_CALLABLE_OPS_TEXT}, but found {op}")
    if not isinstance(node.target, str):
        raise AssertionError(f"Expected str target, got {type(node.target)}")
    if op == "call_method":
        return node.target
    module = submodules[node.target]
    return get_acc_ops_name(getattr(module, "_base_class_origin", type(module)))


@compatibility(is_backward_compatible=False)
def is_node_output_tensor(node: Node) -> bool:
    """Whether ``node`` produced a tensor, judged by the ``type`` that ``ShapeProp`` stores in
    ``node.meta`` (so run ``ShapeProp`` first; without it the answer is ``False``)."""
    produced = node.meta.get("type", None)
    return isinstance(produced, type) and issubclass(produced, torch.Tensor)


# --- fusion groups ------------------------------------------------------------------------------


def _callable(node: Node) -> bool:
    return node.op in CALLABLE_NODE_OPS


def _passes_non_tensor(node: Node) -> bool:
    """Nodes without ``tensor_meta`` hand something other than a tensor to their users."""
    return "tensor_meta" not in node.meta


@compatibility(is_backward_compatible=False)
class FxNetAccFusionsFinder:
    """Finds *fusion groups*: connected accelerated nodes that pass non-tensor values (sizes,
    tuples, ...) to each other and so must end up in the same accelerated submodule.

    A group grows from a node without ``tensor_meta``: it takes in that node's callable users,
    the callable inputs that have no ``tensor_meta`` either, and every node lying on a path
    between two members (so fusing the group cannot create a cycle). Calling the finder
    returns ``{node: its group}`` for groups made of accelerated nodes only; the nodes of any
    other group are removed from ``acc_nodes`` (the set passed in is updated in place).
    """

    def __init__(self, module: GraphModule, acc_nodes: NodeSet) -> None:
        self.module, self.acc_nodes = module, acc_nodes
        self.nodes = [*module.graph.nodes]
        self.node_index = dict(zip(self.nodes, range(len(self.nodes))))

    @dataclass
    class FusionGroup:
        """A growing fusion group: its members, their inputs from outside, the members whose
        neighbours are still to be looked at, and the smallest member index."""

        # Index (in graph order) of the earliest member.
        top_node_idx: int
        nodes: NodeSet
        inputs: NodeSet
        nodes_need_process: NodeSet = field(default_factory=set)

        def add_node(self, node: Node) -> None:
            """Make ``node`` a member (once) and queue it for processing."""
            if node not in self.nodes:
                self.inputs.discard(node)
                self.nodes.add(node)
                self.nodes_need_process.add(node)
                outside = (a for a in node.all_input_nodes if a not in self.nodes)
                self.inputs.update(filter(_callable, outside))

    def recursive_add_node(
        self,
        fusion_group: FxNetAccFusionsFinder.FusionGroup,
        inputs: Iterable[Node],
        visited: NodeSet | None = None,
    ) -> bool:
        """Walk upwards from ``inputs``; every node on a path that leads back into the group
        joins it. Returns whether any such path was found."""
        seen = visited if visited is not None else set()
        reaches: dict[Node, bool] = {}  # memo: does this node lead back into the group?
        found = False
        for start in list(inputs):
            if start in seen:
                continue
            found |= self._leads_into_group(fusion_group, start, seen, reaches)
        return found

    def _leads_into_group(
        self,
        group: FxNetAccFusionsFinder.FusionGroup,
        start: Node,
        seen: NodeSet,
        reaches: dict[Node, bool],
    ) -> bool:
        # Iterative post-order walk over inputs (graphs can be deeper than Python's stack).
        # A node's answer is final once all its inputs are answered; members answer True,
        # nodes that cannot lie on such a path (not callable, before the group) answer False.
        def opens(node: Node) -> Iterable[Node] | None:
            if node in group.nodes:
                reaches[node] = True
                return None
            reaches[node] = False
            if not _callable(node) or self.node_index[node] < group.top_node_idx:
                return None
            return iter(node.all_input_nodes)

        seen.add(start)
        stack: list[tuple[Node, Iterable[Node]]] = []
        children = opens(start)
        if children is not None:
            stack.append((start, children))
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in seen:
                    seen.add(child)
                    grandchildren = opens(child)
                    if grandchildren is not None:
                        stack.append((child, grandchildren))
                        break
                if reaches.get(child):
                    reaches[node] = True
            else:
                stack.pop()
                if reaches[node]:
                    group.add_node(node)
                    if stack:
                        reaches[stack[-1][0]] = True
        return reaches[start]

    def _close_between(self, group: FxNetAccFusionsFinder.FusionGroup) -> None:
        """Add every node lying on a path from one member to another."""
        members = group.nodes
        last = max(self.node_index[n] for n in members)
        # Forward: callable nodes reachable from the group, not beyond its last member.
        below: dict[Node, None] = {}
        frontier = list(members)
        while frontier:
            for user in frontier.pop().users:
                if user in members or user in below or not _callable(user):
                    continue
                if self.node_index[user] < last:
                    below[user] = None
                    frontier.append(user)
        # Backward, latest first: which of those lead back into the group.
        leads_back: set[Node] = set()
        for node in sorted(below, key=self.node_index.__getitem__, reverse=True):
            if any(u in members or u in leads_back for u in node.users):
                leads_back.add(node)
        for node in sorted(leads_back, key=self.node_index.__getitem__):
            group.add_node(node)

    def _grow(self, seed: Node) -> NodeSet:
        group = self.FusionGroup(self.node_index[seed], {seed}, set(seed.all_input_nodes), {seed})
        while group.nodes_need_process:
            while group.nodes_need_process:
                node = group.nodes_need_process.pop()
                if _passes_non_tensor(node):
                    for user in node.users:
                        if _callable(user):
                            group.add_node(user)
                for arg in node.all_input_nodes:
                    if _callable(arg) and _passes_non_tensor(arg) and arg not in group.nodes:
                        group.add_node(arg)
                        group.top_node_idx = min(group.top_node_idx, self.node_index[arg])
            self._close_between(group)
        return group.nodes

    def __call__(self) -> dict[Node, NodeSet]:
        """Return ``{node: group}`` for every node of an all-accelerated fusion group."""
        groups: dict[Node, NodeSet] = {}
        for seed in list(self.acc_nodes):
            if seed in groups or seed not in self.acc_nodes:
                continue
            if not _callable(seed) or not _passes_non_tensor(seed):
                continue
            members = self._grow(seed)
            if members <= self.acc_nodes:
                groups.update(dict.fromkeys(members, members))
            else:
                self.acc_nodes -= members
        return groups


# --- topological rebuilds -----------------------------------------------------------------------

# Runtime-assertion arithmetic and checks: legalize_graph moves these forward as soon as their
# inputs exist, so the assertions run before any data-dependent op that relies on them.
_ASSERTION_FIRST_OPS = frozenset(
    [getattr(operator, name) for name in "add mul sub floordiv truediv mod".split()]
    + [getattr(operator, name) for name in "le lt ge gt eq ne".split()]
    + [
        getattr(getattr(torch.ops.aten, packet), overload)
        for packet, overload in (
            ("sym_constrain_range", "default"),
            ("sym_constrain_range_for_size", "default"),
            ("_assert_async", "msg"),
            ("scalar_tensor", "default"),
            ("_assert_scalar", "default"),
        )
    ]
)


def _unmet_inputs(nodes: list[Node]) -> dict[Node, int]:
    """For each node, how many distinct nodes it reads from (its users' view of the edges)."""
    waiting = dict.fromkeys(nodes, 0)
    for node in nodes:
        for user in node.users:
            waiting[user] += 1
    return waiting


def _priority_order(nodes: list[Node], waiting: dict[Node, int]) -> list[Node]:
    """Kahn's order, FIFO, except that assertion-related ops jump to the front when ready."""
    ready = collections.deque(n for n in nodes if waiting[n] == 0)
    order: list[Node] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for user in node.users:
            waiting[user] -= 1
            if waiting[user]:
                continue
            urgent = user.op == "call_function" and _is_assertion_op(user.target)
            ready.appendleft(user) if urgent else ready.append(user)
    return order


def _is_assertion_op(target: Any) -> bool:
    try:
        return target in _ASSERTION_FIRST_OPS
    except TypeError:  # unhashable target
        return False


def _stable_order(nodes: list[Node], waiting: dict[Node, int]) -> list[Node]:
    """Kahn's order that always takes the ready node that came first originally."""
    position = {n: i for i, n in enumerate(nodes)}
    ready = [position[n] for n in nodes if waiting[n] == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for user in node.users:
            waiting[user] -= 1
            if not waiting[user]:
                heapq.heappush(ready, position[user])
    return order


def _rebuild(gm: GraphModule, order: Callable[[list[Node], dict[Node, int]], list[Node]]):
    """Copy ``gm``'s nodes into a new graph in ``order``; return the graph and the nodes that
    could not be placed (those on a cycle)."""
    old = gm.graph
    nodes = list(old.nodes)
    waiting = _unmet_inputs(nodes)
    placed = order(nodes, waiting)
    stuck = [n for n in nodes if waiting[n]] if len(placed) < len(nodes) else []
    # A torch.fx graph gets a graph of its own kind; fxkit (and subclasses) a plain fxkit Graph.
    fresh = Graph() if isinstance(old, Graph) else type(old)()
    copies: dict[Node, Node] = {}
    for node in placed:
        copies[node] = fresh.node_copy(node, copies.__getitem__)
    fresh._codegen = old._codegen
    return fresh, stuck


@compatibility(is_backward_compatible=False)
def legalize_graph(gm: GraphModule) -> GraphModule:
    """Give ``gm`` (in place, also returned) a topologically sorted copy of its graph.

    The order is not stable: nodes are emitted breadth-first as their inputs become ready,
    with runtime-assertion ops moved forward. Use :func:`stable_topological_sort` to keep the
    existing order where possible. Raises ``RuntimeError`` if the graph has a cycle.
    """
    fresh, stuck = _rebuild(gm, _priority_order)
    if stuck:
        raise RuntimeError(f"Input graph has cycles, unable to add {stuck}")
    gm.graph = fresh
    return gm


@compatibility(is_backward_compatible=False)
def stable_topological_sort(gm: GraphModule) -> GraphModule:
    """Give ``gm`` (in place, also returned) a topologically sorted copy of its graph that keeps
    the current node order wherever dependencies allow (among ready nodes, the earliest goes
    first). Raises ``AssertionError`` if the graph has a cycle."""
    fresh, stuck = _rebuild(gm, _stable_order)
    if stuck:
        raise AssertionError(f"Input graph has cycles, unable to add {stuck}")
    gm.graph = fresh
    return gm
