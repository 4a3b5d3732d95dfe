"""Symbolic scalars: the node inside every ``SymInt``/``SymFloat``/``SymBool``, and the tables
that say what each of their operators means.

``SymNode`` here **is torch's own class** (the ``SymNode`` of torch.fx's ``experimental.sym_node``, reached
through :mod:`fxkit.interop`): torch's C++ ``SymInt`` only accepts that class, and torch installs
the magic methods on ``SymInt``/``SymFloat``/``SymBool`` itself when it is imported, so this
module installs nothing. ``DynamicInt`` is torch's class for the same reason (``torch.compile``
recognises dynamic integers by ``isinstance`` on it).

What this module adds is fxkit's own copy of the method tables (``magic_methods``,
``method_to_operator``, the ``*_magic_methods`` sets, ``sizes_strides_methods``) and of the
helpers around them (``to_node``, ``wrap_node``, the SymPy builders, the contiguity predicates
``is_contiguous``/``is_channels_last_contiguous_2d``/...), with the same keys and results as
torch.fx's. The ``sym_*`` math functions (``sym_sqrt``, ``sym_cos``, ...) call torch's ``torch._sym_*``
(the functions ``make_fx`` records as graph targets, and the values of ``METHOD_TO_OPERATOR``);
torch.fx lists them in its ``__all__`` without defining them, here they exist so
``from ... import *`` works.
"""

from __future__ import annotations

import builtins
import itertools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import (
    SymBool,
    SymFloat,
    SymInt,
    sym_float,
    sym_int,  # noqa: F401  (re-exported: the SymInt-aware int())
    sym_ite,
    sym_max,
    sym_min,
    sym_not,
    sym_sum,  # noqa: F401  (re-exported: n-ary SymInt-aware sum)
)
from torch.types import py_sym_types as SymTypes

from fxkit import interop

_TORCH_SYM_NODE = interop.torch_sym_node()

# torch's classes (see the module docstring for why they cannot be fxkit's own).
SymNode = _TORCH_SYM_NODE.SymNode
DynamicInt = _TORCH_SYM_NODE.DynamicInt

# math.<name> lifted to symbolic floats: torch.sym_sqrt, torch._sym_cos, ...
_MATH_FUNCTION_NAMES = "sqrt cos cosh sin sinh tan tanh asin acos atan log2".split()


def _symbolic_math_function(name: str) -> Callable[[Any], Any]:
    """``math.<name>`` for ints, floats, SymInts and SymFloats, through torch's
    ``torch._sym_<name>`` (which also honours ``__torch_function__`` modes)."""
    torch_function = getattr(torch, f"_sym_{name}")

    def sym_function(a: Any) -> Any:
        return torch_function(a)

    sym_function.__name__ = sym_function.__qualname__ = f"sym_{name}"
    sym_function.__doc__ = (
        f"``math.{name}(a)`` that stays symbolic for a SymInt/SymFloat ``a`` (a SymFloat "
        "result); plain numbers give a float."
    )
    return sym_function


# One module-level name per function, in _MATH_FUNCTION_NAMES order.
(sym_sqrt, sym_cos, sym_cosh, sym_sin, sym_sinh, sym_tan, sym_tanh, sym_asin, sym_acos, sym_atan,
 sym_log2) = map(_symbolic_math_function, _MATH_FUNCTION_NAMES)  # fmt: skip

__all__ = [
    "SymNode",
    "method_to_operator",
    "magic_methods",
    "DynamicInt",
    *(f"sym_{name}" for name in _MATH_FUNCTION_NAMES),
]


# --- SymPy builders ------------------------------------------------------------------------------
# Each builds the SymPy expression for one method from its operands' expressions. SymPy and
# torch's SymPy functions are imported on first use, never at import time (importing SymPy is
# slow and most programs never build a symbolic expression).


def _torch_sympy_function(class_name: str, method: str) -> Callable[..., Any]:
    """A builder applying ``torch.utils._sympy.functions.<class_name>`` to its operands."""

    def build(*operands: Any) -> Any:
        from torch.utils._sympy import functions

        return getattr(functions, class_name)(*operands)

    build.__name__ = build.__qualname__ = f"_sympy_{method}"
    return build


