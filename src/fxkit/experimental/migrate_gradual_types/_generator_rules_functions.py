"""Inference rules for functions and tensor methods: element-wise ops and broadcasting,
comparisons, shape queries (``size``, ``dim``, ``getitem``), and tensor factories.

Each rule allocates its fresh variables in a fixed order, the same as torch.fx's, so that
both libraries number the variables of a graph identically.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from fxkit._symbolic_trace import _assert_is_none
from fxkit.experimental.migrate_gradual_types import operation as ops
from fxkit.experimental.migrate_gradual_types import util as mgu_util
from fxkit.experimental.migrate_gradual_types._generator_registry import (
    MAX_TENSOR_RANK,
    RANKS,
    both_dyn,
    dim_eq,
    dyn_or_per_rank,
    expect,
    expect_node,
    fresh_tensor,
    is_node,
    register_inference_rule,
    tensor_eq,
)
from fxkit.experimental.migrate_gradual_types.constraint import (
    ApplyBroadcasting,
    BinConstraintD,
    BinConstraintT,
    Conj,
    Constraint,
    Disj,
    DVar,
    F,
    GetItem,
    GetItemTensor,
    T,
    TGreatestUpperBound,
    TVar,
)
from fxkit.tensor_type import Dyn

_Rule = tuple[list[Constraint], int]
_NOT_YET = "Method not yet implemented"


def gen_broadcasting_constraints(
    e1: TVar, e2: TVar, symbols: dict, counter: int, output_var: TVar
) -> _Rule:
    """Constraints for ``output_var`` being the broadcast of ``e1`` and ``e2``: both are
    broadcast into two fresh variables, which must be consistent, and the output is their
    greatest upper bound."""
    broadcast = []
    for _ in range(2):
        var, counter = mgu_util.gen_tvar(counter)
        broadcast.append(var)
    upper_bound = TGreatestUpperBound(output_var, *broadcast)
    consistent = BinConstraintT(*broadcast, ops.op_consistency)
    return [upper_bound, ApplyBroadcasting(*broadcast, e1, e2), consistent], counter


_SCALAR_OPS = {operator.add: ops.op_add, torch.add: ops.op_add, operator.mul: ops.op_mul}


def broadcasting_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """Binary element-wise ops: two tensors broadcast; a tensor and a scalar keep the tensor's
    type; a dimension and a scalar give a new dimension computed from it."""
    op_code = _SCALAR_OPS.get(n.target) if callable(n.target) else None
    lhs, rhs = n.args[0], n.args[1]
    if is_node(lhs) and is_node(rhs):
        if not (isinstance(symbols[lhs], TVar) and isinstance(symbols[rhs], TVar)):
            raise NotImplementedError(_NOT_YET)
        output, counter = fresh_tensor(n, symbols, counter)
        return gen_broadcasting_constraints(symbols[lhs], symbols[rhs], symbols, counter, output)
    # One node, one Python number (in either order).
    if is_node(lhs) and isinstance(rhs, (int, float)):
        node, scalar = lhs, rhs
    elif is_node(rhs) and isinstance(lhs, (int, float)):
        node, scalar = rhs, lhs
    else:
        raise NotImplementedError("Addition not yet implemented")
    operand = symbols[node]
    if isinstance(operand, TVar):
        output, counter = fresh_tensor(n, symbols, counter)
        return [tensor_eq(output, operand)], counter
    if isinstance(operand, DVar):
        # Arithmetic on a traced size: the result is the computed dimension.
        result, counter = mgu_util.gen_dvar(counter)
        symbols[n] = result
        value = BinConstraintD(operand, scalar, op_code)
        return [Conj([dim_eq(result, value), BinConstraintD(0, result, ops.op_leq)])], counter
    raise NotImplementedError(_NOT_YET)


def _check_comparison_operands(n: Any) -> tuple[Any, Any]:
    lhs, rhs = n.args[0], n.args[1]
    for arg in (lhs, rhs):
        expect(is_node(arg) or isinstance(arg, int), "Node or int", arg)
    return lhs, rhs


def _boolean_of(relation: BinConstraintD, counter: int) -> _Rule:
    # Conditions are only used for flow analysis: ``b = (relation)`` with b fresh.
    flag, counter = mgu_util.gen_bvar(counter)
    return [dim_eq(flag, relation)], counter


def _comparison_rule(
    n: Any, symbols: dict, counter: int, op: str, retype_tensor_operand: bool
) -> _Rule:
    """Shared body of ``>``, ``<`` and ``==``: on two tensors it broadcasts, on dimensions it
    defines a boolean."""
    lhs, rhs = _check_comparison_operands(n)
    e1 = symbols[lhs] if is_node(lhs) else lhs
    e2 = symbols[rhs] if is_node(rhs) else rhs
    if is_node(lhs) and is_node(rhs):
        if isinstance(e1, TVar) and isinstance(e2, TVar):
            output, counter = fresh_tensor(n, symbols, counter)
            return gen_broadcasting_constraints(e1, e2, symbols, counter, output)
        if isinstance(e1, DVar) and isinstance(e2, DVar):
            return _boolean_of(BinConstraintD(e1, e2, op), counter)
        raise RuntimeError("Sort Mismatch")
    if not is_node(lhs):
        raise NotImplementedError(_NOT_YET)
    if isinstance(e1, DVar):
        return _boolean_of(BinConstraintD(e1, e2, op), counter)
    if retype_tensor_operand and isinstance(e1, TVar) and isinstance(e2, int):
        # The operand was assumed to be a tensor but is compared with a number: treat it as
        # a dimension from now on.
        warnings.warn(
            f"Made the wrong assumption for node {n}. Correctness not guaranteed.", stacklevel=2
        )
        as_dim, counter = mgu_util.gen_dvar(counter)
        symbols[lhs] = as_dim
        return _boolean_of(BinConstraintD(as_dim, e2, op), counter)
    raise NotImplementedError(_NOT_YET)


@register_inference_rule(operator.gt)
def gt_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``a > b`` on tensors (broadcast) or dimensions (a boolean)."""
    return _comparison_rule(n, symbols, counter, ops.op_gt, retype_tensor_operand=True)


