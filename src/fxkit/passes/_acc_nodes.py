"""Which nodes the accelerator runs: :class:`FxNetAccNodesFinder` (operator support plus the
non-tensor rules) and the per-node event log (:class:`NodeEventTracker`) it keeps, configured
by torch.fx's ``FX_NET_ACC_SPLITTER_TRACKER_*`` environment variables. Re-exported by
:mod:`fxkit.passes.splitter_base`, where torch.fx defines them."""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional

from fxkit.graph_module import GraphModule
from fxkit.node import Node
from fxkit.passes.operator_support import OperatorSupportBase
from fxkit.passes.tools_common import CALLABLE_NODE_OPS, NodeList, NodeSet, is_node_output_tensor

# Node-event tracker configuration (same environment variables as torch.fx).
ENV_FX_NET_ACC_SPLITTER_TRACKER_MODE = "FX_NET_ACC_SPLITTER_TRACKER_MODE"
ENV_FX_NET_ACC_SPLITTER_TRACKER_DUMP_PATH = "FX_NET_ACC_SPLITTER_TRACKER_DUMP_PATH"
ENV_FX_NET_ACC_SPLITTER_TRACKER_TRACKED_NODES = "FX_NET_ACC_SPLITTER_TRACKER_TRACKED_NODES"
TRACKER_DUMP_PATH, ALL_SUFFIX, NODES_SUFFIX = "_fx_net_tracker", "_all.txt", "_nodes.txt"
DUMP_PREFIX = os.environ.get(ENV_FX_NET_ACC_SPLITTER_TRACKER_DUMP_PATH, TRACKER_DUMP_PATH)
# "0": keep events in memory only; "1": also write every event to DUMP_PREFIX + ALL_SUFFIX;
# "2": also trace the nodes listed in the TRACKED_NODES variable; "3": also trace every
# node that has more than one event.
TRACKER_MODE = os.environ.get(ENV_FX_NET_ACC_SPLITTER_TRACKER_MODE, "0")


class NodeEvent:
    """Something that happened to ``source`` while choosing acc nodes: ``desc`` reads
    ``<event kind>|<reason>``; ``dep`` is the node that caused it, if another."""

    def __init__(self, source: Node, desc: str, dep: Optional[Node] = None) -> None:
        self.source = source
        self.desc = desc
        self.dep = dep

    def to_str(self) -> str:
        """``"<node>: <desc> <cause>"``, with ``#`` as the cause when the node caused it."""
        cause = "#" if self.dep is None else self.dep.name
        return f"{self.source.name}: {self.desc} {cause}"


class NodeEventTracker:
    """Record of :class:`NodeEvent` s, for finding out why a node ended up on the CPU."""

    def __init__(self, tracker_mode: int, dump_prefix: str) -> None:
        self.tracker_mode = tracker_mode
        self.dump_prefix = dump_prefix
        self.events: List[NodeEvent] = []
        self.node_events: Dict[str, List[int]] = {}
        self.writer: Callable[[str], object] = print

    def add(self, node: Node, desc: str, dep: Optional[Node] = None) -> None:
        """Append an event about ``node``."""
        self.node_events.setdefault(node.name, []).append(len(self.events))
        self.events.append(NodeEvent(node, desc, dep))

    def print_node(
        self,
        node_name: str,
        recursive: bool = False,
        tab: str = "",
        writer: Optional[Callable[[str], object]] = None,
    ) -> None:
        """Write the events of one node; ``recursive`` follows each event's cause too."""
        out = writer or self.writer
        for index in self.node_events.get(node_name, ()):
            event = self.events[index]
            out(tab + event.to_str())
            if recursive and event.dep is not None:
                self.print_node(event.dep.name, True, "| " + tab, out)

    def to_dict(self) -> Dict[str, List[str]]:
        """Node name -> its events as text."""
        return {
            name: [self.events[i].to_str() for i in indices]
            for name, indices in self.node_events.items()
        }

    def print_all(self, writer: Optional[Callable[[str], object]] = None) -> None:
        """Write every node's events."""
        out = writer or self.writer
        for name in self.node_events:
            out(f"Node: {name}:")
            self.print_node(name, recursive=False, tab="  ", writer=out)

    def dump(self) -> None:
        """Publish the events (structured trace log, plus files for tracker modes >= 1)."""
        from torch._logging import trace_structured

        meta = {"name": "fx_net_acc_splitter_finder_events", "encoding": "json"}
        trace_structured("artifact", lambda: meta, payload_fn=lambda: json.dumps(self.to_dict()))
        if self.tracker_mode >= 1:
            with open(self.dump_prefix + ALL_SUFFIX, "w") as f:
                self.print_all(lambda line: f.write(line + "\n"))
        if self.tracker_mode == 2:
            names = os.environ.get(ENV_FX_NET_ACC_SPLITTER_TRACKER_TRACKED_NODES, "").split(",")
        elif self.tracker_mode == 3:
            names = [n for n, events in self.node_events.items() if len(events) > 1]
        else:
            return
        with open(self.dump_prefix + NODES_SUFFIX, "w") as f:
            for name in names:
                f.write(f"===== Tracking node {name} =====\n")
                self.print_node(name, True, "|-", lambda line: f.write(line + "\n"))
                f.write(f"===== End of tracking node {name} =====\n")