def _sympy_function(class_name: str, method: str) -> Callable[..., Any]:
    """A builder applying ``sympy.<class_name>`` to its operands."""

    def build(*operands: Any) -> Any:
        import sympy

        return getattr(sympy, class_name)(*operands)

    build.__name__ = build.__qualname__ = f"_sympy_{method}"
    return build


def _sympy_mod(a: Any, b: Any) -> Any:
    """Python's ``%``: SymPy's ``Mod`` is only right when both sides are known non-negative."""
    from torch.utils._sympy.functions import Mod, PythonMod

    both_nonnegative = a.is_nonnegative and b.is_nonnegative
    return (Mod if both_nonnegative else PythonMod)(a, b)


def _sympy_round(number: Any, ndigits: Any = None) -> Any:
    """``round(x)`` is an int, ``round(x, n)`` a float: two different SymPy functions."""
    from torch.utils._sympy.functions import RoundDecimal, RoundToInt

    return RoundToInt(number) if ndigits is None else RoundDecimal(number, ndigits)


def _sympy_is_integer(a: Any) -> Any:
    import sympy
    from torch.utils._sympy.functions import ToFloat

    # "x has no fractional part", written so the result stays a float comparison.
    return sympy.Eq(ToFloat(sympy.floor(a)), a)


def _sympy_ite(condition: Any, if_true: Any, if_false: Any) -> Any:
    import sympy

    return sympy.Piecewise((if_true, condition), (if_false, True))


def _math_function(name: str) -> Callable[[Any], Any]:
    # torch keeps transcendental functions opaque to SymPy (no simplification through them).
    return _torch_sympy_function(f"OpaqueUnaryFn_{name}", name)


# --- the method table ----------------------------------------------------------------------------
# One row per symbolic method: (method name, what it does on plain Python values, its SymPy
# builder). The order is torch.fx's order of ``magic_methods``.
_BINARY_ROWS: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
    ("add", operator.add, operator.add),
    ("sub", operator.sub, operator.sub),
    ("mul", operator.mul, operator.mul),
    ("mod", operator.mod, _sympy_mod),
    ("pow_by_natural", operator.pow, _torch_sympy_function("PowByNatural", "pow_by_natural")),
    ("float_pow", operator.pow, _torch_sympy_function("FloatPow", "float_pow")),
    ("and", operator.and_, _sympy_function("And", "and")),
    ("bitwise_and", operator.and_, _torch_sympy_function("BitwiseFn_bitwise_and", "bitwise_and")),
    ("or", operator.or_, _sympy_function("Or", "or")),
    ("bitwise_or", operator.or_, _torch_sympy_function("BitwiseFn_bitwise_or", "bitwise_or")),
    ("bitwise_xor", operator.xor, _torch_sympy_function("BitwiseFn_bitwise_xor", "bitwise_xor")),
    ("float_truediv", operator.truediv, _torch_sympy_function("FloatTrueDiv", "float_truediv")),
    ("int_truediv", operator.truediv, _torch_sympy_function("IntTrueDiv", "int_truediv")),
    ("int_floordiv", operator.floordiv, _torch_sympy_function("FloorDiv", "floordiv")),
    ("lshift", operator.lshift, _torch_sympy_function("LShift", "lshift")),
    ("rshift", operator.rshift, _torch_sympy_function("RShift", "rshift")),
]
_OTHER_ROWS: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
    ("sym_not", sym_not, operator.invert),
    ("pos", operator.pos, operator.pos),
    ("eq", operator.eq, _sympy_function("Eq", "eq")),
    ("ne", operator.ne, _sympy_function("Ne", "ne")),
    ("gt", operator.gt, _sympy_function("Gt", "gt")),
    ("lt", operator.lt, _sympy_function("Lt", "lt")),
    ("le", operator.le, _sympy_function("Le", "le")),
    ("ge", operator.ge, _sympy_function("Ge", "ge")),
    ("floor", math.floor, _torch_sympy_function("FloorToInt", "floor")),
    # Python's int-returning trunc; not torch.trunc, which maps floats to floats.
    ("trunc", math.trunc, _torch_sympy_function("TruncToInt", "trunc")),
    # ToFloat, not ``a * 1.0``: SymPy folds 0 * 1.0 to the integer 0.
    ("sym_float", sym_float, _torch_sympy_function("ToFloat", "sym_float")),
    ("ceil", math.ceil, _torch_sympy_function("CeilToInt", "ceil")),
    ("neg", operator.neg, operator.neg),
    ("sym_min", sym_min, _torch_sympy_function("Min", "min")),
    ("sym_max", sym_max, _torch_sympy_function("Max", "max")),
    ("sym_ite", sym_ite, _sympy_ite),
    ("abs", operator.abs, _sympy_function("Abs", "abs")),
    ("round", builtins.round, _sympy_round),
    ("is_integer", lambda x: x.is_integer(), _sympy_is_integer),
    *(
        (f"sym_{name}", getattr(torch, f"_sym_{name}"), _math_function(name))
        for name in _MATH_FUNCTION_NAMES
    ),
]