@register_inference_rule(operator.eq)
def eq_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``a == b`` on tensors (broadcast) or dimensions (a boolean)."""
    return _comparison_rule(n, symbols, counter, ops.op_eq, retype_tensor_operand=False)


@register_inference_rule(operator.lt)
def lt_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``a < b`` on tensors (broadcast) or dimensions (a boolean)."""
    return _comparison_rule(n, symbols, counter, ops.op_lt, retype_tensor_operand=False)


@register_inference_rule(operator.ne)
def neq_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.size() != (d1, ..., dk)`` for k in (3, 4): a boolean that holds when ``t`` has rank
    k and some known dimension differs from the known ``di``."""
    expect_node(n.args[0])
    sizes = n.args[1]
    expect(isinstance(sizes, tuple), "tuple", sizes)
    rank = len(sizes)
    if rank not in (3, 4):
        raise NotImplementedError(_NOT_YET)
    for size in sizes:
        expect(is_node(size) or isinstance(size, int), "Node or int", size)
    tensor = symbols[n.args[0]]
    # Four dimension variables are allocated in both cases.
    actual, counter = mgu_util.gen_tensor_dims(4, counter)
    is_rank = tensor_eq(tensor, actual[:rank])
    expected = [s if isinstance(s, int) else symbols[s] for s in sizes]
    # torch.fx checks the third dimension for Dyn-ness in the fourth clause of the rank-4
    # case; kept so that both produce the same constraints.
    dyn_checked = actual[:rank] if rank == 3 else [*actual[:3], actual[2]]
    differs = [
        Conj(
            [
                BinConstraintD(want, Dyn, ops.op_neq),
                BinConstraintD(checked, Dyn, ops.op_neq),
                BinConstraintD(want, got, ops.op_neq),
            ]
        )
        for want, got, checked in zip(expected, actual, dyn_checked)
    ]
    _, counter = mgu_util.gen_bvar(counter)  # an unused boolean, for numbering parity
    flag, counter = mgu_util.gen_bvar(counter)
    return [dim_eq(flag, Conj([is_rank, Disj(differs)]))], counter


def equality_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """Shape-preserving ops (output = input), and factories whose arguments are the traced
    sizes of the output."""
    output, counter = fresh_tensor(n, symbols, counter)
    first = n.args[0]
    if is_node(first):
        source = symbols[first]
        if isinstance(source, TVar):
            return [tensor_eq(source, output)], counter
        # Otherwise the arguments are the traced sizes of the result.
        for arg in n.args:
            expect(isinstance(symbols[arg], DVar), "DVar", symbols[arg])
        sizes = n.args
    elif isinstance(first, tuple):
        if len(first) > 4:
            raise AssertionError(f"Expected len <= 4, got {len(first)}")
        sizes = first
    else:
        raise NotImplementedError(_NOT_YET)
    return [tensor_eq(output, [symbols[arg] for arg in sizes])], counter


# Registered in torch.fx's order (it matters only for error messages on double registration).
for _target in (torch.zeros, torch.ones, "contiguous", "long", "int", "to", "detach"):
    register_inference_rule(_target)(equality_inference_rule)
_F = torch.nn.functional
for _target in (_F.softmax, _F.dropout, _F.gelu):
    register_inference_rule(_target)(equality_inference_rule)
for _target in (operator.add, torch.add, "ne", torch.ne, operator.mul):
    register_inference_rule(_target)(broadcasting_inference_rule)
del _target, _F


@register_inference_rule("type_as")
def type_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``a.type_as(b)``: ``a`` must be consistent with ``b`` and the output is ``b``'s type."""
    expect_node(n.args[0])
    expect_node(n.args[1])
    output, counter = fresh_tensor(n, symbols, counter)
    source, target = symbols[n.args[0]], symbols[n.args[1]]
    expect(isinstance(source, TVar), "TVar", source)
    expect(isinstance(target, TVar), "TVar", target)
    return [BinConstraintT(source, target, ops.op_consistency), tensor_eq(output, target)], counter