class FxNetAccNodesFinder:
    """Find the call nodes that the accelerator will run.

    A node qualifies when ``operator_support`` accepts it. Unless ``allow_non_tensor``, a
    non-tensor value must not cross between acc and CPU, so acc nodes are dropped (and the
    drop spreads) where one would: an acc node fed a non-tensor by a CPU node, and an acc
    node producing a non-tensor that a CPU node reads. Calling the finder returns the set.
    """

    def __init__(
        self,
        module: GraphModule,
        operator_support: OperatorSupportBase,
        allow_non_tensor: bool,
    ) -> None:
        self.tracker = NodeEventTracker(int(TRACKER_MODE), DUMP_PREFIX)
        self.module, self.operator_support = module, operator_support
        self.allow_non_tensor = allow_non_tensor
        self.acc_nodes: NodeSet = set()

    def reduce_acc_nodes_non_tensor_input_helper(self, cpu_worklist: NodeList) -> None:
        """Move the acc users of ``cpu_worklist`` to the CPU, transitively through users
        that themselves produce non-tensors. ``cpu_worklist`` is consumed."""
        self._spread_to_cpu(cpu_worklist)

    def _spread_to_cpu(self, cpu_worklist: NodeList) -> NodeList:
        """:meth:`reduce_acc_nodes_non_tensor_input_helper`, returning the nodes it moved."""
        acc, track = self.acc_nodes, self.tracker.add
        pending = list(cpu_worklist)
        cpu_worklist.clear()
        moved: NodeList = []
        while pending:
            cpu_node = pending.pop()
            for user in cpu_node.users:
                if user not in acc:
                    continue
                acc.discard(user)
                moved.append(user)
                track(user, "acc_del|user_of_new_cpu_node", cpu_node)
                if not is_node_output_tensor(user):
                    track(user, "new_cpu_node|non_tensor_output")
                    pending.append(user)
        return moved

    def reduce_acc_nodes_non_tensor_input(self) -> None:
        """Drop acc nodes that read a non-tensor produced by a CPU call node."""
        sources: NodeList = []
        for n in self.module.graph.nodes:
            if n.op in CALLABLE_NODE_OPS and n not in self.acc_nodes:
                if not is_node_output_tensor(n):
                    self.tracker.add(n, "new_cpu_node|callable_non_tensor_input")
                    sources.append(n)
        self.reduce_acc_nodes_non_tensor_input_helper(sources)

    def reduce_acc_nodes_non_tensor_output(self) -> None:
        """Drop acc nodes whose non-tensor output is read by a CPU node, until none is left.
        (Each round re-examines only the producers of the nodes just moved.)"""
        acc = self.acc_nodes

        def first_cpu_user(n: Node) -> Optional[Node]:
            if n not in acc or is_node_output_tensor(n):
                return None
            return next((u for u in n.users if u not in acc), None)

        candidates: List[Node] = list(acc)
        while candidates:
            dropped: NodeList = []
            for n in candidates:
                cpu_user = first_cpu_user(n)
                if cpu_user is not None:
                    self.tracker.add(n, "acc_del|non_tensor_output_with_cpu_user", cpu_user)
                    dropped.append(n)
            acc.difference_update(dropped)
            moved = dropped + self._spread_to_cpu(list(dropped))
            # Only the producers of a node that just moved can have gained a CPU user.
            candidates = list(dict.fromkeys(p for m in moved for p in m.all_input_nodes))

    def __call__(self) -> NodeSet:
        """Compute (and return) ``acc_nodes``; the tracker records why each node went where."""
        submodules = dict(self.module.named_modules())
        supported = self.operator_support.is_node_supported
        track = self.tracker.add
        acc: NodeSet = set()
        for n in self.module.graph.nodes:
            if n.op not in CALLABLE_NODE_OPS:
                track(n, "init_cpu|not_callable")
            elif not supported(submodules, n):
                track(n, "init_cpu|operator_support")
            else:
                track(n, "init_acc|callable_and_operator_supported")
                acc.add(n)
        self.acc_nodes = acc
        if not self.allow_non_tensor:
            # Non-tensor values must not cross the acc/CPU boundary in either direction.
            self.reduce_acc_nodes_non_tensor_input()
            self.reduce_acc_nodes_non_tensor_output()
        self.tracker.dump()
        return self.acc_nodes
