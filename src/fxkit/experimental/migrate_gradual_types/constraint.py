"""The constraint language: variables for tensors, dimensions and booleans, the connectives
(:class:`Conj`, :class:`Disj`), binary relations over tensors and dimensions, and the
"macro" constraints (broadcasting, reshape, convolution arithmetic, ...) that
:mod:`.constraint_transformation` expands into binary relations.

Constraints are compared structurally (``==`` looks at their fields) and print in a compact
mathematical notation; like torch.fx's, they are not hashable.
"""

from __future__ import annotations

from typing import Any, Sequence

from fxkit.experimental.migrate_gradual_types import operation as ops
from fxkit.tensor_type import Dyn, TensorType

__all__ = [
    # variables
    "TVar",
    "DVar",
    "BVar",
    # connectives and constants
    "Conj",
    "Disj",
    "T",
    "F",
    # binary relations and products
    "Constraint",
    "BinaryConstraint",
    "BinConstraintT",
    "BinConstraintD",
    "Prod",
    # macro constraints, expanded by constraint_transformation
    "ApplyBroadcasting",
    "CalcConv",
    "CalcMaxPool",
    "CalcProduct",
    "CanReshape",
    "DGreatestUpperBound",
    "TGreatestUpperBound",
    "GetItem",
    "GetItemTensor",
    "IndexSelect",
    "Transpose",
    # predicates on expressions
    "is_algebraic_expression",
    "is_bool_expr",
    "is_dim",
]

_ARITHMETIC_OPS = (ops.op_add, ops.op_sub, ops.op_div, ops.op_mul, ops.op_mod)
_COMPARISON_OPS = (ops.op_gt, ops.op_lt, ops.op_neq, ops.op_eq)


def _require(ok: bool, what: str, value: object) -> None:
    # Malformed constraints are programming errors; torch.fx reports them as AssertionError.
    if not ok:
        raise AssertionError(f"Expected {what}, got {type(value)}")


class _Structural:
    """Mixin: equality by the attributes listed in ``_fields``.

    Two objects compare equal when the other one is an instance of the class that declared
    the field list (so e.g. a :class:`BinConstraintT` equals a :class:`BinConstraintD` with
    the same operands and operator, as in torch.fx) and all fields are equal.
    """

    _fields: tuple[str, ...] = ()
    _eq_owner: type = object

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_fields" in cls.__dict__:
            cls._eq_owner = cls

    def _store(self, *values: Any) -> None:
        """Set the attributes named in ``_fields`` to ``values``, in order."""
        for name, value in zip(self._fields, values):
            setattr(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, self._eq_owner):
            return False
        for name in self._fields:
            if getattr(self, name) != getattr(other, name):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


class Constraint:
    """Base class of every constraint."""


# --------------------------------------------------------------------------- variables


class TVar(_Structural):
    """A tensor variable: stands for a tensor type (``Dyn`` or a ``TensorType``)."""

    _fields = ("tvar",)

    def __init__(self, tvar: int) -> None:
        self.tvar = tvar

    def __repr__(self) -> str:
        return f"TV({self.tvar})"


class DVar(_Structural):
    """A dimension variable: stands for a natural number or ``Dyn``."""

    _fields = ("c",)

    def __init__(self, c: int) -> None:
        self.c = c

    def __repr__(self) -> str:
        return f"DV({self.c})"


class BVar(_Structural):
    """A boolean variable (the value of a traced condition)."""

    _fields = ("c",)

    def __init__(self, c: int) -> None:
        self.c = c

    def __repr__(self) -> str:
        return f"BV({self.c})"


# --------------------------------------------------------------------------- connectives


class Conj(_Structural, Constraint):
    """All of ``conjuncts`` hold (stored as ``conjucts``, the attribute name torch.fx uses)."""

    _fields = ("conjucts",)

    def __init__(self, conjuncts: Sequence[Constraint]) -> None:
        self.conjucts = list(conjuncts)

    def __repr__(self) -> str:
        return f"And({self.conjucts})"


class Disj(_Structural, Constraint):
    """At least one of ``disjuncts`` holds."""

    _fields = ("disjuncts",)

    def __init__(self, disjuncts: Sequence[Constraint]) -> None:
        self.disjuncts = list(disjuncts)

    def __repr__(self) -> str:
        return f"Or({self.disjuncts})"


class Prod(_Structural, Constraint):
    """The product of ``products`` (dimensions), used inside arithmetic constraints."""

    _fields = ("products",)

    def __init__(self, products: Sequence[Any]) -> None:
        self.products = list(products)

    def __repr__(self) -> str:
        return f"Product({self.products})"


class T(Constraint):
    """The constraint that always holds."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, T)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "True"


class F(Constraint):
    """The constraint that never holds."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, F)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "False"


# --------------------------------------------------------------------------- binary relations


class BinaryConstraint(_Structural, Constraint):
    """``lhs op rhs`` where ``op`` is one of the names in :mod:`.operation`."""

    _fields = ("lhs", "rhs", "op")

    def __init__(self, lhs: Any, rhs: Any, op: str | None) -> None:
        self._store(lhs, rhs, op)

    def __repr__(self) -> str:
        return f"({self.lhs} {self.op} {self.rhs})"


