"""Expansion of the shape-arithmetic constraints: broadcasting (:class:`ApplyBroadcasting`),
reshape (:class:`CanReshape`) and flatten (:class:`CalcProduct`).

Each expansion enumerates the ranks (1-4) an operand may have and, per rank, the ways its
dimensions may be ``Dyn``, 1, or anything else; fresh variables are allocated in the same
order as torch.fx's expansions, so both number them identically. The functions are
registered as transformation rules by :mod:`.constraint_transformation`.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from fxkit.experimental.migrate_gradual_types.constraint import (
    ApplyBroadcasting,
    BinConstraintD,
    BinConstraintT,
    CalcProduct,
    CanReshape,
    Conj,
    Constraint,
    Disj,
    DVar,
    F,
    Prod,
    T,
    TVar,
)
from fxkit.experimental.migrate_gradual_types.operation import (
    op_eq,
    op_leq,
    op_mod,
    op_neq,
)
from fxkit.experimental.migrate_gradual_types.util import (
    gen_dvar,
    gen_nat_constraints,
    gen_tensor_dims,
)
from fxkit.tensor_type import Dyn, TensorType

_MAX_RANK = 4


def _is_dyn(d: Any) -> BinConstraintD:
    return BinConstraintD(d, Dyn, op_eq)


def _not_dyn(d: Any) -> BinConstraintD:
    return BinConstraintD(d, Dyn, op_neq)


def _shape_is(var: Any, dims: Sequence[Any]) -> BinConstraintT:
    return BinConstraintT(var, TensorType(dims), op_eq)


def _expect_type(constraint: Constraint, cls: type) -> None:
    if not isinstance(constraint, cls):
        raise TypeError(type(constraint))


# --------------------------------------------------------------------------- Dyn-or-not cases


def generate_all_int_dyn_dim_possibilities(my_list: list[DVar]) -> list[tuple[BinConstraintD, ...]]:
    """Every assignment of "is Dyn" / "is not Dyn" to the dimensions of ``my_list``, as
    tuples of constraints (the first dimension varies slowest, "is Dyn" first)."""
    choices = [(_is_dyn(d), _not_dyn(d)) for d in my_list]
    return list(itertools.product(*choices))


# --------------------------------------------------------------------------- flatten


def generate_calc_product(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Expand :class:`CalcProduct`: per Dyn-assignment of the flattened range, the output is
    the untouched prefix, then Dyn (if any flattened dim is) or a fresh dimension equal to
    their product, then the untouched suffix; the range must be within bounds."""
    _expect_type(constraint, CalcProduct)
    start, end = constraint.start, constraint.end
    dims = constraint.dims_to_flatten
    in_bounds = T() if 0 <= start < end <= len(dims) else F()
    head, middle, tail = dims[:start], dims[start:end], dims[end:]

    cases: list[Constraint] = []
    for choice in generate_all_int_dyn_dim_possibilities(middle):
        choice = list(choice)
        all_known = all(c.op == op_neq for c in choice)
        if all_known:
            merged, counter = gen_dvar(counter)
            extra = [Conj([BinConstraintD(merged, Prod(middle), op_eq), _not_dyn(merged)])]
        else:
            merged, extra = Dyn, []
        shape = [*head, merged, *tail]
        if len(shape) > _MAX_RANK:
            cases.append(F())
        else:
            cases.append(Conj([_shape_is(constraint.flattened, shape), *extra, *choice]))
    return Conj([Disj(cases), in_bounds]), counter


# --------------------------------------------------------------------------- reshape


def is_target_div_by_dim(target: Sequence[Any], dim: Any) -> BinConstraintD:
    """``prod(target) % dim == 0``."""
    return BinConstraintD(BinConstraintD(Prod(target), dim, op_mod), 0, op_eq)


def is_dim_div_by_target(target: Sequence[Any], dim: Any) -> BinConstraintD:
    """``dim % prod(target) == 0``."""
    return BinConstraintD(BinConstraintD(dim, Prod(target), op_mod), 0, op_eq)


def gen_all_reshape_possibilities(list_of_dims: list[DVar], target: Sequence[Any]) -> Constraint:
    """For a fully known ``target``: per Dyn-assignment of ``list_of_dims``, nothing more if
    all are Dyn, divisibility of the target by the known ones if some are, equal products if
    none is."""
    cases: list[Constraint] = []
    for choice in generate_all_int_dyn_dim_possibilities(list_of_dims):
        choice = list(choice)
        for c in choice:
            if not isinstance(c, BinConstraintD):
                raise AssertionError(f"Expected BinConstraintD, got {type(c)}")
        known = [c.lhs for c in choice if c.op == op_neq]
        if not known:
            cases.append(Conj(choice))
        elif len(known) < len(list_of_dims):
            cases.append(Conj([*choice, is_target_div_by_dim(target, Prod(known))]))
        else:
            same_size = BinConstraintD(Prod(list_of_dims), Prod(target), op_eq)
            cases.append(Conj([*choice, same_size]))
    return Disj(cases)


