"""Split a GraphModule into accelerator and CPU submodules (the "acc splitter").

:class:`_SplitterBase` asks an ``OperatorSupportBase`` which call nodes the accelerator runs,
groups the graph into alternating runs of supported ("acc") and unsupported ("cpu") nodes and
hands them to ``split_by_tags``: the top module calls ``_run_on_acc_<i>``/``_run_on_cpu_<i>``
submodules in order. Backends subclass it (``_lower_model_to_backend``, ``_find_culprit``);
``node_support_preview``/``split_preview`` report before committing. Inputs may be fxkit or
torch.fx GraphModules (read through the documented API only).
"""

from __future__ import annotations

import argparse
import copy
import heapq
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from fxkit.graph_module import GraphModule
from fxkit.node import Node, map_arg
from fxkit.passes import tools_common
from fxkit.passes._acc_nodes import (  # noqa: F401 - torch.fx defines these here
    ALL_SUFFIX,
    DUMP_PREFIX,
    ENV_FX_NET_ACC_SPLITTER_TRACKER_DUMP_PATH,
    ENV_FX_NET_ACC_SPLITTER_TRACKER_MODE,
    ENV_FX_NET_ACC_SPLITTER_TRACKER_TRACKED_NODES,
    NODES_SUFFIX,
    TRACKER_DUMP_PATH,
    TRACKER_MODE,
    FxNetAccNodesFinder,
    NodeEvent,
    NodeEventTracker,
)
from fxkit.passes.graph_manipulation import get_size_of_node
from fxkit.passes.operator_support import OperatorSupportBase, get_node_target
from fxkit.passes.shape_prop import ShapeProp
from fxkit.passes.split_utils import move_non_tensor_nodes_on_boundary, split_by_tags
from fxkit.passes.tools_common import CALLABLE_NODE_OPS, NodeList, NodeSet, is_node_output_tensor

# Same list as torch.fx; _SplitterBase and _SplitterSettingBase are used by name there too.
__all__ = ["FxNetAccNodesFinder", "FxNetSplitterInternalError", "Subgraph", "SplitResult"]
__all__ += ["generate_inputs_for_submodules", "NodeEvent", "NodeEventTracker"]

DEFAULT_SKIP_FUSION = DEFAULT_ALLOW_NON_TENSOR = False
DEFAULT_MIN_ACC_MODULE_SIZE = 1


# Command-line overrides understood by _SplitterSettingBase: (flag spelling, attribute, kind).
# A backend's launcher can tune the splitter without code changes, as torch.fx allows.
_SETTING_FLAGS: Tuple[Tuple[str, str, str], ...] = (
    ("min-acc-module-size", "min_acc_module_size", "int"),
    ("max-acc-splits", "max_acc_splits", "int"),
    ("skip-fusion", "skip_fusion", "flag"),
    ("allow-non-tensor", "allow_non_tensor", "flag"),
    ("move-non-tensor-nodes-on-boundary", "move_non_tensor_nodes_on_boundary", "flag"),
)


def _command_line_settings() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for spelling, attr, kind in _SETTING_FLAGS:
        flags = (f"--{spelling}", f"--{attr}")
        if kind == "int":
            parser.add_argument(*flags, dest=attr, type=int, required=False)
        else:
            parser.add_argument(*flags, dest=attr, action="store_true", default=False)
    known, _rest = parser.parse_known_args()
    return known


