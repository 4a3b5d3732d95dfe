"""Helpers for the unification package: hashability test, following substitution chains,
freezing containers into hashable form, and a topological sort."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Mapping

__all__ = ["hashable", "transitive_get", "raises", "reverse_dict", "xfail", "freeze"]


def hashable(x: object) -> bool:
    """Whether ``hash(x)`` succeeds."""
    try:
        hash(x)
    except TypeError:
        return False
    return True


def transitive_get(key: Any, d: Mapping[Any, Any]) -> Any:
    """Follow ``key -> d[key] -> d[d[key]] ...`` until a value that is not a key of ``d``
    (or is unhashable).

    >>> transitive_get(1, {1: 2, 2: 3, 3: 4})
    4
    """
    while True:
        try:
            if key not in d:
                return key
        except TypeError:  # unhashable: cannot be a key
            return key
        key = d[key]


def raises(err: type[BaseException], lamda: Callable[[], object]) -> bool:
    """Whether calling ``lamda()`` raises ``err`` (other exceptions propagate)."""
    try:
        lamda()
    except err:
        return True
    return False


def reverse_dict(d: Mapping[Any, Iterable[Any]]) -> dict[Any, tuple[Any, ...]]:
    """Invert a dependency mapping ``{a: (b, c)}`` into ``{b: (a,), c: (a,)}``.

    >>> reverse_dict({"a": (1, 2), "b": (2, 3), "c": ()})  # doctest: +SKIP
    {1: ('a',), 2: ('a', 'b'), 3: ('b',)}
    """
    inverted: dict[Any, tuple[Any, ...]] = {}
    for source, targets in d.items():
        for target in targets:
            inverted[target] = inverted.get(target, ()) + (source,)
    return inverted


def _toposort(edges: Mapping[Hashable, Iterable[Hashable]]) -> list[Hashable]:
    """Order the keys of ``edges`` (``{a: [b, c]}``: ``a`` comes before ``b`` and ``c``) so that
    each precedes its successors. Raises ``ValueError('Input has cycles')``.

    Ready nodes are taken first-in first-out, so the result depends only on the mapping's
    order (torch.fx takes them from a set: unrelated nodes come out in hash order there).

    >>> _toposort({1: (2, 3), 2: (3,)})
    [1, 2, 3]
    """
    indegree = {node: len(set(preds)) for node, preds in reverse_dict(edges).items()}
    order = [node for node in edges if node not in indegree]
    position = 0
    while position < len(order):
        node = order[position]
        position += 1
        for successor in dict.fromkeys(edges.get(node, ())):
            indegree[successor] -= 1
            if indegree[successor] == 0:
                order.append(successor)
    if any(indegree.get(node) for node in edges):
        raise ValueError("Input has cycles")
    return order


def xfail(func: Callable[[], object]) -> None:
    """Call ``func``, swallowing any ``Exception`` it raises. (torch.fx's version means to
    complain when ``func`` succeeds, but its complaint is swallowed too; kept that way.)"""
    try:
        func()
    except Exception:
        pass


def freeze(d: Any) -> Any:
    """A hashable copy of nested containers: lists/tuples become tuples, dicts and sets become
    frozensets.

    >>> freeze([1, {2: [3]}])
    (1, frozenset({(2, (3,))}))
    """
    if isinstance(d, (tuple, list)):
        container, items = tuple, d
    elif isinstance(d, dict):
        container, items = frozenset, d.items()
    elif isinstance(d, set):
        container, items = frozenset, d
    else:
        return d
    return container(freeze(item) for item in items)