def generate_reshape(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Expand :class:`CanReshape`: the source is Dyn or has rank 1-4, and its number of
    elements is compatible with the target's (equal when the target is fully known; a
    multiple of the known part when the target has one Dyn)."""
    _expect_type(constraint, CanReshape)
    d, counter = gen_tensor_dims(4, counter)
    target = constraint.target.dims
    src = constraint.src
    # torch.fx tests the third dimension where the fourth is meant in its rank-4 clauses;
    # reproduced so that both libraries produce the same constraints and verdicts.
    dyn_tests = [_is_dyn(d[0]), _is_dyn(d[1]), _is_dyn(d[2]), _is_dyn(d[2])]
    known_tests = [_not_dyn(d[0]), _not_dyn(d[1]), _not_dyn(d[2]), _not_dyn(d[2])]

    if all(size != Dyn for size in target):
        rank_one = Disj(
            [dyn_tests[0], Conj([known_tests[0], BinConstraintD(d[0], Prod(target), op_eq)])]
        )
        per_rank = [rank_one]
        per_rank += [gen_all_reshape_possibilities(d[:rank], target) for rank in (2, 3, 4)]
    else:
        known_target = [size for size in target if size != Dyn]
        rank_one = Disj(
            [dyn_tests[0], Conj([known_tests[0], is_dim_div_by_target(known_target, d[0])])]
        )
        per_rank = [rank_one]
        for rank in (2, 3, 4):
            divisible = is_dim_div_by_target(known_target, Prod(d[:rank]))
            per_rank.append(Disj([Disj(dyn_tests[:rank]), Conj([*known_tests[:rank], divisible])]))

    shapes = [BinConstraintT(src, Dyn, op_eq)]
    shapes += [Conj([_shape_is(src, d[:rank]), per_rank[rank - 1]]) for rank in (1, 2, 3, 4)]
    naturals = [BinConstraintD(0, dim, op_leq) for dim in d]
    return Conj([Disj(shapes), *naturals]), counter


# --------------------------------------------------------------------------- broadcasting


def broadcast_dim(
    tensor_input1: Sequence[Any],
    tensor_input2: Sequence[Any],
    res1: Sequence[Any],
    res2: Sequence[Any],
    index: int,
    padding: bool = False,
) -> Constraint:
    """Dimension ``index`` of input 1 is broadcast to input 2's: it is 1 (unless it is
    padding, i.e. absent) and both results take input 2's size there."""
    if tensor_input1[index] is None and not padding:
        raise AssertionError("Expected padding when tensor_input1[index] is None")
    results_follow_input2 = [
        BinConstraintD(res1[index], res2[index], op_eq),
        BinConstraintD(res2[index], tensor_input2[index], op_eq),
    ]
    if padding:
        return Conj(results_follow_input2)
    return Conj([BinConstraintD(tensor_input1[index], 1, op_eq), *results_follow_input2])


def no_broadcast_dim_with_index(
    d1: list[DVar], d2: list[DVar], d3: list[DVar], d4: list[DVar], i: int
) -> Constraint:
    """Dimension ``i`` is not broadcast: both inputs are 1 or neither is, and the results
    (``d3``, ``d4``) equal the inputs (``d1``, ``d2``)."""
    both_one = Conj([BinConstraintD(d1[i], 1, op_eq), BinConstraintD(d2[i], 1, op_eq)])
    neither_one = Conj([BinConstraintD(d1[i], 1, op_neq), BinConstraintD(d2[i], 1, op_neq)])
    return Conj(
        [
            Disj([both_one, neither_one]),
            BinConstraintD(d1[i], d3[i], op_eq),
            BinConstraintD(d2[i], d4[i], op_eq),
        ]
    )


def generate_all_broadcasting_possibilities_no_padding(
    d1: list[DVar], d2: list[DVar], d11: list[DVar], d12: list[DVar]
) -> Constraint:
    """Same-rank inputs ``d1``, ``d2``: at every dimension, input 1 is broadcast, input 2 is,
    or neither."""
    per_dim = []
    for i in range(len(d1)):
        per_dim.append(
            Disj(
                [
                    broadcast_dim(d1, d2, d11, d12, i),
                    broadcast_dim(d2, d1, d12, d11, i),
                    no_broadcast_dim_with_index(d1, d2, d11, d12, i),
                ]
            )
        )
    return Conj(per_dim)


