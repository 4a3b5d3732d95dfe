"""The ``@dispatch(*types)`` decorator: implementations registered under the same function name
(per namespace) form one :class:`Dispatcher`; inside a class body they form a
:class:`MethodDispatcher`."""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

from .dispatcher import Dispatcher, MethodDispatcher

__all__ = ["dispatch", "ismethod"]

global_namespace: dict[str, Dispatcher] = {}


def dispatch(*types: Any, **kwargs: Any) -> Callable[[Callable], Dispatcher]:
    """Register the decorated function as the implementation for argument ``types``::

        @dispatch(int)
        def f(x): return x + 1

        @dispatch(float)
        def f(x): return x - 1

        f(3), f(3.0)  # (4, 2.0)

    ``namespace=`` selects the dict of dispatchers to register in (default: a module-global
    one). A function with a ``self`` parameter is taken to be a method: its dispatcher is the
    one of the same name already defined in the enclosing class body, or a new one.
    """
    namespace = kwargs.get("namespace", global_namespace)
    signature = tuple(types)

    def register(func: Callable) -> Dispatcher:
        name = func.__name__
        if ismethod(func):
            # The class body being executed is the decorator's caller's frame.
            class_body = sys._getframe(1).f_locals
            dispatcher = class_body.get(name)
            if dispatcher is None:
                dispatcher = MethodDispatcher(name)
        else:
            dispatcher = namespace.get(name)
            if dispatcher is None:
                dispatcher = namespace[name] = Dispatcher(name)
        dispatcher.add(signature, func)
        return dispatcher

    return register


def ismethod(func: Callable) -> bool:
    """Whether ``func`` takes a ``self`` parameter (methods are still plain functions while their
    class body runs, so this is the only test available)."""
    return "self" in inspect.signature(func).parameters
