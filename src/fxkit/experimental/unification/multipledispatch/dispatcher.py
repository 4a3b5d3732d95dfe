"""``Dispatcher``: a callable that picks, by the types of its positional arguments, the most
specific of several registered implementations; ``MethodDispatcher`` does the same for methods."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import warnings
from typing import Any, Callable, Iterable, Iterator

from .conflict import AmbiguityWarning, ambiguities, ordering, super_signature
from .utils import expand_tuples
from .variadic import Variadic, isvariadic

__all__ = [
    "Dispatcher",
    "MethodDispatcher",
    "MDNotImplementedError",
    # ambiguity reporting
    "ambiguity_warn",
    "warning_text",
    "str_signature",
    # variadic signatures
    "variadic_signature_matches",
    "variadic_signature_matches_iter",
    "source",
    # deprecated no-ops
    "halt_ordering",
    "restart_ordering",
]


class MDNotImplementedError(NotImplementedError):
    """Raised by an implementation to pass the call on to the next matching one."""


def str_signature(sig: Iterable[type]) -> str:
    """``'int, float'`` for ``(int, float)``."""
    return ", ".join(cls.__name__ for cls in sig)


def warning_text(name: str, amb: set[tuple[tuple[type, ...], tuple[type, ...]]]) -> str:
    """The text of the :class:`AmbiguityWarning` for dispatcher ``name``: the ambiguous pairs
    and, for each, the signature whose registration would settle it."""
    pair_lines = "".join(
        "\t" + ", ".join(f"[{str_signature(sig)}]" for sig in pair) + "\n" for pair in amb
    )
    fixes = "\n\n".join(
        f"@dispatch({str_signature(super_signature(pair))})\ndef {name}(...)" for pair in amb
    )
    return (
        f"\nAmbiguities exist in dispatched function {name}\n\n"
        "The following signatures may result in ambiguous behavior:\n"
        f"{pair_lines}\n\nConsider making the following additions:\n\n{fixes}"
    )


def ambiguity_warn(dispatcher: Dispatcher, ambiguities: set) -> None:
    """The default ``on_ambiguity`` callback: warn with :class:`AmbiguityWarning`."""
    warnings.warn(warning_text(dispatcher.name, ambiguities), AmbiguityWarning, stacklevel=1)


def halt_ordering() -> None:
    """Deprecated no-op (ordering is computed lazily on first call)."""
    warnings.warn(
        "`halt_ordering` is deprecated, you can safely remove this call.",
        FutureWarning,
        stacklevel=2,
    )


def restart_ordering(on_ambiguity: Callable[..., None] = ambiguity_warn) -> None:
    """Deprecated no-op; call ``reorder()`` on a dispatcher to order it eagerly."""
    warnings.warn(
        "`restart_ordering` is deprecated, if you would like to eagerly order the dispatchers, "
        "you should call the `reorder()` method on each dispatcher.",
        FutureWarning,
        stacklevel=2,
    )


# typing_extensions.deprecated marks these for type checkers; mirror the attribute it sets.
halt_ordering.__deprecated__ = "`halt_ordering` is deprecated, you can safely remove this call."  # type: ignore[attr-defined]
restart_ordering.__deprecated__ = (  # type: ignore[attr-defined]
    "`restart_ordering` is deprecated, if you would like to eagerly order the dispatchers, "
    "you should call the `reorder()` method on each dispatcher."
)


def variadic_signature_matches_iter(
    types: tuple[type, ...], full_signature: tuple[type, ...]
) -> Iterator[bool]:
    """Yield, argument type by argument type, whether it fits ``full_signature`` (whose last
    entry may be variadic and absorb any number of arguments), then one final verdict on whether
    the signature was used up."""
    entries = iter(full_signature)
    current = next(entries)
    for typ in types:
        yield issubclass(typ, current)
        if not isvariadic(current):
            current = next(entries)
    leftover = next(entries, None)
    if leftover is not None:
        # Signature entries remain that no argument filled.
        yield False
        return
    if not isvariadic(current):
        raise AssertionError("Expected variadic signature")
    yield True


def variadic_signature_matches(types: tuple[type, ...], full_signature: tuple[type, ...]) -> bool:
    """Whether argument types ``types`` fit the variadic signature ``full_signature``."""
    if not full_signature:
        raise AssertionError("full_signature is empty")
    return all(variadic_signature_matches_iter(types, full_signature))


def _accepts(signature: tuple[type, ...], types: tuple[type, ...]) -> bool:
    """Whether arguments of ``types`` match ``signature`` (possibly ending in a variadic)."""
    if len(signature) == len(types) and all(map(issubclass, types, signature)):
        return True
    is_variadic = bool(signature) and isvariadic(signature[-1])
    return is_variadic and variadic_signature_matches(types, signature)


_ONE_VARIADIC_TYPE = (
    "Variadic signature must contain exactly one element. To use a variadic union type place "
    "the desired types inside of a tuple, e.g., [(int, str)]"
)


def _check_signature_entries(name: str, signature: tuple[Any, ...]) -> list[Any]:
    """Validate a signature and turn a trailing ``[T]`` into ``Variadic[T]``."""
    entries = []
    last = len(signature) - 1
    for position, typ in enumerate(signature):
        if isinstance(typ, list):
            if position != last:
                raise TypeError("Variadic signature must be the last element")
            if len(typ) != 1:
                raise TypeError(_ONE_VARIADIC_TYPE)
            entries.append(Variadic[typ[0]])
        elif isinstance(typ, type):
            entries.append(typ)
        else:
            shown = ", ".join(c.__name__ if isinstance(c, type) else str(c) for c in signature)
            raise TypeError(
                f"Tried to dispatch on non-type: {typ}\n"
                f"In signature: <{shown}>\n"
                f"In function: {name}"
            )
    return entries


class Dispatcher:
    """Calls the implementation registered for the most specific signature matching the types
    of the positional arguments::

        f = Dispatcher("f")
        f.add((int,), lambda x: x + 1)
        f.add((float,), lambda x: x - 1)
        f(3), f(3.0)  # (4, 2.0)

    The order in which signatures are tried is computed on first use after a change; pairs of
    signatures that are ambiguous then trigger an :class:`AmbiguityWarning`.
    """

    __slots__ = ("name", "__name__", "doc", "funcs", "_cache", "_ordering")

    def __init__(self, name: str, doc: str | None = None) -> None:
        # Argument types -> implementation, filled by calls, emptied by registrations.
        self._cache: dict[tuple[type, ...], Callable[..., Any]] = {}
        self.funcs: dict[tuple[type, ...], Callable[..., Any]] = {}
        self.name = name
        self.__name__ = name
        self.doc = doc

    def register(self, *types: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add`; returns the function itself, so registrations stack."""

        def decorate(func: Callable) -> Callable:
            self.add(types, func, **kwargs)
            return func

        return decorate

    @classmethod
    def get_func_params(cls, func: Callable) -> Iterable[inspect.Parameter] | None:
        """The parameters of ``func`` that a signature annotates."""
        return inspect.signature(func).parameters.values()

    @classmethod
    def get_func_annotations(cls, func: Callable) -> tuple[Any, ...] | None:
        """The annotations of ``func``'s positional parameters, or None unless all have one."""
        params = cls.get_func_params(func)
        if not params:
            return None
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        annotations = tuple(p.annotation for p in params if p.kind in positional)
        if any(ann is inspect.Parameter.empty for ann in annotations):
            return None
        return annotations

    def add(self, signature: tuple[Any, ...], func: Callable) -> None:
        """Register ``func`` for ``signature``: a tuple of types, where a tuple entry means
        any of those types and a trailing one-element list ``[T]`` means any number of ``T``.
        An empty signature is read from ``func``'s annotations when it has them."""
        if not signature:
            signature = self.get_func_annotations(func) or signature
        if any(isinstance(typ, tuple) for typ in signature):
            for expanded in expand_tuples(signature):
                self.add(expanded, func)
            return
        entries = _check_signature_entries(self.name, signature)
        self.funcs[tuple(entries)] = func
        self._cache.clear()
        if hasattr(self, "_ordering"):
            del self._ordering

    @property
    def ordering(self) -> list[tuple[type, ...]]:
        """The registered signatures, most specific first."""
        cached = getattr(self, "_ordering", None)
        return self.reorder() if cached is None else cached

    def reorder(self, on_ambiguity: Callable[..., None] = ambiguity_warn) -> list:
        """Recompute :attr:`ordering` now, reporting ambiguities to ``on_ambiguity``."""
        self._ordering = ordering(self.funcs)
        ambiguous_pairs = ambiguities(self.funcs)
        if ambiguous_pairs:
            on_ambiguity(self, ambiguous_pairs)
        return self._ordering

    def _not_found(self, types: tuple[type, ...]) -> NotImplementedError:
        return NotImplementedError(
            f"Could not find signature for {self.name}: <{str_signature(types)}>"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        types = tuple(map(type, args))
        func = self._cache.get(types)
        if func is None:
            func = self.dispatch(*types)
            if not func:
                raise self._not_found(types)
            self._cache[types] = func
        try:
            return func(*args, **kwargs)
        except MDNotImplementedError as first_refusal:
            return self._call_fallbacks(types, args, kwargs, first_refusal)

    def _call_fallbacks(self, types, args, kwargs, first_refusal):
        """The first choice raised MDNotImplementedError: try the next matches in order."""
        candidates = self.dispatch_iter(*types)
        next(candidates)
        for func in candidates:
            with contextlib.suppress(MDNotImplementedError):
                return func(*args, **kwargs)
        raise NotImplementedError(
            f"Matching functions for {self.name}: <{str_signature(types)}> found, "
            "but none completed successfully"
        ) from first_refusal

    def __str__(self) -> str:
        return f"<dispatched {self.name}>"

    __repr__ = __str__

    def dispatch(self, *types: type) -> Callable | None:
        """The implementation that a call with arguments of ``types`` runs, or None."""
        exact = self.funcs.get(types)
        if exact is not None:
            return exact
        return next(self.dispatch_iter(*types), None)

    def dispatch_iter(self, *types: type) -> Iterator[Callable]:
        """Every implementation whose signature matches ``types``, most specific first."""
        return (self.funcs[sig] for sig in self.ordering if _accepts(sig, types))

    def resolve(self, types: tuple[type, ...]) -> Callable | None:
        """Deprecated spelling of ``dispatch(*types)``."""
        warnings.warn(
            "`resolve()` is deprecated, use `dispatch(*types)`", FutureWarning, stacklevel=2
        )
        return self.dispatch(*types)

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        """The docstrings of all implementations, most general first."""
        general_first = [(sig, self.funcs[sig].__doc__) for sig in reversed(self.ordering)]
        sections = [f"Multiply dispatched method: {self.name}", *([self.doc] if self.doc else [])]
        sections += [_doc_section(sig, doc) for sig, doc in general_first if doc]
        undocumented = [str_signature(sig) for sig, doc in general_first if not doc]
        if undocumented:
            sections.append("Other signatures:\n    " + "\n    ".join(undocumented))
        return "\n\n".join(sections)

    def _source(self, *args: Any) -> str:
        func = self._implementation_for(args)
        if func is None:
            raise TypeError("No function found")
        return source(func)

    def _help(self, *args: Any) -> str | None:
        return self._implementation_for(args).__doc__

    def source(self, *args: Any, **kwargs: Any) -> None:
        """Print the source of the implementation these arguments would run."""
        print(self._source(*args))

    def help(self, *args: Any, **kwargs: Any) -> None:
        """Print the docstring of the implementation these arguments would run."""
        print(self._help(*args))

    def _implementation_for(self, args: tuple) -> Callable | None:
        return self.dispatch(*(type(arg) for arg in args))

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "funcs": self.funcs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._cache = {}
        self.funcs = state["funcs"]
        self.name = state["name"]
        self._ordering = ordering(self.funcs)


def _doc_section(sig: tuple[type, ...], doc: str) -> str:
    """One implementation's part of a dispatcher's ``__doc__``: its signature, underlined."""
    header = f"Inputs: <{str_signature(sig)}>\n"
    return f"{header}{'-' * len(header)}\n{doc.strip()}"


def source(func: Callable) -> str:
    """``func``'s file name and source text."""
    return f"File: {inspect.getsourcefile(func)}\n\n" + inspect.getsource(func)


class MethodDispatcher(Dispatcher):
    """A :class:`Dispatcher` used as a method: dispatches on the arguments after ``self``."""

    __slots__ = ("obj", "cls")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        types = tuple(map(type, args))
        func = self.dispatch(*types)
        if not func:
            raise self._not_found(types)
        return func(self.obj, *args, **kwargs)

    def __get__(self, instance: Any, owner: type) -> MethodDispatcher:
        # Remember the instance the method was looked up on, for the call that follows.
        self.obj, self.cls = instance, owner
        return self

    @classmethod
    def get_func_params(cls, func: Callable) -> Iterable[inspect.Parameter] | None:
        """The parameters after ``self``."""
        return itertools.islice(inspect.signature(func).parameters.values(), 1, None)
