"""Match call arguments to signatures: the machinery behind ``Node.normalized_arguments``.

Python callables are matched with :mod:`inspect`; torch operators with the TorchScript
schemas torch registers for them (one :class:`inspect.Signature` per overload).
"""

from __future__ import annotations

import enum
import inspect
import keyword
import numbers
import types
import typing
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch.utils._inspect import _fast_bind

# Public names, grouped by role: the result type, signature lookup, type checks, matching.
__all__ = ["ArgsKwargsPair", "get_signature_for_torch_op", "check_for_mutable_operation"]
__all__ += ["create_type_hint", "type_matches", "normalize_function", "normalize_module"]

_NAMED_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ArgsKwargsPair(NamedTuple):
    """Normalized call arguments: positional ``args`` and keyword ``kwargs``."""

    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


def _typing_namespace() -> Dict[str, Any]:
    """Names a TorchScript type string (``Optional[List[Tensor]]``, ``__torch__.torch.classes
    ...``) can use, mapped to the Python types torch.fx's signatures carry."""

    class _TorchRoot:
        # ``__torch__.torch.classes.x.Y`` resolves through the real torch module.
        def __getattr__(self, name: str) -> Any:
            if name != "torch":
                raise RuntimeError(f"unexpected name __torch__.{name} in a schema type")
            return torch

    names: Dict[str, Any] = {k: getattr(typing, k) for k in dir(typing)}
    names.update(
        Tensor=torch.Tensor, Device=torch.device, Layout=torch.layout, number=numbers.Number,
        Future=torch.jit.Future, AnyEnumType=enum.Enum, QScheme=torch.qscheme,
        __torch__=_TorchRoot(), NoneType=type(None), Storage=torch.UntypedStorage,
        t=typing.TypeVar("t"), PyObject=Any,
    )  # fmt: skip
    return names


_TYPE_NAMES = _typing_namespace()


def _schema_type(ts_type: Any) -> Any:
    """The Python type for a TorchScript type, read off its annotation string."""
    return eval(ts_type.annotation_str, _TYPE_NAMES)  # noqa: S307 - schema text, not user input


def _schema_to_signature(schema: Any) -> inspect.Signature:
    """The :class:`inspect.Signature` of a TorchScript ``FunctionSchema`` (cached)."""
    key = (schema.name, schema.overload_name)
    sig = _SIGNATURES.get(key)
    if sig is None:
        sig = _SIGNATURES[key] = _build_signature(schema)
    return sig


_SIGNATURES: Dict[Tuple[str, str], inspect.Signature] = {}
_P = inspect.Parameter


def _build_signature(schema: Any) -> inspect.Signature:
    params: List[inspect.Parameter] = []
    for arg in schema.arguments:
        # Python's argument parser calls the first tensor ``input``, so callers use that name.
        name = "input" if arg.name == "self" else arg.name
        kind: Any = _P.KEYWORD_ONLY if arg.kwarg_only else _P.POSITIONAL_OR_KEYWORD
        if keyword.iskeyword(name):
            # Python cannot pass ``from=...``: the parameter, and every one before it, can
            # only be given positionally (inspect requires that order).
            if kind is not _P.POSITIONAL_OR_KEYWORD or any(
                p.kind is not _P.POSITIONAL_OR_KEYWORD for p in params
            ):
                raise AssertionError(
                    f"cannot make {name!r} positional-only in {schema}: a keyword-only "
                    "parameter comes first"
                )
            params = [p.replace(kind=_P.POSITIONAL_ONLY) for p in params]
            kind = _P.POSITIONAL_ONLY
        default = arg.default_value if arg.has_default_value() else _P.empty
        params.append(_P(name, kind, default=default, annotation=_schema_type(arg.type)))
    returns = [_schema_type(r.type) for r in schema.returns]
    ret: Any = None if not returns else returns[0] if len(returns) == 1 else tuple(returns)
    return inspect.Signature(params, return_annotation=ret)


