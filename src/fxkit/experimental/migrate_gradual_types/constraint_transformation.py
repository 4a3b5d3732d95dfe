"""Rewrite generated constraints into the fragment the z3 encoding understands: equalities,
disequalities and arithmetic over dimensions, ``=`` over tensor types, and/or.

:func:`transform_constraint` applies one rewriting step, chosen by the constraint's exact
class from the rules registered with :func:`register_transformation_rule`; conjunctions and
disjunctions rewrite their members. Repeating it until nothing changes (see
``transform_to_z3.iterate_till_fixed_point``) yields the final form. Rewrites that need fresh
variables take and return the variable counter.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from fxkit.experimental.migrate_gradual_types import constraint as cons
from fxkit.experimental.migrate_gradual_types import operation as ops
from fxkit.experimental.migrate_gradual_types._generator_registry import MAX_TENSOR_RANK
from fxkit.experimental.migrate_gradual_types._transformation_shapes import (
    apply_padding,
    broadcast_dim,
    create_equality_constraints_for_broadcasting,
    gen_all_reshape_possibilities,
    gen_broadcasting_constraints,
    gen_lists_of_dims,
    generate_all_broadcasting_possibilities_no_padding,
    generate_all_int_dyn_dim_possibilities,
    generate_broadcasting,
    generate_calc_product,
    generate_reshape,
    is_dim_div_by_target,
    is_target_div_by_dim,
    no_broadcast_dim_with_index,
)
from fxkit.experimental.migrate_gradual_types.util import (
    gen_dvar,
    gen_nat_constraints,
    gen_tensor_dims,
)
from fxkit.tensor_type import Dyn, TensorType

__all__ = [
    # registry and entry point
    "register_transformation_rule",
    "transform_constraint",
    # helpers
    "calc_last_two_dims",
    "gen_consistency_constraints",
    "gen_greatest_upper_bound",
    "valid_index",
    "valid_index_tensor",
    # rewriting rules
    "generate_binconstraint_d",
    "generate_binconstraint_t",
    "generate_calc_conv",
    "generate_calc_maxpool",
    "generate_conj",
    "generate_d_gub",
    "generate_disj",
    "generate_gub",
    "transform_get_item",
    "transform_get_item_tensor",
    "transform_index_select",
    "transform_transpose",
    # shape helpers re-exported from _transformation_shapes
    "apply_padding",
    "broadcast_dim",
    "create_equality_constraints_for_broadcasting",
    "gen_all_reshape_possibilities",
    "gen_broadcasting_constraints",
    "gen_lists_of_dims",
    "generate_all_broadcasting_possibilities_no_padding",
    "generate_all_int_dyn_dim_possibilities",
    "generate_broadcasting",
    "generate_calc_product",
    "generate_reshape",
    "is_dim_div_by_target",
    "is_target_div_by_dim",
    "no_broadcast_dim_with_index",
]

_Rewrite = Callable[[cons.Constraint, int], "tuple[cons.Constraint, int]"]
_TRANSFORMATION_RULES: dict[type, _Rewrite] = {}

_MAX_RANK = MAX_TENSOR_RANK


def register_transformation_rule(call_target: type) -> Callable[[_Rewrite], _Rewrite]:
    """Decorator registering the wrapped function as the rewriting step for constraints of
    class ``call_target``; a second registration for the same class is a RuntimeError."""

    def register(fn: _Rewrite) -> _Rewrite:
        if _TRANSFORMATION_RULES.setdefault(call_target, fn) is not fn:
            raise RuntimeError(f"Transformation rule already registered for {call_target}!")
        return fn

    return register


def transform_constraint(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """One rewriting step of ``constraint`` (unchanged if no rule applies to its class)."""
    rule = _TRANSFORMATION_RULES.get(type(constraint))
    if rule is None:
        return constraint, counter
    return rule(constraint, counter)


def _expect_type(constraint: cons.Constraint, cls: type) -> None:
    if not isinstance(constraint, cls):
        raise TypeError(type(constraint))


def _shape_is(var: Any, dims: Any) -> cons.BinConstraintT:
    return cons.BinConstraintT(var, TensorType(dims), ops.op_eq)


# --------------------------------------------------------------------------- indexing


def valid_index(index: int, dims: list[cons.DVar]) -> cons.Constraint:
    """:class:`T` if ``dims[index]`` exists, else :class:`F`."""
    position = operator.index(index)  # non-integers are a TypeError, as for list indexing
    return cons.T() if -len(dims) <= position < len(dims) else cons.F()


def valid_index_tensor(index: tuple[Any, ...], dims: list[cons.DVar]) -> cons.Constraint:
    """:class:`F` if the index tuple has more slices than there are dimensions."""
    slices = sum(1 for entry in index if isinstance(entry, slice))
    return cons.F() if slices > len(dims) else cons.T()


@register_transformation_rule(cons.Transpose)
def transform_transpose(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """For the assumed rank: fresh input dims, both indices valid, output with them swapped."""
    _expect_type(constraint, cons.Transpose)
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    first_ok = valid_index(constraint.index1, dims)
    second_ok = valid_index(constraint.index2, dims)
    swapped = list(dims)
    if first_ok == cons.T() and second_ok == cons.T():
        i, j = constraint.index1, constraint.index2
        swapped[i], swapped[j] = dims[j], dims[i]
    parts = [_shape_is(constraint.input_var, dims), *gen_nat_constraints(dims)]
    parts += [first_ok, second_ok, _shape_is(constraint.output, swapped)]
    return cons.Conj(parts), counter


@register_transformation_rule(cons.IndexSelect)
def transform_index_select(
    constraint: cons.Constraint, counter: int
) -> tuple[cons.Constraint, int]:
    """For the assumed rank: fresh input dims, a valid index, and the output with that
    dimension replaced."""
    _expect_type(constraint, cons.IndexSelect)
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    index_ok = valid_index(constraint.index, dims)
    replaced: list[Any] = list(dims)
    if index_ok == cons.T():
        replaced[constraint.index] = constraint.dim_replace
    parts = [_shape_is(constraint.input_var, dims), *gen_nat_constraints(dims)]
    parts += [index_ok, _shape_is(constraint.output, replaced)]
    return cons.Conj(parts), counter


@register_transformation_rule(cons.GetItem)
def transform_get_item(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """For the assumed rank (the Dyn case was generated separately): fresh input dims, a
    valid index, and the result equal to the indexed dimension."""
    _expect_type(constraint, cons.GetItem)
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    index_ok = valid_index(constraint.index, dims)
    parts = [_shape_is(constraint.input_var, dims), *gen_nat_constraints(dims), index_ok]
    if index_ok == cons.T():
        parts.append(cons.BinConstraintD(constraint.res, dims[constraint.index], ops.op_eq))
    return cons.Conj(parts), counter


@register_transformation_rule(cons.GetItemTensor)
def transform_get_item_tensor(
    constraint: cons.Constraint, counter: int
) -> tuple[cons.Constraint, int]:
    """Index tuples of full slices and ``None``: each ``None`` inserts a 1 at its position,
    slices keep the input's dimensions. Results above rank 4 are :class:`F`."""
    _expect_type(constraint, cons.GetItemTensor)
    index = constraint.index_tuple
    if not isinstance(index, tuple):
        raise AssertionError(f"Expected tuple for index_tuple, got {type(index)}")
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    naturals = gen_nat_constraints(dims)

    result: list[Any] = [None] * (index.count(None) + len(dims))
    for position, entry in enumerate(index):
        if entry is None:
            result[position] = 1
        elif entry != slice(None, None, None):
            raise NotImplementedError("Method not yet implemented")
    remaining = iter(dims)
    result = [next(remaining) if slot is None else slot for slot in result]

    index_ok = valid_index_tensor(index, dims)
    if len(result) > _MAX_RANK:
        return cons.F(), counter
    parts = [_shape_is(constraint.input_var, dims), _shape_is(constraint.res, result)]
    return cons.Conj([*parts, *naturals, index_ok]), counter


