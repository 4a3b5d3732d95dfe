"""Unification of user objects (by type and attributes) and of ``slice`` objects."""

from __future__ import annotations

from typing import Any

from .core import _reify as core_reify
from .core import _unify as core_unify
from .core import reify, unify
from .dispatch import dispatch

__all__ = ["unifiable", "reify_object", "unify_object"]


def unifiable(cls: type) -> type:
    """Class decorator: instances of ``cls`` unify (and reify) through their attributes, i.e.
    their ``__slots__`` values or ``__dict__``. Returns ``cls``."""
    core_unify.add((cls, cls, dict), unify_object)
    core_reify.add((cls, dict), reify_object)
    return cls


def _slot_values(o: Any) -> list[Any]:
    return [getattr(o, slot) for slot in o.__slots__]


def reify_object(o: Any, s: dict) -> Any:
    """``o`` with variables in its attributes replaced according to ``s``; ``o`` itself when
    nothing changes, otherwise a new instance made without calling ``__init__``."""
    uses_slots = hasattr(o, "__slots__")
    before = _slot_values(o) if uses_slots else o.__dict__
    after = reify(before, s)
    if after == before:
        return o
    replacement = object.__new__(type(o))
    if uses_slots:
        for slot, value in zip(o.__slots__, after):
            setattr(replacement, slot, value)
    else:
        replacement.__dict__.update(after)
    return replacement


def unify_object(u: Any, v: Any, s: dict) -> Any:
    """Unify two objects of the same type through their attributes (``False`` for different
    types)."""
    if type(u) is not type(v):
        return False
    if hasattr(u, "__slots__"):
        return unify(_slot_values(u), _slot_values(v), s)
    return unify(u.__dict__, v.__dict__, s)


@dispatch(slice, dict)
def _reify(o: slice, s: dict) -> slice:
    """A slice reifies through its start, stop and step."""
    return slice(*reify((o.start, o.stop, o.step), s))


@dispatch(slice, slice, dict)
def _unify(u: slice, v: slice, s: dict) -> Any:
    """Slices unify through their start, stop and step."""
    return unify((u.start, u.stop, u.step), (v.start, v.stop, v.step), s)