def apply_padding(
    e1_var: Any, e11: Any, e2: Any, e12: Any, d2: list, d11: list, d12: list, counter: int
) -> tuple[Constraint, int]:
    """The cases where input ``e1_var`` has a smaller rank than input 2 (dims ``d2``): it is
    padded on the left, the padded positions take input 2's sizes, and the remaining ones
    broadcast as usual. ``e11``/``e2``/``e12`` are the shape constraints of the broadcast
    result 1, input 2 and result 2."""
    full_rank = len(d2)
    cases: list[Constraint] = []
    for rank in range(1, full_rank):
        d1, counter = gen_tensor_dims(rank, counter)
        naturals = gen_nat_constraints(d1 + d2 + d11 + d12)
        pad = full_rank - rank
        placeholders: list[Any] = [None] * pad
        padded = [broadcast_dim(placeholders, d2, d11, d12, j, True) for j in range(pad)]
        rest = generate_all_broadcasting_possibilities_no_padding(
            d1, d2[pad:], d11[pad:], d12[pad:]
        )
        cases.append(Conj([_shape_is(e1_var, d1), e11, e2, e12, *padded, rest, *naturals]))
    return Disj(cases), counter


def gen_lists_of_dims(
    num_tensors: int, dim_size: int, counter: int
) -> tuple[list[list[DVar]], int]:
    """``num_tensors`` lists of ``dim_size`` fresh dimension variables each."""
    # Each call of gen_tensor_dims advances the counter by ``step``, so every list's first
    # number is known up front.
    step = max(dim_size, 0)
    lists = [gen_tensor_dims(dim_size, counter + i * step)[0] for i in range(num_tensors)]
    return lists, counter + step * max(num_tensors, 0)


def create_equality_constraints_for_broadcasting(
    e1: Any, e2: Any, e11: Any, e12: Any, d1: list, d2: list, d11: list, d12: list
) -> list[BinConstraintT]:
    """``[e1 = d1, e11 = d11, e2 = d2, e12 = d12]`` (in that order)."""
    return [_shape_is(e1, d1), _shape_is(e11, d11), _shape_is(e2, d2), _shape_is(e12, d12)]


def gen_broadcasting_constraints(
    e1: TVar, e2: TVar, e11: TVar, e12: TVar, i: int, counter: int
) -> tuple[Constraint, Constraint, Constraint, list[BinConstraintD], int]:
    """The broadcasting cases whose result has rank ``i``: same-rank inputs, input 1 padded,
    input 2 padded; plus the natural-number constraints of the dimensions introduced."""
    (d1, d2, d3, d4), counter = gen_lists_of_dims(4, i, counter)
    naturals = gen_nat_constraints([*d1, *d2, *d3, *d4])
    shapes = create_equality_constraints_for_broadcasting(e1, e2, e11, e12, d1, d2, d3, d4)
    e1_shape, e11_shape, e2_shape, e12_shape = shapes
    same_rank = Conj([*shapes, generate_all_broadcasting_possibilities_no_padding(d1, d2, d3, d4)])
    pad_first, counter = apply_padding(e1, e11_shape, e2_shape, e12_shape, d2, d3, d4, counter)
    pad_second, counter = apply_padding(e2, e12_shape, e1_shape, e11_shape, d1, d4, d3, counter)
    return same_rank, pad_first, pad_second, naturals, counter


def generate_broadcasting(constraint: Constraint, counter: int) -> tuple[Constraint, int]:
    """Expand :class:`ApplyBroadcasting`: a Dyn input passes both inputs through unchanged;
    otherwise every result rank 1-4 is considered, with and without padding."""
    _expect_type(constraint, ApplyBroadcasting)
    e1, e2 = constraint.input1, constraint.input2
    e11, e12 = constraint.res1, constraint.res2
    passthrough = [BinConstraintT(e1, e11, op_eq), BinConstraintT(e2, e12, op_eq)]
    cases: list[Constraint] = [
        Conj([BinConstraintT(e1, Dyn, op_eq), *passthrough]),
        Conj([BinConstraintT(e2, Dyn, op_eq), *passthrough]),
    ]
    naturals: list[Constraint] = []
    for rank in range(1, _MAX_RANK + 1):
        same_rank, pad_first, pad_second, nat, counter = gen_broadcasting_constraints(
            e1, e2, e11, e12, rank, counter
        )
        # With rank 1 there is nothing to pad.
        cases += [same_rank] if rank == 1 else [same_rank, pad_first, pad_second]
        naturals += nat
    return Conj([Disj(cases), *naturals]), counter


__all__ = [
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