# --------------------------------------------------------------------------- binary relations


def gen_consistency_constraints(
    constraint: cons.Constraint, counter: int
) -> tuple[list[cons.Constraint], int]:
    """For ranks 1-4: both sides of the tensor consistency ``constraint`` have that rank and
    are consistent dimension by dimension."""
    cases: list[cons.Constraint] = []
    for rank in range(1, _MAX_RANK + 1):
        left, counter = gen_tensor_dims(rank, counter)
        right, counter = gen_tensor_dims(rank, counter)
        parts = [_shape_is(constraint.lhs, left), _shape_is(constraint.rhs, right)]
        parts += [cons.BinConstraintD(a, b, ops.op_consistency) for a, b in zip(left, right)]
        cases.append(cons.Conj(parts + gen_nat_constraints(left + right)))
    return cases, counter


def _tensor_precision(constraint: cons.BinConstraintT, counter: int) -> tuple[cons.Constraint, int]:
    declared = constraint.lhs
    if declared == Dyn:
        return cons.T(), counter
    if not isinstance(declared, TensorType):
        return constraint, counter
    if all(d != Dyn for d in declared.dims):
        return cons.BinConstraintT(declared, constraint.rhs, ops.op_eq), counter
    fresh = []
    for _ in declared.dims:
        var, counter = gen_dvar(counter)
        fresh.append(var)
    parts: list[cons.Constraint] = [
        cons.BinConstraintD(old, new, ops.op_precision) for new, old in zip(fresh, declared.dims)
    ]
    parts.append(_shape_is(constraint.rhs, fresh))
    # Annotated dimensions are at least 1.
    parts += [cons.BinConstraintD(1, new, ops.op_leq) for new in fresh]
    return cons.Conj(parts), counter


