"""Flatten a nested value against a known :class:`~torch.utils._pytree.TreeSpec`.

Generated code for pytree-traced graphs calls :func:`tree_flatten_spec` to turn the caller's
nested arguments into the graph's flat placeholders, following the spec recorded at trace
time (so dict keys are read by name, not by insertion order).
"""

from __future__ import annotations

from typing import Any, List

import torch.utils._pytree as pytree

__all__ = ["tree_flatten_spec", "spec_children"]


def spec_children(spec: pytree.TreeSpec) -> List[pytree.TreeSpec]:
    """The child specs of ``spec`` (newer torch has ``children()``, older ones an attribute)."""
    method = getattr(spec, "children", None)
    return list(method()) if callable(method) else list(spec.children_specs)


def tree_flatten_spec(value: Any, spec: pytree.TreeSpec) -> List[Any]:
    """The leaves of ``value`` in the order ``spec`` lists them."""
    out: List[Any] = []
    _walk(value, spec, out)
    return out


def _walk(value: Any, spec: pytree.TreeSpec, out: List[Any]) -> None:
    if spec.is_leaf():
        out.append(value)
        return
    kind = spec.type
    if kind is dict:
        children = [value[k] for k in spec.context]
    elif kind in (list, tuple) or (isinstance(kind, type) and issubclass(kind, tuple)):
        if len(value) != spec.num_children:
            raise ValueError(
                f"expected a {kind.__name__} of {spec.num_children} items, got {len(value)}"
            )
        children = list(value)
    else:
        children, _ = pytree.SUPPORTED_NODES[kind].flatten_fn(value)
    for child, child_spec in zip(children, spec_children(spec)):
        _walk(child, child_spec, out)
