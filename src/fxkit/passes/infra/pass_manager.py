"""A pass manager for GraphModules: orders passes by constraints, runs them (repeatedly, up
to ``steps`` rounds, until a round changes nothing), recompiles after each pass, runs
user checks, and records per pass its wall time and how many nodes it added, removed or
changed (``PassManager.history``, printed by :func:`format_pass_history`)."""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch.nn as nn

from fxkit._compatibility import compatibility
from fxkit.passes.infra.pass_base import PassResult

__all__ = [
    "pass_result_wrapper",
    "this_before_that_pass_constraint",
    "PassManager",
    "PassRecord",
    "format_pass_history",
]

logger = logging.getLogger(__name__)

Pass = Callable[..., Optional[PassResult]]
Constraint = Callable[[Callable[..., Any], Callable[..., Any]], bool]


def _looks_like_result(obj: Any) -> bool:
    # torch.fx's PassResult (or any look-alike) is accepted by shape, not by class.
    return hasattr(obj, "graph_module") and hasattr(obj, "modified")


@compatibility(is_backward_compatible=False)
def pass_result_wrapper(fn: Callable[..., Any]) -> Pass:
    """Adapt a pass that returns None (edited in place) or a module into one that returns a
    :class:`PassResult` (with ``modified=True``). ``None`` is passed through as ``None``."""
    if fn is None:
        return None  # type: ignore[return-value]

    @wraps(fn)
    def as_result(gm: nn.Module) -> Optional[PassResult]:
        out = fn(gm)
        # a result as is (torch.fx's PassResult too); a module or nothing means "changed"
        if isinstance(out, PassResult) or (isinstance(out, tuple) and _looks_like_result(out)):
            return out
        if out is None or isinstance(out, nn.Module):
            return PassResult(gm if out is None else out, True)
        return None

    if not inspect.isfunction(fn):
        # A pass object (e.g. a PassBase instance) is named after its class.
        as_result.__name__ = type(fn).__name__
    return as_result


def _validate_pass_schedule_constraint(constraint: Constraint, passes: List[Pass]) -> None:
    """Raise ``RuntimeError`` at the first ordered pair of ``passes`` that ``constraint``
    rejects (the second index counts from the pass after the first, as in torch.fx)."""
    for i, first in enumerate(passes):
        for offset, later in enumerate(passes[i + 1 :]):
            if not constraint(first, later):
                raise RuntimeError(
                    f"pass schedule constraint violated. Expected {first} before {later}"
                    f" but found {first} at index {i} and {later} at index {offset} in pass"
                    " list."
                )


def _topological_sort_passes(passes: List[Pass], constraints: List[Constraint]) -> List[Pass]:
    """Order ``passes`` so that every constraint holds; ``RuntimeError`` on a cycle.

    Kahn's algorithm, first-in first-out: passes with no predecessor start in schedule
    order, so an already valid schedule comes back unchanged. Without constraints the same
    list object is returned.
    """
    if not constraints:
        return passes
    # unlocks[q]: the passes waiting on q (once per constraint that says so);
    # waiting[p]: how many of those waits p still has.
    unlocks: Dict[Pass, List[Pass]] = {p: [] for p in passes}
    waiting: Dict[Pass, int] = {}
    ready: deque = deque()
    for p in passes:
        must_follow = [q for q in passes if q != p for ok in constraints if not ok(p, q)]
        for q in must_follow:
            unlocks[q].append(p)
        waiting[p] = waiting.get(p, 0) + len(must_follow)
        if waiting[p] == 0:
            ready.append(p)
    placed: set = set()
    ordered: List[Pass] = []
    while ready:
        p = ready.popleft()
        ordered.append(p)
        placed.add(p)
        for q in unlocks[p]:
            if q in placed:
                continue
            waiting[q] -= 1
            if waiting[q] == 0:
                ready.append(q)
    cyclic = [p for p, left in waiting.items() if left]
    if cyclic:
        raise RuntimeError(f"Circular dependency detected within the following passes: {cyclic}")
    return ordered


@compatibility(is_backward_compatible=False)
def this_before_that_pass_constraint(
    this: Callable[..., Any], that: Callable[..., Any]
) -> Constraint:
    """A constraint saying ``this`` must be scheduled before ``that``."""

    def allowed(earlier: Callable[..., Any], later: Callable[..., Any]) -> bool:
        return not (earlier == that and later == this)

    return allowed


