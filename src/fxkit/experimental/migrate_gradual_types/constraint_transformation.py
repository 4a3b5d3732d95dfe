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
from fxkit.experimental.migrate_gradual_types.constraint import (
    ApplyBroadcasting,
    BinConstraintD,
    BinConstraintT,
    CalcConv,
    CalcMaxPool,
    CalcProduct,
    CanReshape,
    Conj,
    Constraint,
    DGreatestUpperBound,
    Disj,
    DVar,
    F,
    GetItem,
    GetItemTensor,
    IndexSelect,
    T,
    TGreatestUpperBound,
    Transpose,
)
from fxkit.experimental.migrate_gradual_types.operation import (
    op_add,
    op_consistency,
    op_div,
    op_eq,
    op_leq,
    op_matching,
    op_mul,
    op_neq,
    op_precision,
    op_sub,
)
from fxkit.experimental.migrate_gradual_types.util import (
    gen_dvar,
    gen_nat_constraints,
    gen_tensor_dims,
)
from fxkit.tensor_type import Dyn, TensorType

__all__ = [
    "apply_padding",
    "broadcast_dim",
    "calc_last_two_dims",
    "create_equality_constraints_for_broadcasting",
    "gen_all_reshape_possibilities",
    "gen_broadcasting_constraints",
    "gen_consistency_constraints",
    "gen_greatest_upper_bound",
    "gen_lists_of_dims",
    "generate_all_broadcasting_possibilities_no_padding",
    "generate_all_int_dyn_dim_possibilities",
    "generate_binconstraint_d",
    "generate_binconstraint_t",
    "generate_broadcasting",
    "generate_calc_conv",
    "generate_calc_maxpool",
    "generate_calc_product",
    "generate_conj",
    "generate_d_gub",
    "generate_disj",
    "generate_gub",
    "generate_reshape",
    "is_dim_div_by_target",
    "is_target_div_by_dim",
    "no_broadcast_dim_with_index",
    "register_transformation_rule",
    "transform_constraint",
    "transform_get_item",
    "transform_get_item_tensor",
    "transform_index_select",
    "transform_transpose",
    "valid_index",
    "valid_index_tensor",
]

_Rewrite = Callable[[Constraint, int], "tuple[Constraint, int]"]
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


