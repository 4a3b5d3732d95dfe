"""How dispatch signatures relate: which is more specific (``supercedes``), which can match the
same call (``consistent``), which pairs are ``ambiguous``, and the order to try them in."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable, Sequence

from .utils import _toposort
from .variadic import isvariadic

__all__ = [
    # relations between two signatures
    "supercedes",
    "consistent",
    "ambiguous",
    "edge",
    # over a set of signatures
    "ambiguities",
    "ordering",
    "super_signature",
    "AmbiguityWarning",
]

Signature = tuple  # a tuple of types; only the last may be variadic


class AmbiguityWarning(Warning):
    """Warned when two registered signatures can match the same call and neither is more
    specific than the other."""


def _either_subclass(x: Any, y: Any) -> bool:
    return issubclass(y, x) or issubclass(x, y)


def _longer_supercedes(a: Signature, b: Signature) -> bool:
    """``supercedes`` when ``a`` has more entries than ``b``: only possible if ``b`` ends in a
    variadic entry that absorbs ``a``'s surplus."""
    i = j = 0
    while i < len(a) and j < len(b):
        mine, theirs = a[i], b[j]
        if isvariadic(mine):
            if i != len(a) - 1:
                raise AssertionError(f"variadic entry {mine} is not last in {a}")
            return j == len(b) - 1 and issubclass(mine, theirs)
        if not issubclass(mine, theirs):
            return False
        i += 1
        if isvariadic(theirs):
            if j != len(b) - 1:
                raise AssertionError(f"variadic entry {theirs} is not last in {b}")
        else:
            j += 1
    return i == len(a) and j == len(b) - 1


def supercedes(a: Signature, b: Signature) -> bool:
    """``a`` is consistent with ``b`` and at least as specific: every call ``a`` matches, ``b``
    matches too."""
    if len(a) == len(b):
        return all(map(issubclass, a, b))
    if len(a) > len(b):
        return _longer_supercedes(a, b)
    # A shorter signature can only supersede a lone variadic, and only when empty.
    return len(a) == 0 and len(b) == 1 and isvariadic(b[0])


def consistent(a: Signature, b: Signature) -> bool:
    """Some argument list could match both ``a`` and ``b``."""
    if not a or not b:
        longer = a or b
        return not longer or isvariadic(longer[0])
    if len(a) == len(b):
        return all(map(_either_subclass, a, b))
    i = j = 0
    mine = theirs = None
    while i < len(a) and j < len(b):
        mine, theirs = a[i], b[j]
        if not _either_subclass(mine, theirs):
            return False
        # A variadic entry stays put while it absorbs entries of the other signature.
        if isvariadic(mine):
            j += 1
        elif isvariadic(theirs):
            i += 1
        else:
            i += 1
            j += 1
    return (isvariadic(mine) and j == len(b)) or (isvariadic(theirs) and i == len(a))


def ambiguous(a: Signature, b: Signature) -> bool:
    """``a`` and ``b`` can match the same call but neither is more specific."""
    if not consistent(a, b):
        return False
    return not (supercedes(a, b) or supercedes(b, a))


def ambiguities(signatures: Iterable[Signature]) -> set[tuple[Signature, Signature]]:
    """The pairs of signatures that are ambiguous with each other and that no third signature
    resolves (one more specific than both). Each pair appears once, ordered by hash."""
    sigs = [tuple(sig) for sig in signatures]
    found = set()
    for a in sigs:
        for b in sigs:
            if hash(a) >= hash(b) or not ambiguous(a, b):
                continue
            if any(supercedes(c, a) and supercedes(c, b) for c in sigs):
                continue
            found.add((a, b))
    return found


def super_signature(signatures: Sequence[Signature]) -> list[type]:
    """A signature more specific than all of ``signatures`` (position by position, the most
    derived of the types found there): registering it breaks their ambiguity."""
    width = len(signatures[0])
    if any(len(sig) != width for sig in signatures):
        raise AssertionError("All signatures must have the same length")
    result = []
    for position in range(width):
        deepest: list[type] = []
        for sig in signatures:
            mro = type.mro(sig[position])
            if len(mro) > len(deepest):
                deepest = mro
        result.append(deepest[0])
    return result


def edge(a: Signature, b: Signature, tie_breaker: Callable[[Signature], int] = hash) -> bool:
    """Whether ``a`` must be tried before ``b``: it supersedes ``b`` and, if they supersede each
    other, wins the ``tie_breaker`` comparison."""
    if not supercedes(a, b):
        return False
    return not supercedes(b, a) or tie_breaker(a) > tie_breaker(b)


def ordering(signatures: Iterable[Signature]) -> list[Signature]:
    """The signatures sorted most specific first (a topological order of :func:`edge`)."""
    sigs = [tuple(sig) for sig in signatures]
    successors: OrderedDict[Signature, list[Signature]] = OrderedDict()
    for a in sigs:
        for b in sigs:
            if edge(a, b):
                successors.setdefault(a, []).append(b)
    for sig in sigs:
        successors.setdefault(sig, [])
    return _toposort(successors)