def _nonzero_signatures() -> List[inspect.Signature]:
    # torch.nonzero's Python binding takes ``as_tuple``, which no aten schema has.
    tensor = _P("self", _P.POSITIONAL_OR_KEYWORD, annotation=torch.Tensor)
    as_tuple = _P("as_tuple", _P.KEYWORD_ONLY, annotation=bool)
    return [
        inspect.Signature([tensor], return_annotation=None),
        inspect.Signature([tensor, as_tuple], return_annotation=None),
    ]


# Ops whose Python signature the schemas do not describe.
_OVERRIDES: Dict[Any, List[inspect.Signature]] = {torch.nonzero: _nonzero_signatures()}


def get_signature_for_torch_op(op: Callable, return_schemas: bool = False) -> Any:
    """The signatures (one per overload) of a torch operator, or ``None`` if it has none.

    ``op`` is a function of the ``torch`` namespace (``torch.add``), an ``OpOverloadPacket``
    (``torch.ops.aten.add``) or an ``OpOverload`` (``torch.ops.aten.add.Tensor``). With
    ``return_schemas`` a ``(signatures, schemas)`` pair is returned; ``schemas`` is None for
    ops whose signatures are written by hand (``torch.nonzero``).
    """
    if isinstance(op, torch._ops.OpOverloadPacket):
        schemas: Any = [overload._schema for overload in op.op_overloads()]
    elif isinstance(op, torch._ops.OpOverload):
        schemas = [op._schema]
    else:
        manual = _OVERRIDES.get(op)
        if manual:
            return (manual, None) if return_schemas else None
        from torch.jit._builtins import _find_builtin

        aten_name = _find_builtin(op)
        if aten_name is None:
            return (None, None) if return_schemas else None
        schemas = torch._C._jit_get_schemas_for_operator(aten_name)
    signatures = [_schema_to_signature(s) for s in schemas]
    return (signatures, schemas) if return_schemas else signatures


def create_type_hint(x: Any) -> Any:
    """A type hint for a list or tuple of types: ``list[T]`` / ``tuple[T, ...]`` where ``T``
    is the one type that all the others derive from (``Any`` if there is none).

    Anything other than a list or tuple is returned unchanged; so is a list that holds
    something other than types (with a warning).
    """
    if not isinstance(x, (list, tuple)):
        return x

    def wrap(element: Any) -> Any:
        return list[element] if isinstance(x, list) else tuple[element, ...]  # type: ignore[valid-type]

    try:
        base: Any = x[0] if x else Any
        for t in x:
            if issubclass(t, base):
                continue
            if issubclass(base, t):
                base = t  # widen to the more general type
            else:
                return wrap(Any)
        return wrap(base)
    except Exception:
        msg = f"We were not able to successfully create type hint from the type {x}"
        warnings.warn(msg, stacklevel=2)
        return x


def _homogeneous_tuple_of(hint: Any, element: type) -> bool:
    """Whether ``hint`` is ``tuple[...]`` whose every entry is ``element`` (or ``...``)."""
    if typing.get_origin(hint) is not tuple:
        return False
    entries = typing.get_args(hint)
    if entries == ((),):  # how typing spells Tuple[()]
        return True
    return all(e is Ellipsis or issubclass(e, element) for e in entries)


def type_matches(signature_type: Any, argument_type: Any) -> bool:
    """Whether a value of type ``argument_type`` can be passed to a parameter annotated
    ``signature_type`` (as schema signatures annotate them: ``Optional``/``Union``,
    ``List[int]`` also taking an ``int`` or a homogeneous tuple, dtypes as ints, numbers)."""
    if signature_type is argument_type:
        return True
    origin = getattr(signature_type, "__origin__", None)
    if origin is typing.Union and signature_type != argument_type:
        return any(type_matches(t, argument_type) for t in typing.get_args(signature_type))
    if origin is list:
        element = typing.get_args(signature_type)[0]
        if element is int and argument_type is int:
            return True  # a single int broadcasts to an int list
        if not inspect.isclass(element):
            warnings.warn(
                f"Does not support nested parametric types, got {signature_type}. Please "
                "file a bug.",
                stacklevel=2,
            )
            return False
        if getattr(argument_type, "__origin__", None) is list:
            return issubclass(typing.get_args(argument_type)[0], element)
        return _homogeneous_tuple_of(argument_type, element)
    if signature_type is int and argument_type is torch.dtype:
        return True  # dtypes are ints in TorchScript schemas
    if signature_type is numbers.Number and argument_type in (int, float):
        return True
    if inspect.isclass(signature_type) and inspect.isclass(argument_type):
        return issubclass(argument_type, signature_type)
    return False


