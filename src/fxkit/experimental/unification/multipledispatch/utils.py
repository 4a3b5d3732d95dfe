"""Small helpers shared by the multiple-dispatch modules: tuple expansion of union signatures,
a stable topological sort, dict inversion, grouping and type names."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from fxkit.experimental.unification.utils import raises  # the same helper, shared

__all__ = ["raises", "expand_tuples", "reverse_dict", "groupby", "typename"]


def expand_tuples(L: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every signature a union signature stands for: each tuple entry of ``L`` is a choice.

    >>> expand_tuples([1, (2, 3)])
    [(1, 2), (1, 3)]

    The first position varies fastest, as in torch.fx (the order decides which of several
    equally specific signatures is registered first).
    """
    choices = [entry if isinstance(entry, tuple) else (entry,) for entry in L]
    # product() varies its last argument fastest; feed the positions backwards and flip.
    return [tuple(reversed(combo)) for combo in itertools.product(*reversed(choices))]


def reverse_dict(d: Mapping[Any, Iterable[Any]]) -> OrderedDict[Any, tuple[Any, ...]]:
    """Invert a dependency mapping ``{a: (b, c)}`` into ``{b: (a,), c: (a,)}``, keeping first-seen
    order of the values."""
    inverted: OrderedDict[Any, tuple[Any, ...]] = OrderedDict()
    for source, targets in d.items():
        for target in targets:
            inverted[target] = inverted.get(target, ()) + (source,)
    return inverted


def _toposort(edges: Mapping[Hashable, Iterable[Hashable]]) -> list[Hashable]:
    """Order the keys of ``edges`` (``{a: [b, c]}``: ``a`` comes before ``b`` and ``c``) so that
    every key precedes its successors. Ready nodes are taken last-in first-out, which makes the
    result a function of the mapping's order only. Raises ``ValueError('Input has cycles')``."""
    waiting_on: dict[Hashable, set[Hashable]] = {
        node: set(preds) for node, preds in reverse_dict(edges).items()
    }
    ready = [node for node in edges if node not in waiting_on]
    result = []
    while ready:
        node = ready.pop()
        result.append(node)
        for successor in edges.get(node, ()):
            pending = waiting_on[successor]
            pending.discard(node)
            if not pending:
                ready.append(successor)
    if any(waiting_on.get(node) for node in edges):
        raise ValueError("Input has cycles")
    return result


def groupby(func: Callable[[Any], Any], seq: Iterable[Any]) -> OrderedDict[Any, list[Any]]:
    """Group the items of ``seq`` into lists keyed by ``func(item)``, in first-seen key order.

    >>> groupby(len, ["a", "bb", "c"])  # doctest: +SKIP
    OrderedDict([(1, ['a', 'c']), (2, ['bb'])])
    """
    groups: OrderedDict[Any, list[Any]] = OrderedDict()
    for item in seq:
        groups.setdefault(func(item), []).append(item)
    return groups


def typename(type: Any) -> str:
    """The ``__name__`` of a type, or ``'(int, float)'`` for a tuple of types.

    >>> typename((int, float))
    '(int, float)'
    """
    name = getattr(type, "__name__", None)
    if name is not None:
        return name
    if len(type) == 1:
        return typename(type[0])
    return "(" + ", ".join(typename(member) for member in type) + ")"
