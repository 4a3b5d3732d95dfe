"""Variadic signature types: ``Variadic[int]`` in a dispatch signature matches any number
(including zero) of trailing ``int`` arguments, ``Variadic[(int, str)]`` any mix of the two."""

from __future__ import annotations

from typing import Any

from .utils import typename

__all__ = ["VariadicSignatureType", "isvariadic", "VariadicSignatureMeta", "Variadic"]


class VariadicSignatureType(type):
    """Metaclass of the classes ``Variadic[...]`` creates. ``issubclass(T, Variadic[A, B])``
    holds when ``T`` (or every member of a variadic ``T``) is a subclass of ``A`` or ``B``;
    two variadic types are equal when their member sets are."""

    def __subclasscheck__(cls, subclass: Any) -> bool:
        if subclass is cls:
            return True
        members = subclass.variadic_type if isvariadic(subclass) else (subclass,)
        accepted = cls.variadic_type  # type: ignore[attr-defined]
        return all(issubclass(member, accepted) for member in members)

    def __eq__(cls, other: object) -> bool:
        """Equal to another variadic type with the same set of member types."""
        if not isvariadic(other):
            return False
        return set(cls.variadic_type) == set(other.variadic_type)  # type: ignore[attr-defined]

    def __hash__(cls) -> int:
        return hash((type(cls), frozenset(cls.variadic_type)))  # type: ignore[attr-defined]


def isvariadic(obj: object) -> bool:
    """Whether ``obj`` is a variadic signature type (made by ``Variadic[...]``).

    >>> isvariadic(int), isvariadic(Variadic[int])
    (False, True)
    """
    return isinstance(obj, VariadicSignatureType)


class VariadicSignatureMeta(type):
    """Metaclass giving :class:`Variadic` its subscription: ``Variadic[T]`` builds a new
    :class:`VariadicSignatureType` class named ``Variadic[T]``."""

    def __getitem__(cls, variadic_type: Any) -> VariadicSignatureType:
        members = variadic_type if isinstance(variadic_type, tuple) else (variadic_type,)
        namespace = {"variadic_type": members, "__slots__": ()}
        return VariadicSignatureType(f"Variadic[{typename(members)}]", (), namespace)


class Variadic(metaclass=VariadicSignatureMeta):
    """Subscript to describe a variadic signature element: ``Variadic[int]`` stands for any
    number of ``int`` arguments, ``Variadic[(int, str)]`` for any number of arguments that are
    each an ``int`` or a ``str``.

    >>> issubclass(str, Variadic[(int, str)]), issubclass(float, Variadic[(int, str)])
    (True, False)
    """
