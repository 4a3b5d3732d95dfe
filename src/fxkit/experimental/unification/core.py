"""``unify`` (find a substitution making two terms equal) and ``reify`` (apply a substitution to
a term). Terms are nested tuples/lists/dicts/iterators of values and logic variables; both are
extensible by registering more ``_unify``/``_reify`` rules with ``dispatch``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .dispatch import dispatch
from .unification_tools import assoc
from .utils import transitive_get as walk
from .variable import isvar

__all__ = ["reify", "unify"]

Substitution = dict  # logic variable -> the term it stands for


# ---- reification -------------------------------------------------------------------------


def reify(e: Any, s: Substitution) -> Any:
    """``e`` with the variables bound in ``s`` replaced (recursively) by their values.

    >>> from fxkit.experimental.unification import Var
    >>> x, y = Var("x"), Var("y")
    >>> reify((1, x, {3: (y, 5)}), {x: 2, y: 4})
    (1, 2, {3: (4, 5)})
    """
    hops = 0
    while isvar(e):
        if e not in s:
            return e
        e = s[e]
        hops += 1
        if hops > len(s):  # a chain longer than the substitution must be a cycle
            raise RecursionError(f"reify: the substitution binds {e} to itself through a cycle")
    return _reify(e, s)


@dispatch(object, dict)
def _reify(o: Any, s: Substitution) -> Any:
    """Terms without structure are their own reification."""
    return o


@dispatch(Iterator, dict)  # type: ignore[no-redef]
def _reify(t: Any, s: Substitution) -> Any:  # noqa: F811
    # Stays lazy: the result is an iterator too.
    return map(lambda item: reify(item, s), t)


@dispatch(tuple, dict)  # type: ignore[no-redef]
def _reify(t: Any, s: Substitution) -> Any:  # noqa: F811
    return tuple([reify(item, s) for item in t])


@dispatch(list, dict)  # type: ignore[no-redef]
def _reify(t: Any, s: Substitution) -> Any:  # noqa: F811
    return [reify(item, s) for item in t]


@dispatch(dict, dict)  # type: ignore[no-redef]
def _reify(d: Any, s: Substitution) -> Any:  # noqa: F811
    # Keys are not reified, only values.
    return {key: reify(value, s) for key, value in d.items()}


# ---- unification -------------------------------------------------------------------------

seq = (tuple, list, Iterator)  # the types unified element-wise


@dispatch(seq, seq, dict)
def _unify(u: Any, v: Any, s: Substitution) -> Any:
    """Sequences unify element-wise; different lengths do not unify (``False``)."""
    if len(u) != len(v):
        return False
    for pair in zip(u, v):
        s = unify(*pair, s)
        if s is False:
            break
    return s


@dispatch(object, object, dict)
def unify(u: Any, v: Any, s: Substitution) -> Any:
    """A substitution extending ``s`` under which ``u`` and ``v`` are equal, or ``False``.

    >>> from fxkit.experimental.unification import Var
    >>> unify((1, Var("x")), (1, 2))
    {~x: 2}

    As in torch.fx, two unequal terms with no ``_unify`` rule for their types (two different
    ints, say) raise ``NotImplementedError`` instead of returning ``False``.
    """
    u, v = walk(u, s), walk(v, s)
    if u == v:
        return s
    # A variable on either side (the left one first) is bound to the other side.
    for variable, value in ((u, v), (v, u)):
        if isvar(variable):
            return assoc(s, variable, value)
    return _unify(u, v, s)


@dispatch(object, object)  # type: ignore[no-redef]
def unify(u: Any, v: Any) -> Any:  # noqa: F811
    """Unify starting from the empty substitution."""
    return unify(u, v, {})
