"""Fill in ``node.type`` from what Python already knows: the return annotations of
``torch.nn.functional`` functions and of ``torch.nn`` modules' ``forward``, and the
TorchScript-inferred type of attributes read with ``get_attr``."""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch
from torch._jit_internal import boolean_dispatched

from fxkit.graph_module import GraphModule
from fxkit.interpreter import Transformer
from fxkit.node import Argument, Target
from fxkit.operator_schemas import _schema_type

__all__ = ["AnnotateTypesWithSchema"]

# Sentinel: a ``boolean_dispatch`` function whose two branches return different types.
_NO_SINGLE_RETURN_TYPE = object()


def _return_annotation(fn: Any) -> Optional[Any]:
    """``fn``'s declared return type, or None if it declares none or has no signature."""
    if not callable(fn):
        raise AssertionError(f"Expected callable target, got {type(fn)}")
    try:
        declared = inspect.signature(fn).return_annotation
    except (ValueError, TypeError):
        return None
    return None if declared is inspect.Signature.empty else declared


def _functional_return_type(target: Any) -> Any:
    """The return annotation of a ``torch.nn.functional`` function. For a
    ``boolean_dispatch`` pair (``max_pool2d`` with/without indices) it is the ``if_true``
    branch's, provided both branches agree; otherwise :data:`_NO_SINGLE_RETURN_TYPE`."""
    try:
        branches = boolean_dispatched.get(target)
    except TypeError:  # not weak-referenceable (a builtin): not a boolean_dispatch function
        branches = None
    if branches is None:
        return _return_annotation(target)
    if_true, if_false = branches["if_true"], branches["if_false"]
    true_returns = inspect.signature(if_true).return_annotation
    if true_returns != inspect.signature(if_false).return_annotation:
        return _NO_SINGLE_RETURN_TYPE
    return _return_annotation(if_true)


def _keep_existing_type(proxy: Any, inferred: Any) -> Any:
    # A type the node already carries wins; an empty (falsy) one is replaced.
    node = proxy.node
    node.type = node.type or inferred
    return proxy


class AnnotateTypesWithSchema(Transformer):
    """A :class:`~fxkit.Transformer` that copies the graph and sets each new node's ``type``
    from the signatures of what it calls:

    1. ``call_module`` of a ``torch.nn`` module class: its ``forward`` return annotation;
    2. ``call_function`` of a ``torch.nn.functional`` function: its return annotation;
    3. ``get_attr``: the type TorchScript infers for the attribute's value.

    Each kind can be switched off. Example::

        gm = AnnotateTypesWithSchema(fxkit.symbolic_trace(model)).transform()
    """

    # fmt: off
    def __init__(self, module: GraphModule, annotate_functionals: bool = True,
                 annotate_modules: bool = True, annotate_get_attrs: bool = True) -> None:
        # fmt: on
        super().__init__(module)
        # Which kinds of node get a type (attribute reads, module calls, functional calls).
        self.annotate_get_attrs = annotate_get_attrs
        self.annotate_modules = annotate_modules
        self.annotate_functionals = annotate_functionals

    def call_module(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Record the call; type it with a ``torch.nn`` module's ``forward`` annotation."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected str target, got {type(target)}")
        submod = self.fetch_attr(target)
        inferred = None
        if self.annotate_modules and _is_torch_nn_class(type(submod)):
            inferred = _return_annotation(submod.forward)
        return _keep_existing_type(super().call_module(target, args, kwargs), inferred)

    def get_attr(self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]) -> Any:
        """Record the attribute read; type it as TorchScript would type the value."""
        proxy = super().get_attr(target, args, kwargs)
        if not self.annotate_get_attrs:
            return proxy
        if not isinstance(target, str):
            raise AssertionError(f"Expected str target, got {type(target)}")
        value = _resolve_attribute(self.module, target)
        inferred = torch._C._jit_try_infer_type(value)
        if inferred.success():
            _keep_existing_type(proxy, _schema_type(inferred.type()))
        return proxy

    def call_function(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Record the call; type it with the functional's return annotation."""
        inferred = None
        if self.annotate_functionals and _module_name(target) == "torch.nn.functional":
            inferred = _functional_return_type(target)
            if inferred is _NO_SINGLE_RETURN_TYPE:
                # No one type to give: the node is recorded untouched.
                return super().call_function(target, args, kwargs)
        return _keep_existing_type(super().call_function(target, args, kwargs), inferred)

    def _extract_python_return_type(self, target: Target) -> Optional[Any]:
        """The return annotation of the callable ``target``, or None if it has none."""
        return _return_annotation(target)


def _module_name(target: Any) -> Optional[str]:
    return getattr(target, "__module__", None)


def _is_torch_nn_class(cls: type) -> bool:
    """Whether ``cls`` is the class ``torch.nn`` exports under its name (not a subclass)."""
    return getattr(torch.nn, cls.__name__, None) == cls


def _resolve_attribute(root: Any, path: str) -> Any:
    """The object at dotted ``path`` under ``root``; RuntimeError naming the part that
    resolved (torch.fx's wording) when a step is missing."""
    obj = root
    atoms = path.split(".")
    for depth, atom in enumerate(atoms):
        if not hasattr(obj, atom):
            reached = ".".join(atoms[:depth])
            raise RuntimeError(
                f"Node referenced nonextent target {reached}! (no attribute {atom!r} in "
                f"get_attr target {path!r})"
            )
        obj = getattr(obj, atom)
    return obj
