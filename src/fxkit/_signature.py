"""How a traced function's parameters are laid out, and calling it with flat inputs.

The tracer makes one placeholder per parameter (``*args``/``**kwargs`` included) and then
calls the function with all of them positionally; these helpers read the layout from the
code object and build that positional call, also through a decorator's wrapper.
"""

from __future__ import annotations

import inspect
import types
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

_VARSTUFF = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


class _ArgLayout(NamedTuple):
    """A traced function's parameters as its code object lists them."""

    named: Tuple[str, ...]  # positional then keyword-only; ``self`` included for methods
    var_positional: Optional[str]
    var_keyword: Optional[str]
    keyword_only: int

    @classmethod
    def of(cls, fn: Callable) -> "_ArgLayout":
        code = fn.__code__
        n_named = code.co_argcount + code.co_kwonlyargcount
        after = iter(code.co_varnames[n_named:])
        star = next(after) if code.co_flags & inspect.CO_VARARGS else None
        star_star = next(after) if code.co_flags & inspect.CO_VARKEYWORDS else None
        names = tuple(code.co_varnames[:n_named])
        return cls(names, star, star_star, code.co_kwonlyargcount)

    def starred(self) -> List[str]:
        """``["*args", "**kwargs"]`` (the ones present), in call order."""
        pairs = (("*", self.var_positional), ("**", self.var_keyword))
        return [mark + name for mark, name in pairs if name is not None]

    @property
    def only_self_and_varargs(self) -> bool:
        return len(self.named) == 1 and bool(self.starred())

    @property
    def needs_flat_call(self) -> bool:
        # Such functions are called with every input positional, through _patch_function.
        return self.keyword_only > 0 or bool(self.starred())


def _is_empty_container(x: Any) -> bool:
    return type(x) in (tuple, dict) and not x


def _flat_caller(fn: Callable, inner: Callable, layout: _ArgLayout, nargs: int) -> Callable:
    """``fn`` taking every input positionally, in ``layout`` order."""
    if fn is inner:
        return _patch_function(fn, nargs)  # type: ignore[arg-type]
    # A decorator's wrapper(*args, **kwargs) stands in front: its own code says nothing about
    # the parameters, so sort the flat inputs back into a proper call. Named inputs go by
    # keyword where they can (wrappers often edit kwargs), positionally where they must.
    n_named = len(layout.named)
    n_positional = n_named - layout.keyword_only
    if layout.var_positional is None:
        n_positional = max(inner.__code__.co_posonlyargcount, 1 if inspect.ismethod(fn) else 0)
        if n_named and layout.named[0] == "self":
            n_positional = max(n_positional, 1)
    by_keyword = layout.named[n_positional:]
    has_star, has_star_star = layout.var_positional is not None, layout.var_keyword is not None

    def call(*flat: Any) -> Any:
        rest = list(flat[n_named:])
        star = rest.pop(0) if has_star else ()
        star_star = rest.pop(0) if has_star_star else {}
        keywords = dict(zip(by_keyword, flat[n_positional:n_named]))
        return fn(*flat[:n_positional], *star, **keywords, **star_star)

    return call


def _patch_function(fn: types.FunctionType, nargs: int) -> types.FunctionType:
    """A copy of ``fn`` taking ``*args``/``**kwargs``/keyword-only params positionally."""
    co = fn.__code__
    new_code = co.replace(
        co_argcount=nargs,
        co_posonlyargcount=0,
        co_kwonlyargcount=0,
        co_flags=co.co_flags & ~_VARSTUFF,
    )
    return types.FunctionType(
        new_code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
