"""Give ``operator.getitem`` nodes the element type of the sequence they index.

Tracing loses the annotations of local variables, so ``a, b = self.pair(x)`` leaves the two
getitem nodes untyped even when the producing node is annotated ``Tuple[Tensor, int]``.
Putting the element types back helps TorchScript compile the generated code.
"""

from __future__ import annotations

import operator
import typing
from typing import Any

import torch

__all__ = ["annotate_getitem_nodes"]

# Returned when the sequence's type says nothing about its elements.
_UNKNOWN = object()


def _tuple_element(params: tuple, index: Any) -> Any:
    if len(params) == 2 and params[1] is Ellipsis:  # Tuple[T, ...]: every element is a T
        return params[0]
    if len(params) <= index:
        raise AssertionError(
            f"Index {index} out of range for parameterized_types (len={len(params)})"
        )
    return params[index]


def _list_element(params: tuple) -> Any:
    if len(params) != 1:
        raise AssertionError(f"Expected 1 parameterized type, got {len(params)}")
    return params[0]


def _element_type(seq_type: Any, index: Any) -> Any:
    """The type of ``seq[index]`` for a sequence annotated ``seq_type``, or ``_UNKNOWN``."""
    if hasattr(seq_type, "_name"):
        # typing's aliases (Tuple[...], List[...]) say what they are by name.
        kind = {"Tuple": tuple, "List": list}.get(seq_type._name)
    elif hasattr(seq_type, "__origin__"):
        # builtin generics (tuple[...], list[...]) by their origin class.
        origin = seq_type.__origin__
        kind = origin if origin is tuple or origin is list else None
    elif hasattr(seq_type, "__annotations__"):
        if seq_type == torch.Tensor:
            return _UNKNOWN
        # A NamedTuple: the annotation of the field at that position.
        return seq_type.__annotations__[seq_type._fields[index]]
    else:
        return _UNKNOWN
    if kind is tuple:
        return _tuple_element(typing.get_args(seq_type), index)
    if kind is list:
        return _list_element(typing.get_args(seq_type))
    return _UNKNOWN


def annotate_getitem_nodes(graph: Any) -> None:
    """Set ``node.type`` on each ``operator.getitem`` node of ``graph`` (fxkit or torch.fx)
    whose indexed node is annotated as a ``Tuple``/``tuple``, ``List``/``list`` or a
    ``NamedTuple``. Getitem nodes on unannotated or other sequences are left as they are.
    """
    for node in graph.nodes:
        if node.target is not operator.getitem:
            continue
        seq, index = node.args
        if not seq.type:
            continue
        found = _element_type(seq.type, index)
        if found is not _UNKNOWN:
            node.type = found