@register_inference_rule("masked_fill_")
def masked_fill_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.masked_fill_(mask, v)`` with a tensor mask: broadcasting, as for addition."""
    expect_node(n.args[0])
    expect_node(n.args[1])
    e1, e2 = symbols[n.args[0]], symbols[n.args[1]]
    if not (isinstance(e1, TVar) and isinstance(e2, TVar)):
        raise NotImplementedError("Not yet implemented")
    output, counter = fresh_tensor(n, symbols, counter)
    return gen_broadcasting_constraints(e1, e2, symbols, counter, output)


@register_inference_rule(torch.tensor)
def tensor_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``torch.tensor(...)``: scalars are not modelled, so no constraint."""
    return [], counter


@register_inference_rule(_assert_is_none)
def assert_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """The runtime check emitted for ``concrete_args`` set to None: no constraint."""
    if len(n.users) != 0:
        raise AssertionError(f"Expected no users, got {len(n.users)}")
    return [], counter


@register_inference_rule("size")
def size_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.size()`` is ``t``'s type; ``t.size(i)`` is a dimension of it."""
    if len(n.args) == 1:
        output, counter = fresh_tensor(n, symbols, counter)
        return [BinConstraintT(symbols[n.args[0]], output, ops.op_eq)], counter
    if len(n.args) != 2 or not isinstance(n.args[1], int):
        raise NotImplementedError
    return _dimension_of(n, symbols[n.args[0]], n.args[1], symbols, counter)


def _dimension_of(n: Any, tensor: Any, index: int, symbols: dict, counter: int) -> _Rule:
    """A fresh dimension that is entry ``index`` of ``tensor``'s shape (Dyn if it is)."""
    result, counter = mgu_util.gen_dvar(counter)
    symbols[n] = result
    unknown = Conj([BinConstraintT(tensor, Dyn, ops.op_eq), dim_eq(result, Dyn)])
    by_rank = [GetItem(rank, index, result, tensor) for rank in RANKS]
    known = Conj([Disj(by_rank), BinConstraintD(0, result, ops.op_leq)])
    return [Disj([unknown, known])], counter


