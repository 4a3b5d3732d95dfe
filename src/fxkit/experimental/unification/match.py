"""Dispatch by unification: implementations are registered for patterns (terms that may contain
logic variables) and a call runs the most specific pattern that unifies with its arguments.

``unify`` raises ``NotImplementedError`` for two unequal constants of a type it has no rule for
(two different strings, say). torch.fx lets that escape from here, so its own ``VarDispatcher``
example (patterns ``("inc", x)`` and ``("double", x)``) fails while registering; fxkit reads it
as "does not match". Where torch.fx works the results are the same; ``resolve`` still raises
``NotImplementedError`` (``No match found``) when no pattern matches.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .core import reify, unify
from .unification_tools import first, groupby
from .utils import _toposort, freeze
from .variable import isvar


def _unify_or_false(u: Any, v: Any) -> Any:
    """``unify(u, v)``, with "no unify rule for these unequal values" meaning no match."""
    try:
        return unify(u, v)
    except NotImplementedError:
        return False


class Dispatcher:
    """Calls the function registered for the first pattern (most specific first) that unifies
    with the arguments."""

    def __init__(self, name: str) -> None:
        # Patterns (frozen, so hashable) -> function; ``ordering``: most specific first.
        self.funcs: dict[Any, Callable] = {}
        self.ordering: list[Any] = []
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve(args)[0](*args, **kwargs)

    def add(self, signature: tuple, func: Callable) -> None:
        """Register ``func`` for the pattern ``signature`` (a tuple of terms)."""
        self.funcs[freeze(signature)] = func
        self.ordering = ordering(self.funcs)

    def resolve(self, args: tuple) -> tuple[Callable, dict]:
        """The function for ``args`` and the substitution that matched it. Raises
        ``NotImplementedError`` when no pattern unifies."""
        frozen = freeze(args)
        for pattern in self.ordering:
            if len(pattern) != len(args):
                continue
            substitution = _unify_or_false(frozen, pattern)
            if substitution is not False:
                return self.funcs[pattern], substitution
        raise NotImplementedError(
            "No match found. \nKnown matches: " + str(self.ordering) + "\nInput: " + str(args)
        )

    def register(self, *signature: Any) -> Callable[[Callable], Dispatcher]:
        """Decorator form of :meth:`add`; returns the dispatcher."""

        def decorate(func: Callable) -> Dispatcher:
            self.add(signature, func)
            return self

        return decorate


class VarDispatcher(Dispatcher):
    """A :class:`Dispatcher` that calls the function with the matched variables as keyword
    arguments, named by their tokens.

    >>> from fxkit.experimental.unification import Var
    >>> scale = VarDispatcher("scale")
    >>> _ = scale.register(Var("factor"), Var("value"))(lambda factor, value: factor * value)
    >>> scale(3, 7)
    21
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        func, substitution = self.resolve(args)
        return func(**{variable.token: value for variable, value in substitution.items()})


global_namespace: dict[str, Dispatcher] = {}


def match(*signature: Any, **kwargs: Any) -> Callable[[Callable], Dispatcher]:
    """Decorator registering a function for the pattern ``signature`` in the dispatcher named
    after it (created on first use in ``namespace=``, of class ``Dispatcher=``)."""
    namespace = kwargs.get("namespace", global_namespace)
    dispatcher_cls = kwargs.get("Dispatcher", Dispatcher)

    def decorate(func: Callable) -> Dispatcher:
        name = func.__name__
        try:
            existing = namespace[name]
        except KeyError:
            existing = namespace[name] = dispatcher_cls(name)
        existing.add(signature, func)
        return existing

    return decorate


def _without_renamings(substitution: dict[Any, Any]) -> dict[Any, Any]:
    # Variable-to-variable bindings are renamings; they do not make a pattern less specific.
    renaming = {key for key, value in substitution.items() if isvar(key) and isvar(value)}
    return {key: substitution[key] for key in substitution if key not in renaming}


def supercedes(a: Any, b: Any) -> bool:
    """Pattern ``a`` is more specific than pattern ``b``: whatever ``a`` matches, ``b`` does."""
    if isvar(b) and not isvar(a):
        return True
    substitution = _unify_or_false(a, b)
    return substitution is not False and reify(a, _without_renamings(substitution)) == a


def edge(a: Any, b: Any, tie_breaker: Callable[[Any], int] = hash) -> bool:
    """Whether ``a`` must be tried before ``b`` (it supersedes ``b``; ties broken by
    ``tie_breaker``)."""
    if not supercedes(a, b):
        return False
    return not supercedes(b, a) or tie_breaker(a) > tie_breaker(b)


def ordering(signatures: Iterable[Any]) -> list[Any]:
    """The patterns sorted most specific first (a topological order of :func:`edge`)."""
    patterns = [tuple(sig) for sig in signatures]
    pairs = [(a, b) for a in patterns for b in patterns if edge(a, b)]
    successors = {a: [b for _, b in group] for a, group in groupby(first, pairs).items()}
    for pattern in patterns:
        successors.setdefault(pattern, [])
    return _toposort(successors)
