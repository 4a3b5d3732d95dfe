"""Find the nodes whose lowering breaks a model (the "net minimizer").

:class:`_MinimizerBase` cuts candidate node sets out of a GraphModule as a ``minimize``
submodule (with :func:`~fxkit.passes.split_utils.split_by_tags`), runs that submodule twice,
through ``run_a`` (the reference, e.g. eager CPU) and ``run_b`` (e.g. the accelerator), and
compares the results with ``compare_fn``. A subclass supplies ``run_a``/``run_b``; the
search strategy comes from :class:`_MinimizerSettingBase` ``.traverse_method``:

- ``"sequential"``: every node on its own (with its fusion group);
- ``"binary"``: halve the node range while the lowered range still mismatches;
- ``"accumulate"``: grow a prefix one node at a time until it mismatches;
- ``"block"``: find the smallest contiguous block that mismatches (two bisections);
- ``"defined"``: only the given range (``minimize(start, end)``);
- ``"skip"``: the ranges between the nodes named in ``skip_nodes``.

Every attempt is recorded in ``reports`` (printed like torch.fx's) and in ``tried_nodes``
(names of the nodes lowered together, and the outcome), logged through :mod:`logging`, and
long searches show progress (a tqdm bar when tqdm is installed, else periodic log lines).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from fxkit.graph_module import GraphModule
from fxkit.node import Node, map_arg
from fxkit.passes import tools_common
from fxkit.passes.shape_prop import ShapeProp
from fxkit.passes.split_utils import split_by_tags
from fxkit.passes.tools_common import CALLABLE_NODE_OPS, Names, NodeList, NodeSet

# Same names as torch.fx; _MinimizerBase and _MinimizerSettingBase are used by name there too.
__all__ = ["FxNetMinimizerBadModuleError", "FxNetMinimizerRunFuncError"]
__all__.append("FxNetMinimizerResultMismatchError")

Tensors, TensorOrTensors = tools_common.Tensors, tools_common.TensorOrTensors
_LOGGER = logging.getLogger(__name__)

# Searches expected to take at least this many runs get a progress indication.
_PROGRESS_MIN_STEPS = 20


class FxNetMinimizerBadModuleError(Exception):
    """The selected nodes could not be split out as exactly one ``minimize`` submodule."""


class FxNetMinimizerRunFuncError(Exception):
    """``run_a`` or ``run_b`` raised while running a candidate submodule."""


class FxNetMinimizerResultMismatchError(Exception):
    """``compare_fn`` reported that ``run_a`` and ``run_b`` disagree."""


@dataclass
class _MinimizerSettingBase:
    """Settings of :class:`_MinimizerBase`.

    ``accumulate_error``: feed ``run_b`` the outputs of earlier ``run_b`` runs (errors add
    up) instead of ``run_a``'s values. ``traverse_method``: the search, one of
    ``"sequential"``, ``"binary"``, ``"accumulate"``, ``"block"``, ``"defined"``,
    ``"skip"``. ``find_all``: keep searching after the first culprit.
    ``return_intermediate``: :meth:`_MinimizerBase.run_nodes` outputs every node it ran.
    ``all_outputs``: compare all outputs of a candidate submodule, not just the target."""

    def __str__(self) -> str:
        fields = "".join(f"\t{name}: {value}\n" for name, value in vars(self).items())
        return "FX Minimizer Settings:\n" + fields

    accumulate_error: bool = False
    traverse_method: str = "sequential"
    find_all: bool = False
    return_intermediate: bool = False
    all_outputs: bool = False


class _Attempt(NamedTuple):
    """One candidate the minimizer ran: the node names lowered together, and the outcome
    (``"match"``, ``"mismatch"``, ``"run_error"``, or ``"error"`` for any other exception)."""

    nodes: Tuple[str, ...]
    outcome: str


class _Progress:
    """Progress of one search: a tqdm bar if installed and stderr is a terminal, else a log
    line every ~10% of the expected runs."""

    def __init__(self, desc: str, total: int) -> None:
        self.desc, self.total, self.done = desc, total, 0
        self.bar: Any = None
        self.every = max(1, total // 10)
        if total < _PROGRESS_MIN_STEPS:
            self.every = 0
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        # disable=None: no bar when stderr is not a terminal; the log lines stand in there.
        bar = tqdm(total=total, desc=desc, unit="run", disable=None, leave=False)
        self.bar = None if bar.disable else bar

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(label, refresh=False)
        elif self.every and self.done % self.every == 0:
            _LOGGER.info("%s: %d/~%d runs, at %s", self.desc, self.done, self.total, label)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# Report lines of a block search that has narrowed down to one node.
_LAST_NODE_SUCCESS = (
    "This is the last node in the sub-module. ",
    "Search in the current branch is successful with node :",
)


def _is_graph_module(module: object) -> bool:
    import torch

    # Duck typing, so that torch.fx GraphModules are accepted too.
    return isinstance(module, torch.nn.Module) and hasattr(module, "graph")


def _output_node(gm: Any) -> Node:
    return next(n for n in reversed(gm.graph.nodes) if n.op == "output")


class _MinimizerBase:
    """Search a GraphModule for the nodes whose lowered version mismatches the reference.

    Subclasses implement :meth:`run_a` and :meth:`run_b`; ``compare_fn(a, b, names)``
    returns ``(numeric_result, ok)``. ``module_exporter(inputs, submodule, name)``, if
    given, is called with each mismatching submodule (as ``<name>_cpu`` and ``<name>_acc``);
    ``exclusion_fn(nodes, start, end)`` may remove nodes from a candidate list in place.
    :meth:`minimize` runs the configured search and returns the culprit nodes.
    """

    def __init__(
        self,
        module: GraphModule,
        sample_input: Tensors,
        compare_fn: Callable[[TensorOrTensors, TensorOrTensors, Names], Tuple[float, bool]],
        settings: _MinimizerSettingBase,
        module_exporter: Optional[Callable[[Tensors, GraphModule, str], None]] = None,
        exclusion_fn: Optional[Callable[[NodeList, int, int], None]] = None,
    ) -> None:
        if not _is_graph_module(module):
            raise AssertionError(f"Expected GraphModule, got {type(module)}")
        self.module, self.sample_input, self.settings = module, sample_input, settings
        self.compare_fn = compare_fn
        self.exclusion_fn, self.module_exporter = exclusion_fn, module_exporter

        # Search bookkeeping: one list of report lines per step, and (beyond torch.fx)
        # every candidate run so far, with which nodes and what happened.
        self.iteration = 0
        self.reports: List[List[str]] = []
        self.tried_nodes: List[_Attempt] = []
        self._progress: Optional[_Progress] = None
        # Values by node name as produced by run_a / run_b (placeholders: the sample input),
        # and compare_fn's numeric result per compared output key.
        self.a_outputs, self.b_outputs = {}, {}  # type: Dict[str, Any], Dict[str, Any]
        self.results: Dict[Any, Any] = {}

        callable_nodes = {n for n in module.graph.nodes if n.op in CALLABLE_NODE_OPS}
        self.run_shape_prop()
        self.fusions = tools_common.FxNetAccFusionsFinder(module, callable_nodes)()

        placeholders = [n.name for n in module.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(sample_input):
            raise AssertionError(
                f"Placeholder count ({len(placeholders)}) does not match "
                f"sample_input count ({len(sample_input)})"
            )
        for name, value in zip(placeholders, sample_input):
            self.a_outputs[name] = value
            self.b_outputs[name] = value

    # -- hooks for subclasses ------------------------------------------------------------

    def run_shape_prop(self) -> None:
        """Annotate the module with shapes (ShapeProp on the sample input); overridable."""
        ShapeProp(self.module).propagate(*self.sample_input)

    def run_a(self, mod: GraphModule, inputs: Tensors, report_idx: int = -1) -> TensorOrTensors:
        """Run ``mod`` the reference way; compared with :meth:`run_b`. Must be overridden."""
        raise RuntimeError("run_a() is not implemented.")

    def run_b(self, mod: GraphModule, inputs: Tensors, report_idx: int = -1) -> TensorOrTensors:
        """Run ``mod`` the way under test; compared with :meth:`run_a`. Must be overridden."""
        raise RuntimeError("run_b() is not implemented.")

    # -- running one candidate -----------------------------------------------------------

    def _store_outputs(
        self, a_result: TensorOrTensors, b_result: TensorOrTensors, submodule: GraphModule
    ) -> None:
        """Remember the values ``submodule`` returned under their node names, so that later
        candidates reading them can start from them."""
        returned = _output_node(submodule).args[0]
        if isinstance(returned, (tuple, list)):
            pairs = [(n.name, i) for i, n in enumerate(returned)]
            for name, i in pairs:
                self.a_outputs[name] = a_result[i]
                self.b_outputs[name] = b_result[i]
        else:
            self.a_outputs[returned.name] = a_result
            self.b_outputs[returned.name] = b_result

    def _get_submod_inputs(
        self, main_module: GraphModule, submod_path: str
    ) -> Tuple[Tensors, Tensors]:
        """Inputs of submodule ``submod_path`` for ``run_a`` and ``run_b``.

        Stored outputs are used when every placeholder has one; otherwise the split module
        runs on the sample input and the submodule's inputs are captured with a hook.
        Without ``accumulate_error`` both runs get ``run_a``'s inputs.
        """
        submodule = getattr(main_module, submod_path)
        names = [n.name for n in submodule.graph.nodes if n.op == "placeholder"]
        if all(name in self.a_outputs for name in names):
            a_input: Any = [self.a_outputs[name] for name in names]
            b_input: Any = [self.b_outputs[name] for name in names]
        else:
            if self.settings.accumulate_error:
                print(f"Can't find previous stored outputs named {names}!")
            captured: List[Any] = []
            handle = submodule.register_forward_pre_hook(lambda _m, args: captured.append(args))
            try:
                main_module(*self.sample_input)
            finally:
                handle.remove()
            a_input = b_input = captured[-1] if captured else []
        if not self.settings.accumulate_error:
            return a_input, a_input
        return a_input, b_input

    def _tag_nodes(self, selected_nodes: NodeSet) -> None:
        """Tag ``selected_nodes`` ``"minimize"``, the call nodes downstream of them
        ``"main_1"`` and every other call node ``"main_0"``."""
        downstream_tags = ("minimize", "main_1")
        for node in self.module.graph.nodes:
            if node.op not in CALLABLE_NODE_OPS:
                continue
            if node in selected_nodes:
                tag = "minimize"
            elif any(
                p.op in CALLABLE_NODE_OPS and p.tag in downstream_tags for p in node.all_input_nodes
            ):
                tag = "main_1"
            else:
                tag = "main_0"
            node.tag = tag  # type: ignore[attr-defined]

    def _build_submodule(self, nodes: NodeSet) -> Tuple[GraphModule, str]:
        """Split the module so that exactly ``nodes`` form one submodule; return the split
        module and that submodule's name. ``FxNetMinimizerBadModuleError`` when the nodes do
        not form exactly one submodule."""
        self._tag_nodes(nodes)
        split_module = split_by_tags(self.module, ["main_0", "minimize", "main_1"])
        found = [name for name, _ in split_module.named_children() if "minimize" in name]
        if len(found) > 1:
            raise FxNetMinimizerBadModuleError(
                f"Expected only one minimize submodule with nodes {nodes}"
            )
        if not found:
            raise FxNetMinimizerBadModuleError(
                f"Minimize submodule was not found with nodes {nodes}"
            )
        return split_module, found[0]

    def _run_and_compare(
        self,
        split_module: GraphModule,
        submod_name: str,
        output_names: Names,
        report_idx: int = -1,
    ) -> None:
        """Run submodule ``submod_name`` with :meth:`run_a` and :meth:`run_b` and compare.

        ``output_names`` (unless ``settings.all_outputs``) narrows the submodule's outputs
        to those nodes. Raises ``FxNetMinimizerRunFuncError`` when a run fails and
        ``FxNetMinimizerResultMismatchError`` when ``compare_fn`` says the results differ.
        """
        submodule = getattr(split_module, submod_name)
        a_input, b_input = self._get_submod_inputs(split_module, submod_name)
        if self.reports:
            report = self.reports[self.iteration - 1 if report_idx < 0 else report_idx]
        else:  # run outside a search: start the first report
            self.iteration, report = 1, []
            self.reports.append(report)
        report.append("Run and compare ...")

        if output_names and not self.settings.all_outputs:
            _narrow_outputs(submodule, output_names)
        result_key = map_arg(_output_node(submodule).args, lambda n: n.name)

        try:
            a_result, b_result = (
                self.run_a(submodule, a_input, report_idx),
                self.run_b(submodule, b_input, report_idx),
            )
            self._store_outputs(a_result, b_result, submodule)
        except Exception as e:
            message = f"Exception raised when running {submod_name}: {e}"
            report.append(message)
            raise FxNetMinimizerRunFuncError(message) from e

        names = output_names if output_names is not None else [str(v) for v in result_key]
        numeric_result, ok = self.compare_fn(a_result, b_result, names)
        self.results[result_key] = numeric_result
        report.append(f"Numerical accuracy = {numeric_result}")
        if ok:
            return
        report.append(f"Result mismatch for {result_key}")
        if self.module_exporter:
            name: Any = result_key
            # A tuple key names the outputs; the exported files take the last one's name
            # (its first element, when that is a tuple again).
            if isinstance(name, tuple):
                name = name[-1]
            if isinstance(name, tuple):
                name = str(name[0])
            self.module_exporter(a_input, submodule, name + "_cpu")
            self.module_exporter(b_input, submodule, name + "_acc")
        raise FxNetMinimizerResultMismatchError(f"Result mismatch for {result_key}")

    def _try_nodes(self, nodes: NodeSet, output_names: Names, report_idx: int = -1) -> None:
        """Build and run one candidate, recording it in ``tried_nodes`` and the progress;
        exceptions of :meth:`_run_and_compare` propagate."""
        names = tuple(n.name for n in self.module.graph.nodes if n in nodes)
        _LOGGER.info("Trying %d node(s): %s", len(names), _abbreviate(names))
        outcome = "error"
        try:
            split_module, submod_name = self._build_submodule(nodes)
            self._run_and_compare(split_module, submod_name, output_names, report_idx)
            outcome = "match"
        except FxNetMinimizerResultMismatchError:
            outcome = "mismatch"
            raise
        except FxNetMinimizerRunFuncError:
            outcome = "run_error"
            raise
        finally:
            self.tried_nodes.append(_Attempt(names, outcome))
            _LOGGER.info("  -> %s", outcome)
            if self._progress is not None:
                self._progress.step(names[-1] if names else "")

    # -- searches ------------------------------------------------------------------------

    def _binary_search_impl(self, all_nodes: NodeList, start_idx: int, end_idx: int) -> NodeSet:
        """Bisect ``all_nodes[start_idx:end_idx]``: lower it whole, and split it in two
        halves (searched left first) while it mismatches."""
        nodes = all_nodes[start_idx:end_idx]
        report: List[str] = []
        if self.exclusion_fn is not None:
            self.exclusion_fn(nodes, start_idx, end_idx)
            if not nodes:
                self.reports.append(["All nodes are excluded by user"])
                return set()
        self.iteration += 1
        report += [
            f"Binary search iteration {self.iteration}",
            f"From node index {start_idx}:{nodes[0].name} to {end_idx - 1}:{nodes[-1].name}. "
            f"Size of the interested node list is {len(nodes)}",
        ]
        self.reports.append(report)
        cur_nodes = set(nodes)
        try:
            self._try_nodes(cur_nodes, [nodes[-1].name])
        except (FxNetMinimizerRunFuncError, FxNetMinimizerResultMismatchError):
            pass
        else:
            report.append("No discrepancy found.")
            self.print_report(report)
            return set()

        single = len(nodes) == 1
        report.append(
            "This is the last node in the sub-module. "
            f"Search in the current branch is successful with culprit = {cur_nodes}."
            if single
            else "Proceed to split and lower the halves of the current sub-module individually."
        )
        self.print_report(report)
        if single:
            return cur_nodes
        middle = start_idx + len(nodes) // 2
        culprits = self._binary_search_impl(all_nodes, start_idx, middle)
        if culprits and not self.settings.find_all:
            return culprits
        # As in torch.fx, with find_all the right half's result replaces the left half's.
        culprits = self._binary_search_impl(all_nodes, middle, end_idx)
        if culprits:
            return culprits
        report.append(
            f"Further split and lowering found no errors. Unable to minimize the submodule "
            f"with list of nodes: {nodes}"
        )
        self.print_report(report)
        return culprits

    def _binary_traverse(self, nodes: NodeList) -> NodeSet:
        """Binary search for the culprit among ``nodes``."""
        return self._binary_search_impl(nodes, 0, len(nodes))

    def _sequential_traverse(self, nodes: NodeList) -> NodeSet:
        """Lower each node (with its fusion group) on its own, in order."""
        culprits: NodeSet = set()
        for node in nodes:
            self.iteration += 1
            report = [
                f"Sequential traverse iteration {self.iteration}.",
                f"Visit node: {node.name}",
            ]
            self.reports.append(report)
            _LOGGER.info("Visit node: %s", node.name)
            if self.exclusion_fn is not None:
                kept = [node]
                self.exclusion_fn(kept, -1, -1)
                if not kept:
                    report.append(f"User exclusion : {node.name}")
                    self.print_report(report)
                    if self.settings.find_all:
                        continue
                    return culprits
            cur_nodes = self.fusions.get(node, {node})
            found: NodeSet = set()
            try:
                self._try_nodes(cur_nodes, [node.name])
            except FxNetMinimizerResultMismatchError:
                # A numeric mismatch blames the node; a crash blames its whole fusion group.
                found = {node}
                report.append(f"Found culprit from numeric error: {node}")
            except FxNetMinimizerRunFuncError:
                found = set(cur_nodes)
                report.append(f"Found culprit from run error: {node}")
            self.print_report(report)
            culprits |= found
            if found and not self.settings.find_all:
                break
        return culprits

    def _block_traverse_impl(
        self, nodes: NodeList, start_idx: int, end_idx: int, find_last_node: bool
    ) -> Optional[int]:
        """One bisection step of the block search over ``nodes[start_idx:end_idx + 1]``.

        Looking for the last culprit node, the candidate is the prefix up to the middle;
        looking for the first, the suffix from the middle. Returns the index found, or
        ``None`` when even the widest candidate matches.
        """
        mid = (start_idx + end_idx) // 2
        candidate = nodes[: mid + 1] if find_last_node else nodes[mid:]
        if self.exclusion_fn:
            self.exclusion_fn(candidate, -1, -1)
        first_name, last_name = candidate[0].name, candidate[-1].name
        which = "last" if find_last_node else "first"

        self.iteration += 1
        report = [
            "=" * 30,
            f"Block search iteration {self.iteration}",
            f"Search for {which} node in culprits",
            f"From node index {start_idx}:{nodes[start_idx].name} "
            f"to {end_idx}:{nodes[end_idx].name}. ",
            f"Subgraph constructed by {first_name} to {last_name}",
            f"Targeting node: {last_name if find_last_node else first_name}",
            f"Size of the interested node list is {end_idx - start_idx + 1}",
        ]
        self.reports.append(report)
        report_idx = len(self.reports) - 1
        converged = start_idx == mid == end_idx
        try:
            self._try_nodes(set(candidate), [last_name], report_idx)
        except (FxNetMinimizerResultMismatchError, FxNetMinimizerRunFuncError):
            report.append(f"Culprits found from node {first_name} to {last_name}.")
            if converged:
                found_at = f"{start_idx}, node name: {nodes[start_idx].name}."
                report.extend(_LAST_NODE_SUCCESS + (found_at,))
                self.print_report(report)
                return start_idx
            # The culprit lies at or before mid (last-node search) / after mid (first-node).
            next_range = (start_idx, mid) if find_last_node else (mid + 1, end_idx)
        else:
            report.append(f"Culprits not found from node start to {mid}:{nodes[mid].name}.")
            if converged:
                at_edge = start_idx == (len(nodes) - 1 if find_last_node else 0)
                if at_edge:
                    report.append(f"At {which} node, no culprits found.")
                    self.print_report(report)
                    return None
                # Converged on the border between mismatching and matching candidates.
                return start_idx + (1 if find_last_node else -1)
            next_range = (mid + 1, end_idx) if find_last_node else (start_idx, mid)
        report.append(
            "Proceed to split and lower the halves of the current sub-module individually."
        )
        self.print_report(report)
        return self._block_traverse_impl(nodes, *next_range, find_last_node)

    def _block_traverse(self, nodes: NodeList, find_last_node: Optional[bool]) -> NodeSet:
        """Find the smallest contiguous block of ``nodes`` that mismatches: bisect for its
        last node (prefixes), then for its first node (suffixes). ``find_last_node`` True or
        False runs only that half of the search; ``None`` runs both."""
        summary = [f"Block search from {nodes[0].name} to {nodes[-1].name}", "*" * 50]
        self.reports.append(summary)
        last = len(nodes) - 1
        end: Optional[int] = last
        begin: Optional[int] = 0

        if find_last_node in (None, True):
            summary.append("Start searching for last node in culprit")
            self.print_report(summary)
            end = self._block_traverse_impl(nodes, 0, last, True)
            if end is None:
                return self._report_nothing_found(summary)
            summary += ["Finish Pass 1", f"Find end_idx = {end}:{nodes[end].name}"]
            self.print_report(summary)

        if find_last_node is None or not find_last_node:
            second = ["Start searching for first node in culprit"]
            self.print_report(second)
            # ``end or last``: an end index of 0 searches the whole list, as torch.fx does.
            begin = self._block_traverse_impl(nodes[: last + 1], 0, end or last, False)
            if begin is None:
                return self._report_nothing_found(summary)
            second.append("*" * 50)
            self.reports.append(second)
            second += ["Finish Pass 2", f"Find start_idx = {begin}:{nodes[begin].name}"]
            self.print_report(second)

        assert begin is not None and end is not None
        block = nodes[begin : end + 1]
        result = [f"Finish searching, found minimum block ({nodes[begin]},{nodes[end]})"]
        self.reports.append(result)
        self.print_report(result)
        return set(block)

    def _report_nothing_found(self, summary: List[str]) -> NodeSet:
        summary.append("No culprits found")
        self.print_report(summary)
        return set()

    def _defined_traverse(self, nodes: NodeList) -> NodeSet:
        """Lower exactly ``nodes`` (the ``start``..``end`` range) and compare once.

        Returns ``nodes`` when they mismatch (torch.fx reports the culprit but returns an
        empty set), and an empty set when they match.
        """
        if self.exclusion_fn is not None:
            self.exclusion_fn(nodes, -1, -1)
        if not nodes:
            self.reports.append(["All nodes are excluded by user"])
            return set()
        report = [f"Defined graph from {nodes[0].name} to {nodes[-1].name}"]
        cur_nodes = set(nodes)
        try:
            self._try_nodes(cur_nodes, [nodes[-1].name])
        except (FxNetMinimizerResultMismatchError, FxNetMinimizerRunFuncError):
            report.append(f"Found culprit {cur_nodes}")
            self.print_report(report)
            return cur_nodes
        self.print_report(report)
        return set()

    def _accumulate_traverse(self, nodes: NodeList) -> NodeSet:
        """Lower a growing prefix of ``nodes``; the node whose addition first mismatches is
        the culprit. (``find_all`` is not supported here, as torch.fx does.)"""
        if self.settings.find_all:
            print("'Find All' mode is not supported in accumulate traversal.")
            return set()
        prefix: NodeSet = set()
        for node in nodes:
            self.iteration += 1
            report = [f"Accumulate traverse iteration {self.iteration}.", f"Add node: {node.name}"]
            self.reports.append(report)
            prefix.add(node)
            try:
                self._try_nodes(prefix, [node.name])
            except (FxNetMinimizerResultMismatchError, FxNetMinimizerRunFuncError):
                report.append(f"Found culprit {node}")
                self.print_report(report)
                return {node}
            self.print_report(report)
        return set()

    def _skip_traverse_impl(self, all_nodes: NodeList, start_idx: int, end_idx: int) -> NodeSet:
        """Lower ``all_nodes[start_idx:end_idx]`` (plus fusion partners) as one block."""
        nodes = all_nodes[start_idx:end_idx]
        # User exclusion replaces fusion widening (as in torch.fx); it edits ``nodes``.
        with_partners = self.exclusion_fn is None
        if not with_partners:
            self.exclusion_fn(nodes, start_idx, end_idx)
        cur_nodes = set(nodes).union(*(self.fusions.get(n, ()) for n in nodes if with_partners))
        self.iteration += 1
        report = [
            f" Nodes block {self.iteration}.",
            f"From node index {start_idx} to {end_idx - 1}. "
            f"Size of the interested node list is {len(nodes)}",
        ]
        self.reports.append(report)
        try:
            self._try_nodes(cur_nodes, [])
        except FxNetMinimizerResultMismatchError:
            report.append(f"Found culprit from numeric error: {cur_nodes}")
        except FxNetMinimizerRunFuncError:
            report.append(f"Found culprit from run error: {cur_nodes}")
        else:
            report.append("No discrepancy found.")
            self.print_report(report)
            return set()
        self.print_report(report)
        return cur_nodes

    def _skip_traverse(self, all_nodes: NodeList, skip_nodes: List[str]) -> NodeSet:
        """Lower, block by block, the runs of nodes between the ``skip_nodes``; returns the
        result of the last block (as torch.fx does)."""
        skipped = set(skip_nodes)
        culprits: NodeSet = set()
        block_start = 0
        for idx, node in enumerate(all_nodes):
            if node.name in skipped:
                if idx > block_start:
                    culprits = self._skip_traverse_impl(all_nodes, block_start, idx)
                block_start = idx + 1
            elif idx == len(all_nodes) - 1 and block_start <= idx:
                culprits = self._skip_traverse_impl(all_nodes, block_start, idx + 1)
        return culprits

    def _collect_nodes(self, start: Optional[str], end: Optional[str]) -> NodeList:
        """The call nodes from the one named ``start`` through the one named ``end``
        (``None``: from the first / to the last)."""
        calls = [n for n in self.module.graph.nodes if n.op in CALLABLE_NODE_OPS]
        names = [n.name for n in calls]
        first = 0 if start is None else names.index(start) if start in names else len(calls)
        # Stop after the first node named ``end`` (even if it comes before ``start``).
        stop = names.index(end) + 1 if end in names else len(calls)
        return calls[first:stop]

    def run_nodes(self, start: Optional[str] = None, end: Optional[str] = None) -> None:
        """Lower and compare the nodes from ``start`` to ``end`` as one submodule; prints the
        error instead of raising it. With ``settings.return_intermediate`` every node's
        value is an output."""
        nodes = self._collect_nodes(start, end)
        cur_nodes = set(nodes)
        for node in nodes:
            cur_nodes.update(self.fusions.get(node, ()))
        outputs = [n.name for n in nodes] if self.settings.return_intermediate else []
        try:
            self._try_nodes(cur_nodes, outputs)
        except (FxNetMinimizerRunFuncError, FxNetMinimizerResultMismatchError) as e:
            print(e)

    def print_report(self, report: List[str]) -> None:
        """Print one report: its first line, then the rest as `` . `` items."""
        for i, line in enumerate(report):
            print(line if i == 0 else " . " + line)

    def print_reports(self) -> None:
        """Print every report so far."""
        for report in self.reports:
            self.print_report(report)

    def minimize(
        self,
        start: Optional[str] = None,
        end: Optional[str] = None,
        skip_nodes: Optional[List[str]] = None,
        find_last_node: Optional[bool] = None,
    ) -> NodeSet:
        """Search the call nodes from ``start`` to ``end`` (node names; ``None``: the ends of
        the graph) for culprits, with ``settings.traverse_method``; return them.

        ``skip_nodes`` (required by ``"skip"``) names nodes to leave out of the lowered
        blocks; ``find_last_node`` restricts ``"block"`` to finding the last (True) or first
        (False) node of the culprit block. ``RuntimeError`` for an unknown method.
        """
        print(self.settings)
        print(self.module.graph)
        nodes = self._collect_nodes(start, end)
        method = self.settings.traverse_method
        searches: Dict[str, Callable[[], NodeSet]] = {
            "sequential": lambda: self._sequential_traverse(nodes),
            "binary": lambda: self._binary_traverse(nodes),
            "accumulate": lambda: self._accumulate_traverse(nodes),
            "skip": lambda: self._skip_traverse(nodes, skip_nodes),  # type: ignore[arg-type]
            "defined": lambda: self._defined_traverse(nodes),
            "block": lambda: self._block_traverse(nodes, find_last_node),
        }
        if method == "skip" and skip_nodes is None:
            raise RuntimeError("'skip_nodes' can't be None when 'traverse_method' is 'skip'.")
        if method not in searches:
            raise RuntimeError(f"Unknown traverse method {method}!")
        self._progress = _Progress(f"minimize ({method})", _expected_runs(method, len(nodes)))
        try:
            return searches[method]()
        finally:
            self._progress.close()
            self._progress = None


def _expected_runs(method: str, count: int) -> int:
    """Rough number of candidate runs a search makes over ``count`` nodes (for progress)."""
    depth = math.ceil(math.log2(count)) + 1 if count > 1 else 1
    if method in ("sequential", "accumulate"):
        return count
    if method == "binary":
        return 2 * depth
    if method == "block":
        return 2 * depth
    return 1


def _narrow_outputs(submodule: Any, output_names: Names) -> None:
    """Make ``submodule`` return only the nodes named in ``output_names`` (graph order)."""
    graph = submodule.graph
    wanted = set(output_names)
    keep = [n for n in graph.nodes if n.name in wanted and n.op != "output"]
    graph.erase_node(_output_node(submodule))
    graph.output(keep[0] if len(keep) == 1 else tuple(keep))
    graph.lint()
    submodule.recompile()


def _abbreviate(names: Tuple[str, ...], limit: int = 6) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    head = ", ".join(names[: limit // 2])
    tail = ", ".join(names[-(limit // 2) :])
    return f"{head}, ... ({len(names) - limit} more) ..., {tail}"