@register_inference_rule(operator.getitem)
def getitem_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t[i]`` on a shape gives a dimension; ``t[None, :, ...]`` gives a tensor."""
    expect_node(n.args[0])
    index = n.args[1]
    if isinstance(index, int):
        source = symbols[n.args[0]]
        expect(isinstance(source, TVar), "TVar", source)
        return _dimension_of(n, source, index, symbols, counter)
    if not isinstance(index, tuple):
        raise RuntimeError(_NOT_YET)
    output, counter = fresh_tensor(n, symbols, counter)
    if n.args[0] not in symbols:
        # (torch.fx gives up the same way on sources without a variable)
        return [], counter
    source = symbols[n.args[0]]
    expect(isinstance(source, TVar), "TVar", source)
    by_rank = [GetItemTensor(rank, index, output, source) for rank in RANKS]
    return [Disj([both_dyn(source, output), *by_rank])], counter


@register_inference_rule("dim")
def torch_dim_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.dim()``: a dimension equal to the rank of ``t``."""
    expect_node(n.args[0])
    result, counter = mgu_util.gen_dvar(counter)
    symbols[n] = result
    tensor = symbols[n.args[0]]

    def of_rank(rank: int, counter: int) -> tuple[Constraint, int]:
        dims, counter = mgu_util.gen_tensor_dims(rank, counter)
        return Conj([tensor_eq(tensor, dims), dim_eq(result, rank)]), counter

    unknown = Conj([BinConstraintT(tensor, Dyn, ops.op_eq), dim_eq(result, Dyn)])
    return dyn_or_per_rank(unknown, counter, of_rank)


def range_check(i: int, n: int) -> T | F:
    """:class:`T` if index ``i`` is in range for a list of length ``n``, else :class:`F`
    (negative indices are checked the way torch.fx does, ``i >= n``)."""
    in_range = i < n if i >= 0 else i >= n
    return T() if in_range else F()


@register_inference_rule(torch.cumsum)
def cumsum_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """Output shape = input shape; the dimension argument must be a valid index."""
    expect_node(n.args[0])
    axis = n.args[1] if len(n.args) > 1 else n.kwargs["dim"]
    expect(isinstance(axis, int), "int", axis)
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]

    def of_rank(rank: int, counter: int) -> tuple[Constraint, int]:
        dims, counter = mgu_util.gen_tensor_dims(rank, counter)
        parts = [tensor_eq(source, dims), tensor_eq(output, dims), range_check(axis, rank)]
        return Conj(parts + mgu_util.gen_nat_constraints(dims)), counter

    return dyn_or_per_rank(both_dyn(source, output), counter, of_rank)


@register_inference_rule(torch.full)
def full_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``torch.full(size, v)``: a tensor of the given (possibly traced) sizes."""
    output, counter = fresh_tensor(n, symbols, counter)
    sizes = n.args[0]
    expect(isinstance(sizes, Iterable), "Iterable", sizes)
    dims = [s if isinstance(s, int) else symbols[s] for s in sizes]
    return [tensor_eq(output, dims)], counter


@register_inference_rule(torch.arange)
def arange_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``torch.arange(end)``: a vector whose length is ``end`` (Dyn if ``end`` is)."""
    start, step = 0, 1
    if len(n.args) != 1:
        raise NotImplementedError("Not yet implemented")
    end = symbols[n.args[0]]
    length, counter = mgu_util.gen_dvar(counter)
    span = BinConstraintD(BinConstraintD(end, start, ops.op_sub), step, ops.op_div)
    output, counter = fresh_tensor(n, symbols, counter)
    bounds = (end, start, step)
    unknown = Conj(
        [Disj([dim_eq(b, Dyn) for b in bounds]), dim_eq(length, Dyn)],
    )
    known = Conj(
        [
            Conj([BinConstraintD(b, Dyn, ops.op_neq) for b in bounds]),
            BinConstraintD(length, Dyn, ops.op_neq),
            dim_eq(length, span),
        ]
    )
    return [tensor_eq(output, [length]), Disj([unknown, known])], counter


__all__ = [
    "MAX_TENSOR_RANK",
    "arange_inference_rule",
    "assert_inference_rule",
    "broadcasting_inference_rule",
    "cumsum_inference_rule",
    "eq_inference_rule",
    "equality_inference_rule",
    "full_inference_rule",
    "gen_broadcasting_constraints",
    "getitem_inference_rule",
    "gt_inference_rule",
    "lt_inference_rule",
    "masked_fill_inference_rule",
    "neq_inference_rule",
    "range_check",
    "size_inference_rule",
    "tensor_inference_rule",
    "torch_dim_inference_rule",
    "type_inference_rule",
]
