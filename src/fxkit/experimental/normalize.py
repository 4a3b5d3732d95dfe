"""Rewrite call sites into one canonical spelling.

* :class:`NormalizeArgs` binds the arguments of ``call_function`` and ``call_module`` nodes to
  the callee's signature, fills in defaults, and passes them by keyword.
* :class:`NormalizeOperators` turns ``torch.add(x, y)`` and friends into the Python operator
  (``operator.add``) that a tensor's magic method dispatches to.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from fxkit.graph_module import GraphModule
from fxkit.interpreter import Transformer
from fxkit.node import Argument, Node, Target, map_aggregate
from fxkit.operator_schemas import create_type_hint, normalize_function, normalize_module
from fxkit.proxy import Proxy

from .schema_type_annotation import AnnotateTypesWithSchema

__all__ = ["NormalizeArgs", "NormalizeOperators"]


class NormalizeArgs(Transformer):
    """Match every ``call_function``/``call_module`` node's arguments to the callee's
    signature, fill in the defaults, and (with ``normalize_to_only_use_kwargs``, the default)
    pass all of them by keyword in signature order; otherwise the arguments that were
    positional stay positional.

    Torch operators are matched against their schemas; when several overloads fit, the
    ``type`` recorded in node meta picks one, and a call that stays ambiguous is left as it
    was. So are calls whose signature has positional-only or variadic parameters, calls of
    builtins without a signature (``torch.finfo``; torch.fx raises ``ValueError`` there),
    and modules that are not ``torch.nn`` classes. The new nodes keep the old nodes' ``meta``
    and ``type``. Example::

        gm = NormalizeArgs(fxkit.symbolic_trace(model)).transform()
    """

    def __init__(self, module: GraphModule, normalize_to_only_use_kwargs: bool = True) -> None:
        super().__init__(module)
        # Every new node takes the old node's meta wholesale (run_node), so a stack trace
        # recorded for it would be thrown away: don't spend time recording one.
        self.tracer.record_stack_traces = False
        # Each new value mapped to the node of the input graph it came from.
        self.node_map: Dict[Proxy, Node] = {}
        self.normalize_to_only_use_kwargs = normalize_to_only_use_kwargs

    def run_node(self, n: Node) -> Any:
        """Run ``n`` on proxies; carry its ``meta`` (the same dict) and ``type`` over."""
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_function":
            arg_types, kwarg_types = _argument_types(n, kwargs)
            out = self.call_function(n.target, args, kwargs, arg_types, kwarg_types)
        else:
            # Types are only needed for call_function, but torch.fx computes them for every
            # node and create_type_hint warns about lists it cannot describe: same warnings.
            _warn_like_torch_fx(n)
            # Straight to the handler: the base run_node would fetch the arguments again
            # and set up meta that the assignment below replaces anyway.
            out = getattr(self, n.op)(n.target, args, kwargs)
        if n.op != "output":
            self._carry_over(n, out)
        return out

    def _carry_over(self, old: Node, new: Proxy) -> None:
        """Give the new value the old node's meta (shared, not copied) and type."""
        self.node_map[new] = old
        new.node.type, new.node.meta = old.type, old.meta

    # fmt: off
    def call_function(self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any],
                      arg_types: Optional[Tuple[Any, ...]] = None,
                      kwarg_types: Optional[Dict[str, Any]] = None) -> Any:
        # fmt: on
        """Record ``target`` called with normalized arguments, or as given if the call
        cannot be normalized."""
        if not callable(target):
            raise AssertionError(f"Expected callable target, got {type(target)}")
        try:
            normalized = normalize_function(
                target, args, kwargs, arg_types, kwarg_types, self.normalize_to_only_use_kwargs
            )
        except ValueError:
            # No signature to match against (a builtin such as ``torch.finfo``): torch.fx
            # stops the whole pass here; fxkit leaves this one call as it is.
            normalized = None
        if normalized is None:
            return super().call_function(target, args, kwargs)
        return self.tracer.create_proxy("call_function", target, *normalized)

    def call_module(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Record the submodule call with arguments normalized to its ``forward``."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected str target, got {type(target)}")
        normalized = normalize_module(
            self.module, target, args, kwargs, self.normalize_to_only_use_kwargs
        )
        if normalized is not None:
            args, kwargs = normalized
        return super().call_module(target, args, kwargs)


def _argument_types(n: Node, kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """The types used to pick among overloads: per positional argument of ``n`` (a list of
    types becoming ``list[T]``), and per keyword argument value.

    As in torch.fx, an argument that is a node contributes ``n.meta["type"]`` (the type
    recorded on the node being normalized, not on the argument), and keyword values are
    looked at after they were turned into proxies.
    """
    return _positional_type_hints(n), {k: _type_of(v, n) for k, v in kwargs.items()}


def _positional_type_hints(n: Node) -> Tuple[Any, ...]:
    return tuple([_type_hint(arg, n) for arg in n.args])


def _type_hint(arg: Any, n: Node) -> Any:
    """``create_type_hint`` of ``arg``'s types (containers mapped element by element)."""
    if isinstance(arg, (list, tuple)):
        return create_type_hint(map_aggregate(arg, lambda a: _type_of(a, n)))
    if isinstance(arg, (dict, slice)):
        return map_aggregate(arg, lambda a: _type_of(a, n))
    return _type_of(arg, n)  # a leaf: create_type_hint would return it as is


def _warn_like_torch_fx(n: Node) -> None:
    """Compute the hints of ``n``'s list arguments for their warnings only (see run_node)."""
    for arg in n.args:
        if isinstance(arg, (list, tuple)):
            _type_hint(arg, n)


def _type_of(value: Any, n: Node) -> Any:
    # ``type(n)``: the graph may be torch.fx's, whose nodes are not fxkit Nodes.
    return n.meta.get("type") if isinstance(value, type(n)) else type(value)


_ARITHMETIC = (
    (torch.add, operator.add), (torch.sub, operator.sub), (torch.mul, operator.mul),
    (torch.div, operator.truediv), (torch.floor_divide, operator.floordiv),
    (torch.remainder, operator.mod),
)  # fmt: skip
_COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")  # same name in torch and operator


class NormalizeOperators(AnnotateTypesWithSchema):
    """Write each binary torch function that a tensor operator also reaches (``torch.add``,
    ``torch.mul``, ``torch.eq``, ...) as that Python operator (``operator.add``, ...), so
    that passes need to recognise only one spelling. Calls with extra arguments
    (``alpha=``, ``rounding_mode=``, ``out=``) are not rewritten: the operator cannot
    express them. Example::

        gm = NormalizeOperators(fxkit.symbolic_trace(model)).transform()
    """

    # The torch function -> the operator whose Tensor magic method calls it.
    binary_magic_method_remap: Dict[Callable[[Any, Any], Any], Callable[[Any, Any], Any]] = {
        **dict(_ARITHMETIC),
        **{getattr(torch, c): getattr(operator, c) for c in _COMPARISONS},
    }

    def call_function(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Record the call, as its operator when it is a plain binary torch function."""
        if not callable(target):
            raise AssertionError(f"Expected callable target, got {type(target)}")
        replacement = self.binary_magic_method_remap.get(target)
        if replacement is not None and len(args) == 2 and not kwargs:
            return super().call_function(replacement, args, {})
        return super().call_function(target, args, kwargs)