class _SplitterSettingBase:
    """Knobs of :class:`_SplitterBase`.

    ``min_acc_module_size``: acc groups with fewer nodes are merged into their CPU
    neighbours. ``skip_fusion``: do not keep non-tensor data flow inside one submodule.
    ``allow_non_tensor``: let acc nodes exchange non-tensor values with CPU nodes.
    ``max_acc_splits``: :meth:`_SplitterBase.generate_split_results` raises ``ValueError``
    when the split makes more submodules than this (``-1``: no limit).
    ``move_non_tensor_nodes_on_boundary``: move non-tensor producers next to their users.
    Command-line flags of the same names (``--min-acc-module-size`` ...) take precedence.
    """

    # fmt: off
    def __init__(self, min_acc_module_size: int = DEFAULT_MIN_ACC_MODULE_SIZE,
                 skip_fusion: bool = DEFAULT_SKIP_FUSION,
                 allow_non_tensor: bool = DEFAULT_ALLOW_NON_TENSOR, max_acc_splits: int = -1,
                 move_non_tensor_nodes_on_boundary: bool = False) -> None:
        # fmt: on
        cli = _command_line_settings()
        # A flag only overrides when given (truthy), matching torch.fx; max_acc_splits is
        # parsed but, as in torch.fx, always taken from the argument.
        self.min_acc_module_size: int = cli.min_acc_module_size or min_acc_module_size
        self.skip_fusion: bool = cli.skip_fusion or skip_fusion
        self.allow_non_tensor: bool = cli.allow_non_tensor or allow_non_tensor
        self.max_acc_splits: int = max_acc_splits
        self.move_non_tensor_nodes_on_boundary: bool = (
            cli.move_non_tensor_nodes_on_boundary or move_non_tensor_nodes_on_boundary
        )


class FxNetSplitterInternalError(Exception):
    """The splitter reached a state it cannot split (e.g. a dependency cycle between groups)."""


@dataclass
class Subgraph:
    """A run of nodes that will become one submodule (``is_acc``: on the accelerator)."""

    is_acc: bool
    nodes: NodeList
    device_ordinal: Optional[int] = None


class SplitResult(NamedTuple):
    """:meth:`_SplitterBase.generate_split_results`' result: the split module, submodule name
    -> its sample inputs, and the CPU submodules' name prefix (acc ones: ``_run_on_acc_``)."""

    split_module: GraphModule
    submodule_inputs: Dict[str, Any]
    non_acc_submodule_prefix: str


def generate_inputs_for_submodules(
    model: nn.Module,
    inputs: Sequence[Any],
    target_submodules: Iterable[str],
    deepcopy: bool = False,
) -> Dict[str, Any]:
    """Run ``model(*inputs)`` (without grad) and return the positional inputs that each of
    ``target_submodules`` (qualified names) received, as ``{name: args_tuple}``.

    ``deepcopy`` stores copies, for submodules that mutate their inputs. A module object
    registered under two names is reported under one of them. ScriptModules are skipped.
    """
    wanted = set(target_submodules)
    captured: Dict[str, Any] = {}
    name_of = {mod: name for name, mod in model.named_modules()}

    def remember(module: torch.nn.Module, args: Tuple[Any, ...]) -> None:
        captured[name_of[module]] = copy.deepcopy(args) if deepcopy else args

    handles = [
        mod.register_forward_pre_hook(remember)
        for name, mod in model.named_modules()
        if name in wanted and not isinstance(mod, torch.jit.ScriptModule)
    ]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _is_graph_module(module: object) -> bool:
    # Duck typing, so that torch.fx GraphModules are accepted too.
    return isinstance(module, torch.nn.Module) and hasattr(module, "graph")


def _dtype_signature(node: Node) -> Tuple[tuple, tuple]:
    """(positional arg dtypes without trailing Nones, (kwarg name, dtype) pairs) of ``node``;
    non-node arguments count as ``None``."""

    def dtype(arg: Any) -> Optional[torch.dtype]:
        return getattr(arg.meta.get("tensor_meta"), "dtype", None)

    is_node = lambda a: hasattr(a, "op") and hasattr(a, "all_input_nodes")  # noqa: E731
    positional = [dtype(a) if is_node(a) else None for a in node.args]
    while positional and positional[-1] is None:
        positional.pop()
    keyword = tuple((k, dtype(v)) for k, v in node.kwargs.items() if is_node(v))
    return tuple(positional), keyword


def _support_section(title: str, table: Dict[str, Dict[Tuple[tuple, tuple], None]]) -> str:
    lines = [f"\n{title}:\n"]
    for target, signatures in table.items():
        for args, kwargs in signatures:
            lines.append(f"{target}: ({args}, {dict(kwargs)})\n")
    return "".join(lines)