def _binding(sig: inspect.Signature, args: Tuple, kwargs: Dict) -> bool:
    try:
        _fast_bind(sig, *args, **kwargs)
    except TypeError:
        return False
    return True


def check_for_mutable_operation(target: Callable, args: Tuple, kwargs: Dict) -> None:
    """Raise ``RuntimeError`` if ``target`` called with ``args``/``kwargs`` mutates an
    operand (an ``out=`` overload, an in-place op).

    Best effort, like torch.fx: only decided when exactly one overload accepts the
    arguments; with none or several (``torch.div(a, b, out=None)`` fits a functional and an
    ``out`` overload) nothing is raised.
    """
    signatures, schemas = get_signature_for_torch_op(target, return_schemas=True)
    if not signatures or not schemas:
        return
    fitting = [sc for sig, sc in zip(signatures, schemas) if _binding(sig, args, kwargs)]
    if len(fitting) == 1 and fitting[0].is_mutable:
        raise RuntimeError(
            f"Tried to trace mutable operation {fitting[0]}. FX only supports functional "
            "code, so operations that mutate operands in-place (e.g. via `out` arguments) "
            "are not supported"
        )


# ``Tensor(a!) self, float from=0, float to=1, *, Generator? generator=None`` (random_,
# uniform_): positional-only because of ``from``, yet callers may still name the others.
_FROM_TO_PARAMS = ["input", "from", "to", "generator"]


def _normalize(
    sig: inspect.Signature, args: Tuple, kwargs: Dict, only_kwargs: bool
) -> Optional[ArgsKwargsPair]:
    """``args``/``kwargs`` bound to ``sig`` with defaults filled in: the first ``len(args)``
    parameters stay positional (none with ``only_kwargs``), the rest become keywords. None
    for signatures with positional-only or variadic parameters."""
    params = sig.parameters
    if any(p.kind not in _NAMED_KINDS for p in params.values()):
        if list(params) != _FROM_TO_PARAMS:
            return None
    bound = _fast_bind(sig, *args, **kwargs)
    bound.apply_defaults()
    values = bound.arguments
    split = 0 if only_kwargs else len(args)
    names = list(params)
    positional = tuple(values[name] for name in names[:split])
    return ArgsKwargsPair(positional, {name: values[name] for name in names[split:]})


def _python_signature(target: Callable) -> Optional[inspect.Signature]:
    """The signature to normalize a Python-level callable against; for a ``boolean_dispatch``
    function, its ``if_true`` branch when both branches take the same parameters (else None)."""
    from torch._jit_internal import boolean_dispatched

    if target in boolean_dispatched:
        branches = boolean_dispatched[target]
        if_true, if_false = branches["if_true"], branches["if_false"]
        if inspect.signature(if_true).parameters != inspect.signature(if_false).parameters:
            return None
        target = if_true
    if not callable(target):
        raise AssertionError(f"target_for_analysis must be callable, got {type(target)}")
    return inspect.signature(inspect.unwrap(target))


def _is_schema_op(target: Any) -> bool:
    return isinstance(
        target, (types.BuiltinFunctionType, torch._ops.OpOverload, torch._ops.OpOverloadPacket)
    )