@dataclass(frozen=True)
class PassRecord:
    """One pass run: its ``name``, the ``step`` (round) it ran in, ``seconds`` of wall time,
    whether it reported ``modified``, and node counts ``added``/``removed``/``changed``
    (changed: same node, different op, target, args or kwargs)."""

    name: str
    step: int
    seconds: float
    modified: bool
    added: int
    removed: int
    changed: int


# Per node, what a pass can edit in place. Node args/kwargs containers are replaced, not
# mutated, on an edit, so the tuple comparison below mostly settles on identity.
_Snapshot = Dict[Any, Tuple[Any, Any, Any, Any]]


def _snapshot_and_diff(
    before: Optional[_Snapshot], module: Any
) -> Tuple[Optional[_Snapshot], int, int, int]:
    """Snapshot ``module``'s nodes and count nodes added, removed and changed since
    ``before`` (all zero when either side has no graph). One walk over the nodes."""
    nodes = getattr(getattr(module, "graph", None), "nodes", None)
    if nodes is None:
        return None, 0, 0, 0
    after: _Snapshot = {}
    if before is None:
        for n in nodes:
            after[n] = (n.op, n.target, n.args, n.kwargs)
        return after, 0, 0, 0
    added = changed = 0
    old_state = before.get
    for n in nodes:
        state = after[n] = (n.op, n.target, n.args, n.kwargs)
        old = old_state(n)
        if old is None:
            added += 1
            continue
        try:
            differs = old != state
        except Exception:  # e.g. a new tensor constant in args: ambiguous truth value
            differs = True
        if differs:
            changed += 1
    removed = len(before) - (len(after) - added)
    return after, added, removed, changed


def _pass_name(fn: Any) -> str:
    return fn.__name__ if inspect.isfunction(fn) else type(fn).__name__


@compatibility(is_backward_compatible=False)
class PassManager:
    """Run GraphModule passes in a constraint-respecting order.

    ``passes`` return :class:`PassResult` (wrap others with :func:`pass_result_wrapper`);
    ``constraints`` are ``(a, b) -> bool`` callables, False when ``a`` may not run before
    ``b``. The passes run up to ``steps`` rounds, stopping after a round in which no pass
    reported a change. With ``run_checks_after_each_pass`` the function given to
    :meth:`add_checks` also runs after each pass (it always runs once before the first);
    with ``lint_after_each_pass`` (fxkit only) ``graph.lint()`` does too. Any failure is
    re-raised as ``Exception`` naming the pass and the passes before it, and (fxkit only,
    ``restore_on_failure=True``) the module gets back the graph that pass started from; the
    copy is made only if the pass edits an fxkit graph (torch.fx graphs are copied up front).
    ``history`` holds a :class:`PassRecord` per pass run in the last call (turn off with
    ``record_history=False``).
    """

    passes: List[Pass]
    constraints: List[Constraint]
    _validated: bool = False
    steps: int = 1

    def __init__(
        self,
        passes: Optional[List[Pass]] = None,
        constraints: Optional[List[Constraint]] = None,
        steps: Optional[int] = None,
        run_checks_after_each_pass: bool = False,
        suppress_check_failures: bool = False,
        *,
        lint_after_each_pass: bool = False,
        record_history: bool = True,
        restore_on_failure: bool = True,
    ) -> None:
        self.passes, self.constraints = passes or [], constraints or []
        if steps:
            self.steps = steps
        # suppress_check_failures is stored for compatibility; like torch.fx, check failures
        # are always raised.
        self.run_checks_after_each_pass, self.suppress_check_failures = (
            run_checks_after_each_pass,
            suppress_check_failures,
        )
        self.lint_after_each_pass, self.record_history = lint_after_each_pass, record_history
        # A pass that raises leaves the module's graph as it was before that pass.
        self.restore_on_failure = restore_on_failure
        self.history: List[PassRecord] = []

    def add_pass(self, _pass: Pass) -> None:
        """Append a pass to the schedule."""
        self.passes.append(_pass)
        self._validated = False

    def add_constraint(self, constraint: Constraint) -> None:
        """Add an ordering constraint; the schedule is re-solved on the next call."""
        self.constraints.append(constraint)
        self._validated = False

    def validate_constraints(self) -> None:
        """Check the current order against every constraint (``RuntimeError`` if violated)."""
        if not self._validated:
            schedule = self.passes
            for constraint in self.constraints:
                _validate_pass_schedule_constraint(constraint, schedule)
            self._validated = True

    def solve_constraints(self) -> None:
        """Reorder ``passes`` to satisfy the constraints (``RuntimeError`` on a cycle)."""
        self.passes = _topological_sort_passes(self.passes, self.constraints)
        self._validated = True

    def add_checks(self, check: Callable[[nn.Module], None]) -> None:
        """Install ``check(module)``, run before the passes and, if asked, after each one."""
        if len(inspect.signature(check).parameters) != 1:
            raise TypeError("PassManager check function should only take in one variable, a module")
        self.check = check  # type: ignore[method-assign]

    def check(self, module: nn.Module) -> None:
        """Invariant check on ``module``; does nothing until :meth:`add_checks` sets one."""

    def __call__(self, module: nn.Module) -> PassResult:
        """Run the schedule on ``module`` and return ``PassResult(module, any_modified)``."""
        if not self._validated:
            self.solve_constraints()
        self.check(module)
        records: List[PassRecord] = []
        self.history = records
        track = self.record_history
        before = _snapshot_and_diff(None, module)[0] if track else None
        overall = False
        for step in range(self.steps):
            modified = False
            for index, fn in enumerate(self.passes):
                name = _pass_name(fn)
                logger.debug("Running pass '%s'", name)
                start = time.perf_counter()
                graph = getattr(module, "graph", None) if self.restore_on_failure else None
                snapshot = _Snapshot(graph) if graph is not None else None
                try:
                    res = fn(module)
                    if not isinstance(res, PassResult) and not hasattr(res, "graph_module"):
                        raise TypeError(
                            f"The result of the pass {name} should be type PassResult."
                            "Please wrap it with pass_result_wrapper()"
                        )
                    module = res.graph_module
                    modified = modified or res.modified
                    if hasattr(module, "graph") and callable(getattr(module, "recompile", None)):
                        logger.debug("Graph after pass '%s': %s", name, module.graph)
                        module.recompile()
                    if self.run_checks_after_each_pass:
                        self.check(module)
                    if self.lint_after_each_pass and hasattr(module, "graph"):
                        module.graph.lint()
                except Exception as e:
                    if snapshot is not None:
                        snapshot.restore(module)
                    raise self._failure(name, index, e) from e
                finally:
                    if snapshot is not None:
                        snapshot.close()
                if track:
                    elapsed = time.perf_counter() - start
                    before, added, removed, changed = _snapshot_and_diff(before, module)
                    records.append(
                        PassRecord(name, step, elapsed, bool(res.modified), added, removed, changed)
                    )
            overall = overall or modified
            if not modified:
                break
        return PassResult(module, overall)

    def _failure(self, name: str, index: int, error: BaseException) -> Exception:
        earlier = [_pass_name(p) for p in self.passes[:index]]
        return Exception(
            f"An error occurred when running the '{name}' pass after the following passes: "
            f"{earlier}\n  cause: {type(error).__name__}: {error}"
        )


