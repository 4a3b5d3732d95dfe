"""Gradual tensor types for annotating traced graphs: ``TensorType((1, Dyn, 3))`` describes a
rank-3 tensor whose middle dimension is unknown, and :data:`Dyn` stands for "no information".

:func:`is_consistent` (``~``) and :func:`is_more_precise` (``<=``) are the two relations that
type checkers over such annotations are built on.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

__all__ = ["Dyn", "TensorType", "is_consistent", "is_more_precise"]


class TensorType:
    """The type of a tensor, given as its sequence of dimensions (ints, :data:`Dyn`, or type
    variables). Usable as an annotation, either called or subscripted::

        def forward(self, x: TensorType((2, Dyn)), y: TensorType[2, Dyn]): ...

    Two TensorTypes are equal when their dimensions are.
    """

    def __init__(self, dim: Sequence[Any]) -> None:
        # ``__args__``/``__origin__`` make the object look like a subscripted generic to
        # code that inspects annotations (codegen prints it as ``TensorType[...]``).
        self.__args__ = dim
        self.__origin__ = TensorType

    def __repr__(self) -> str:
        return f"TensorType[{self.dims}]"

    dims = property(lambda self: self.__args__, doc="The dimensions, as given.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and list(self.dims) == list(other.dims)

    # Equality is by dimensions, which may be mutable lists: not hashable (as in torch.fx).
    __hash__ = None  # type: ignore[assignment]

    @staticmethod
    def __class_getitem__(*dims: object) -> TensorType:
        # ``TensorType[1, 2]`` passes the tuple ``(1, 2)``; ``TensorType[1]`` passes ``1``.
        if len(dims) == 1 and isinstance(dims[0], tuple):
            dims = dims[0]
        return TensorType(tuple(dims))


class _DynType:
    """The unknown type (a dimension or a whole type without information); its one
    instance is :data:`Dyn`."""

    def __init__(self) -> None:
        self.__name__ = "_DynType"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _DynType)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Dyn"

    __str__ = __repr__


Dyn = _DynType()


def _is_type_variable(t: object) -> bool:
    """Whether ``t`` is a unification variable (fxkit's or torch.fx's
    ``experimental.unification.Var``), which matches anything. Looked up only where that
    module is loaded: if it is not, no such variable can exist."""
    ours = sys.modules.get("fxkit.experimental.unification.variable")
    if ours is not None and isinstance(t, ours.Var):
        return True
    from fxkit.interop import torch_fx_unification_var_class

    theirs = torch_fx_unification_var_class()
    return theirs is not None and isinstance(t, theirs)


def _same_rank_and(relation: Callable[[object, object], bool], t1: object, t2: object) -> bool:
    """For two TensorTypes: equal rank and ``relation`` holds dimension by dimension."""
    if not (isinstance(t1, TensorType) and isinstance(t2, TensorType)):
        return False
    d1, d2 = t1.dims, t2.dims
    return len(d1) == len(d2) and all(map(relation, d1, d2))


def is_consistent(t1: object, t2: object) -> bool:
    """``t1 ~ t2``: the two types could describe the same value. Reflexive and symmetric,
    not transitive: :data:`Dyn` (and a type variable) is consistent with everything, and
    TensorTypes are consistent when they have the same rank and consistent dimensions, so
    ``TensorType((1, Dyn, 3)) ~ TensorType((1, 2, 3))``."""
    if t1 == t2:
        return True
    if t1 == Dyn or t2 == Dyn or _is_type_variable(t1) or _is_type_variable(t2):
        return True
    return _same_rank_and(is_consistent, t1, t2)


def is_more_precise(t1: object, t2: object) -> bool:
    """``t1 <= t2``: ``t1`` carries at least the information of ``t2``. Reflexive and
    transitive; everything is more precise than :data:`Dyn`, so
    ``TensorType((1, 2, 3)) <= TensorType((1, Dyn, 3))``."""
    if t1 == t2 or isinstance(t2, _DynType):
        return True
    return _same_rank_and(is_more_precise, t1, t2)
