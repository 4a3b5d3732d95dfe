"""Match call arguments to signatures: the machinery behind ``Node.normalized_arguments``.

Python callables are matched with :mod:`inspect`; torch operators with the TorchScript
schemas torch registers for them (one :class:`inspect.Signature` per overload).
"""

from __future__ import annotations

import inspect
import numbers
import typing
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

# Public names, grouped by role: the result type, signature lookup, type checks, matching.
__all__ = ["ArgsKwargsPair", "get_signature_for_torch_op", "check_for_mutable_operation"]
__all__ += ["create_type_hint", "type_matches", "normalize_function", "normalize_module"]

_NAMED_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ArgsKwargsPair(NamedTuple):
    """Normalized call arguments: positional ``args`` and keyword ``kwargs``."""

    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


_SCHEMA_TYPES: Dict[str, Any] = {
    "Tensor": torch.Tensor, "Scalar": numbers.Number, "number": numbers.Number, "int": int, "SymInt": int,
    "float": float, "bool": bool, "str": str, "ScalarType": torch.dtype, "Device": torch.device,
    "Layout": torch.layout, "MemoryFormat": torch.memory_format, "Generator": torch.Generator,
}  # fmt: skip


def _schema_type(text: str) -> Any:
    optional = text.endswith("?")
    text = text.rstrip("?")
    if text.endswith("[]") or "[" in text:
        inner: Any = _SCHEMA_TYPES.get(text.split("[")[0], Any)
        hint: Any = typing.List[inner]  # type: ignore[valid-type]
    else:
        hint = _SCHEMA_TYPES.get(text, Any)
    return typing.Optional[hint] if optional else hint


def _schema_to_signature(schema: Any) -> inspect.Signature:
    params = []
    seen_kw_only = False
    for arg in schema.arguments:
        name = "input" if arg.name == "self" else arg.name
        kind: Any = inspect.Parameter.POSITIONAL_OR_KEYWORD
        if arg.kwarg_only or seen_kw_only:
            kind = inspect.Parameter.KEYWORD_ONLY
            seen_kw_only = True
        default = arg.default_value if arg.has_default_value() else inspect.Parameter.empty
        annotation = _schema_type(str(arg.type))
        params.append(inspect.Parameter(name, kind, default=default, annotation=annotation))
    return inspect.Signature(params)


def get_signature_for_torch_op(op: Callable, return_schemas: bool = False) -> Any:
    """The signatures (one per overload) of a torch operator, or ``None`` if it has none.

    With ``return_schemas`` a ``(signatures, schemas)`` pair is returned.
    """
    schemas: List[Any] = []
    if isinstance(op, torch._ops.OpOverload):
        schemas = [op._schema]
    elif isinstance(op, torch._ops.OpOverloadPacket):
        schemas = [getattr(op, o)._schema for o in op.overloads()]
    else:
        try:
            from torch.jit._builtins import _find_builtin

            aten_name = _find_builtin(op)
        except Exception:
            aten_name = None
        if aten_name is not None:
            schemas = list(torch._C._jit_get_schemas_for_operator(aten_name))
    if not schemas:
        return (None, None) if return_schemas else None
    signatures = [_schema_to_signature(s) for s in schemas]
    return (signatures, schemas) if return_schemas else signatures


def create_type_hint(x: Any) -> Any:
    """A ``List[T]``/``Tuple[T, ...]`` hint for a list/tuple of values or types."""
    if not isinstance(x, (list, tuple)):
        return x
    types = {t if isinstance(t, type) else type(t) for t in x}
    inner: Any = types.pop() if len(types) == 1 else Any
    return typing.List[inner] if isinstance(x, list) else typing.Tuple[inner, ...]


def type_matches(signature_type: Any, argument_type: Any) -> bool:
    """Whether a value of ``argument_type`` can be passed where ``signature_type`` is expected."""
    if signature_type is argument_type or signature_type is Any:
        return True
    origin = getattr(signature_type, "__origin__", None)
    if origin is typing.Union:
        return any(type_matches(t, argument_type) for t in signature_type.__args__)
    if origin in (list, tuple) and getattr(argument_type, "__origin__", None) in (list, tuple):
        want = signature_type.__args__[0]
        have = argument_type.__args__[0]
        return type_matches(want, have)
    if signature_type is int and argument_type is torch.dtype:
        return True  # dtypes are ints in TorchScript schemas
    if signature_type is numbers.Number and argument_type in (int, float, complex):
        return True
    if isinstance(signature_type, type) and isinstance(argument_type, type):
        return issubclass(argument_type, signature_type)
    return False