class _Snapshot:
    """The graph a pass starts from, copied only if the pass edits it.

    fxkit graphs call ``_before_graph_edit`` just before their first edit, so a pass that
    changes nothing costs nothing; other graphs (torch.fx's) are copied up front.
    """

    __slots__ = ("graph", "saved")

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.saved: Any = None
        notify = getattr(graph, "_notify_before_next_edit", None)
        if notify is not None:
            notify(self)
        else:
            self.saved = copy.deepcopy(graph)

    def _before_graph_edit(self, graph: Any) -> None:
        if self.saved is None:
            self.saved = copy.deepcopy(graph)

    def close(self) -> None:
        pending = getattr(self.graph, "_pending_code", None)
        if pending and any(p is self for p in pending):
            pending[:] = [p for p in pending if p is not self]

    def restore(self, module: Any) -> None:
        """Give ``module`` back the graph as it was when the pass started."""
        original = self.saved if self.saved is not None else self.graph
        try:
            if getattr(module, "graph", None) is not original:
                module.graph = original
            if hasattr(module, "recompile"):
                module.recompile()
        except Exception:  # restoring must never hide the pass's own error
            logger.warning("could not restore the graph after a failed pass", exc_info=True)


def format_pass_history(history: Union[PassManager, Iterable[PassRecord]]) -> str:
    """Render a pass manager's history (or a list of :class:`PassRecord`) as a text table."""
    records = history.history if isinstance(history, PassManager) else list(history)
    header = ("step", "pass", "ms", "modified", "+nodes", "-nodes", "~nodes")
    rows = [
        (
            str(r.step),
            r.name,
            f"{r.seconds * 1e3:.3f}",
            "yes" if r.modified else "no",
            str(r.added),
            str(r.removed),
            str(r.changed),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]
    ]
    total = sum(r.seconds for r in records)
    lines.append(f"{len(records)} pass runs, {total * 1e3:.3f} ms total")
    return "\n".join(lines)
