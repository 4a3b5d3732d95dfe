"""``compatibility(is_backward_compatible=...)``: the decorator torch.fx puts on its public
names. Code that decorates its own functions with it (or reads the registries) works the
same here: the object is recorded, its docstring gains a note, and it is returned as is."""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Dict, TypeVar

__all__ = ["compatibility"]

# Objects marked backward compatible, and every object marked either way (insertion-ordered).
_BACK_COMPAT_OBJECTS: Dict[Any, None] = {}
_MARKED_WITH_COMPATIBILITY: Dict[Any, None] = {}

_T = TypeVar("_T")

_STABLE_NOTE = "\n\n.. note::\n    Backwards-compatibility for this API is guaranteed.\n"
_UNSTABLE_NOTE = (
    "\n\n.. warning::\n    This API is experimental and is *NOT* backward-compatible.\n"
)


def compatibility(is_backward_compatible: bool) -> Callable[[_T], _T]:
    """Return a decorator that records ``obj`` as (not) backward compatible, appends that
    to its docstring, and returns ``obj`` unchanged otherwise."""

    def mark(obj: _T) -> _T:
        doc = textwrap.dedent(getattr(obj, "__doc__", None) or "")
        obj.__doc__ = doc + (_STABLE_NOTE if is_backward_compatible else _UNSTABLE_NOTE)
        if is_backward_compatible:
            _BACK_COMPAT_OBJECTS.setdefault(obj)
        _MARKED_WITH_COMPATIBILITY.setdefault(obj)
        return obj

    return mark
