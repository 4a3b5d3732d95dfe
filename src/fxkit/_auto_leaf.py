"""``on_error="leaf"``: a submodule whose body cannot be traced becomes a ``call_module`` leaf.

Before tracing into a submodule the tracer takes a :class:`_Checkpoint`; if the body raises,
everything the attempt added is taken back (its nodes, their names, scope records, cached
parameter proxies, constants stashed on the root, module call counts), so the graph is exactly
what tracing with that module as a leaf would have given, and one ``call_module`` node is made
instead. Its ``meta["fxkit_leaf_reason"]`` says what failed and where.

The innermost failing module is the one made a leaf; its parents carry on tracing. A failure
in the root's own ``forward`` cannot be handled this way and is raised.

Inputs of the root that default to ``None`` are specialised to ``None``
(:func:`none_defaults_as_concrete`), as shape-aware tracing does: otherwise ``if mask is not
None`` would see a Proxy, take the branch eager code skips, and a leaf made inside that branch
would run at call time with ``mask=None`` and quietly compute something else.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

from fxkit._frames import _error_location
from fxkit.node import Node

if TYPE_CHECKING:
    from fxkit._symbolic_trace import Tracer

ON_ERROR_CHOICES = ("raise", "leaf")


class LeafFallback(NamedTuple):
    """A submodule made a leaf because tracing its body failed."""

    qualname: str
    module_type: str
    error: BaseException
    where: str  # user "file:line" the error came from, or ""

    @property
    def reason(self) -> str:
        first = str(self.error).strip().splitlines()
        text = f"{type(self.error).__name__}: {first[0] if first else ''}"
        return f"{text} (at {self.where})" if self.where else text


class _Checkpoint:
    """What a tracer looked like before it traced into one submodule."""

    __slots__ = ("tracer", "last", "n_added", "n_journal", "suffixes", "n_fallbacks")

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        graph = tracer.graph
        self.last: Optional[Node] = next(iter(reversed(graph.nodes)), None)
        self.n_added = len(tracer._added_attrs)
        self.n_journal = len(tracer._call_journal)
        self.n_fallbacks = len(tracer.leaf_fallbacks)
        names = getattr(graph, "_names", None)
        self.suffixes = dict(names.next_suffix) if names is not None else None

    def rollback(self, param_cache: Dict[str, Any]) -> None:
        tracer, graph = self.tracer, self.tracer.graph
        doomed: List[Node] = []
        for node in reversed(graph.nodes):
            if node is self.last:
                break
            doomed.append(node)
        # Newest first, so every node's users are gone before it is.
        for node in doomed:
            for user in list(node.users):
                if user not in doomed:
                    raise RuntimeError(
                        f"cannot undo the failed trace of a submodule: {user.name!r}, made "
                        f"before it, uses {node.name!r} made during it"
                    )
        erased = set()
        for node in doomed:
            graph.erase_node(node)
            erased.add(node.name)
            tracer.node_name_to_scope.pop(node.name, None)
        names = getattr(graph, "_names", None)
        if names is not None and self.suffixes is not None:
            names.retired -= erased
            names.next_suffix.clear()
            names.next_suffix.update(self.suffixes)
        for key in [k for k, p in param_cache.items() if getattr(p, "node", None) in doomed]:
            del param_cache[key]
        removed = set(tracer._added_attrs[self.n_added :])
        for name in reversed(tracer._added_attrs[self.n_added :]):
            try:
                delattr(tracer.root, name)
            except AttributeError:
                pass
        del tracer._added_attrs[self.n_added :]
        for key in [k for k, v in tracer.tensor_attrs.items() if v in removed]:
            del tracer.tensor_attrs[key]
        while len(tracer._call_journal) > self.n_journal:
            qualname = tracer._call_journal.pop()
            tracer.num_calls[qualname] -= 1
        # Fallbacks inside the failed attempt are moot: the whole module is a leaf now.
        del tracer.leaf_fallbacks[self.n_fallbacks :]


def none_defaults_as_concrete(
    root: Any, concrete_args: Any = None, traced_func_name: str = "forward"
) -> Any:
    """``concrete_args`` plus ``name: None`` for each input of ``root`` that defaults to
    ``None`` and is not already given (a tuple of positional values is returned as is).

    ``symbolic_trace(m, on_error="leaf")`` traces with these, so calling the result with
    such an input left out takes the branch eager code takes; passing a value for it
    fails loudly (the ``None`` specialisation is asserted) instead of being ignored.
    """
    if concrete_args is not None and not isinstance(concrete_args, dict):
        return concrete_args
    fn = getattr(type(root), traced_func_name, None) if isinstance(root, torch.nn.Module) else root
    try:
        params = inspect.signature(inspect.unwrap(fn)).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return concrete_args
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    given = dict(concrete_args or {})
    found = {
        n: None
        for n, p in params.items()
        if p.default is None and p.kind in named and n not in given
    }
    return {**given, **found} if found else concrete_args


# fmt: off
def trace_or_leaf(tracer: "Tracer", m: torch.nn.Module, qualname: str,
                  forward: Callable[..., Any], args: Tuple[Any, ...],
                  kwargs: Dict[str, Any], param_cache: Dict[str, Any]) -> Any:
    # fmt: on
    """Trace ``forward``; if it raises, undo what it recorded and make ``m`` a leaf."""
    mark = _Checkpoint(tracer)
    try:
        return forward(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (any failure of the body: that is the point)
        if not tracer._should_fall_back(m, qualname, e):
            raise
        mark.rollback(param_cache)
        fallback = LeafFallback(qualname, type(m).__name__, e, _error_location(e))
        proxy = tracer.create_proxy("call_module", qualname, args, kwargs)
        proxy.node.meta["fxkit_leaf_reason"] = fallback.reason
        tracer.leaf_fallbacks.append(fallback)
        tracer._forced_leaves.add(id(m))
        return proxy
