"""Dictionary helpers in the style of ``toolz.dicttoolz`` (as torch.fx vendors them): merging,
mapping and filtering dicts without mutating the inputs, plus ``groupby``/``first``/``getter``.

Functions taking ``factory`` build their result with ``factory()`` (default ``dict``)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import reduce
from typing import Any, Callable, Iterable

__all__ = [
    # several dicts into one
    "merge",
    "merge_with",
    # transforming one dict
    "keymap",
    "valmap",
    "itemmap",
    "keyfilter",
    "valfilter",
    "itemfilter",
    # copies with a key changed, possibly nested
    "assoc",
    "assoc_in",
    "dissoc",
    "update_in",
    "get_in",
]


def _get_factory(f: Callable, kwargs: dict[str, Any]) -> Any:
    """The ``factory`` keyword of ``f``; any other keyword is a TypeError, as for a normal
    function signature."""
    factory = kwargs.pop("factory", dict)
    if kwargs:
        unexpected = next(iter(kwargs))
        raise TypeError(f"{f.__name__}() got an unexpected keyword argument '{unexpected}'")
    return factory


def _dicts_argument(dicts: tuple) -> Iterable[Mapping]:
    # ``merge([d1, d2])`` is accepted as well as ``merge(d1, d2)``.
    if len(dicts) == 1 and not isinstance(dicts[0], Mapping):
        return dicts[0]
    return dicts


def merge(*dicts: Mapping, **kwargs: Any) -> Any:
    """One dict with the items of all ``dicts``; later ones win.

    >>> merge({1: 2, 3: 4}, {3: 3, 4: 4})
    {1: 2, 3: 3, 4: 4}
    """
    factory = _get_factory(merge, kwargs)
    merged = factory()
    for d in _dicts_argument(dicts):
        merged.update(d)
    return merged


def merge_with(func: Callable, *dicts: Mapping, **kwargs: Any) -> Any:
    """Merge ``dicts``, combining the values found for each key with ``func(list_of_values)``.

    >>> merge_with(sum, {1: 1, 2: 2}, {1: 10, 2: 20})
    {1: 11, 2: 22}
    """
    factory = _get_factory(merge_with, kwargs)
    collected = factory()
    for d in _dicts_argument(dicts):
        for key, value in d.items():
            collected.setdefault(key, []).append(value)
    return valmap(func, collected, factory)


def valmap(func: Callable, d: Mapping, factory: Callable[[], Any] = dict) -> Any:
    """``{k: func(v)}`` for the items of ``d``."""
    result = factory()
    result.update((key, func(value)) for key, value in d.items())
    return result


def keymap(func: Callable, d: Mapping, factory: Callable[[], Any] = dict) -> Any:
    """``{func(k): v}`` for the items of ``d``."""
    result = factory()
    result.update((func(key), value) for key, value in d.items())
    return result


def itemmap(func: Callable, d: Mapping, factory: Callable[[], Any] = dict) -> Any:
    """The dict of the pairs ``func((k, v))`` for the items of ``d``."""
    result = factory()
    result.update(func(item) for item in d.items())
    return result


def valfilter(predicate: Callable, d: Mapping, factory: Callable[[], Any] = dict) -> Any:
    """The items of ``d`` whose value satisfies ``predicate``.

    >>> valfilter(lambda v: v % 2 == 0, {1: 2, 2: 3, 3: 4, 4: 5})
    {1: 2, 3: 4}
    """
    return itemfilter(lambda item: predicate(item[1]), d, factory)


def keyfilter(predicate: Callable, d: Mapping, factory: Callable[[], Any] = dict) -> Any:
    """The items of ``d`` whose key satisfies ``predicate``.

    >>> keyfilter(lambda k: k % 2 == 0, {1: 2, 2: 3, 3: 4, 4: 5})
    {2: 3, 4: 5}
    """
    return itemfilter(lambda item: predicate(item[0]), d, factory)


def itemfilter(predicate: Callable, d: Mapping, factory: Callable[[], Any] = dict) -> Any:
    """The items ``(k, v)`` of ``d`` that satisfy ``predicate``."""
    result = factory()
    for key, value in d.items():
        if predicate((key, value)):
            result[key] = value
    return result


def assoc(d: Mapping, key: Any, value: Any, factory: Callable[[], Any] = dict) -> Any:
    """A copy of ``d`` with ``key`` set to ``value``.

    >>> assoc({"x": 1}, "x", 2)
    {'x': 2}
    """
    copy = factory()
    copy.update(d)
    copy[key] = value
    return copy


def dissoc(d: Mapping, *keys: Any, **kwargs: Any) -> Any:
    """A copy of ``d`` without ``keys``; keys that ``d`` lacks are ignored.

    >>> dissoc({"a": 1, "b": 2, "c": 3}, "a", "z")
    {'b': 2, 'c': 3}
    """
    factory = _get_factory(dissoc, kwargs)
    result = factory()
    if len(keys) >= len(d) * 0.6:
        # Many keys to drop: copy only the survivors.
        for key in set(d).difference(keys):
            result[key] = d[key]
        return result
    result.update(d)
    for key in keys:
        result.pop(key, None)
    return result


def assoc_in(d: Mapping, keys: Iterable, value: Any, factory: Callable[[], Any] = dict) -> Any:
    """A copy of ``d`` with ``d[k0][k1]...[kn]`` set to ``value``, creating levels as needed."""
    return update_in(d, keys, lambda _: value, value, factory)


def update_in(
    d: Mapping,
    keys: Iterable,
    func: Callable,
    default: Any = None,
    factory: Callable[[], Any] = dict,
) -> Any:
    """A copy of ``d`` with the value at the path ``keys`` replaced by ``func(value)`` (or
    ``func(default)`` where the path does not exist yet); the levels on the path are copied,
    everything else is shared.

    >>> update_in({1: "foo"}, [2, 3, 4], lambda x: x + 1, 0)
    {1: 'foo', 2: {3: {4: 1}}}
    """
    path = list(keys)
    if not path:
        raise StopIteration  # torch.fx's version fails the same way on an empty path
    top = factory()
    top.update(d)
    level_copy, level_source = top, d
    for key in path[:-1]:
        if key in level_source:
            child_source = level_source[key]
            child_copy = factory()
            child_copy.update(child_source)
        else:
            child_source = child_copy = factory()
        level_copy[key] = child_copy
        level_copy, level_source = child_copy, child_source
    last = path[-1]
    current = level_source[last] if last in level_source else default
    level_copy[last] = func(current)
    return top


def get_in(keys: Iterable, coll: Any, default: Any = None, no_default: bool = False) -> Any:
    """``coll[k0][k1]...[kn]``, or ``default`` when a step fails (with ``no_default=True`` the
    KeyError/IndexError/TypeError propagates).

    >>> get_in(["a", 0], {"a": [5]}), get_in(["b"], {}, 0)
    (5, 0)
    """
    try:
        return reduce(operator.getitem, keys, coll)
    except (KeyError, IndexError, TypeError):
        if no_default:
            raise
        return default


def getter(index: Any) -> Callable[[Any], Any]:
    """A function extracting ``x[index]``; for a list of indices, a tuple of the items."""
    if not isinstance(index, list):
        return operator.itemgetter(index)
    if len(index) == 1:
        only = index[0]
        return lambda x: (x[only],)
    if not index:
        return lambda x: ()
    return operator.itemgetter(*index)


def groupby(key: Any, seq: Iterable) -> dict[Any, list]:
    """Group the items of ``seq`` into lists by ``key(item)``; a non-callable ``key`` groups by
    ``item[key]``.

    >>> groupby(len, ["Alice", "Bob", "Dan"])
    {5: ['Alice'], 3: ['Bob', 'Dan']}
    """
    key_of = key if callable(key) else getter(key)
    groups: dict[Any, list] = {}
    for item in seq:
        groups.setdefault(key_of(item), []).append(item)
    return groups


def first(seq: Iterable) -> Any:
    """The first element of ``seq`` (StopIteration when it is empty).

    >>> first(iter([3, 1]))
    3
    """
    return next(iter(seq))