def normalize_function(
    target: Callable,
    args: Tuple[Any, ...],
    kwargs: Optional[Dict[str, Any]] = None,
    arg_types: Optional[Tuple[Any, ...]] = None,
    kwarg_types: Optional[Dict[str, Any]] = None,
    normalize_to_only_use_kwargs: bool = False,
) -> Optional[ArgsKwargsPair]:
    """The arguments of a call to ``target`` matched to its signature, defaults filled in.

    Python functions use their own signature; torch builtins and ``torch.ops`` overloads
    use their schemas. When several overloads accept the arguments, ``arg_types`` /
    ``kwarg_types`` pick the first whose annotations fit (:func:`type_matches`); without
    them that is a ``RuntimeError``. Returns None when the signature is unknown, no overload
    fits, or it has positional-only or variadic parameters.
    """
    kwargs = {} if kwargs is None else kwargs
    if not _is_schema_op(target) and hasattr(target, "_op"):
        target = target._op  # a wrapper around an OpOverload (ExecuTorch's EdgeOpOverload)
    if not _is_schema_op(target):
        sig = _python_signature(target)
        if sig is None:
            return None
        return _normalize(sig, args, kwargs, normalize_to_only_use_kwargs)
    if not callable(target):
        raise AssertionError(f"target must be callable, got {type(target)}")
    signatures = get_signature_for_torch_op(target)
    if not signatures:
        return None
    fitting = [sig for sig in signatures if _binding(sig, args, kwargs)]
    if len(fitting) == 1:
        return _normalize(fitting[0], args, kwargs, normalize_to_only_use_kwargs)
    if not fitting:
        return None
    if arg_types is None and kwarg_types is None:
        listing = "\n".join(str(sig) for sig in fitting)
        raise RuntimeError(
            f"Tried to normalize arguments to {torch.typename(target)} but the schema match "
            "was ambiguous! Please provide argument types to the normalize_arguments() call. "
            f"Available schemas:\n{listing}"
        )
    for sig in signatures:
        if _types_fit(sig, arg_types or (), kwarg_types or {}):
            return _normalize(sig, args, kwargs, normalize_to_only_use_kwargs)
    return None


def _types_fit(sig: inspect.Signature, arg_types: Tuple, kwarg_types: Dict) -> bool:
    try:
        bound = _fast_bind(sig, *arg_types, **kwarg_types)
    except TypeError:
        return False
    params = sig.parameters
    return all(type_matches(params[n].annotation, t) for n, t in bound.arguments.items())


# fmt: off
def normalize_module(root: torch.nn.Module, target: str, args: Tuple[Any, ...],
                     kwargs: Optional[Dict[str, Any]] = None,
                     normalize_to_only_use_kwargs: bool = False) -> Optional[ArgsKwargsPair]:
    # fmt: on
    """The arguments of a call to the ``torch.nn`` submodule at ``target`` matched to its
    ``forward`` signature; None for modules whose class is not a ``torch.nn`` one."""
    try:
        submod = root.get_submodule(target)
    except AttributeError as exc:
        raise RuntimeError(
            f"Tried to normalize node with target {target} but root did not have that target!"
        ) from exc
    cls = type(submod)
    if getattr(torch.nn, cls.__name__, None) != cls:
        return None
    kwargs = {} if kwargs is None else kwargs
    return _normalize(_forward_signature(submod), args, kwargs, normalize_to_only_use_kwargs)


# ``forward`` function of a torch.nn class -> the signature of that method, bound.
_FORWARD_SIGNATURES: Dict[Any, inspect.Signature] = {}


def _forward_signature(submod: torch.nn.Module) -> inspect.Signature:
    forward = submod.forward
    function = getattr(forward, "__func__", None)
    sig = _FORWARD_SIGNATURES.get(function) if function is not None else None
    if sig is None:
        sig = inspect.signature(inspect.unwrap(forward))
        if function is not None:  # only torch.nn's own classes get here: a bounded set
            _FORWARD_SIGNATURES[function] = sig
    return sig


# torch.fx's private names for the helpers above, which other modules import.
_torchscript_type_to_python_type = _schema_type
_torchscript_schema_to_signature = _schema_to_signature
_args_kwargs_to_normalized_args_kwargs = _normalize
