"""Logic variables: ``Var`` objects, and ordinary hashable values promoted to variables for the
duration of a ``with variables(...)`` block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterator

from .dispatch import dispatch
from .utils import hashable

__all__ = ["Var", "isvar", "var", "vars", "variables"]

# Values that currently count as variables (see ``variables``); ``_glv`` is the short alias.
_global_logic_variables: set[Hashable] = set()
_glv = _global_logic_variables


class Var:
    """A logic variable, identified by its token: ``Var('x')`` prints as ``~x`` and equals every
    other ``Var('x')``. ``Var()`` makes a fresh one (``~_1``, ``~_2``, ...); several arguments
    make a tuple token."""

    _id = 1

    def __new__(cls, *token: Hashable) -> Var:
        obj = object.__new__(cls)
        if not token:
            obj.token = f"_{Var._id}"
            Var._id += 1
        else:
            obj.token = token[0] if len(token) == 1 else token
        return obj

    token: Any

    def __hash__(self) -> int:
        return hash((type(self), self.token))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.token == other.token  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return f"~{self.token}"

    __repr__ = __str__


def var() -> Callable[..., Var]:
    """A factory of variables: ``var()('x')`` is ``Var('x')``, ``var()()`` a fresh one. (torch.fx
    returns a factory rather than a variable here; so does fxkit.)"""
    return lambda *token: Var(*token)


def vars() -> Callable[[int], list[Callable[..., Var]]]:
    """A factory of ``n`` variable factories: ``vars()(n)`` is ``[var(), ...]``."""
    return lambda n: [var() for _ in range(n)]


@dispatch(Var)
def isvar(v: Var) -> bool:
    """Whether the term is a logic variable: a ``Var``, or a value listed in an active
    ``variables(...)`` block."""
    return True


@dispatch(object)  # type: ignore[no-redef]
def isvar(o: object) -> bool:  # noqa: F811
    return bool(_glv) and hashable(o) and o in _glv


@contextmanager
def variables(*variables: Hashable) -> Iterator[None]:
    """Within the block, the given values count as logic variables.

    >>> from fxkit.experimental.unification import unify
    >>> with variables("x"):
    ...     unify("x", 1)
    {'x': 1}
    """
    before = frozenset(_glv)
    _glv.update(variables)
    try:
        yield
    finally:
        # Back to exactly the set from before the block, whatever happened inside it.
        _glv.intersection_update(before)
        _glv.update(before)
