"""Operator support: which nodes a backend can run.

A backend describes what it supports with an :class:`OperatorSupportBase` whose
``is_node_supported(submodules, node)`` answers per node. :class:`OperatorSupport` answers from
a table keyed by the typename :func:`~fxkit.passes.tools_common.get_node_target` gives a node,
optionally restricting input dtypes; :func:`create_op_support` wraps a plain function;
:func:`chain` / :func:`any_chain` combine checks with *and* / *or*; :class:`OpSupports` holds
ready-made checks. Partitioners and splitters consume these objects.

Input dtypes are read from ``node.meta`` as ``ShapeProp`` leaves it (``tensor_meta``, else
``type``), so run ``ShapeProp`` before asking about dtypes.
"""

from __future__ import annotations

import abc
import typing as t

import torch

from fxkit._compatibility import compatibility
from fxkit.node import Node
from fxkit.passes.tools_common import CALLABLE_NODE_OPS, get_node_target

__all__ = ["OpSupports", "OperatorSupport", "OperatorSupportBase"]
__all__ += ["any_chain", "chain", "create_op_support"]

# Type aliases. TargetTypeName: a node target's typename, as returned by ``get_node_target``.
# SupportedArgumentDTypes: the input dtypes one target accepts, as (per-positional-arg dtypes,
# {kwarg name: dtypes}), or None for "any dtype". IsNodeSupported: a ``(submodules, node)``
# predicate.
_DTypes = t.Sequence[torch.dtype]
TargetTypeName = str
SupportedArgumentDTypes = tuple[t.Sequence[_DTypes], dict[str, _DTypes]] | None
SupportDict = t.Mapping[TargetTypeName, SupportedArgumentDTypes]
IsNodeSupported = t.Callable[[t.Mapping[str, torch.nn.Module], Node], bool]

# Stands for "typename absent from the support table" (``None`` there means "any dtype").
_NOT_LISTED = object()


@compatibility(is_backward_compatible=False)
class OperatorSupportBase(abc.ABC):
    """Says whether a backend supports a node; subclasses implement ``is_node_supported``."""

    @abc.abstractmethod
    def is_node_supported(self, submodules: t.Mapping[str, torch.nn.Module], node: Node) -> bool:
        """Whether ``node`` can run on the backend (``submodules``: ``dict(named_modules())``)."""
        raise NotImplementedError


@compatibility(is_backward_compatible=False)
class OperatorSupport(OperatorSupportBase):
    """Support decided by a table ``{typename: dtype rule}``.

    Typenames come from ``get_node_target`` (``"torch.relu"``, ``"_operator.add"``,
    ``"torch.nn.modules.linear.Linear"``, a method name). A rule of ``None`` accepts any input
    dtypes; otherwise it is ``(arg_dtypes, kwarg_dtypes)``: ``arg_dtypes[i]`` lists the dtypes
    allowed for positional input ``i`` (``None`` = unchecked), ``kwarg_dtypes[name]`` those for
    a keyword input. Only inputs that are nodes are checked. A typename missing from the table
    is unsupported; nodes that call nothing (placeholders, ``get_attr``, output) are supported.
    """

    _support_dict: SupportDict

    def __init__(self, support_dict: SupportDict | None = None) -> None:
        self._support_dict = support_dict or {}

    def is_node_supported(self, submodules: t.Mapping[str, torch.nn.Module], node: Node) -> bool:
        """Look ``node``'s typename up in the table and check its input dtypes."""
        if node.op not in CALLABLE_NODE_OPS:
            return True
        rule = self._support_dict.get(get_node_target(submodules, node), _NOT_LISTED)
        if rule is _NOT_LISTED:
            return False
        if rule is None:  # any dtype will do
            return True
        arg_rules, kwarg_rules = rule
        node_cls = (Node, type(node))
        # zip stops at the shorter of the rules and the actual arguments.
        checks = list(zip(node.args, arg_rules))
        checks += [
            (node.kwargs[k], allowed) for k, allowed in kwarg_rules.items() if k in node.kwargs
        ]
        return all(
            allowed is None or not isinstance(value, node_cls) or _get_arg_dtype(value) in allowed
            for value, allowed in checks
        )


@compatibility(is_backward_compatible=False)
def create_op_support(is_node_supported: IsNodeSupported) -> OperatorSupportBase:
    """Turn a function ``(submodules, node) -> bool`` into an :class:`OperatorSupportBase`."""

    class FunctionalOperatorSupport(OperatorSupportBase):
        def is_node_supported(self, submodules: t.Mapping[str, torch.nn.Module], node: Node):
            return is_node_supported(submodules, node)

    return FunctionalOperatorSupport()


@compatibility(is_backward_compatible=False)
def chain(*op_support: OperatorSupportBase) -> OperatorSupportBase:
    """Supported only if every one of ``op_support`` supports the node (checked in order,
    stopping at the first refusal)."""
    checks = op_support
    return create_op_support(
        lambda submods, node: all(c.is_node_supported(submods, node) for c in checks)
    )


@compatibility(is_backward_compatible=False)
def any_chain(*op_support: OperatorSupportBase) -> OperatorSupportBase:
    """Supported if any one of ``op_support`` supports the node (checked in order, stopping at
    the first acceptance)."""
    checks = op_support
    return create_op_support(
        lambda submods, node: any(c.is_node_supported(submods, node) for c in checks)
    )


@compatibility(is_backward_compatible=False)
class OpSupports:
    """Ready-made checks to combine with :func:`chain` / :func:`any_chain`."""

    @classmethod
    def decline_if_input_dtype(cls, dtype: torch.dtype) -> OperatorSupportBase:
        """Refuse nodes that have an input of ``dtype``."""

        def no_input_of_dtype(submodules: t.Mapping[str, torch.nn.Module], node: Node) -> bool:
            return all(_get_arg_dtype(arg) != dtype for arg in node.all_input_nodes)

        return create_op_support(no_input_of_dtype)

    @classmethod
    def decline_if_node_in_names(cls, disallow_set: set[str]) -> OperatorSupportBase:
        """Refuse nodes whose name is in ``disallow_set``."""

        def name_allowed(submodules: t.Mapping[str, torch.nn.Module], node: Node) -> bool:
            return node.name not in disallow_set

        return create_op_support(name_allowed)


def _is_tensor_metadata(meta: object) -> bool:
    # ShapeProp's TensorMetadata (fxkit's or torch.fx's): a named tuple with a dtype field.
    return isinstance(meta, tuple) and "dtype" in getattr(meta, "_fields", ())


def _get_arg_dtype(arg: Node) -> torch.dtype:
    """The dtype ``ShapeProp`` recorded for ``arg`` (its ``type`` when it is not one tensor)."""
    if not hasattr(arg, "meta") or not hasattr(arg, "all_input_nodes"):
        raise AssertionError(f"Expected torch.fx.Node, got {type(arg)}")
    tensor_meta = arg.meta.get("tensor_meta")
    return tensor_meta.dtype if _is_tensor_metadata(tensor_meta) else arg.meta["type"]