def transform_constraint(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """One rewriting step of ``constraint`` (unchanged if no rule applies to its class)."""
    rule = _TRANSFORMATION_RULES.get(type(constraint))
    if rule is None:
        return constraint, counter
    return rule(constraint, counter)


def _expect_type(constraint: Constraint, cls: type) -> None:
    if not isinstance(constraint, cls):
        raise TypeError(type(constraint))


def _shape_is(var: Any, dims: Any) -> BinConstraintT:
    return BinConstraintT(var, TensorType(dims), op_eq)


# --------------------------------------------------------------------------- indexing


def valid_index(index: int, dims: list[DVar]) -> Constraint:
    """:class:`T` if ``dims[index]`` exists, else :class:`F`."""
    position = operator.index(index)  # non-integers are a TypeError, as for list indexing
    return T() if -len(dims) <= position < len(dims) else F()


def valid_index_tensor(index: tuple[Any, ...], dims: list[DVar]) -> Constraint:
    """:class:`F` if the index tuple has more slices than there are dimensions."""
    slices = sum(1 for entry in index if isinstance(entry, slice))
    return F() if slices > len(dims) else T()


@register_transformation_rule(Transpose)
def transform_transpose(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """For the assumed rank: fresh input dims, both indices valid, output with them swapped."""
    _expect_type(constraint, Transpose)
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    first_ok = valid_index(constraint.index1, dims)
    second_ok = valid_index(constraint.index2, dims)
    swapped = list(dims)
    if first_ok == T() and second_ok == T():
        i, j = constraint.index1, constraint.index2
        swapped[i], swapped[j] = dims[j], dims[i]
    parts = [_shape_is(constraint.input_var, dims), *gen_nat_constraints(dims)]
    parts += [first_ok, second_ok, _shape_is(constraint.output, swapped)]
    return Conj(parts), counter


@register_transformation_rule(IndexSelect)
def transform_index_select(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """For the assumed rank: fresh input dims, a valid index, and the output with that
    dimension replaced."""
    _expect_type(constraint, IndexSelect)
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    index_ok = valid_index(constraint.index, dims)
    replaced: list[Any] = list(dims)
    if index_ok == T():
        replaced[constraint.index] = constraint.dim_replace
    parts = [_shape_is(constraint.input_var, dims), *gen_nat_constraints(dims)]
    parts += [index_ok, _shape_is(constraint.output, replaced)]
    return Conj(parts), counter


@register_transformation_rule(GetItem)
def transform_get_item(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """For the assumed rank (the Dyn case was generated separately): fresh input dims, a
    valid index, and the result equal to the indexed dimension."""
    _expect_type(constraint, GetItem)
    dims, counter = gen_tensor_dims(constraint.tensor_size, counter)
    index_ok = valid_index(constraint.index, dims)
    parts = [_shape_is(constraint.input_var, dims), *gen_nat_constraints(dims), index_ok]
    if index_ok == T():
        parts.append(BinConstraintD(constraint.res, dims[constraint.index], op_eq))
    return Conj(parts), counter


@register_transformation_rule(GetItemTensor)
def transform_get_item_tensor(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Index tuples of full slices and ``None``: each ``None`` inserts a 1 at its position,
    slices keep the input's dimensions. Results above rank 4 are :class:`F`."""
    _expect_type(constraint, GetItemTensor)
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
        return F(), counter
    parts = [_shape_is(constraint.input_var, dims), _shape_is(constraint.res, result)]
    return Conj([*parts, *naturals, index_ok]), counter


# --------------------------------------------------------------------------- binary relations


def gen_consistency_constraints(
    constraint: Constraint, counter: int
) -> tuple[list[Constraint], int]:
    """For ranks 1-4: both sides of the tensor consistency ``constraint`` have that rank and
    are consistent dimension by dimension."""
    cases: list[Constraint] = []
    for rank in range(1, _MAX_RANK + 1):
        left, counter = gen_tensor_dims(rank, counter)
        right, counter = gen_tensor_dims(rank, counter)
        parts = [_shape_is(constraint.lhs, left), _shape_is(constraint.rhs, right)]
        parts += [BinConstraintD(a, b, op_consistency) for a, b in zip(left, right)]
        cases.append(Conj(parts + gen_nat_constraints(left + right)))
    return cases, counter


def _tensor_precision(constraint: BinConstraintT, counter: int) -> tuple[Constraint, int]:
    declared = constraint.lhs
    if declared == Dyn:
        return T(), counter
    if not isinstance(declared, TensorType):
        return constraint, counter
    if all(d != Dyn for d in declared.dims):
        return BinConstraintT(declared, constraint.rhs, op_eq), counter
    fresh = []
    for _ in declared.dims:
        var, counter = gen_dvar(counter)
        fresh.append(var)
    parts: list[Constraint] = [
        BinConstraintD(old, new, op_precision) for new, old in zip(fresh, declared.dims)
    ]
    parts.append(_shape_is(constraint.rhs, fresh))
    # Annotated dimensions are at least 1.
    parts += [BinConstraintD(1, new, op_leq) for new in fresh]
    return Conj(parts), counter


def _tensor_matching(constraint: BinConstraintT, counter: int) -> tuple[Constraint, int]:
    pattern = constraint.rhs
    if not isinstance(pattern, TensorType):
        raise AssertionError(f"Expected TensorType, got {type(pattern)}")
    dims = [pattern.dims[i] for i in range(4)]
    unknown = [BinConstraintT(constraint.lhs, Dyn, op_eq)]
    unknown += [BinConstraintD(d, Dyn, op_eq) for d in dims]
    return Disj([Conj(unknown), _shape_is(constraint.lhs, dims)]), counter


def _tensor_consistency(constraint: BinConstraintT, counter: int) -> tuple[Constraint, int]:
    either_dyn = Disj(
        [BinConstraintT(constraint.lhs, Dyn, op_eq), BinConstraintT(constraint.rhs, Dyn, op_eq)]
    )
    by_rank, counter = gen_consistency_constraints(constraint, counter)
    return Disj([either_dyn, *by_rank]), counter


def _tensor_rank_bound(constraint: BinConstraintT, counter: int) -> tuple[Constraint, int]:
    bound = constraint.rhs
    if not isinstance(bound, int):
        raise AssertionError(f"Expected int, got {type(bound)}")
    cases: list[Constraint] = [BinConstraintT(constraint.lhs, Dyn, op_eq)]
    for rank in range(1, bound + 1):
        dims, counter = gen_tensor_dims(rank, counter)
        cases.append(_shape_is(constraint.lhs, dims))
    return Disj(cases), counter


_TENSOR_RELATIONS = {
    op_precision: _tensor_precision,
    op_matching: _tensor_matching,
    op_consistency: _tensor_consistency,
    op_leq: _tensor_rank_bound,
}


@register_transformation_rule(BinConstraintT)
def generate_binconstraint_t(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Tensor relations: precision (``declared ⊑ t``), matching a rank-4 pattern, consistency
    (``~``) and rank bounds (``t ≤ n``) become equalities per rank; ``=`` is final."""
    _expect_type(constraint, BinConstraintT)
    expand = _TENSOR_RELATIONS.get(constraint.op)
    if expand is None:
        return constraint, counter
    return expand(constraint, counter)


@register_transformation_rule(BinConstraintD)
def generate_binconstraint_d(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Dimension precision (a number must be equal, ``Dyn`` allows anything) and consistency
    (equal, or either is ``Dyn``); other relations are final."""
    _expect_type(constraint, BinConstraintD)
    lhs, rhs = constraint.lhs, constraint.rhs
    if constraint.op == op_precision:
        if isinstance(lhs, int):
            return BinConstraintD(lhs, rhs, op_eq), counter
        return (T(), counter) if lhs == Dyn else (constraint, counter)
    if constraint.op == op_consistency:
        options = [
            BinConstraintD(lhs, rhs, op_eq),
            BinConstraintD(rhs, Dyn, op_eq),
            BinConstraintD(lhs, Dyn, op_eq),
        ]
        return Disj(options), counter
    return constraint, counter


def _rewrite_members(members: list[Constraint], counter: int) -> tuple[list[Constraint], int]:
    rewritten = []
    for member in members:
        member, counter = transform_constraint(member, counter)
        rewritten.append(member)
    return rewritten, counter


@register_transformation_rule(Conj)
def generate_conj(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Rewrite every conjunct."""
    _expect_type(constraint, Conj)
    members, counter = _rewrite_members(constraint.conjucts, counter)
    return Conj(members), counter


@register_transformation_rule(Disj)
def generate_disj(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Rewrite every disjunct."""
    _expect_type(constraint, Disj)
    members, counter = _rewrite_members(constraint.disjuncts, counter)
    return Disj(members), counter


# --------------------------------------------------------------------------- upper bounds


def gen_greatest_upper_bound(constraint: Constraint, counter: int) -> tuple[list[Constraint], int]:
    """For ranks 1-4: the two operands and the result have that rank, and each result
    dimension is the upper bound of the operands' (:class:`DGreatestUpperBound`)."""
    cases: list[Constraint] = []
    for rank in range(1, _MAX_RANK + 1):
        first, counter = gen_tensor_dims(rank, counter)
        second, counter = gen_tensor_dims(rank, counter)
        result, counter = gen_tensor_dims(rank, counter)
        parts: list[Constraint] = [
            _shape_is(constraint.rhs1, first),
            _shape_is(constraint.rhs2, second),
            _shape_is(constraint.res, result),
            *gen_nat_constraints(first + second + result),
        ]
        parts += [DGreatestUpperBound(r, a, b) for r, a, b in zip(result, first, second)]
        cases.append(Conj(parts))
    return cases, counter


@register_transformation_rule(TGreatestUpperBound)
def generate_gub(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Tensor upper bound: Dyn if an operand is, else per rank (see
    :func:`gen_greatest_upper_bound`)."""
    _expect_type(constraint, TGreatestUpperBound)
    some_dyn = Disj(
        [BinConstraintT(constraint.rhs1, Dyn, op_eq), BinConstraintT(constraint.rhs2, Dyn, op_eq)]
    )
    unknown = Conj([some_dyn, BinConstraintT(constraint.res, Dyn, op_eq)])
    by_rank, counter = gen_greatest_upper_bound(constraint, counter)
    return Disj([unknown, *by_rank]), counter


@register_transformation_rule(DGreatestUpperBound)
def generate_d_gub(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Dimension upper bound: the other operand if one is Dyn, else both are equal to it."""
    _expect_type(constraint, DGreatestUpperBound)
    res, a, b = constraint.res, constraint.rhs1, constraint.rhs2

    def case(condition: BinConstraintD, value: Any) -> Conj:
        return Conj([condition, BinConstraintD(res, value, op_eq)])

    return Disj(
        [
            case(BinConstraintD(a, Dyn, op_eq), b),
            case(BinConstraintD(b, Dyn, op_eq), a),
            case(BinConstraintD(b, a, op_eq), a),
        ]
    ), counter


# --------------------------------------------------------------------------- conv / pooling


def _pair(value: Any) -> Any:
    return (value, value) if isinstance(value, int) else value


def _spatial_output(
    out_dim: Any, in_dim: Any, kernel: int, pad: int, stride: int, dil: int
) -> Disj:
    """Dyn in and out, or ``out = (in + 2*pad - dil*(kernel-1) - 1) / stride + 1``."""
    unknown = Conj([BinConstraintD(out_dim, Dyn, op_eq), BinConstraintD(in_dim, Dyn, op_eq)])
    known = Conj([BinConstraintD(out_dim, Dyn, op_neq), BinConstraintD(in_dim, Dyn, op_neq)])
    padded = BinConstraintD(in_dim, BinConstraintD(2, pad, op_mul), op_add)
    span = BinConstraintD(dil, BinConstraintD(kernel, 1, op_sub), op_mul)
    reach = BinConstraintD(BinConstraintD(padded, span, op_sub), 1, op_sub)
    size = BinConstraintD(BinConstraintD(reach, stride, op_div), 1, op_add)
    return Disj([unknown, Conj([known, BinConstraintD(out_dim, size, op_eq)])])


def calc_last_two_dims(constraint: Constraint, d: list[DVar]) -> tuple[Constraint, Constraint]:
    """Constraints for the two spatial output dims ``d[2]``, ``d[3]`` of a convolution or max
    pooling from its input dims, kernel, padding, stride and dilation."""
    if not isinstance(constraint, (CalcConv, CalcMaxPool)):
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


def _naturals(dims: list[DVar]) -> Conj:
    return Conj([BinConstraintD(0, d, op_leq) for d in dims])


@register_transformation_rule(CalcConv)
def generate_calc_conv(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Convolution output: rank 4, batch from the input, ``c_out`` channels, spatial dims
    from :func:`calc_last_two_dims`."""
    _expect_type(constraint, CalcConv)
    d, counter = gen_tensor_dims(4, counter)
    channels = Conj(
        [BinConstraintD(d[1], constraint.c_out, op_eq), BinConstraintD(d[1], Dyn, op_neq)]
    )
    batch = BinConstraintD(constraint.matching_constraint[0], d[0], op_eq)
    height, width = calc_last_two_dims(constraint, d)
    shape = _shape_is(constraint.conv_result, d[:4])
    return Conj([shape, channels, batch, height, width, _naturals(d)]), counter


@register_transformation_rule(CalcMaxPool)
def generate_calc_maxpool(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Max-pooling output: rank 4, batch and channels from the input, spatial dims from
    :func:`calc_last_two_dims`."""
    _expect_type(constraint, CalcMaxPool)
    d, counter = gen_tensor_dims(4, counter)
    source = constraint.matching_constraint
    channels = BinConstraintD(source[1], d[1], op_eq)
    batch = BinConstraintD(source[0], d[0], op_eq)
    height, width = calc_last_two_dims(constraint, d)
    shape = _shape_is(constraint.maxpool_result, d[:4])
    return Conj([shape, channels, batch, height, width, _naturals(d)]), counter


# The shape-arithmetic expansions live in ``_transformation_shapes``.
register_transformation_rule(CalcProduct)(generate_calc_product)
register_transformation_rule(CanReshape)(generate_reshape)
register_transformation_rule(ApplyBroadcasting)(generate_broadcasting)


# --------------------------------------------------------------------------- fixed point


def _transform_pass(
    constraint: Constraint, counter: int, settled: set[int]
) -> tuple[Constraint, int, bool]:
    """One rewriting pass, equivalent to :func:`transform_constraint` on the whole tree, that
    skips subtrees known to be in final form (``settled`` holds their ids) and reports
    whether anything changed. Rules never allocate variables for a constraint they leave
    unchanged, so skipping settled subtrees keeps the numbering identical."""
    if id(constraint) in settled:
        return constraint, counter, False
    kind = type(constraint)
    if kind is Conj or kind is Disj:
        members = constraint.conjucts if kind is Conj else constraint.disjuncts
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


def _transform_until_stable(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Repeat rewriting passes until one changes nothing."""
    settled: set[int] = set()
    changed = True
    while changed:
        constraint, counter, changed = _transform_pass(constraint, counter, settled)
    return constraint, counter