#: method name -> SymPy builder for the binary methods that also have a reflected ``__rop__``.
reflectable_magic_methods: dict[str, Callable[..., Any]] = {
    name: build for name, _, build in _BINARY_ROWS
}
#: method name -> function building its SymPy expression from the operands' expressions.
magic_methods: dict[str, Callable[..., Any]] = {
    **reflectable_magic_methods,
    **{name: build for name, _, build in _OTHER_ROWS},
}
#: method name -> the Python function it stands for (recorded as the target of FX nodes).
METHOD_TO_OPERATOR: dict[str, Callable[..., Any]] = {
    name: op for name, op, _ in itertools.chain(_BINARY_ROWS, _OTHER_ROWS)
}


def method_to_operator(method: str) -> Callable[..., object]:
    """The Python function symbolic ``method`` computes (``"add"`` -> ``operator.add``).

    Raises KeyError for a name that is not a symbolic method.
    """
    return METHOD_TO_OPERATOR[method]


def _names(spec: str) -> set[str]:
    return set(spec.split())


_MATH_METHODS = {f"sym_{name}" for name in _MATH_FUNCTION_NAMES}

#: methods taking only ``self`` that are spelled ``__name__`` on the user types
unary_magic_methods = _names("abs sym_float sym_int ceil floor neg sym_not pos trunc")
unary_magic_methods |= _MATH_METHODS
#: methods taking only ``self`` that are ordinary (non-dunder) methods
unary_nonmagic_methods = {"is_integer"}
unary_methods = unary_magic_methods | unary_nonmagic_methods

# Which of SymInt / SymFloat / SymBool carry each method.
only_bool_magic_methods = _names("and or sym_not sym_ite")
bool_becomes_int_magic_methods = _names("add sub mul")  # True + True == 2
also_bool_magic_methods = {"eq"}
bool_magic_methods = only_bool_magic_methods | also_bool_magic_methods
only_float_magic_methods = _names("is_integer round sym_int sym_log2")

# ``and``/``or`` are ``and_``/``or_`` on SymNode (the bare words are keywords).
magic_methods_on_operator_with_trailing_underscore = _names("and or")
# bitwise_* share their Python operator (&, |, ^) with the boolean method of the other name.
bitwise_ops = {f"bitwise_{name}": name for name in ("and", "or", "xor")}

# Result type regardless of the operands' types.
always_float_magic_methods = _names("int_truediv float_truediv sym_float float_pow")
always_float_magic_methods |= _MATH_METHODS
always_int_magic_methods = _names("ceil floor trunc pow_by_natural")
always_bool_magic_methods = _names(
    "eq ne gt lt le ge and or sym_not is_non_overlapping_and_dense is_integer"
)


# --- contiguity predicates over sizes and strides -----------------------------------------------


