"""The table of inference rules used by :class:`.constraint_generator.ConstraintGenerator`,
and small helpers the rule modules share.

A rule for a function or method target is called as ``rule(node, symbols, constraints,
counter)``; a rule for a module class as ``rule(node, module, symbols, constraints,
counter)``. Both return ``(list_of_constraints, counter)`` and record the variable standing
for the node's value in ``symbols[node]``.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from fxkit.experimental.migrate_gradual_types.constraint import (
    BinConstraintD,
    BinConstraintT,
    Conj,
    Constraint,
    Disj,
)
from fxkit.experimental.migrate_gradual_types.operation import op_eq
from fxkit.experimental.migrate_gradual_types.util import gen_tvar
from fxkit.node import Node
from fxkit.tensor_type import Dyn, TensorType

_F = TypeVar("_F", bound=Callable[..., Any])

_INFERENCE_RULES: dict[Any, Callable[..., tuple[list[Constraint], int]]] = {}

# Tensors of rank 1 to MAX_TENSOR_RANK are modelled; the z3 encoding has no larger ones.
MAX_TENSOR_RANK = 4

RANKS = range(1, MAX_TENSOR_RANK + 1)


def register_inference_rule(call_target: Any) -> Callable[[_F], _F]:
    """Decorator registering the wrapped function as the inference rule for ``call_target``
    (a function, a method name, or an ``nn.Module`` subclass). Registering twice for the
    same target is a RuntimeError."""

    def register(fn: _F) -> _F:
        if _INFERENCE_RULES.setdefault(call_target, fn) is not fn:
            raise RuntimeError(f"Inference rule already registered for {call_target}!")
        return fn

    return register


def fresh_tensor(n: Any, symbols: dict, counter: int) -> tuple[Any, int]:
    """A fresh tensor variable standing for node ``n`` (recorded in ``symbols``)."""
    var, counter = gen_tvar(counter)
    symbols[n] = var
    return var, counter


def _node_types() -> tuple[type, ...]:
    # Graphs built by torch.fx are accepted too (duck typing at the graph level); its Node
    # class is used only when torch has loaded it, never imported from here.
    from fxkit.interop import torch_fx_node_class

    foreign_node = torch_fx_node_class()
    return (Node,) if foreign_node is Node else (Node, foreign_node)


def is_node(x: object) -> bool:
    """Whether ``x`` is a graph node (of fxkit, or of torch.fx when it is loaded)."""
    return isinstance(x, _node_types())


def expect_node(x: object) -> None:
    """Fail like torch.fx's rules when an argument that must be a node is not."""
    if not is_node(x):
        raise AssertionError(f"Expected Node, got {type(x)}")


def expect(ok: bool, what: str, value: object) -> None:
    """Fail with torch.fx's ``Expected <what>, got <type>`` AssertionError unless ``ok``."""
    if not ok:
        raise AssertionError(f"Expected {what}, got {type(value)}")


def _is_foreign_dyn(x: object) -> bool:
    return x is not Dyn and type(x).__name__ == "_DynType"


def as_gradual_type(t: Any) -> Any:
    """``t`` with torch.fx's ``TensorType``/``Dyn`` (also inside the dimensions) replaced by
    fxkit's, so that annotations made with either library mean the same; any other value is
    returned unchanged."""
    if _is_foreign_dyn(t):
        return Dyn
    is_ours = isinstance(t, TensorType)
    if not is_ours and not (type(t).__name__ == "TensorType" and hasattr(t, "__args__")):
        return t
    dims = t.__args__
    if isinstance(dims, (list, tuple)) and any(_is_foreign_dyn(d) for d in dims):
        dims = type(dims)(Dyn if _is_foreign_dyn(d) else d for d in dims)
    elif is_ours:
        return t
    return TensorType(dims)


def tensor_eq(lhs: Any, rhs: Any) -> BinConstraintT:
    """``lhs = rhs`` over tensor types; a list on either side becomes a ``TensorType``."""
    if isinstance(lhs, list):
        lhs = TensorType(lhs)
    if isinstance(rhs, list):
        rhs = TensorType(rhs)
    return BinConstraintT(lhs, rhs, op_eq)


def both_dyn(tensor_in: Any, tensor_out: Any) -> Conj:
    """Input and output are both ``Dyn``."""
    return Conj([BinConstraintT(tensor_in, Dyn, op_eq), BinConstraintT(tensor_out, Dyn, op_eq)])


def dyn_or_per_rank(
    dyn_case: Constraint,
    counter: int,
    per_rank: Callable[[int, int], tuple[Constraint, int]],
    ranks: range = RANKS,
) -> tuple[list[Constraint], int]:
    """``[Or(dyn_case, Or(per_rank(r) for r in ranks))]``: the shape of most rules, where
    either everything is ``Dyn`` or the input has one of the supported ranks."""
    cases = []
    for rank in ranks:
        case, counter = per_rank(rank, counter)
        cases.append(case)
    return [Disj([dyn_case, Disj(cases)])], counter


def dim_eq(lhs: Any, rhs: Any) -> BinConstraintD:
    """``lhs = rhs`` over dimensions."""
    return BinConstraintD(lhs, rhs, op_eq)
