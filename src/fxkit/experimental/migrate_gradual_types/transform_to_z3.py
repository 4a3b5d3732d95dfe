"""Encode transformed constraints as z3 formulas and ask the solver about traced programs.

The encoding (see :mod:`.z3_types`): a tensor variable ``TV(n)`` is the z3 constant ``n`` of
sort ``TensorType``; a dimension variable ``DV(n)`` is ``D(k, n)`` where the integer ``n``
holds its size and a fresh integer ``k`` says whether it is known (1) or ``Dyn`` (0); a
boolean variable ``BV(n)`` is the z3 Bool ``n``.

z3 is optional (``pip install fxkit[z3]``): this module imports without it (``HAS_Z3`` tells),
:func:`iterate_till_fixed_point` works without it, and the functions that build formulas or
call the solver raise an ImportError naming the extra.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

from fxkit.experimental.migrate_gradual_types import constraint as cons
from fxkit.experimental.migrate_gradual_types import operation as ops
from fxkit.experimental.migrate_gradual_types import z3_types
from fxkit.experimental.migrate_gradual_types.constraint_generator import ConstraintGenerator
from fxkit.experimental.migrate_gradual_types.constraint_transformation import (
    _transform_until_stable,
    transform_constraint,
)
from fxkit.tensor_type import Dyn, TensorType

__all__ = [
    # entry points
    "transform_all_constraints",
    "transform_all_constraints_trace_time",
    "evaluate_conditional_with_constraints",
    "iterate_till_fixed_point",
    # encoders
    "transform_to_z3",
    "transform_var",
    "transform_dimension",
    "transform_algebraic_expression",
]

HAS_Z3 = z3_types.HAS_Z3
z3 = z3_types.z3  # the solver module, or None without the extra

# Also reachable from here, as in torch.fx: the rewriting step and the z3 sorts.
_REEXPORTED = (transform_constraint,)


def __getattr__(name: str) -> Any:
    if name in ("D", "tensor_type", "z3_dyn"):
        return getattr(z3_types, name)  # an ImportError naming the extra without z3
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_F = TypeVar("_F", bound=Callable[..., Any])


def _needs_z3(fn: _F) -> _F:
    """Make ``fn`` raise a clear ImportError when z3 is not installed."""

    name = fn.__name__.lstrip("_")

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not z3_types.HAS_Z3:
            raise ImportError(f"{name}: {z3_types.MISSING_Z3_MESSAGE}")
        return fn(*args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    return guarded  # type: ignore[return-value]


def iterate_till_fixed_point(
    constraints: cons.Constraint, counter: int
) -> tuple[cons.Constraint, int]:
    """Apply :func:`~.constraint_transformation.transform_constraint` until the constraint
    stops changing; returns it with the updated counter. Does not need z3."""
    return _transform_until_stable(constraints, counter)


# --------------------------------------------------------------------------- terms


# z3 terms depend only on the numbers naming them, so they are memoised across calls (z3
# hash-conses terms anyway: the cache only saves the slow Python-side construction).
_TERM_CACHE: dict[Any, Any] = {}
_TERM_CACHE_LIMIT = 200_000


def _memo(key: Any, build: Callable[[], Any]) -> Any:
    term = _TERM_CACHE.get(key)
    if term is None:
        if len(_TERM_CACHE) >= _TERM_CACHE_LIMIT:
            _TERM_CACHE.clear()
        term = _TERM_CACHE[key] = build()
    return term


def _int(n: int) -> Any:
    return _memo(("int", n), lambda: z3.Int(n))


def _int_value(n: int) -> Any:
    return _memo(("val", n), lambda: z3.IntVal(n))


# The formula builders below call z3's C API directly: the operands are known to be z3
# terms of matching sorts, so the generic Python-side coercions of ``==``/``And``/``Or``
# (which dominate the encoding time) can be skipped. The terms built are the same.


def _equal(a: Any, b: Any) -> Any:
    ctx = a.ctx
    return z3.BoolRef(z3.Z3_mk_eq(ctx.ref(), a.as_ast(), b.as_ast()), ctx)


def _boolean(formula: Any) -> Any:
    if formula is True or formula is False:
        return _memo(("bool", formula), lambda: z3.BoolVal(formula))
    return formula


def _connective(make: Any, formulas: list[Any]) -> Any:
    ctx = z3.main_ctx()
    asts = (z3.Ast * len(formulas))()
    for i, formula in enumerate(formulas):
        asts[i] = _boolean(formula).as_ast()
    return z3.BoolRef(make(ctx.ref(), len(formulas), asts), ctx)


def _and(formulas: list[Any]) -> Any:
    return _connective(z3.Z3_mk_and, formulas)


def _or(formulas: list[Any]) -> Any:
    return _connective(z3.Z3_mk_or, formulas)


def _dimension_parts(
    dimension: Any, counter: int, dimension_dict: dict[int, int]
) -> tuple[tuple[Any, Any, Any], int]:
    """``(D(known, size), known, size)`` for a dimension, and the updated counter."""
    if isinstance(dimension, cons.DVar):
        flag = dimension_dict.get(dimension.c)
        if flag is None:
            counter += 1
            flag = dimension_dict[dimension.c] = counter
        size = dimension.c

        def build() -> tuple[Any, Any, Any]:
            known, value = _int(flag), _int(size)
            return z3_types.D(known, value), known, value

        return _memo(("dv", flag, size), build), counter
    if dimension == Dyn:
        counter += 1
        value = _int(counter)
        return (z3_types.D(0, value), _int_value(0), value), counter
    if isinstance(dimension, int):
        number = dimension

        def build_known() -> tuple[Any, Any, Any]:
            return z3_types.D(1, number), _int_value(1), _int_value(number)

        return _memo(("known", number), build_known), counter
    raise NotImplementedError(f"Unsupported dimension type: {type(dimension)}")


def _transform_dimension(
    dimension: Any, counter: int, dimension_dict: dict[int, int]
) -> tuple[Any, int]:
    """The z3 term ``D(known, size)`` of a dimension: ``Dyn`` gets a fresh size, a number is
    known, and a variable's "known" flag is allocated once and remembered in
    ``dimension_dict``."""
    parts, counter = _dimension_parts(dimension, counter, dimension_dict)
    return parts[0], counter


def _transform_var(tensor: Any, counter: int, dimension_dict: dict[int, int]) -> tuple[Any, int]:
    """The z3 term of a tensor type: a ``TensorType`` of rank 1-4, ``Dyn``, or a variable."""
    if isinstance(tensor, cons.TVar):
        number = tensor.tvar
        return _memo(("tv", number), lambda: z3.Const(number, z3_types.tensor_type)), counter
    if isinstance(tensor, TensorType):
        terms = []
        for d in tensor.dims:
            parts, counter = _dimension_parts(d, counter, dimension_dict)
            terms.append(parts[0])
        if len(terms) > 4:
            raise AssertionError(f"Expected res length <= 4, got {len(terms)}")
        if not terms:
            raise AssertionError(f"Unexpected tensor args length: {len(tensor.dims)}")
        key = ("tt", *(t.get_id() for t in terms))
        constructor = getattr(z3_types.tensor_type, f"tensor{len(terms)}")
        return _memo(key, lambda: constructor(*terms)), counter
    if tensor == Dyn:
        return z3_types.z3_dyn, counter
    raise NotImplementedError(f"Unsupported tensor type: {type(tensor)}")


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    ops.op_sub: lambda a, b: a - b,
    ops.op_add: lambda a, b: a + b,
    ops.op_div: lambda a, b: a / b,
    ops.op_mul: lambda a, b: a * b,
    ops.op_mod: lambda a, b: a % b,
}


def _transform_algebraic_expression(
    expr: Any, counter: int, dimension_dict: dict[int, int]
) -> tuple[Any, int]:
    """The z3 integer term of a dimension (its size) or of an arithmetic expression."""
    if cons.is_dim(expr):
        parts, counter = _dimension_parts(expr, counter, dimension_dict)
        return parts[2], counter
    if not cons.is_algebraic_expression(expr):
        raise AssertionError("Expected algebraic expression or dimension")
    if isinstance(expr, cons.Prod):
        sizes = []
        for d in expr.products:
            if not cons.is_dim(d):
                raise AssertionError("Expected dimension in Prod")
            parts, counter = _dimension_parts(d, counter, dimension_dict)
            sizes.append(parts[2])
        return z3.Product(sizes), counter
    lhs, counter = _transform_algebraic_expression(expr.lhs, counter, dimension_dict)
    rhs, counter = _transform_algebraic_expression(expr.rhs, counter, dimension_dict)
    combine = _ARITHMETIC.get(expr.op)
    if combine is None:
        raise NotImplementedError("operation not yet implemented")
    return combine(lhs, rhs), counter


# --------------------------------------------------------------------------- formulas


def _dimension_disequality(
    constraint: cons.BinConstraintD, counter: int, dims: dict
) -> tuple[Any, int]:
    lhs_v, rhs_v = constraint.lhs, constraint.rhs
    for label, side in (("lhs", lhs_v), ("rhs", rhs_v)):
        if not cons.is_dim(side):
            raise AssertionError(f"Expected {label} to be a dimension")
    (_, lhs_known, lhs_size), counter = _dimension_parts(lhs_v, counter, dims)
    (_, rhs_known, rhs_size), counter = _dimension_parts(rhs_v, counter, dims)
    one, zero = _int_value(1), _int_value(0)
    if rhs_v == Dyn:
        return _equal(lhs_known, one), counter
    if lhs_v == Dyn:
        return _equal(rhs_known, one), counter
    sizes_differ = lhs_size != rhs_size
    if isinstance(lhs_v, int) or isinstance(rhs_v, int):
        # A number differs from a variable that is Dyn (flag 0) or known with another size.
        flag = rhs_known if isinstance(lhs_v, int) else lhs_known
        return _or([_equal(flag, zero), _and([_equal(flag, one), sizes_differ])]), counter
    return _or(
        [
            _and([_equal(lhs_known, zero), rhs_known != 0]),
            _and([lhs_known != 0, _equal(rhs_known, zero)]),
            _and([lhs_known != 0, rhs_known != 0, sizes_differ]),
        ]
    ), counter


def _dimension_equality(
    constraint: cons.BinConstraintD, counter: int, dims: dict
) -> tuple[Any, int]:
    lhs_v, rhs_v = constraint.lhs, constraint.rhs
    if isinstance(lhs_v, cons.BVar) and cons.is_bool_expr(rhs_v):
        rhs, counter = _transform_to_z3(rhs_v, counter, dims)
        return z3.Bool(lhs_v.c) == rhs, counter
    if cons.is_dim(lhs_v) and cons.is_dim(rhs_v):
        # Two dimensions compare whole encodings ...
        (lhs, _, _), counter = _dimension_parts(lhs_v, counter, dims)
        (rhs, _, _), counter = _dimension_parts(rhs_v, counter, dims)
        return _equal(lhs, rhs), counter
    # ... arithmetic compares sizes only.
    lhs, counter = _transform_algebraic_expression(lhs_v, counter, dims)
    rhs, counter = _transform_algebraic_expression(rhs_v, counter, dims)
    return lhs == rhs, counter


_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    ops.op_leq: lambda a, b: a <= b,
    ops.op_gt: lambda a, b: a > b,
    ops.op_lt: lambda a, b: a < b,
}


def _dimension_relation(
    constraint: cons.BinConstraintD, counter: int, dims: dict
) -> tuple[Any, int]:
    op = constraint.op
    if op == ops.op_eq:
        return _dimension_equality(constraint, counter, dims)
    if op == ops.op_neq:
        return _dimension_disequality(constraint, counter, dims)
    compare = _ORDERINGS.get(op)
    if compare is None:
        raise NotImplementedError("operation not yet implemented")
    if not (cons.is_dim(constraint.lhs) and cons.is_dim(constraint.rhs)):
        raise AssertionError("Expected both lhs and rhs to be dimensions")
    lhs, counter = _transform_algebraic_expression(constraint.lhs, counter, dims)
    rhs, counter = _transform_algebraic_expression(constraint.rhs, counter, dims)
    return compare(lhs, rhs), counter


def _transform_to_z3(
    constraint: cons.Constraint, counter: int, dimension_dict: dict[int, int]
) -> tuple[Any, int]:
    """The z3 formula of a transformed constraint (and the updated counter). Only the final
    forms are accepted: and/or, True/False, ``=`` on tensors, and relations on dimensions."""
    if isinstance(constraint, (cons.Conj, cons.Disj)):
        is_conj = isinstance(constraint, cons.Conj)
        formulas = []
        for member in constraint.conjucts if is_conj else constraint.disjuncts:
            formula, counter = _transform_to_z3(member, counter, dimension_dict)
            formulas.append(formula)
        return (_and if is_conj else _or)(formulas), counter
    if isinstance(constraint, cons.BinConstraintD):
        return _dimension_relation(constraint, counter, dimension_dict)
    if isinstance(constraint, cons.BinConstraintT):
        if constraint.op != ops.op_eq:
            raise NotImplementedError("Method not yet implemented")
        lhs, counter = _transform_var(constraint.lhs, counter, dimension_dict)
        rhs, counter = _transform_var(constraint.rhs, counter, dimension_dict)
        return _equal(lhs, rhs), counter
    if isinstance(constraint, cons.T):
        return True, counter
    if isinstance(constraint, cons.F):
        return False, counter
    raise NotImplementedError("Operation not yet implemented")


# --------------------------------------------------------------------------- entry points

# Public, guarded forms of the encoders (the private ones recurse without the check).
transform_dimension = _needs_z3(_transform_dimension)
transform_var = _needs_z3(_transform_var)
transform_algebraic_expression = _needs_z3(_transform_algebraic_expression)
transform_to_z3 = _needs_z3(_transform_to_z3)


@_needs_z3
def transform_all_constraints(traced: torch.nn.Module, counter: int = 0) -> Any:
    """Generate the constraints of a traced module, transform them to a fixed point, and
    return their z3 formula."""
    generated, counter = ConstraintGenerator(traced).generate_constraints(counter)
    final, counter = iterate_till_fixed_point(generated, counter)
    formula, _ = _transform_to_z3(final, counter, {})
    return formula


def _check_condition(condition: Any) -> None:
    """The constraint of a traced condition must read ``BV(n) = <boolean expression>``."""
    problems = (
        (not isinstance(condition, cons.BinConstraintD), TypeError(type(condition))),
        (
            not isinstance(getattr(condition, "lhs", None), cons.BVar),
            AssertionError(f"Expected BVar, got {type(getattr(condition, 'lhs', None))}"),
        ),
        (
            not cons.is_bool_expr(getattr(condition, "rhs", None)),
            AssertionError("Expected bool expression for rhs"),
        ),
    )
    for failed, error in problems:
        if failed:
            raise error


@_needs_z3
def transform_all_constraints_trace_time(
    tracer_root: torch.nn.Module, graph: Any, node: Any, counter: int = 0
) -> tuple[Any, Any]:
    """For a graph whose last node is a condition: the formula of the graph's other
    constraints conjoined with the condition, and conjoined with its negation."""
    dimension_dict: dict[int, int] = {}
    generated, counter = ConstraintGenerator(tracer_root, graph).generate_constraints(counter)
    # The condition's constraint is the last one; it has the form ``b = <boolean expr>``.
    condition = generated.conjucts[-1]
    generated.conjucts = generated.conjucts[:-1]
    rest, counter = iterate_till_fixed_point(generated, counter)

    _check_condition(condition)
    test, counter = iterate_till_fixed_point(condition.rhs, counter)

    rest_formula, counter = _transform_to_z3(rest, counter, dimension_dict)
    test_formula, counter = _transform_to_z3(test, counter, dimension_dict)
    return (
        z3.And([rest_formula, test_formula]),
        z3.And([rest_formula, z3.Not(test_formula)]),
    )


@_needs_z3
def evaluate_conditional_with_constraints(
    tracer_root: torch.nn.Module,
    graph: Any,
    node: Any,
    counter: int = 0,
    user_constraints: Any = None,
) -> tuple[Any, Any]:
    """Solve the graph's constraints with the condition (its last node) assumed true, then
    assumed false; returns the two z3 verdicts (``sat``/``unsat``/``unknown``).
    ``user_constraints`` (a z3 formula) is added to both problems."""
    verdicts = []
    for formula in transform_all_constraints_trace_time(tracer_root, graph, node, counter):
        solver = z3.Solver()
        solver.add(formula)
        if user_constraints is not None:
            solver.add(user_constraints)
        verdicts.append(solver.check())
    return verdicts[0], verdicts[1]