def check_for_mutable_operation(target: Callable, args: Tuple, kwargs: Dict) -> None:
    """Raise if the unique matching overload of ``target`` mutates one of its inputs."""
    found = get_signature_for_torch_op(target, return_schemas=True)
    signatures, schemas = found
    if not signatures:
        return
    for sig, schema in zip(signatures, schemas):
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            continue
        if schema.is_mutable:
            raise RuntimeError(
                f"{getattr(target, '__name__', target)} mutates its inputs in place, which "
                "cannot be traced faithfully here"
            )
        return


def _normalize(
    sig: inspect.Signature, args: Tuple, kwargs: Dict, only_kwargs: bool
) -> Optional[ArgsKwargsPair]:
    if any(p.kind not in _NAMED_KINDS for p in sig.parameters.values()):
        return None
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    values = [(name, bound.arguments[name]) for name in sig.parameters]
    # Keep as many leading parameters positional as the caller passed positionally.
    split = 0 if only_kwargs else len(args)
    return ArgsKwargsPair(tuple(v for _, v in values[:split]), dict(values[split:]))


def normalize_function(
    target: Callable,
    args: Tuple[Any, ...],
    kwargs: Optional[Dict[str, Any]] = None,
    arg_types: Optional[Tuple[Any, ...]] = None,
    kwarg_types: Optional[Dict[str, Any]] = None,
    normalize_to_only_use_kwargs: bool = False,
) -> Optional[ArgsKwargsPair]:
    """Arguments of a call to ``target`` matched to its signature, or ``None`` when the
    signature is unknown or more than one overload fits (pass ``arg_types`` to decide)."""
    kwargs = dict(kwargs or {})
    if not callable(target):
        raise TypeError(f"normalize_function expects a callable target, got {target!r}")
    signatures = get_signature_for_torch_op(target)
    if signatures is None:
        if getattr(inspect.unwrap(target), "__code__", None) is None:
            return None
        sig = inspect.signature(inspect.unwrap(target))
        try:
            return _normalize(sig, args, kwargs, normalize_to_only_use_kwargs)
        except TypeError:
            return None
    fitting = []
    for sig in signatures:
        try:
            sig.bind(*args, **kwargs)
            fitting.append(sig)
        except TypeError:
            continue
    if len(fitting) > 1 and (arg_types is not None or kwarg_types is not None):
        arg_types = arg_types or ()
        kwarg_types = kwarg_types or {}
        typed = []
        for sig in fitting:
            bound = sig.bind(*arg_types, **kwarg_types)
            hints = {p.name: p.annotation for p in sig.parameters.values()}
            if all(
                hints[name] is inspect.Parameter.empty or type_matches(hints[name], t)
                for name, t in bound.arguments.items()
            ):
                typed.append(sig)
        fitting = typed
    if len(fitting) > 1:
        raise RuntimeError(
            f"the arguments of {getattr(target, '__name__', target)} match "
            f"{len(fitting)} overloads ({'; '.join(map(str, fitting[:3]))}); pass arg_types/"
            "kwarg_types to pick one"
        )
    if not fitting:
        return None
    return _normalize(fitting[0], args, kwargs, normalize_to_only_use_kwargs)


def normalize_module(
    root: torch.nn.Module,
    target: str,
    args: Tuple[Any, ...],
    kwargs: Optional[Dict[str, Any]] = None,
    normalize_to_only_use_kwargs: bool = False,
) -> Optional[ArgsKwargsPair]:
    """Arguments of a call to the ``torch.nn`` submodule at ``target`` matched to its
    ``forward`` signature; ``None`` for modules from outside ``torch.nn``."""
    try:
        submod = root.get_submodule(target)
    except AttributeError as exc:
        raise RuntimeError(f"normalize_module: {target!r} is not a submodule of the root") from exc
    cls = type(submod)
    if getattr(torch.nn, cls.__name__, None) is not cls:
        return None
    sig = inspect.signature(inspect.unwrap(submod.forward))
    try:
        return _normalize(sig, args, dict(kwargs or {}), normalize_to_only_use_kwargs)
    except TypeError:
        return None