def _write_dot(path: str, gm: torch.nn.Module, fill: Callable[[Node], str]) -> None:
    """Write a plain DOT file of ``gm``'s graph (get_attr nodes left out), one colour per node."""
    lines = [f'digraph "{os.path.basename(path)[:-4]}" {{', "  rankdir=TB;"]
    nodes = [n for n in gm.graph.nodes if n.op != "get_attr"]
    for n in nodes:
        label = f"{n.name}\\n{n.op}\\n{n.target}".replace('"', '\\"')
        lines.append(
            f'  "{n.name}" [shape=record, style=filled, fillcolor={fill(n)}, label="{label}"];'
        )
    kept = set(nodes)
    for n in nodes:
        lines.extend(f'  "{a.name}" -> "{n.name}";' for a in n.all_input_nodes if a in kept)
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class _SplitterBase:
    """Split a GraphModule into accelerator (``_run_on_acc_<i>``) and CPU
    (``<non_acc_submodule_name><i>``) submodules, as few as the dependencies allow.

    Only call nodes can go to the accelerator. For ``d = sin(a) + cos(a)`` with ``sin`` and
    ``cos`` supported, the split module's ``forward(a)`` calls ``_run_on_acc_0(a)``, unpacks
    its two results (``getitem``, ``getitem_1``) and returns
    ``_run_on_cpu_1(getitem, getitem_1)``.

    Construction runs :class:`~fxkit.passes.shape_prop.ShapeProp` on ``sample_input`` and
    computes ``acc_nodes``, ``fusions`` (groups that must stay together because they pass
    non-tensors) and ``deps`` (direct dependencies, widened for fusions). Calling the
    splitter returns the split module; :meth:`generate_split_results` also collects each
    submodule's sample inputs.
    """

    # Host <-> accelerator bandwidth assumed by split_preview (bytes per second).
    PCIe_BW = 100 * 2**30

    def __init__(
        self,
        module: GraphModule,
        sample_input: Sequence[Any],
        operator_support: OperatorSupportBase,
        settings: _SplitterSettingBase,
        non_acc_submodule_name: str = "_run_on_cpu_",
        return_tuple: bool = False,
        nodes_finder: Optional[FxNetAccNodesFinder] = None,
    ) -> None:
        if not _is_graph_module(module):
            raise AssertionError(f"Expected GraphModule, got {type(module)}")
        self.module, self.sample_input = module, sample_input
        ShapeProp(module).propagate(*sample_input)  # acc/fusion decisions read tensor meta
        self.settings, self.operator_support = settings, operator_support
        if nodes_finder is None:
            nodes_finder = FxNetAccNodesFinder(module, operator_support, settings.allow_non_tensor)
        self.acc_nodes = nodes_finder()

        # Naming and tagging state, filled in by tag()/split().
        self.non_acc_submodule_name, self._return_tuple = non_acc_submodule_name, return_tuple
        self.tags: List[str] = []
        self._node_submodule_map: Dict[str, str] = {}

        self.fusions: Dict[Node, NodeSet] = {}
        if not settings.skip_fusion:
            self.fusions = tools_common.FxNetAccFusionsFinder(module, self.acc_nodes)()
            self._merge_overlapping_fusions()
        self.deps = self.find_deps()
        self.update_deps_for_fusions()

    # -- dependencies --------------------------------------------------------------------

    def get_node_submodule_map(self) -> Dict[str, str]:
        """Node name -> name of the submodule it was tagged into (filled by :meth:`tag`)."""
        return self._node_submodule_map

    def find_deps(self) -> Dict[Node, NodeSet]:
        """Direct dependencies: call node -> the call nodes it reads (the output node has no
        entry; nodes reading only placeholders/attributes have an empty set)."""
        deps: Dict[Node, NodeSet] = defaultdict(set)
        for user in self.module.graph.nodes:
            if user.op == "output":
                continue
            producers = [p for p in user.all_input_nodes if p.op in CALLABLE_NODE_OPS]
            if producers:
                deps[user].update(producers)
        return deps

    def update_deps_for_fusions(self) -> None:
        """Widen ``deps`` so that a fusion group is scheduled as a unit: every member depends
        on what any member depends on outside the group, and every outside reader of a member
        depends on the member nodes."""
        deps = self.deps
        group: Optional[NodeSet] = None
        outer_deps: NodeSet = set()
        outer_users: NodeList = []
        for node, fusion in self.fusions.items():
            if fusion is not group:
                # Both sets stay fixed while one group's members are visited in a row.
                group = fusion
                outer_deps = set().union(*(deps[m] for m in fusion)) - fusion
                outer_users = list(
                    dict.fromkeys(u for m in fusion for u in m.users if u not in fusion)
                )
            deps[node].update(outer_deps)
            for user in outer_users:
                deps[user].add(node)

    def _merge_overlapping_fusions(self) -> None:
        """Merge fusion groups sharing a node (opt-in through the environment variable
        ``_SPLITTER_MERGE_OVERLAPPING_FUSIONS=1``, as in torch.fx); overlapping groups would
        otherwise make mutually dependent groups and a "Subgraph can't be empty" error."""
        if os.environ.get("_SPLITTER_MERGE_OVERLAPPING_FUSIONS", "0") != "1" or not self.fusions:
            return
        groups = list({id(g): g for g in self.fusions.values()}.values())
        home: Dict[Node, NodeSet] = {}  # node -> the merged group that holds it so far
        for group in groups:
            touched = {id(home[n]): home[n] for n in group if n in home}
            combined = set(group).union(*touched.values())
            for n in combined:
                home[n] = combined
        if len({id(g) for g in home.values()}) == len(groups):
            return  # no two groups shared a node
        for n, combined in home.items():
            self.fusions[n] = combined

    # -- previews ------------------------------------------------------------------------

    def _lower_model_to_backend(
        self, mod: GraphModule, inputs: tools_common.Tensors
    ) -> torch.nn.Module:
        """Lower ``mod`` to the backend (identity here; backends override it)."""
        return mod

    def _find_culprit(self, mod: GraphModule, inputs: tools_common.Tensors) -> str:
        """Explain which nodes of ``mod`` broke lowering or running it (backends override)."""
        return "Unable to find a culprit because _find_culprit() function is not implemented."

    def _draw_graph_based_on_node_support(
        self, mod: GraphModule, supported_nodes: NodeList
    ) -> None:
        ok = set(supported_nodes)
        colours = {True: "chartreuse1", False: "crimson"}
        _write_dot(
            "node_support.dot",
            mod,
            lambda n: colours[n in ok] if n.op in CALLABLE_NODE_OPS else "AliceBlue",
        )

    def node_support_preview(self, dump_graph: bool = False) -> str:
        """Print (and return) which call targets are supported, with the dtypes they were
        seen with. ``dump_graph`` also writes ``node_support.dot`` coloured by support."""
        submodules = dict(self.module.named_modules())
        supported_nodes: NodeList = []
        tables: Dict[bool, Dict[str, Dict[Tuple[tuple, tuple], None]]] = {True: {}, False: {}}
        for node in self.module.graph.nodes:
            if node.op not in CALLABLE_NODE_OPS:
                continue
            target = get_node_target(submodules, node)
            ok = bool(self.operator_support.is_node_supported(submodules, node))
            if ok:
                supported_nodes.append(node)
            tables[ok].setdefault(target, {})[_dtype_signature(node)] = None
        if dump_graph:
            self._draw_graph_based_on_node_support(self.module, supported_nodes)
        report = _support_section("Supported node types in the model", tables[True])
        report += _support_section("Unsupported node types in the model", tables[False])
        print(report)
        return report

    def split_preview(self, dump_graph: bool = False) -> str:
        """Split, run each acc submodule on the sample input through
        ``_lower_model_to_backend``, and print (and return) a report: group counts before
        and after merging small acc groups, sizes, I/O bytes and a PCIe-bound QPS estimate.
        The module is left untagged afterwards."""
        out: List[str] = []
        subgraphs = self.put_nodes_into_subgraphs()
        out.append(self._count_line("Before", subgraphs))
        subgraphs = self.remove_small_acc_subgraphs(subgraphs)
        out.append(self._count_line("After", subgraphs))
        for i, sg in enumerate(subgraphs):
            prefix = "_run_on_acc_" if sg.is_acc else self.non_acc_submodule_name
            out.append(f"{prefix}{i}: {len(sg.nodes)} node(s)\n")

        self.tag(subgraphs)
        split_mod = self.split(remove_tag=True)
        split_mod.eval()
        if dump_graph:
            graphs = [("preview", split_mod)]
            graphs += [(f"preview_{n}", c) for n, c in split_mod.named_children()]
            for name, gm in graphs:
                _write_dot(f"{name}.dot", gm, lambda n: "AliceBlue")

        best_qps: float = self.PCIe_BW
        bottleneck = ""
        for node in split_mod.graph.nodes:
            if node.op != "call_module" or "acc" not in node.target:
                continue
            qps = self._preview_acc_submodule(split_mod, node.target, out)
            if qps < best_qps:
                best_qps, bottleneck = qps, node.target
        out.append(
            f"\nTheoretical max qps (bounds by PCIe bandwidth) for this model is {best_qps},"
            f" bottleneck is submodule {bottleneck}."
        )
        report = "".join(out)
        print(report)
        return report

    @staticmethod
    def _count_line(when: str, subgraphs: List[Subgraph]) -> str:
        acc = sum(1 for sg in subgraphs if sg.is_acc)
        return (
            f"{when} removing small acc subgraphs, total {len(subgraphs)} subgraphs are created:"
            f" {acc} acc subgraphs and {len(subgraphs) - acc} cpu subgraphs.\n"
        )

    def _preview_acc_submodule(self, split_mod: GraphModule, name: str, out: List[str]) -> float:
        """Append the preview of acc submodule ``name`` to ``out``; return its QPS bound."""
        out.append(f"\nProcessing acc submodule {name}\n")
        submod = getattr(split_mod, name)
        sub_inputs = generate_inputs_for_submodules(split_mod, self.sample_input, [name]).get(name)
        if sub_inputs is None:
            raise AssertionError("Forward pre-hook did not capture inputs")
        ShapeProp(submod).propagate(*sub_inputs)

        def bytes_of(n: Node, kind: str) -> int:
            if is_node_output_tensor(n):
                return get_size_of_node(submod, n)[0]
            out.append(
                f"{kind} {n.name} is not a tensor, this might cause problems during lowering!\n"
            )
            return 0

        out.append("Checking inputs...\n")
        graph_nodes = list(submod.graph.nodes)
        in_bytes = sum(bytes_of(n, "Input") for n in graph_nodes if n.op == "placeholder")
        out.append("Checking outputs...\n")
        returned: NodeList = []
        output_node = next(n for n in reversed(graph_nodes) if n.op == "output")
        map_arg(output_node.args, returned.append)
        out_bytes = sum(bytes_of(n, "Output") for n in returned)
        qps = self.PCIe_BW / max(in_bytes, out_bytes)
        out.append(
            f"Total input size in bytes is {in_bytes}, total output size in bytes is {out_bytes},"
            f" theoretical max qps (bounds by PCIe bandwidth) for this submodule is {qps}.\n"
        )
        try:
            lowered = self._lower_model_to_backend(submod, sub_inputs)
        except RuntimeError:
            out.append("Run into an error during lowering!\n")
            out.append(self._find_culprit(submod, sub_inputs))
            return qps
        try:
            lowered(*sub_inputs)
        except RuntimeError:
            out.append("Run into an error during inference!\n")
            out.append(self._find_culprit(submod, sub_inputs))
        else:
            out.append("Lowering and running succeed!\n")
        return qps

    # -- growing an acc subgraph upwards -------------------------------------------------

    def find_reverse_deps(self, tag_id: Optional[int] = None) -> Dict[Node, NodeSet]:
        """Call node -> its call-node users; with ``tag_id``, only users whose tag number
        (the ``_<i>`` suffix) is below ``tag_id``."""
        result: Dict[Node, NodeSet] = defaultdict(set)
        for node in self.module.graph.nodes:
            if node.op not in CALLABLE_NODE_OPS:
                continue
            users = [u for u in node.users if u.op in CALLABLE_NODE_OPS]
            if tag_id is not None:
                users = [u for u in users if int(u.tag.split("_")[-1]) < tag_id]
            if users:
                result[node].update(users)
        return result

    def update_reverse_deps_for_fusions(self, deps: Dict[Node, NodeSet]) -> None:
        """Make each fusion group share one set of outside users in ``deps``, and make the
        group's outside producers depend on every member."""
        done: NodeSet = set()
        for node, fusion in self.fusions.items():
            if node in done:
                continue
            done |= fusion
            shared = set().union(*(deps[m] for m in fusion)) - fusion
            deps.update(dict.fromkeys(fusion, shared))
            outside_producers = {p for m in fusion for p in m.all_input_nodes} - fusion
            for producer in outside_producers:
                deps[producer] |= fusion

    def find_parent_nodes_of_subgraph(self, tag: str) -> NodeSet:
        """Call nodes outside subgraph ``tag`` that feed a node inside it."""
        inside = [n for n in self.module.graph.nodes if n.op in CALLABLE_NODE_OPS and n.tag == tag]
        return {
            arg
            for n in inside
            for arg in n.all_input_nodes
            if arg.op in CALLABLE_NODE_OPS and arg.tag != tag
        }

    def extend_acc_subgraph(self, tag: str) -> None:
        """Pull acc producers of subgraph ``tag`` into it, walking upwards, as long as all
        their (earlier-subgraph) users are already in it."""
        deps = self.find_reverse_deps(tag_id=int(tag.rsplit("_", maxsplit=1)[-1]))
        self.update_reverse_deps_for_fusions(deps)
        frontier = self.find_parent_nodes_of_subgraph(tag)
        absorbed: NodeSet = set()
        # Absorbing only ever enables more nodes, so joining in batches reaches the same set
        # as torch.fx's one-at-a-time scan.
        while joining := [n for n in frontier if n in self.acc_nodes and deps[n] <= absorbed]:
            for node in joining:
                node.tag = tag  # type: ignore[attr-defined]
                frontier.discard(node)
                absorbed.add(node)
                newcomers = [a for a in node.all_input_nodes if a.op in CALLABLE_NODE_OPS]
                newcomers.extend(self.fusions.get(node, ()))
                frontier.update(a for a in newcomers if a not in absorbed)

    # -- splitting -----------------------------------------------------------------------

    def starter_nodes(self) -> Tuple[NodeSet, NodeSet]:
        """``(cpu_starters, acc_starters)``: the nodes that read a placeholder or get_attr
        (the output node included, when it does), plus input-less ``call_function`` nodes."""
        cpu: NodeSet = set()
        acc: NodeSet = set()
        acc_nodes = self.acc_nodes
        for node in self.module.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                candidates: Iterable[Node] = node.users
            elif node.op == "call_function" and not node.all_input_nodes:
                candidates = (node,)
            else:
                continue
            for n in candidates:
                (acc if n in acc_nodes else cpu).add(n)
        return cpu, acc

    def put_nodes_into_subgraphs(self) -> List[Subgraph]:
        """Group the call nodes into alternating acc/CPU :class:`Subgraph` s.

        Starting from :meth:`starter_nodes`, each group greedily takes every node of its
        kind whose dependencies are already placed, then the kind flips. Ready nodes are
        kept in per-kind heaps keyed by graph position with dependency counters, so the
        whole walk is O(E log N) and each group lists its nodes in a stable order.
        """
        cpu_start, acc_start = self.starter_nodes()
        deps, acc_nodes, fusions = self.deps, self.acc_nodes, self.fusions
        position = {n: i for i, n in enumerate(self.module.graph.nodes)}

        waiting_on: Dict[Node, int] = {}
        dependents: Dict[Node, NodeList] = defaultdict(list)
        for n, needed in deps.items():
            waiting_on[n] = len(needed)
            for d in needed:
                dependents[d].append(n)

        # Discovered-but-unplaced nodes per kind (True: acc), and the ready ones among them.
        queued: Dict[bool, NodeSet] = {True: set(), False: set()}
        ready: Dict[bool, List[Tuple[int, Node]]] = {True: [], False: []}
        placed: NodeSet = set()

        def discover(n: Node, kind: bool) -> None:
            if n in placed or n in queued[kind]:
                return
            queued[kind].add(n)
            if not waiting_on.get(n):
                heapq.heappush(ready[kind], (position[n], n))

        for n in cpu_start:
            discover(n, False)
        for n in acc_start:
            discover(n, True)

        is_acc = not any(not deps[n] for n in cpu_start)
        subgraphs: List[Subgraph] = []
        current: NodeList = []
        while queued[True] or queued[False]:
            heap = ready[is_acc]
            while heap and heap[0][1] in placed:
                heapq.heappop(heap)
            if not heap:
                if not current:
                    raise FxNetSplitterInternalError("Subgraph can't be empty")
                subgraphs.append(Subgraph(is_acc=is_acc, nodes=current))
                is_acc, current = not is_acc, []
                continue
            node = heapq.heappop(heap)[1]
            queued[True].discard(node)
            queued[False].discard(node)
            placed.add(node)
            current.append(node)
            for waiter in dependents.get(node, ()):
                waiting_on[waiter] -= 1
                if waiting_on[waiter] == 0:
                    for kind in (True, False):
                        if waiter in queued[kind]:
                            heapq.heappush(ready[kind], (position[waiter], waiter))
            buddies = fusions.get(node)
            if buddies:
                kind = node in acc_nodes
                for buddy in buddies:
                    discover(buddy, kind)
            for user in node.users:
                if user.op in CALLABLE_NODE_OPS:
                    discover(user, user in acc_nodes)
        if current:
            subgraphs.append(Subgraph(is_acc=is_acc, nodes=current))
        if not subgraphs:
            raise FxNetSplitterInternalError("Couldn't create subgraphs")
        return subgraphs

    def remove_small_acc_subgraphs(self, subgraphs: List[Subgraph]) -> List[Subgraph]:
        """Fold acc subgraphs smaller than ``settings.min_acc_module_size`` into the CPU
        subgraph before them (or turn a leading one into CPU), and join adjacent CPU ones."""
        minimum = self.settings.min_acc_module_size
        merged: List[Subgraph] = []
        for sg in subgraphs:
            if sg.is_acc and len(sg.nodes) < minimum:
                print(
                    "Eliminating acc subgraph because it's smaller than the threshold: "
                    f"{len(sg.nodes)} < {minimum}"
                )
                if merged:
                    merged[-1].nodes += sg.nodes
                    continue
                sg.is_acc = False
            # A CPU run right after another CPU run joins it.
            joins_previous = not sg.is_acc and bool(merged) and not merged[-1].is_acc
            if joins_previous:
                merged[-1].nodes += sg.nodes
            else:
                merged.append(sg)
        return merged

    def tag(self, subgraphs: List[Subgraph]) -> None:
        """Set ``node.tag`` to the submodule name of each node's subgraph; fills ``tags``."""
        prefixes = {True: "_run_on_acc_", False: self.non_acc_submodule_name}
        self.tags = [f"{prefixes[sg.is_acc]}{i}" for i, sg in enumerate(subgraphs)]
        for name, sg in zip(self.tags, subgraphs):
            already = next((n for n in sg.nodes if hasattr(n, "tag")), None)
            if already is not None:
                raise FxNetSplitterInternalError(f"Node {already} was already tagged")
            for node in sg.nodes:
                node.tag = name  # type: ignore[attr-defined]
            self._node_submodule_map.update((n.name, name) for n in sg.nodes)

    def split(self, remove_tag: bool = False) -> GraphModule:
        """Build the split module from the current tags (``remove_tag``: untag afterwards)."""
        result = split_by_tags(self.module, self.tags, return_tuple=self._return_tuple)
        if remove_tag:
            for node in self.module.graph.nodes:
                if hasattr(node, "tag"):
                    del node.tag
        return result

    def __call__(self) -> GraphModule:
        """Group, drop small acc groups, tag and split; returns the split module."""
        subgraphs = self.put_nodes_into_subgraphs()
        if self.settings.move_non_tensor_nodes_on_boundary:
            move_non_tensor_nodes_on_boundary(subgraphs)
        subgraphs = self.remove_small_acc_subgraphs(subgraphs)
        acc_count = sum(1 for sg in subgraphs if sg.is_acc)
        print(f"Got {acc_count} acc subgraphs and {len(subgraphs) - acc_count} non-acc subgraphs")
        self.tag(subgraphs)
        return self.split()

    def generate_split_results(self) -> SplitResult:
        """Split, check ``settings.max_acc_splits`` (``ValueError`` when exceeded) and
        collect every submodule's inputs on the sample input."""
        split_module = self()
        names = [name for name, _ in split_module.named_children()]
        limit = self.settings.max_acc_splits
        if 0 < limit < len(names):
            raise ValueError(
                "Cannot fulfill max_acc_splits limit. "
                "This may cause split fragmentation and "
                "result in performance issues."
            )
        inputs = generate_inputs_for_submodules(split_module, self.sample_input, names)
        return SplitResult(split_module, inputs, self.non_acc_submodule_name)
