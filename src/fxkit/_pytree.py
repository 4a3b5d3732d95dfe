"""Flatten a nested value against a known :class:`~torch.utils._pytree.TreeSpec`.

Generated code for pytree-traced graphs calls :func:`tree_flatten_spec` to turn the caller's
nested arguments into the graph's flat placeholders, following the spec recorded at trace
time (so dict keys are read by name, not by insertion order).

The module mirrors torch.fx's ``_pytree`` surface: containers registered with
:func:`register_pytree_flatten_spec` are taken apart by their own function, guided by the
spec (dicts by the spec's keys, sequences by position); anything else is flattened by
torch's pytree and must produce exactly the expected spec.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Callable, Dict, List, Optional

import torch.return_types
import torch.utils._pytree as pytree

__all__ = [
    "tree_flatten_spec",
    "register_pytree_flatten_spec",
    "spec_children",
    "SUPPORTED_NODES",
    "SUPPORTED_NODES_EXACT_MATCH",
]

FlattenFnSpec = Callable[[Any, pytree.TreeSpec], List[Any]]
FlattenFnExactMatchSpec = Callable[[Any, pytree.TreeSpec], bool]
FlattenFuncSpec = FlattenFnSpec  # older spelling, kept for code that imports it
FlattenFuncExactMatchSpec = FlattenFnExactMatchSpec

# container type -> function(value, spec) giving the children in the spec's order
SUPPORTED_NODES: Dict[Any, FlattenFnSpec] = {}
# container type -> function(value, spec) telling whether value matches spec exactly
SUPPORTED_NODES_EXACT_MATCH: Dict[Any, Optional[FlattenFnExactMatchSpec]] = {}


def register_pytree_flatten_spec(
    cls: Any,
    flatten_fn_spec: FlattenFnSpec,
    flatten_fn_exact_match_spec: Optional[FlattenFnExactMatchSpec] = None,
) -> None:
    """Teach :func:`tree_flatten_spec` to take ``cls`` apart with ``flatten_fn_spec``."""
    SUPPORTED_NODES[cls] = flatten_fn_spec
    SUPPORTED_NODES_EXACT_MATCH[cls] = flatten_fn_exact_match_spec


def _deregister_pytree_flatten_spec(cls: Any) -> None:
    del SUPPORTED_NODES[cls]
    del SUPPORTED_NODES_EXACT_MATCH[cls]


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
    take_apart = SUPPORTED_NODES.get(spec.type)
    if take_apart is None:
        leaves, actual = pytree.tree_flatten(value)
        if actual != spec:
            raise RuntimeError(
                f"Real spec {actual} of object {value} is different from expected spec {spec}. "
                "Please file an issue at https://github.com/pytorch/pytorch/issues/new?"
                "template=bug-report.yml (fxkit: the value passed in has a different structure "
                "from the one the graph was traced with)"
            )
        out.extend(leaves)
        return
    for child, child_spec in zip(take_apart(value, spec), spec_children(spec)):
        _walk(child, child_spec, out)


def _by_key(value: Any, spec: pytree.TreeSpec) -> List[Any]:
    return [value[key] for key in spec.context]


def _by_position(value: Any, spec: pytree.TreeSpec) -> List[Any]:
    return [value[i] for i in range(spec.num_children)]


def _same_length(value: Any, spec: pytree.TreeSpec) -> bool:
    return len(value) == spec.num_children


for _cls in (dict, list, tuple, namedtuple, *torch.return_types.all_return_types):
    register_pytree_flatten_spec(_cls, _by_key if _cls is dict else _by_position, _same_length)
del _cls