def _one_of_is_zero(sizes: Sequence[Any]) -> Any:
    import sympy

    return sympy.Or(*(sympy.Eq(size, 0) for size in sizes))


def sympy_is_contiguous_generic(
    sizes: Sequence[Any], strides: Sequence[Any], dim_order: Sequence[int]
) -> Any:
    """SymPy condition: the tensor is laid out densely visiting dims in ``dim_order``
    (innermost first). A size-1 dim may have any stride; a tensor with a 0 size always
    counts as contiguous."""
    import sympy

    if len(dim_order) != len(sizes):
        return sympy.false
    expected_stride: Any = sympy.S.One
    dense = sympy.true
    for dim in dim_order:
        size = sizes[dim]
        dense &= sympy.Eq(size, 1) | sympy.Eq(strides[dim], expected_stride)
        expected_stride *= size
    return dense | _one_of_is_zero(sizes) if sizes else dense


def sympy_is_contiguous(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """SymPy condition for row-major (``torch.contiguous_format``) contiguity."""
    return sympy_is_contiguous_generic(sizes, strides, range(len(sizes) - 1, -1, -1))


# Innermost-first dim orders of the channels-last formats (NHWC and NDHWC).
_CHANNELS_LAST_2D = (1, 3, 2, 0)
_CHANNELS_LAST_3D = (1, 4, 3, 2, 0)


def sympy_is_channels_last_contiguous_2d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """SymPy condition: a 4-d tensor densely laid out as ``torch.channels_last``."""
    return sympy_is_contiguous_generic(sizes, strides, _CHANNELS_LAST_2D)


def sympy_is_channels_last_contiguous_3d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """SymPy condition: a 5-d tensor densely laid out as ``torch.channels_last_3d``."""
    return sympy_is_contiguous_generic(sizes, strides, _CHANNELS_LAST_3D)


def sympy_is_channels_last_strides_generic(
    sizes: Sequence[Any], strides: Sequence[Any], dim_order: Sequence[int]
) -> Any:
    """SymPy condition: the strides (not necessarily dense) say "channels last" for
    ``dim_order``, with torch's tie-breaks towards NCHW for ambiguous size-1 layouts."""
    import sympy
    from torch.utils._sympy.functions import Max

    if len(dim_order) != len(sizes):
        return sympy.false
    conditions = [sympy.Ne(strides[1], 0)]  # a C dim of stride 0 reads as NCHW
    min_stride: Any = sympy.S.Zero
    for dim in dim_order:
        conditions.append(sympy.Ne(sizes[dim], 0) & (strides[dim] >= min_stride))
        if dim == 0:
            # N111-like tensors whose C stride equals the running bound are NCHW too.
            conditions.append(sympy.Ne(min_stride, strides[1]))
        # Max(size, 1): a size-1 dim must not let the next stride be smaller.
        min_stride = strides[dim] * Max(sizes[dim], 1)
    result = sympy.true
    for condition in conditions:
        result &= condition
    return result


def sympy_is_channels_last_strides_2d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """SymPy condition: 4-d strides that suggest ``torch.channels_last``."""
    return sympy_is_channels_last_strides_generic(sizes, strides, _CHANNELS_LAST_2D)


def sympy_is_channels_last_strides_3d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """SymPy condition: 5-d strides that suggest ``torch.channels_last_3d``."""
    return sympy_is_channels_last_strides_generic(sizes, strides, _CHANNELS_LAST_3D)


def _sympy_is_non_overlapping_and_dense_indicator(
    sizes: Sequence[Any], strides: Sequence[Any]
) -> Any:
    from torch.utils._sympy.functions import IsNonOverlappingAndDenseIndicator

    return IsNonOverlappingAndDenseIndicator(*sizes, *strides)


#: predicate name -> SymPy builder taking ``(sizes, strides)`` expression lists
sizes_strides_methods: dict[str, Callable[..., Any]] = {
    builder.__name__.lstrip("_").removeprefix("sympy_"): builder
    for builder in (
        sympy_is_contiguous,
        sympy_is_channels_last_contiguous_2d,
        sympy_is_channels_last_contiguous_3d,
        sympy_is_channels_last_strides_2d,
        sympy_is_channels_last_strides_3d,
        _sympy_is_non_overlapping_and_dense_indicator,
    )
}


def _evaluate_layout_predicate(method: str, sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """Evaluate predicate ``method`` on concrete or symbolic sizes/strides.

    With a SymInt among them, the result is symbolic (built by that SymInt's node, so it joins
    the node's ShapeEnv); otherwise a plain bool (an int for the ``_indicator``).
    """
    for value in itertools.chain(sizes, strides):
        if isinstance(value, SymInt):
            node = value.node
            size_nodes = [to_node(node, s) for s in sizes]
            stride_nodes = [to_node(node, s) for s in strides]
            return wrap_node(getattr(node, method)(size_nodes, stride_nodes))
    if method == "is_non_overlapping_and_dense_indicator":
        return interop.torch_symbolic_shapes().eval_is_non_overlapping_and_dense(sizes, strides)
    import sympy

    as_exprs = [sympy.sympify(v) for v in sizes], [sympy.sympify(v) for v in strides]
    return bool(sizes_strides_methods[method](*as_exprs))


def is_contiguous(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """Whether a tensor of these sizes and strides is row-major contiguous (SymBool if
    symbolic)."""
    return _evaluate_layout_predicate("is_contiguous", sizes, strides)


def is_channels_last_contiguous_2d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """Whether a 4-d tensor of these sizes and strides is channels-last contiguous."""
    return _evaluate_layout_predicate("is_channels_last_contiguous_2d", sizes, strides)


def is_channels_last_contiguous_3d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """Whether a 5-d tensor of these sizes and strides is channels-last-3d contiguous."""
    return _evaluate_layout_predicate("is_channels_last_contiguous_3d", sizes, strides)


def is_channels_last_strides_2d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """Whether 4-d strides suggest the channels-last memory format."""
    return _evaluate_layout_predicate("is_channels_last_strides_2d", sizes, strides)


def is_channels_last_strides_3d(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """Whether 5-d strides suggest the channels-last-3d memory format."""
    return _evaluate_layout_predicate("is_channels_last_strides_3d", sizes, strides)


def is_non_overlapping_and_dense_indicator(sizes: Sequence[Any], strides: Sequence[Any]) -> Any:
    """1 if a tensor of these sizes and strides covers its storage without gaps or overlap,
    else 0 (an int, so it can be a symbolic size)."""
    return _evaluate_layout_predicate("is_non_overlapping_and_dense_indicator", sizes, strides)


# --- converting between values and nodes ---------------------------------------------------------

_WRAP_PLAIN = {bool: "wrap_bool", int: "wrap_int", float: "wrap_float"}


def to_node(self: Any, num: object) -> Any:
    """``num`` as a SymNode in ``self``'s ShapeEnv: the node of a SymInt/SymFloat/SymBool, or
    a constant node for a plain bool/int/float. Anything else gives ``NotImplemented`` (so a
    binary operator lets Python try the reflected method)."""
    if isinstance(num, SymTypes):
        return num.node
    # Exact types: an int subclass (DynamicInt, an IntEnum) is not simply a constant.
    wrapper = _WRAP_PLAIN.get(type(num))
    if wrapper is None:
        return NotImplemented
    return getattr(self, wrapper)(num)


_USER_TYPE_OF_NODE = (("is_int", SymInt), ("is_float", SymFloat), ("is_bool", SymBool))


def wrap_node(x: Any) -> Any:
    """The user-facing value of SymNode ``x``: its constant when it has one, else a SymInt,
    SymFloat or SymBool around it."""
    if isinstance(x, SymNode) and x.constant is not None:
        return x.constant
    for predicate, user_type in _USER_TYPE_OF_NODE:
        if getattr(x, predicate)():
            return user_type(x)
    raise AssertionError(f"unrecognized return type {x}")
