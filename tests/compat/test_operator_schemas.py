"""fxkit.operator_schemas against torch.fx.operator_schemas, call for call.

Signatures are compared over every op in torch's table of overridable functions plus a
sample of ``torch.ops.aten`` packets; the rest of the module on a sample of ops and modules.
"""

from __future__ import annotations

import re
import typing
import warnings

import pytest
import torch
import torch.fx as tfx
import torch.fx.operator_schemas as T
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import get_overridable_functions

import fxkit
import fxkit.operator_schemas as K


def _outcome(fn, *args, **kwargs):
    """(``"ok"``, result) or (``"raise"``, exception), with the warnings raised on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = ("ok", fn(*args, **kwargs))
        except Exception as e:
            result = ("raise", e)
    return result, [(w.category, str(w.message)) for w in caught]


def _assert_same(fn_name, *args, **kwargs):
    (kind_t, val_t), warns_t = _outcome(getattr(T, fn_name), *args, **kwargs)
    (kind_k, val_k), warns_k = _outcome(getattr(K, fn_name), *args, **kwargs)
    assert kind_k == kind_t, (fn_name, args, val_t, val_k)
    assert warns_k == warns_t
    if kind_t == "raise":
        assert isinstance(val_k, type(val_t))
        assert str(val_t) in str(val_k)
    else:
        assert _comparable(val_k) == _comparable(val_t), (fn_name, args)
    return val_k


def _annotation(a):
    # The schema type variable ``t`` is a TypeVar per library; compare it by name. A
    # TorchScript class (once torch.classes are loaded, e.g. after torch.jit.script) is a new
    # ScriptClass object per lookup: drop its address (the schema text still names the class).
    if isinstance(a, typing.TypeVar):
        return ("TypeVar", a.__name__)
    return re.sub(r"<torch\.ScriptClass object at 0x[0-9a-fA-F]+>", "<torch.ScriptClass>", repr(a))


def _comparable(v):
    if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
        return type(v)(_comparable(x) for x in v)
    if isinstance(v, K.ArgsKwargsPair) or isinstance(v, T.ArgsKwargsPair):
        return ("pair", tuple(map(repr, v.args)), {k: repr(x) for k, x in v.kwargs.items()})
    if isinstance(v, __import__("inspect").Signature):
        params = [
            (p.name, p.kind, repr(p.default), _annotation(p.annotation))
            for p in v.parameters.values()
        ]
        return params, _annotation(v.return_annotation)
    if isinstance(v, torch._C.FunctionSchema):
        return str(v)
    return v


def _all_ops():
    ops = [f for fs in get_overridable_functions().values() for f in fs]
    packets = [getattr(torch.ops.aten, n) for n in dir(torch.ops.aten) if not n.startswith("__")]
    return (
        ops
        + packets[::5]
        + [getattr(torch.ops.aten.random_, "from"), torch.ops.aten.uniform_.default]
    )


def test_signatures_of_every_overridable_op_equal_torch_fx():
    differ = []
    for op in _all_ops():
        want = T.get_signature_for_torch_op(op, return_schemas=True)
        got = K.get_signature_for_torch_op(op, return_schemas=True)
        if _comparable(list(got)) != _comparable(list(want)):
            differ.append(op)
        assert _comparable(K.get_signature_for_torch_op(op)) == _comparable(
            T.get_signature_for_torch_op(op)
        )
    assert differ == []


def test_from_parameter_is_positional_only():
    sigs = K.get_signature_for_torch_op(getattr(torch.ops.aten.random_, "from"))
    (sig,) = sigs
    kinds = {name: p.kind.name for name, p in sig.parameters.items()}
    assert kinds["input"] == kinds["from"] == "POSITIONAL_ONLY"
    assert kinds["generator"] == "KEYWORD_ONLY"
    x = torch.empty(3)
    for kw in ({}, {"generator": None}):
        _assert_same("normalize_function", getattr(torch.ops.aten.random_, "from"), (x, 0, 5), kw)


# --- check_for_mutable_operation ----------------------------------------------------------


A, B = torch.randn(3), torch.randn(3)


@pytest.mark.parametrize(
    "target,args,kwargs",
    [
        (torch.div, (A, B), {"out": None}),  # functional and out overloads both fit
        (torch.div, (A, B), {}),
        (torch.sigmoid, (A,), {"out": B}),  # only sigmoid.out fits: mutable
        (torch.add, (A, B), {"out": B}),
        (torch.ops.aten.add_.Tensor, (A, B), {}),
        (torch.ops.aten.relu.default, (A,), {}),
        (torch.nonzero, (A,), {}),
        (len, ([1],), {}),
    ],
)
def test_check_for_mutable_operation(target, args, kwargs):
    _assert_same("check_for_mutable_operation", target, args, kwargs)


class _Mutating(torch.nn.Module):
    def forward(self, x, y):
        return torch.sigmoid(x, out=y)


class _DivOutNone(torch.nn.Module):
    def forward(self, x, y):
        return torch.div(x, y, out=None)


@pytest.mark.parametrize("model", [_Mutating, _DivOutNone])
def test_tracer_checks_mutable_operations_like_torch_fx(model):
    def trace(lib):
        tracer = lib.Tracer()
        tracer.check_mutable_operations = True
        try:
            return "ok", [n.op for n in tracer.trace(model()).nodes]
        except Exception as e:
            return "raise", e

    (kind_t, val_t), (kind_k, val_k) = trace(tfx), trace(fxkit)
    assert kind_k == kind_t
    if kind_t == "raise":
        assert type(val_k) is type(val_t) and str(val_t) in str(val_k)
        assert "mutable operation aten::sigmoid.out" in str(val_k)
    else:
        assert val_k == val_t


# --- normalize_function / normalize_module / type hints ----------------------------------------


X = torch.randn(2, 3, 4, 4)


@pytest.mark.parametrize(
    "target,args,kwargs,extra",
    [
        (torch.add, (A, B), {}, {}),
        (torch.add, (A,), {"other": B, "alpha": 2}, {}),
        (torch.add, (A, B), {}, {"normalize_to_only_use_kwargs": True}),
        (torch.sum, (A,), {}, {}),  # ambiguous: RuntimeError listing the schemas
        (torch.sum, (A,), {}, {"arg_types": (torch.Tensor,)}),
        (torch.sum, (A, 0), {}, {"arg_types": (torch.Tensor, int)}),
        (torch.sum, (A, [0]), {}, {"arg_types": (torch.Tensor, typing.List[int])}),
        (torch.ops.aten.add.Tensor, (A, B), {}, {}),
        (torch.ops.aten.add, (A, B), {}, {}),
        (torch.ops.aten.mean.dim, (A, [0]), {}, {"normalize_to_only_use_kwargs": True}),
        (F.relu, (A,), {}, {}),
        (F.relu, (A,), {"inplace": True}, {"normalize_to_only_use_kwargs": True}),
        (F.max_pool2d, (X, 2), {}, {}),  # boolean_dispatch with equal branches
        (F.adaptive_max_pool2d, (X, 2), {}, {}),
        (F.relu, (), {"nope": 1}, {}),  # does not bind: TypeError, as torch.fx
        (lambda *a: a, (1,), {}, {}),  # varargs: not normalized
        (len, ([1],), {}, {}),
        (torch.nonzero, (A,), {}, {}),
    ],
)
def test_normalize_function(target, args, kwargs, extra):
    _assert_same("normalize_function", target, args, kwargs, **extra)


class _Custom(torch.nn.Module):
    def forward(self, x):
        return x


def _root():
    root = torch.nn.Module()
    root.lin = torch.nn.Linear(3, 3)
    root.conv = torch.nn.Conv2d(3, 3, 1)
    root.custom = _Custom()
    return root


@pytest.mark.parametrize(
    "target,args,kwargs,only_kwargs",
    [
        ("lin", (A,), {}, False),
        ("lin", (A,), {}, True),
        ("conv", (X,), {}, False),
        ("custom", (A,), {}, False),
        ("missing", (A,), {}, False),
        ("lin", (A, A), {}, False),
    ],
)
def test_normalize_module(target, args, kwargs, only_kwargs):
    _assert_same("normalize_module", _root(), target, args, kwargs, only_kwargs)


@pytest.mark.parametrize(
    "x",
    [
        [int, bool],
        (bool, int),
        [],
        (),
        [int, str],
        [1, 2],
        (torch.Tensor,),
        int,
        "x",
        [object, int],
    ],
)
def test_create_type_hint(x):
    _assert_same("create_type_hint", x)


_HINTS = [
    int, float, bool, torch.Tensor, torch.dtype, typing.Any, type(None), str,
    typing.Optional[int], typing.Optional[torch.Tensor], typing.List[int], typing.List[float],
    typing.List[torch.Tensor], typing.Tuple[int, ...], typing.Tuple[int, int], typing.Tuple[()],
    typing.Tuple[int, str], typing.Union[int, float], typing.List[typing.Optional[int]],
    typing.List[typing.List[int]], __import__("numbers").Number, list, tuple,
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_HINTS), st.sampled_from(_HINTS))
def test_type_matches(signature_type, argument_type):
    _assert_same("type_matches", signature_type, argument_type)


# Taken at import: a test elsewhere that leaks a patched ``torch.clamp`` cannot affect this.
_SCHEMA_OPS = (torch.add, torch.sum, torch.cat, torch.conv2d, torch.index_select, torch.clamp)


def test_type_matches_over_schema_annotations():
    # Every annotation a real schema carries, against a few argument types.
    annotations = set()
    for op in _SCHEMA_OPS:
        for sig in K.get_signature_for_torch_op(op):
            annotations.update(p.annotation for p in sig.parameters.values())
    for ann in annotations:
        for arg in (int, float, torch.Tensor, typing.List[int], typing.Tuple[int, ...], bool):
            _assert_same("type_matches", ann, arg)


def test_public_names_match():
    assert set(K.__all__) == set(T.__all__)


# --- normalize_function over many ops and argument patterns -----------------------------------


_PATTERNS = [
    ((A,), {}),
    ((A, B), {}),
    ((A, 1), {}),
    ((A, 1.5), {}),
    ((A, [0]), {}),
    ((A,), {"dim": 0}),
    ((A, B), {"alpha": 2}),
    ((A, B, B), {}),
]
_TYPED = [
    ((torch.Tensor,), {}),
    ((torch.Tensor, torch.Tensor), {}),
    ((torch.Tensor, int), {}),
    ((torch.Tensor, float), {}),
    ((torch.Tensor, typing.List[int]), {}),
    ((torch.Tensor,), {"dim": int}),
    ((torch.Tensor, torch.Tensor), {"alpha": int}),
    ((torch.Tensor, torch.Tensor, torch.Tensor), {}),
]


def _sampled_ops():
    torch_ns = sorted(get_overridable_functions()[torch], key=lambda f: f.__name__)
    functional = sorted(get_overridable_functions()[F], key=lambda f: f.__name__)
    aten = [torch.ops.aten.add, torch.ops.aten.sum, torch.ops.aten.mean.dim, torch.ops.aten.div]
    return torch_ns[::4] + functional[::6] + aten


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("only_kwargs", [False, True], ids=["positional", "kwargs"])
def test_normalize_function_over_many_ops(only_kwargs):
    for op in _sampled_ops():
        for (args, kwargs), (arg_types, kwarg_types) in zip(_PATTERNS, _TYPED):
            _assert_same("normalize_function", op, args, kwargs, None, None, only_kwargs)
            _assert_same(
                "normalize_function", op, args, kwargs, arg_types, kwarg_types, only_kwargs
            )


def test_aliases_torch_fx_privates_used_by_other_modules():
    # Private helpers of torch.fx's module that its experimental passes (and user code)
    # import by name.
    for ts_type in (torch._C.TensorType.get(), torch._C.ListType(torch._C.IntType.get())):
        assert K._torchscript_type_to_python_type(ts_type) == T._torchscript_type_to_python_type(
            ts_type
        )
    schema = torch.ops.aten.add.Tensor._schema
    assert _comparable(K._torchscript_schema_to_signature(schema)) == _comparable(
        T._torchscript_schema_to_signature(schema)
    )
    sig = K._torchscript_schema_to_signature(schema)
    for only_kwargs in (False, True):
        got = K._args_kwargs_to_normalized_args_kwargs(sig, (A, B), {}, only_kwargs)
        want = T._args_kwargs_to_normalized_args_kwargs(sig, (A, B), {}, only_kwargs)
        assert _comparable(got) == _comparable(want)