def _is_tensor_operand(x: object) -> bool:
    return isinstance(x, (TVar, TensorType, int)) or x == Dyn


class BinConstraintT(BinaryConstraint):
    """A relation between tensor types (variables, ``TensorType``s, ``Dyn``, or a rank
    bound given as an int)."""

    def __init__(self, lhs: Any, rhs: Any, op: str | None) -> None:
        if not (_is_tensor_operand(lhs) and _is_tensor_operand(rhs)):
            raise AssertionError(f"Invalid types: lhs={type(lhs)}, rhs={type(rhs)}")
        super().__init__(lhs, rhs, op)


def _is_dimension_operand(x: object) -> bool:
    return is_algebraic_expression(x) or is_dim(x) or is_bool_expr(x)


class BinConstraintD(BinaryConstraint):
    """A relation between dimensions, arithmetic expressions over them, or booleans."""

    def __init__(self, lhs: Any, rhs: Any, op: str | None) -> None:
        if not _is_dimension_operand(lhs):
            raise AssertionError(f"Invalid lhs type: {type(lhs)}")
        if not _is_dimension_operand(rhs):
            raise AssertionError(f"Invalid rhs type: {type(rhs)}")
        super().__init__(lhs, rhs, op)


class TGreatestUpperBound(_Structural, Constraint):
    """``res`` is the greatest upper bound (w.r.t. precision) of two tensor types."""

    _fields = ("res", "rhs1", "rhs2")

    def __init__(self, res: TVar, rhs1: TVar, rhs2: TVar) -> None:
        self._store(res, rhs1, rhs2)

    def __repr__(self) -> str:
        return f"{self.res} = {self.rhs1}\u2294*{self.rhs2}"


class DGreatestUpperBound(_Structural, Constraint):
    """``res`` is the greatest upper bound of two dimensions."""

    _fields = ("res", "rhs1", "rhs2")

    def __init__(self, res: Any, rhs1: Any, rhs2: Any) -> None:
        for label, value in (("res", res), ("rhs1", rhs1), ("rhs2", rhs2)):
            if not is_dim(value):
                raise AssertionError(f"Expected dimension for {label}, got {type(value)}")
        self._store(res, rhs1, rhs2)

    def __repr__(self) -> str:
        return f"{self.res} = {self.rhs1}\u2294{self.rhs2}"


# --------------------------------------------------------------------------- shape macros


class CanReshape(_Structural, Constraint):
    """The tensor ``src`` can be reshaped to the type ``target``."""

    _fields = ("src", "target")

    def __init__(self, src: TVar, target: TensorType) -> None:
        self._store(src, target)

    def __repr__(self) -> str:
        return f"can-reshape({self.src}, {self.target})"


class IndexSelect(_Structural, Constraint):
    """``output`` is ``input_var`` (assumed of rank ``tensor_size``) with dimension ``index``
    replaced by ``dim_replace``."""

    _fields = ("input_var", "tensor_size", "dim_replace", "index", "output")

    def __init__(
        self, tensor_size: int, input_var: TVar, dim_replace: Any, index: int, output: TVar
    ) -> None:
        _require(isinstance(input_var, TVar), "TVar", input_var)
        _require(isinstance(output, TVar), "TVar", output)
        _require(isinstance(dim_replace, DVar) or dim_replace == Dyn, "DVar or Dyn", dim_replace)
        _require(isinstance(index, int), "int", index)
        self._store(input_var, tensor_size, dim_replace, index, output)

    def __repr__(self) -> str:
        details = f"{self.input_var}, tensor_size: {self.tensor_size}, {self.dim_replace}"
        return f" {self.output} = IndexSelect({details}, {self.index})"


class Transpose(_Structural, Constraint):
    """``output`` is ``input_var`` (assumed of rank ``tensor_size``) with dimensions
    ``index1`` and ``index2`` swapped."""

    _fields = ("input_var", "tensor_size", "index1", "index2", "output")

    def __init__(
        self, tensor_size: int, input_var: TVar, index1: int, index2: int, output: TVar
    ) -> None:
        _require(isinstance(input_var, TVar), "TVar", input_var)
        _require(isinstance(output, TVar), "TVar", output)
        _require(isinstance(index1, int), "int", index1)
        _require(isinstance(index2, int), "int", index2)
        self._store(input_var, tensor_size, index1, index2, output)

    def __repr__(self) -> str:
        details = f"{self.input_var}, tensor_size: {self.tensor_size}, {self.index1}"
        return f" {self.output} = Transpose({details}, {self.index2})"


class GetItem(_Structural, Constraint):
    """The dimension ``res`` is entry ``index`` of the shape of ``input_var`` (assumed of
    rank ``tensor_size``)."""

    _fields = ("res", "tensor_size", "index", "input_var")

    def __init__(self, tensor_size: int, index: int, res: DVar, input_var: TVar) -> None:
        _require(isinstance(res, DVar), "DVar", res)
        self._store(res, tensor_size, index, input_var)

    def __repr__(self) -> str:
        details = f"{self.input_var}, tensor_size: {self.tensor_size}, {self.index}"
        return f" {self.res} = GetItem({details})"


