"""The rules behind :mod:`fxkit.experimental.graph_gradual_typechecker`: the three registries
(type inference, refinement constraints, algebraic output sizes), their registration
decorators, the gradual type algebra they share (broadcasting, greatest upper bounds, conv
and pooling output sizes) and the rules registered for torch's operations and modules.

Import these names from ``graph_gradual_typechecker``, which re-exports them under
torch.fx's module path.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, Iterable, TypeVar

import sympy
import torch
from torch.nn.modules.batchnorm import BatchNorm2d
from torch.nn.modules.conv import Conv2d

from fxkit.experimental.refinement_types import Equality
from fxkit.experimental.unification import Var
from fxkit.node import Node
from fxkit.tensor_type import Dyn, TensorType, _DynType, _is_type_variable

# fmt: off
__all__ = [
    # registration
    "register_inference_rule", "register_refinement_rule",
    "register_algebraic_expressions_inference_rule",
    # type algebra
    "broadcast_types", "expand_to_tensor_dim", "get_greatest_upper_bound",
    "calculate_out_dimension", "maxpool2d_check", "linear_check", "adaptiveavgpool2d_check",
    "flatten_check",
    # inference rules
    "add_inference_rule", "get_attr_inference_rule", "transpose_inference_rule",
    "reshape_inference_rule", "bn2d_inference_rule", "conv2d_inference_rule",
    "relu_inference_rule", "maxpool2d_inference_rule", "linear_inference_rule",
    "adaptiveavgpool2d_inference_rule", "flatten_inference_rule",
    # refinement and algebraic rules
    "conv_refinement_rule", "linear_refinement_rule", "all_eq", "first_two_eq",
    "element_wise_eq", "flatten_refinement_rule", "conv_rule",
]
# fmt: on

_F = TypeVar("_F", bound=Callable[..., Any])

_INFERENCE_RULES: dict[Any, Callable[..., Any]] = {}
_REFINEMENT_RULES: dict[Any, Callable[..., Any]] = {}
_RULES: dict[Any, Callable[..., Any]] = {}


# ---------------------------------------------------------------------------------------------
# Registries


def _registrar(registry: dict, call_target: Any, what: str) -> Callable[[_F], _F]:
    """A decorator that files its function under ``call_target`` in ``registry``, refusing a
    second rule for the same target (the first one would silently lose otherwise)."""

    def add(rule: _F) -> _F:
        if call_target in registry:
            raise RuntimeError(f"{what} already registered for {call_target}!")
        registry[call_target] = rule
        return rule

    return add


def register_inference_rule(call_target: Any) -> Callable[[_F], _F]:
    """Register the decorated function as the type-checking rule for ``call_target``.

    Function rules are called as ``rule(node)`` (``getattr``'s as ``rule(node, traced)``),
    module-class rules as ``rule(node, module_instance)``; each sets and returns ``node.type``.
    """
    return _registrar(_INFERENCE_RULES, call_target, "Inference rule")


def register_refinement_rule(call_target: Any) -> Callable[[_F], _F]:
    """Register the decorated function as :class:`Refine`'s constraint generator for
    ``call_target``; it is called as ``rule(node)`` and returns a list of Equality."""
    return _registrar(_REFINEMENT_RULES, call_target, "Refinement rule")


def register_algebraic_expressions_inference_rule(call_target: Any) -> Callable[[_F], _F]:
    """Register the decorated function as the rule :meth:`Refine.symbolic_relations` uses to
    express ``call_target``'s output dimensions in terms of its input's."""
    return _registrar(_RULES, call_target, "Rule")


# ---------------------------------------------------------------------------------------------
# Type algebra


def _is_node(a: object) -> bool:
    # fxkit's Node, or a node of another fx-like graph (torch.fx), recognised by its API.
    return type(a) is Node or isinstance(a, Node) or (hasattr(a, "op") and hasattr(a, "users"))


def _matches_anything(d: object) -> bool:
    """Whether a dimension (or type) is a wildcard: Dyn or a unification variable."""
    cls = type(d)
    if cls is int:  # the common case, answered without the checks below
        return False
    if cls is _DynType or cls is Var:
        return True
    return isinstance(d, (_DynType, Var)) or _is_type_variable(d)


def _dims_consistent(a: object, b: object) -> bool:
    return a == b or _matches_anything(a) or _matches_anything(b)


def _types_consistent(t1: Any, t2: Any) -> bool:
    """``t1 ~ t2`` as :func:`fxkit.tensor_type.is_consistent` defines it (fxkit's type
    variables included)."""
    if isinstance(t1, TensorType) and isinstance(t2, TensorType):
        d1, d2 = t1.dims, t2.dims
        return len(d1) == len(d2) and all(map(_dims_consistent, d1, d2))
    return _matches_anything(t1) or _matches_anything(t2) or t1 == t2


def expand_to_tensor_dim(t: Any, n: int) -> TensorType:
    """``t`` as a rank-``n`` TensorType: ``Dyn`` becomes ``n`` unknown dimensions, a TensorType
    of rank ``n`` is returned as is; anything else raises ``TypeError``."""
    if isinstance(t, _DynType):
        return TensorType(tuple([Dyn] * n))
    if not isinstance(t, TensorType):
        raise TypeError(f"Cannot match the type {t}")
    if len(t.dims) != n:
        raise TypeError(
            f"Cannot extend tensor. Tensor {t} has rank {len(t.dims)}. It should have rank {n}"
        )
    return t


def broadcast_types(t1: Any, t2: Any) -> tuple[Any, Any]:
    """Apply broadcasting to two operand types and return the broadcast pair.

    The shorter type is padded with leading 1s, then every 1 takes the other operand's
    dimension at that position, so that the two results can be checked for consistency.
    A ``Dyn`` or type-variable operand is returned unchanged; non-tensor operands raise
    ``TypeError``.
    """
    if _matches_anything(t1) or _matches_anything(t2):
        return t1, t2
    if not (isinstance(t1, TensorType) and isinstance(t2, TensorType)):
        raise TypeError(f"Cannot broadcast types {t1} and {t2}")
    left, right, _ = _broadcast_dims(t1.dims, t2.dims)
    return TensorType(tuple(left)), TensorType(tuple(right))


def _broadcast_dims(d1: Any, d2: Any) -> tuple[list, list, bool]:
    """The broadcast dimension lists of two TensorTypes, and whether either differs from its
    original (which :func:`add_inference_rule` records)."""
    left, right = list(d1), list(d2)
    pad = len(left) - len(right)
    if pad > 0:
        right[:0] = [1] * pad
    elif pad < 0:
        left[:0] = [1] * -pad
    changed = pad != 0
    for i, (a, b) in enumerate(zip(left, right)):
        # Only the left operand's 1 is checked first: where both are 1 nothing changes.
        if a == 1:
            left[i] = b
            changed = changed or b != 1
        elif b == 1:
            right[i] = a
            changed = True
    return left, right, changed


def get_greatest_upper_bound(type1: Any, type2: Any) -> Any:
    """The most precise type consistent with both arguments: a ``Dyn`` side yields the other,
    two TensorTypes are merged dimension by dimension (``TypeError`` if inconsistent)."""
    if isinstance(type1, _DynType):
        return type2
    if isinstance(type2, _DynType):
        return type1
    if not (isinstance(type1, TensorType) and isinstance(type2, TensorType)):
        return None
    d1, d2 = type1.dims, type2.dims
    merged = []
    if len(d1) == len(d2):
        # One pass checks consistency and picks, per dimension, the first side unless the
        # second one is strictly more precise.
        for a, b in zip(d1, d2):
            if a == b or isinstance(b, _DynType):
                merged.append(a)
            elif _matches_anything(a) or _matches_anything(b):
                merged.append(b)
            else:
                break
        else:
            return TensorType(tuple(merged))
    raise TypeError(f"Inconsistent types {type1}, {type2}")


def _pair(value: Any) -> Any:
    return (value, value) if isinstance(value, int) else value


def calculate_out_dimension(d_in: Any, module_instance: Any, index: int) -> Any:
    """Output height (``index`` 0) or width (1) of a conv/pool module for input size ``d_in``,
    per the formula in ``torch.nn.Conv2d``'s documentation; ``Dyn`` stays ``Dyn``.

    As in torch.fx the stride of the first spatial dimension is used for both.
    """
    if isinstance(d_in, _DynType):
        return Dyn
    if not isinstance(d_in, (int, sympy.Symbol)):
        raise TypeError(
            f"{d_in} in {module_instance} must be a number or Dyn. Received {type(d_in)}"
        )
    pad = _pair(module_instance.padding)[index]
    kernel = _pair(module_instance.kernel_size)[index]
    dilation = _pair(module_instance.dilation)[index]
    stride = _pair(module_instance.stride)[0]
    span = d_in + 2 * pad - dilation * (kernel - 1) - 1
    return span // stride + 1


def maxpool2d_check(typ: Any, module_instance: Any) -> TensorType:
    """The output type of ``module_instance`` (a 2-d pooling module) on a rank 3 or 4 input
    type: its last two dimensions are recomputed, the others kept."""
    dims = list(typ.dims)
    if len(dims) not in (3, 4):
        raise TypeError(f"Wrong size {typ} for {module_instance}")
    dims[-2] = calculate_out_dimension(dims[-2], module_instance, 0)
    dims[-1] = calculate_out_dimension(dims[-1], module_instance, 1)
    return TensorType(tuple(dims))


def linear_check(tensor_type: Any, module_instance: Any) -> TensorType:
    """The output type of a Linear module on an input type of rank 2 or more whose last
    dimension is consistent with ``in_features``."""
    dims = list(tensor_type.dims)
    if len(dims) < 2:
        raise TypeError(f"Type {tensor_type} must have rank 2 or more.")
    if not _dims_consistent(module_instance.in_features, dims[-1]):
        raise TypeError(
            f"Inconsistent {module_instance.in_features} and {dims[-1]} in {module_instance}"
        )
    dims[-1] = module_instance.out_features
    return TensorType(tuple(dims))


def adaptiveavgpool2d_check(tensor_type: Any, module_instance: Any) -> TensorType:
    """The output type of an AdaptiveAvgPool2d module on a rank 3 or 4 input type: the last
    two dimensions become the module's output size (a ``None`` entry copies the other)."""
    size = module_instance.output_size
    if isinstance(size, int):
        size = [size, size]
    elif isinstance(size, tuple):
        height, width = size
        size = [width if height is None else height, height if width is None else width]
    dims = list(tensor_type.dims)
    if len(dims) not in (3, 4):
        raise TypeError(f"Tensor ranks must be 3 or 4. Got {tensor_type}")
    dims[-2], dims[-1] = size[0], size[1]
    return TensorType(tuple(dims))


def _flatten_span(rank: int, start_dim: int, end_dim: int) -> tuple[int, int]:
    """Normalise flatten's ``start_dim``/``end_dim`` into a half-open ``[start, stop)`` range.

    Kept bug-compatible with torch.fx: a start of -1 means ``rank`` and other negative starts
    are taken by absolute value.
    """
    start = rank if start_dim == -1 else abs(start_dim)
    stop = rank + end_dim + 1 if end_dim < 0 else end_dim + 1
    return start, stop


def flatten_check(tensor_type: Any, start_dim: int, end_dim: int) -> TensorType:
    """The type of ``torch.flatten(x, start_dim, end_dim)`` for ``x`` of ``tensor_type``:
    the flattened run becomes one dimension (``Dyn`` if any of it is unknown)."""
    dims = list(tensor_type.dims)
    start, stop = _flatten_span(len(dims), start_dim, end_dim)
    if not (0 <= start < len(dims) and 0 <= stop <= len(dims) and start < stop):
        raise TypeError(f"Incompatible dimensions {start}, {stop - 1} in type {tensor_type}")
    run = dims[start:stop]
    merged = Dyn if Dyn in run else math.prod(run)
    return TensorType(tuple(dims[:start] + [merged] + dims[stop:]))


# ---------------------------------------------------------------------------------------------
# Inference rules


def _input_node(n: Any, position: int = 0) -> Any:
    """``n.args[position]``, which the rule needs to be a node."""
    arg = n.args[position]
    if not _is_node(arg):
        raise AssertionError(f"Expected Node, got {type(arg)}")
    return arg


def _int_arg(n: Any, position: int) -> int:
    value = n.args[position]
    if not isinstance(value, int):
        raise AssertionError(f"Expected int, got {type(value)}")
    return value


def _flatten_dims(n: Any) -> tuple[int, int]:
    """``start_dim`` and ``end_dim`` of a flatten call; only positional ones are read."""
    count = len(n.args)
    start_dim = _int_arg(n, 1) if count > 1 else 1
    end_dim = _int_arg(n, 2) if count > 2 else -1
    return start_dim, end_dim


def _propagate(n: Any, src: Any, transfer: Callable[[TensorType], TensorType], rule_first: bool):
    """The shared shape of the single-input rules: learn the input's rank from the node's own
    annotation if the input is ``Dyn``, then merge ``transfer(input type)`` into ``n.type``."""
    if isinstance(src.type, _DynType) and isinstance(n.type, TensorType):
        src.type = expand_to_tensor_dim(src.type, len(n.type.dims))
    if isinstance(src.type, TensorType):
        derived = transfer(src.type)
        pair = (derived, n.type) if rule_first else (n.type, derived)
        n.type = get_greatest_upper_bound(*pair)
    return n.type


@register_inference_rule(torch.add)
@register_inference_rule(operator.add)
def add_inference_rule(n: Any) -> Any:
    """Addition of two tensors (with broadcasting) or of a tensor and an ``int``.

    The result is the less precise of the two broadcast operand types. When broadcasting
    changed an operand, ``n.meta["broadcast"]`` is True and ``n.meta[str(operand)]`` holds
    its broadcast type; the operands' own types are left alone.
    """
    lhs, rhs = _input_node(n, 0), _input_node(n, 1)
    t1, t2 = lhs.type, rhs.type
    if t1 is int and isinstance(t2, TensorType):
        n.type = t2
        return t2
    if t2 is int and isinstance(t1, TensorType):
        n.type = t1
        return t1
    if isinstance(t1, TensorType) and isinstance(t2, TensorType):
        left, right, broadcast = _broadcast_dims(t1.dims, t2.dims)
    else:
        broadcast_types(t1, t2)  # passes wildcards through, raises for non-tensor types
        broadcast = False
    n.meta["broadcast"] = broadcast
    if broadcast:
        b1, b2 = TensorType(tuple(left)), TensorType(tuple(right))
        n.meta[str(lhs)] = b1
        n.meta[str(rhs)] = b2
    else:
        b1, b2 = t1, t2
    if not _types_consistent(b1, b2):
        raise TypeError(
            f"Cannot add arguments {lhs} ({lhs.type}) and {rhs} ({rhs.type}) in node {n}."
            " Types should match "
        )
    # The less precise side wins: [1, 2, Dyn] + [1, 2, 1] is only known as [1, 2, Dyn].
    n.type = b2 if _at_least_as_precise(b1, b2) else b1
    return n.type


def _at_least_as_precise(t1: Any, t2: Any) -> bool:
    """``t1 <= t2`` as :func:`fxkit.tensor_type.is_more_precise` defines it."""
    if isinstance(t1, TensorType) and isinstance(t2, TensorType):
        d1, d2 = t1.dims, t2.dims
        return len(d1) == len(d2) and all(a == b or isinstance(b, _DynType) for a, b in zip(d1, d2))
    return isinstance(t2, _DynType) or t1 == t2


@register_inference_rule(getattr)
def get_attr_inference_rule(n: Any, traced: Any) -> Any:
    """``getattr(x, "shape")`` is typed ``Dyn`` (there is no type for sizes yet); other
    attributes raise ``TypeError``."""
    if n.args[1] != "shape":
        raise TypeError("Not yet implemented")
    n.type = Dyn
    return Dyn


@register_inference_rule(torch.transpose)
def transpose_inference_rule(n: Any) -> Any:
    """``torch.transpose(x, d0, d1)``: both dimensions must lie in ``x``'s rank; the result
    swaps them and is merged with the node's annotation."""
    if n.target is not torch.transpose:
        return None
    t = _input_node(n).type
    d0, d1 = _int_arg(n, 1), _int_arg(n, 2)
    if isinstance(t, _DynType):
        n.type = Dyn
        return Dyn
    if not (isinstance(t, TensorType) and 0 <= d0 < len(t.dims) and 0 <= d1 < len(t.dims)):
        raise TypeError(f"Cannot transpose {d0} and {d1} in type {t} for node {n}")
    swapped = list(t.dims)
    swapped[d0], swapped[d1] = swapped[d1], swapped[d0]
    n.type = get_greatest_upper_bound(n.type, TensorType(swapped))
    return n.type


@register_inference_rule(torch.reshape)
def reshape_inference_rule(n: Any) -> TensorType:
    """``torch.reshape(x, shape)``: the target shape (``-1`` read as ``Dyn``) is the result.

    With a known input the element counts must divide one another (``Dyn`` input dimensions
    count as 1, so this is the gradual version of "equal element count").
    """
    src = _input_node(n)
    shape = n.args[1]
    if not isinstance(shape, list):
        raise AssertionError(f"Expected list, got {type(shape)}")
    result = TensorType([Dyn if d == -1 else d for d in shape])
    t = src.type
    if isinstance(t, TensorType):
        known = math.prod(1 if isinstance(d, _DynType) else d for d in t.dims)
        wanted = math.prod(shape)
        if known % wanted != 0 and wanted % known != 0:
            raise TypeError(f"Cannot reshape in node {n} from {t} to {result}")
    elif not isinstance(t, _DynType):
        raise TypeError(f"Cannot reshape in node {n} from {t} to {result}")
    n.type = result
    return result


@register_inference_rule(BatchNorm2d)
def bn2d_inference_rule(n: Any, module_instance: Any) -> Any:
    """BatchNorm2d: input and node types are rank 4, consistent with each other, with
    ``num_features`` channels; the result is their greatest upper bound."""
    src = _input_node(n)
    src.type = expand_to_tensor_dim(src.type, 4)
    n.type = expand_to_tensor_dim(n.type, 4)
    channels = module_instance.num_features
    if not (
        _dims_consistent(src.type.dims[1], channels)
        and _dims_consistent(n.type.dims[1], channels)
        and _types_consistent(src.type, n.type)
    ):
        raise TypeError(
            f"Cannot apply {module_instance} with input type {src.type} and existing type "
            f"{n.type} on {n}"
        )
    n.type = get_greatest_upper_bound(src.type, n.type)
    return n.type


@register_inference_rule(Conv2d)
def conv2d_inference_rule(n: Any, module_instance: Any) -> Any:
    """Conv2d: a rank-4 input with ``in_channels`` channels gives
    ``(batch, out_channels, H_out, W_out)``, merged with the node's (rank-4) annotation."""
    src = _input_node(n)
    src.type = expand_to_tensor_dim(src.type, 4)
    annotated = expand_to_tensor_dim(n.type, 4)
    batch, channels, height, width = src.type.dims
    if not _dims_consistent(channels, module_instance.in_channels):
        raise TypeError(
            f"Cannot apply {module_instance} with input type {src.type} and existing type "
            f"{n.type} on {n}"
        )
    derived = TensorType(
        (
            batch,
            module_instance.out_channels,
            calculate_out_dimension(height, module_instance, 0),
            calculate_out_dimension(width, module_instance, 1),
        )
    )
    n.type = get_greatest_upper_bound(derived, annotated)
    return n.type


@register_inference_rule(torch.nn.ReLU)
def relu_inference_rule(n: Any, module_instance: Any) -> Any:
    """ReLU: the output has the input's type."""
    return _propagate(n, _input_node(n), lambda t: t, rule_first=True)


@register_inference_rule(torch.nn.MaxPool2d)
def maxpool2d_inference_rule(n: Any, module_instance: Any) -> Any:
    """MaxPool2d on a rank 3 or 4 input: see :func:`maxpool2d_check`."""
    return _propagate(
        n, _input_node(n), lambda t: maxpool2d_check(t, module_instance), rule_first=True
    )


@register_inference_rule(torch.nn.Linear)
def linear_inference_rule(n: Any, module_instance: Any) -> Any:
    """Linear: see :func:`linear_check`."""
    return _propagate(
        n, _input_node(n), lambda t: linear_check(t, module_instance), rule_first=True
    )


@register_inference_rule(torch.nn.AdaptiveAvgPool2d)
def adaptiveavgpool2d_inference_rule(n: Any, module_instance: Any) -> Any:
    """AdaptiveAvgPool2d: see :func:`adaptiveavgpool2d_check`."""
    return _propagate(
        n,
        _input_node(n),
        lambda t: adaptiveavgpool2d_check(t, module_instance),
        rule_first=False,
    )


@register_inference_rule(torch.flatten)
def flatten_inference_rule(n: Any) -> Any:
    """``torch.flatten(x[, start_dim=1[, end_dim=-1]])`` (positional arguments only): see
    :func:`flatten_check`."""
    src = _input_node(n)
    start_dim, end_dim = _flatten_dims(n)
    return _propagate(n, src, lambda t: flatten_check(t, start_dim, end_dim), rule_first=True)


# ---------------------------------------------------------------------------------------------
# Refinement rules: equalities between input and output dimensions


def _tensor_types(*types: Any) -> bool:
    for t in types:
        if not isinstance(t, TensorType):
            return False
    return True


def _equalities(left: Iterable[Any], right: Iterable[Any]) -> list[Equality]:
    return [Equality(a, b) for a, b in zip(left, right)]


@register_refinement_rule(Conv2d)
def conv_refinement_rule(n: Any) -> list[Any]:
    """Conv2d keeps the batch dimension."""
    src = _input_node(n)
    if _tensor_types(src.type, n.type):
        return [Equality(src.type.dims[0], n.type.dims[0])]
    # torch.fx returns None here, which Refine then fails to add to its list.
    return []


@register_refinement_rule(torch.nn.Linear)
def linear_refinement_rule(n: Any) -> list[Any]:
    """Linear keeps the first dimension."""
    src = _input_node(n)
    if _tensor_types(src.type, n.type):
        return [Equality(src.type.dims[0], n.type.dims[0])]
    return []


@register_refinement_rule(BatchNorm2d)
@register_refinement_rule(torch.nn.ReLU)
def all_eq(n: Any) -> list[Any]:
    """Shape-preserving modules: every input dimension equals the output's."""
    src = _input_node(n)
    if _tensor_types(src.type, n.type):
        return _equalities(src.type.dims, n.type.dims)
    return []


@register_refinement_rule(torch.nn.AdaptiveAvgPool2d)
@register_refinement_rule(torch.nn.MaxPool2d)
def first_two_eq(n: Any) -> list[Any]:
    """2-d pooling keeps the first two dimensions."""
    src = _input_node(n)
    if _tensor_types(src.type, n.type):
        return _equalities(src.type.dims[:2], n.type.dims[:2])
    return []


@register_refinement_rule(torch.add)
@register_refinement_rule(operator.add)
def element_wise_eq(n: Any) -> list[Any]:
    """Element-wise addition: where the broadcast operands have the same dimension, that
    dimension was not broadcast and equals the output's.

    Operands that only become equal after unification need a second Refine round.
    """
    lhs, rhs = n.args[0], n.args[1]
    if not (_is_node(lhs) and _is_node(rhs) and _tensor_types(lhs.type, rhs.type, n.type)):
        return []
    left, right, _ = _broadcast_dims(lhs.type.dims, rhs.type.dims)
    return [Equality(a, c) for a, b, c in zip(left, right, n.type.dims) if a == b]


@register_refinement_rule(torch.flatten)
def flatten_refinement_rule(n: Any) -> list[Any]:
    """Flatten keeps the dimensions before and after the flattened run."""
    src = _input_node(n)
    start_dim, end_dim = _flatten_dims(n)
    if not _tensor_types(n.type, src.type):
        return []
    out, arg = n.type.dims, src.type.dims
    # The run's bounds are taken from the output's rank for both sides (as in torch.fx).
    rank = len(out)
    head = rank if start_dim == -1 else start_dim
    tail = rank + end_dim + 1 if end_dim < 0 else end_dim + 1
    return _equalities(out[:head], arg[:head]) + _equalities(out[tail:], arg[tail:])


@register_algebraic_expressions_inference_rule(Conv2d)
def conv_rule(n: Any, module_instance: Any) -> TensorType | None:
    """Conv2d's output height and width as expressions of its input's."""
    src = _input_node(n)
    if not _tensor_types(src.type, n.type):
        return None
    height, width = src.type.dims[2], src.type.dims[3]
    n.type = TensorType(
        (
            n.type.dims[0],
            n.type.dims[1],
            calculate_out_dimension(height, module_instance, 0),
            calculate_out_dimension(width, module_instance, 1),
        )
    )
    return n.type