def _tensor_matching(constraint: cons.BinConstraintT, counter: int) -> tuple[cons.Constraint, int]:
    pattern = constraint.rhs
    if not isinstance(pattern, TensorType):
        raise AssertionError(f"Expected TensorType, got {type(pattern)}")
    dims = [pattern.dims[i] for i in range(4)]
    unknown = [cons.BinConstraintT(constraint.lhs, Dyn, ops.op_eq)]
    unknown += [cons.BinConstraintD(d, Dyn, ops.op_eq) for d in dims]
    return cons.Disj([cons.Conj(unknown), _shape_is(constraint.lhs, dims)]), counter


def _tensor_consistency(
    constraint: cons.BinConstraintT, counter: int
) -> tuple[cons.Constraint, int]:
    either_dyn = cons.Disj(
        [
            cons.BinConstraintT(constraint.lhs, Dyn, ops.op_eq),
            cons.BinConstraintT(constraint.rhs, Dyn, ops.op_eq),
        ]
    )
    by_rank, counter = gen_consistency_constraints(constraint, counter)
    return cons.Disj([either_dyn, *by_rank]), counter


def _tensor_rank_bound(
    constraint: cons.BinConstraintT, counter: int
) -> tuple[cons.Constraint, int]:
    bound = constraint.rhs
    if not isinstance(bound, int):
        raise AssertionError(f"Expected int, got {type(bound)}")
    cases: list[cons.Constraint] = [cons.BinConstraintT(constraint.lhs, Dyn, ops.op_eq)]
    for rank in range(1, bound + 1):
        dims, counter = gen_tensor_dims(rank, counter)
        cases.append(_shape_is(constraint.lhs, dims))
    return cons.Disj(cases), counter


_TENSOR_RELATIONS = {
    ops.op_precision: _tensor_precision,
    ops.op_matching: _tensor_matching,
    ops.op_consistency: _tensor_consistency,
    ops.op_leq: _tensor_rank_bound,
}


@register_transformation_rule(cons.BinConstraintT)
def generate_binconstraint_t(
    constraint: cons.Constraint, counter: int
) -> tuple[cons.Constraint, int]:
    """Tensor relations: precision (``declared ⊑ t``), matching a rank-4 pattern, consistency
    (``~``) and rank bounds (``t ≤ n``) become equalities per rank; ``=`` is final."""
    _expect_type(constraint, cons.BinConstraintT)
    expand = _TENSOR_RELATIONS.get(constraint.op)
    if expand is None:
        return constraint, counter
    return expand(constraint, counter)


@register_transformation_rule(cons.BinConstraintD)
def generate_binconstraint_d(
    constraint: cons.Constraint, counter: int
) -> tuple[cons.Constraint, int]:
    """Dimension precision (a number must be equal, ``Dyn`` allows anything) and consistency
    (equal, or either is ``Dyn``); other relations are final."""
    _expect_type(constraint, cons.BinConstraintD)
    lhs, rhs = constraint.lhs, constraint.rhs
    if constraint.op == ops.op_precision:
        if isinstance(lhs, int):
            return cons.BinConstraintD(lhs, rhs, ops.op_eq), counter
        return (cons.T(), counter) if lhs == Dyn else (constraint, counter)
    if constraint.op == ops.op_consistency:
        options = [
            cons.BinConstraintD(lhs, rhs, ops.op_eq),
            cons.BinConstraintD(rhs, Dyn, ops.op_eq),
            cons.BinConstraintD(lhs, Dyn, ops.op_eq),
        ]
        return cons.Disj(options), counter
    return constraint, counter


def _rewrite_members(
    members: list[cons.Constraint], counter: int
) -> tuple[list[cons.Constraint], int]:
    rewritten = []
    for member in members:
        member, counter = transform_constraint(member, counter)
        rewritten.append(member)
    return rewritten, counter