class GetItemTensor(_Structural, Constraint):
    """The tensor ``res`` is ``input_var`` indexed by a tuple of full slices and ``None`` values."""

    _fields = ("res", "tensor_size", "index_tuple", "input_var")

    def __init__(
        self, tensor_size: int, index_tuple: tuple[Any, ...], res: TVar, input_var: TVar
    ) -> None:
        _require(isinstance(res, TVar), "TVar", res)
        self._store(res, tensor_size, index_tuple, input_var)

    def __repr__(self) -> str:
        details = f"{self.input_var}, tensor_size: {self.tensor_size}, {self.index_tuple}"
        return f" {self.res} = GetItemT({details})"


class CalcConv(_Structural, Constraint):
    """``conv_result`` is the output type of a 2-d convolution of ``input_var`` whose
    dimensions are ``matching_constraint_vars``."""

    _fields = (
        "conv_result",
        "input_var",
        "c_out",
        "kernel",
        "padding",
        "stride",
        "dilation",
        "matching_constraint",
    )

    def __init__(
        self,
        conv_result: TVar,
        input_var: TVar,
        c_out: int,
        kernel: Any,
        padding: Any,
        stride: Any,
        dilation: Any,
        matching_constraint_vars: list[DVar],
    ) -> None:
        self._store(
            conv_result,
            input_var,
            c_out,
            kernel,
            padding,
            stride,
            dilation,
            matching_constraint_vars,
        )

    def __repr__(self) -> str:
        geometry = f"{self.kernel}, {self.padding}, {self.stride}, {self.dilation}"
        return f"{self.conv_result} = calc-conv({self.input_var}, {self.c_out}, {geometry})"


class CalcMaxPool(_Structural, Constraint):
    """``maxpool_result`` is the output type of a 2-d max pooling of ``input_var``."""

    _fields = (
        "maxpool_result",
        "input_var",
        "kernel",
        "padding",
        "stride",
        "dilation",
        "matching_constraint",
    )

    def __init__(
        self,
        maxpool_result: TVar,
        input_var: TVar,
        kernel: Any,
        padding: Any,
        stride: Any,
        dilation: Any,
        matching_constraint_vars: list[DVar],
    ) -> None:
        self._store(
            maxpool_result, input_var, kernel, padding, stride, dilation, matching_constraint_vars
        )

    def __repr__(self) -> str:
        # (two spaces before the kernel: the printed form torch.fx users see)
        geometry = f"{self.kernel}, {self.padding}, {self.stride}, {self.dilation}"
        return f"{self.maxpool_result} = calc-maxpool({self.input_var},  {geometry})"


class ApplyBroadcasting(_Structural, Constraint):
    """``res1`` and ``res2`` are ``input1`` and ``input2`` after broadcasting them
    against each other."""

    _fields = ("res1", "res2", "input1", "input2")

    def __init__(self, res1: TVar, res2: TVar, input1: TVar, input2: TVar) -> None:
        self._store(res1, res2, input1, input2)

    def __repr__(self) -> str:
        return f"{self.res1}, {self.res2} = apply-broadcasting({self.input1}, {self.input2})"


class CalcProduct(_Structural, Constraint):
    """``flattened`` is ``dims_to_flatten`` with the range ``[start, end)`` multiplied into
    one dimension (``Dyn`` if any of them is)."""

    _fields = ("start", "end", "dims_to_flatten", "flattened")

    def __init__(self, start: int, end: int, flattened: TVar, dims_to_flatten: list[DVar]) -> None:
        _require(isinstance(dims_to_flatten, list), "list", dims_to_flatten)
        _require(isinstance(flattened, TVar), "TVar", flattened)
        _require(isinstance(start, int), "int", start)
        _require(isinstance(end, int), "int", end)
        self._store(start, end, dims_to_flatten, flattened)

    def __repr__(self) -> str:
        return f"{self.flattened} = CalcProduct({self.start}, {self.end}, {self.dims_to_flatten})"


# --------------------------------------------------------------------------- classifiers


def is_algebraic_expression(constraint: object) -> bool:
    """Whether ``constraint`` is an arithmetic expression over dimensions (a product, or a
    dimension constraint with an arithmetic operator)."""
    if isinstance(constraint, BinConstraintD):
        return constraint.op in _ARITHMETIC_OPS
    return isinstance(constraint, Prod)


def is_bool_expr(constraint: object) -> bool:
    """Whether ``constraint`` denotes a boolean: a comparison of dimensions, a boolean
    variable, or a conjunction/disjunction."""
    if isinstance(constraint, BinConstraintD):
        return constraint.op in _COMPARISON_OPS
    return isinstance(constraint, (BVar, Conj, Disj))


def is_dim(d: object) -> bool:
    """Whether ``d`` is a dimension: a dimension variable, an int, or ``Dyn``."""
    return isinstance(d, (DVar, int)) or d == Dyn
