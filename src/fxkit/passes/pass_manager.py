"""The original, framework-agnostic pass manager: a list of callables run in order, with
pairwise ordering constraints checked before the first run.

A pass here is any callable ``obj -> obj``; nothing requires a GraphModule. The newer
:mod:`fxkit.passes.infra.pass_manager` works on GraphModules and returns ``PassResult``.
"""

from __future__ import annotations

import functools
import logging
from functools import wraps
from inspect import unwrap
from typing import Any, Callable, List, Optional

__all__ = ["PassManager", "inplace_wrapper", "log_hook", "loop_pass"]
__all__ += ["these_before_those_pass_constraint", "this_before_that_pass_constraint"]

logger = logging.getLogger(__name__)

Pass = Callable[..., Any]
Constraint = Callable[[Pass, Pass], bool]


def inplace_wrapper(fn: Pass) -> Pass:
    """Wrap a pass that edits its argument in place (returning anything) so that it returns
    the argument itself, as the pass manager expects."""

    @wraps(fn)
    def run_in_place(obj: Any, *args: Any, **kwargs: Any) -> Any:
        fn(obj, *args, **kwargs)
        return obj

    return run_in_place


def log_hook(fn: Pass, level: int = logging.INFO) -> Pass:
    """Wrap ``fn`` so that each call logs the pass and its return value at ``level``.

    Apply it inside :func:`inplace_wrapper` to log the pass's own return value rather than
    the object it edited.
    """

    @wraps(fn)
    def logged(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        logger.log(level, "Ran pass %s\t Return value: %s", fn, result)
        return result

    return logged


def loop_pass(
    base_pass: Pass, n_iter: Optional[int] = None, predicate: Optional[Callable[[Any], bool]] = None
) -> Pass:
    """Repeat ``base_pass`` either ``n_iter`` times or while ``predicate(obj)`` holds.

    Exactly one of the two must be given (``AssertionError`` otherwise); a non-positive
    ``n_iter`` is reported with ``RuntimeError`` when the looped pass is called.
    """
    if (n_iter is None) == (predicate is None):
        raise AssertionError("Exactly one of `n_iter`or `predicate` must be specified.")

    def keep_going(done: int, value: Any) -> bool:
        if predicate is not None:
            return bool(predicate(value))
        return done < n_iter  # type: ignore[operator]

    @wraps(base_pass)
    def looped(source: Any) -> Any:
        if predicate is None and not (n_iter is not None and n_iter > 0):
            raise RuntimeError(
                f"loop_pass must be given positive int n_iter (given {n_iter}) "
                f"xor predicate (given {predicate})"
            )
        done = 0
        while keep_going(done, source):
            source = base_pass(source)
            done += 1
        return source

    return looped


def _check_constraint(constraint: Constraint, passes: List[Pass]) -> None:
    """Raise ``RuntimeError`` at the first ordered pair ``(a, b)`` that ``constraint`` rejects.

    The reported second index counts from the pass after ``a`` (and the text has no space
    before it), as torch.fx reports it; code matching on the message relies on that.
    """
    for i, first in enumerate(passes):
        for offset, later in enumerate(passes[i + 1 :]):
            if not constraint(first, later):
                raise RuntimeError(
                    f"pass schedule constraint violated. Expected {first} before {later}"
                    f" but found {first} at index {i} and {later} at index{offset} in pass"
                    " list."
                )


def this_before_that_pass_constraint(this: Pass, that: Pass) -> Constraint:
    """A constraint saying ``this`` must run before ``that`` (compared with ``!=``)."""

    def allowed(earlier: Pass, later: Pass) -> bool:
        # Only the exact inversion (that, then this) is forbidden.
        return not (earlier == that and later == this)

    return allowed


def these_before_those_pass_constraint(these: Pass, those: Pass) -> Constraint:
    """Like :func:`this_before_that_pass_constraint`, but each scheduled pass is first
    unwrapped (``inspect.unwrap``) so wrappers such as :func:`loop_pass` still match."""

    def allowed(earlier: Pass, later: Pass) -> bool:
        return not (unwrap(earlier) == those and unwrap(later) == these)

    return allowed


class PassManager:
    """Run ``passes`` in order on an object, after checking every ``constraints`` entry.

    A constraint is a callable ``(a, b) -> bool`` that is False when ``a`` may not be
    scheduled before ``b``. Validation happens once, on the first call (or :meth:`validate`),
    and again after any change to the passes or constraints.
    """

    passes: List[Pass]
    constraints: List[Constraint]
    _validated: bool = False

    def __init__(
        self, passes: Optional[List[Pass]] = None, constraints: Optional[List[Constraint]] = None
    ) -> None:
        # The given lists are kept (not copied): callers may keep appending to them.
        self.passes = passes or []
        self.constraints = constraints or []

    @classmethod
    def build_from_passlist(cls, passes: List[Pass]) -> PassManager:
        """A pass manager over ``passes`` with no constraints."""
        return PassManager(passes)

    def add_pass(self, _pass: Pass) -> None:
        """Append a pass to the schedule."""
        self.passes.append(_pass)
        self._validated = False

    def add_constraint(self, constraint: Constraint) -> None:
        """Add an ordering constraint, checked at the next validation."""
        self.constraints.append(constraint)
        self._validated = False

    def remove_pass(self, _passes: Optional[List[str]]) -> None:
        """Drop every pass whose ``__name__`` is in ``_passes`` (no-op for None)."""
        if _passes is None:
            return
        self.passes = [p for p in self.passes if p.__name__ not in _passes]
        self._validated = False

    def replace_pass(self, _target: Pass, _replacement: Pass) -> None:
        """Replace each pass named like ``_target`` (by ``__name__``) with ``_replacement``."""
        # Names are read per pass, so an empty schedule accepts any target.
        self.passes = [_replacement if p.__name__ == _target.__name__ else p for p in self.passes]
        self._validated = False

    def validate(self) -> None:
        """Check the schedule against every constraint; raises ``RuntimeError`` on a
        violation. Cached until the passes or constraints change."""
        if not self._validated:
            for constraint in self.constraints:
                _check_constraint(constraint, self.passes)
            self._validated = True

    def __call__(self, source: Any) -> Any:
        """Validate, then feed ``source`` through each pass in turn and return the result."""
        self.validate()
        return functools.reduce(lambda value, run_pass: run_pass(value), self.passes, source)