@register_transformation_rule(cons.Conj)
def generate_conj(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """Rewrite every conjunct."""
    _expect_type(constraint, cons.Conj)
    members, counter = _rewrite_members(constraint.conjucts, counter)
    return cons.Conj(members), counter


@register_transformation_rule(cons.Disj)
def generate_disj(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """Rewrite every disjunct."""
    _expect_type(constraint, cons.Disj)
    members, counter = _rewrite_members(constraint.disjuncts, counter)
    return cons.Disj(members), counter


# --------------------------------------------------------------------------- upper bounds


def gen_greatest_upper_bound(
    constraint: cons.Constraint, counter: int
) -> tuple[list[cons.Constraint], int]:
    """For ranks 1-4: the two operands and the result have that rank, and each result
    dimension is the upper bound of the operands' (:class:`DGreatestUpperBound`)."""
    cases: list[cons.Constraint] = []
    for rank in range(1, _MAX_RANK + 1):
        first, counter = gen_tensor_dims(rank, counter)
        second, counter = gen_tensor_dims(rank, counter)
        result, counter = gen_tensor_dims(rank, counter)
        parts: list[cons.Constraint] = [
            _shape_is(constraint.rhs1, first),
            _shape_is(constraint.rhs2, second),
            _shape_is(constraint.res, result),
            *gen_nat_constraints(first + second + result),
        ]
        parts += [cons.DGreatestUpperBound(r, a, b) for r, a, b in zip(result, first, second)]
        cases.append(cons.Conj(parts))
    return cases, counter


@register_transformation_rule(cons.TGreatestUpperBound)
def generate_gub(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """Tensor upper bound: Dyn if an operand is, else per rank (see
    :func:`gen_greatest_upper_bound`)."""
    _expect_type(constraint, cons.TGreatestUpperBound)
    some_dyn = cons.Disj(
        [
            cons.BinConstraintT(constraint.rhs1, Dyn, ops.op_eq),
            cons.BinConstraintT(constraint.rhs2, Dyn, ops.op_eq),
        ]
    )
    unknown = cons.Conj([some_dyn, cons.BinConstraintT(constraint.res, Dyn, ops.op_eq)])
    by_rank, counter = gen_greatest_upper_bound(constraint, counter)
    return cons.Disj([unknown, *by_rank]), counter


@register_transformation_rule(cons.DGreatestUpperBound)
def generate_d_gub(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """Dimension upper bound: the other operand if one is Dyn, else both are equal to it."""
    _expect_type(constraint, cons.DGreatestUpperBound)
    res, a, b = constraint.res, constraint.rhs1, constraint.rhs2

    def case(condition: cons.BinConstraintD, value: Any) -> cons.Conj:
        return cons.Conj([condition, cons.BinConstraintD(res, value, ops.op_eq)])

    return cons.Disj(
        [
            case(cons.BinConstraintD(a, Dyn, ops.op_eq), b),
            case(cons.BinConstraintD(b, Dyn, ops.op_eq), a),
            case(cons.BinConstraintD(b, a, ops.op_eq), a),
        ]
    ), counter


# --------------------------------------------------------------------------- conv / pooling


def _pair(value: Any) -> Any:
    return (value, value) if isinstance(value, int) else value


def _spatial_output(
    out_dim: Any, in_dim: Any, kernel: int, pad: int, stride: int, dil: int
) -> cons.Disj:
    """Dyn in and out, or ``out = (in + 2*pad - dil*(kernel-1) - 1) / stride + 1``."""
    unknown = cons.Conj(
        [cons.BinConstraintD(out_dim, Dyn, ops.op_eq), cons.BinConstraintD(in_dim, Dyn, ops.op_eq)]
    )
    known = cons.Conj(
        [
            cons.BinConstraintD(out_dim, Dyn, ops.op_neq),
            cons.BinConstraintD(in_dim, Dyn, ops.op_neq),
        ]
    )
    padded = cons.BinConstraintD(in_dim, cons.BinConstraintD(2, pad, ops.op_mul), ops.op_add)
    span = cons.BinConstraintD(dil, cons.BinConstraintD(kernel, 1, ops.op_sub), ops.op_mul)
    reach = cons.BinConstraintD(cons.BinConstraintD(padded, span, ops.op_sub), 1, ops.op_sub)
    size = cons.BinConstraintD(cons.BinConstraintD(reach, stride, ops.op_div), 1, ops.op_add)
    return cons.Disj([unknown, cons.Conj([known, cons.BinConstraintD(out_dim, size, ops.op_eq)])])


def calc_last_two_dims(
    constraint: cons.Constraint, d: list[cons.DVar]
) -> tuple[cons.Constraint, cons.Constraint]:
    """Constraints for the two spatial output dims ``d[2]``, ``d[3]`` of a convolution or max
    pooling from its input dims, kernel, padding, stride and dilation."""
    if not isinstance(constraint, (cons.CalcConv, cons.CalcMaxPool)):
        raise AssertionError(f"Expected CalcConv or CalcMaxPool, got {type(constraint)}")
    geometry = [_pair(g) for g in (constraint.kernel, constraint.padding)]
    geometry += [_pair(g) for g in (constraint.stride, constraint.dilation)]
    kernel, padding, stride, dilation = geometry
    inputs = constraint.matching_constraint
    height, width = (
        _spatial_output(d[2 + k], inputs[2 + k], kernel[k], padding[k], stride[k], dilation[k])
        for k in (0, 1)
    )
    return height, width


def _naturals(dims: list[cons.DVar]) -> cons.Conj:
    return cons.Conj([cons.BinConstraintD(0, d, ops.op_leq) for d in dims])


@register_transformation_rule(cons.CalcConv)
def generate_calc_conv(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """Convolution output: rank 4, batch from the input, ``c_out`` channels, spatial dims
    from :func:`calc_last_two_dims`."""
    _expect_type(constraint, cons.CalcConv)
    d, counter = gen_tensor_dims(4, counter)
    channels = cons.Conj(
        [
            cons.BinConstraintD(d[1], constraint.c_out, ops.op_eq),
            cons.BinConstraintD(d[1], Dyn, ops.op_neq),
        ]
    )
    batch = cons.BinConstraintD(constraint.matching_constraint[0], d[0], ops.op_eq)
    height, width = calc_last_two_dims(constraint, d)
    shape = _shape_is(constraint.conv_result, d[:4])
    return cons.Conj([shape, channels, batch, height, width, _naturals(d)]), counter


@register_transformation_rule(cons.CalcMaxPool)
def generate_calc_maxpool(constraint: cons.Constraint, counter: int) -> tuple[cons.Constraint, int]:
    """Max-pooling output: rank 4, batch and channels from the input, spatial dims from
    :func:`calc_last_two_dims`."""
    _expect_type(constraint, cons.CalcMaxPool)
    d, counter = gen_tensor_dims(4, counter)
    source = constraint.matching_constraint
    channels = cons.BinConstraintD(source[1], d[1], ops.op_eq)
    batch = cons.BinConstraintD(source[0], d[0], ops.op_eq)
    height, width = calc_last_two_dims(constraint, d)
    shape = _shape_is(constraint.maxpool_result, d[:4])
    return cons.Conj([shape, channels, batch, height, width, _naturals(d)]), counter


# The shape-arithmetic expansions live in ``_transformation_shapes``.
register_transformation_rule(cons.CalcProduct)(generate_calc_product)
register_transformation_rule(cons.CanReshape)(generate_reshape)
register_transformation_rule(cons.ApplyBroadcasting)(generate_broadcasting)


# --------------------------------------------------------------------------- fixed point


def _transform_pass(
    constraint: cons.Constraint, counter: int, settled: set[int]
) -> tuple[cons.Constraint, int, bool]:
    """One rewriting pass, equivalent to :func:`transform_constraint` on the whole tree, that
    skips subtrees known to be in final form (``settled`` holds their ids) and reports
    whether anything changed. Rules never allocate variables for a constraint they leave
    unchanged, so skipping settled subtrees keeps the numbering identical."""
    if id(constraint) in settled:
        return constraint, counter, False
    kind = type(constraint)
    if kind is cons.Conj or kind is cons.Disj:
        members = constraint.conjucts if kind is cons.Conj else constraint.disjuncts
        changed = False
        rewritten = []
        for member in members:
            member, counter, member_changed = _transform_pass(member, counter, settled)
            changed = changed or member_changed
            rewritten.append(member)
        if not changed:
            settled.add(id(constraint))
            return constraint, counter, False
        return kind(rewritten), counter, True
    rule = _TRANSFORMATION_RULES.get(kind)
    if rule is None:
        settled.add(id(constraint))
        return constraint, counter, False
    result, counter = rule(constraint, counter)
    if result is constraint or result == constraint:
        settled.add(id(constraint))
        return constraint, counter, False
    return result, counter, True


def _transform_until_stable(
    constraint: cons.Constraint, counter: int
) -> tuple[cons.Constraint, int]:
    """Repeat rewriting passes until one changes nothing."""
    settled: set[int] = set()
    changed = True
    while changed:
        constraint, counter, changed = _transform_pass(constraint, counter, settled)
    return constraint, counter
