"""The tracer against torch.fx: the same script on both, comparing graphs, outputs, code and
exceptions (issue 15, sections 1 and 4)."""

from __future__ import annotations

import copy
import functools
import importlib
import operator
import sys
import types
from typing import Any, Callable

import pytest
import torch
import torch.fx as tfx
import torch.fx._symbolic_trace as tfx_st
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fxkit
from fxkit import interop

LIBS = pytest.mark.parametrize("lib", [tfx, fxkit], ids=["torch.fx", "fxkit"])


def _target(t: Any) -> Any:
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _graph(gm: Any) -> list:
    return [(n.op, _target(n.target), n.name) for n in gm.graph.nodes]


def _exec_module(lib: Any, src: str) -> types.ModuleType:
    """Run ``src`` as the body of a fresh module whose ``fx`` is ``lib``."""
    mod = types.ModuleType(f"fxkit_compat_{lib.__name__.replace('.', '_')}")
    mod.__dict__["fx"] = lib
    exec(compile(src, f"<{mod.__name__}>", "exec"), mod.__dict__)
    return mod


def _builtin_bases(t: type) -> set:
    return {c for c in t.__mro__ if c.__module__ == "builtins" and c is not object}


def _same_raise(script: Callable[[Any], Any]) -> BaseException:
    """Run ``script(torch.fx)`` and ``script(fxkit)``: both raise, fxkit's exception has every
    builtin type torch.fx's has, and its message starts with torch.fx's."""
    with pytest.raises(BaseException) as ref:
        script(tfx)
    with pytest.raises(BaseException) as got:
        script(fxkit)
    assert _builtin_bases(type(ref.value)) <= _builtin_bases(type(got.value)), (
        type(ref.value).__mro__,
        type(got.value).__mro__,
    )
    assert str(got.value).startswith(str(ref.value)), (str(ref.value), str(got.value))
    return got.value


# --- 1. wrap("name") before def -------------------------------------------------------------

_WRAP_BEFORE_DEF = """
import torch

fx.wrap("helper")


def helper(x):
    if x.sum() > 0:  # not traceable: only a recorded call works
        return x + 1
    return x - 1


def f(x):
    return helper(x) * 2
"""


def test_wrap_before_def_module_file_imports_and_traces() -> None:
    sys.modules.pop("compat.wrap_before_def_mod", None)
    mod = importlib.import_module("compat.wrap_before_def_mod")
    gm = fxkit.symbolic_trace(mod.model_fn)
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert [n.target for n in calls] == [mod.scaled_sum, mod.pad_to_even]
    assert all(n.meta.get("is_wrapped") is True for n in calls)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(gm(x, y), mod.model_fn(x, y))
    ref = tfx.symbolic_trace(mod.model_fn)  # torch.fx inlines scaled_sum (fxkit's wrap)
    assert [n.target for n in ref.graph.nodes if n.op == "call_function"][-1] is mod.pad_to_even


def test_wrap_before_def_module_class_root() -> None:
    mod = importlib.import_module("compat.wrap_before_def_mod")
    m = mod.Model()
    gm = fxkit.symbolic_trace(m)
    ops = [(n.op, _target(n.target)) for n in gm.graph.nodes]
    assert ("call_function", "pad_to_even") in ops and ("call_function", "scaled_sum") in ops
    x = torch.randn(2, 3)
    torch.testing.assert_close(gm(x), m(x))


@LIBS
def test_wrap_before_def_same_graph(lib: Any) -> None:
    mod = _exec_module(lib, _WRAP_BEFORE_DEF)
    gm = lib.symbolic_trace(mod.f)
    assert _graph(gm) == [
        ("placeholder", "x", "x"),
        ("call_function", "helper", "helper"),
        ("call_function", "mul", "mul"),
        ("output", "output", "output"),
    ]
    node = list(gm.graph.nodes)[1]
    assert node.target is mod.helper and node.meta["is_wrapped"] is True
    x = torch.randn(3)
    torch.testing.assert_close(gm(x), mod.f(x))


def test_wrap_of_a_name_never_defined() -> None:
    # torch.fx fails every later trace with KeyError; fxkit skips the name.
    mod = _exec_module(fxkit, 'fx.wrap("never_defined")\ndef f(x):\n    return x + 1\n')
    try:
        assert [n.op for n in fxkit.symbolic_trace(mod.f).graph.nodes][1] == "call_function"
    finally:
        del fxkit._symbolic_trace._wrapped_fns_to_patch[(id(mod.__dict__), "never_defined")]


# --- 2. functions registered with torch.fx.wrap ---------------------------------------------

_TORCH_FX_WRAPPED = """
import torch
import torch.fx

torch.fx.wrap("stochastic_depth_like")
torch.fx.wrap("window_pad")


def stochastic_depth_like(x, p: float, training: bool):
    # random noise in train mode: inlining it would bake one draw into the graph
    if not training or p == 0.0:
        return x
    noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(1 - p)
    return x * noise / (1 - p)


def window_pad(x, window: int):
    # shape-dependent Python, as swin's helpers do: tracing through it fails
    _, w = x.shape
    pad = (window - w % window) % window
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return window_pad(stochastic_depth_like(self.lin(x), 0.5, self.training), 3).sum(1)
"""


@pytest.mark.parametrize("train", [False, True])
def test_torch_fx_wrap_registry_is_honoured(train: bool) -> None:
    mod = _exec_module(tfx, _TORCH_FX_WRAPPED)
    block = mod.Block().train(train)
    ref = tfx.symbolic_trace(block)
    got = fxkit.symbolic_trace(block)
    assert _graph(got) == _graph(ref)
    wrapped = [n for n in got.graph.nodes if n.op == "call_function"]
    assert [n.target for n in wrapped[:2]] == [mod.stochastic_depth_like, mod.window_pad]
    assert all(n.meta["is_wrapped"] for n in wrapped[:2])
    x = torch.randn(4, 8)
    torch.manual_seed(0)
    expected = block(x)
    torch.manual_seed(0)
    torch.testing.assert_close(got(x), expected)
    assert mod.window_pad is mod.__dict__["window_pad"]  # unpatched after the trace


def test_torch_fx_wrapped_method_is_honoured() -> None:
    # torch.fx's method table (FX_PATCH_GETITEM=1 puts Tensor.__getitem__ there): a constant
    # tensor indexed with a traced size.
    class PosEmb(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("pe", torch.arange(20.0).reshape(1, 20))

        def forward(self, x):
            return x + self.pe[:, : x.size(1)]

    entry = (torch.Tensor, "__getitem__")
    tfx_st._wrapped_methods_to_patch.append(entry)
    try:
        ref = tfx.symbolic_trace(PosEmb())
        got = fxkit.symbolic_trace(PosEmb())
    finally:
        tfx_st._wrapped_methods_to_patch.remove(entry)
    assert _graph(got) == _graph(ref)
    assert torch.Tensor.__getitem__ is torch._C.TensorBase.__getitem__
    x = torch.randn(2, 5)
    torch.testing.assert_close(got(x), ref(x))


def test_interop_reads_torch_fx_registry() -> None:
    mod = _exec_module(tfx, _TORCH_FX_WRAPPED)
    functions, methods = interop.torch_fx_wrap_registry()
    names = {name for ns, name in functions if ns is mod.__dict__}
    assert names == {"stochastic_depth_like", "window_pad"}
    assert methods == list(tfx_st._wrapped_methods_to_patch)


# --- 4. exception types and texts -----------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [F.conv2d, F.relu_, torch.nn.functional.gelu], ids=lambda f: f.__name__
)
def test_trace_of_a_builtin_raises_assertion(fn: Any) -> None:
    _same_raise(lambda lib: lib.symbolic_trace(fn))


def test_trace_of_a_bound_method_raises_assertion() -> None:
    m = torch.nn.ReLU()
    err = _same_raise(lambda lib: lib.symbolic_trace(m.forward))
    assert "bound method" in str(err)


def test_traced_func_name_missing() -> None:
    class M(torch.nn.Module):
        def forward(self, x):
            return x

    def script(lib: Any) -> None:
        tracer = lib.Tracer()
        tracer.traced_func_name = "encode"
        tracer.trace(M())

    assert "doesn't exist in M" in str(_same_raise(script))


def test_dict_key_holding_a_node() -> None:
    def script(lib: Any) -> None:
        tracer = lib.Tracer()
        tracer.graph = lib.Graph()
        x = lib.Proxy(tracer.graph.placeholder("x"), tracer)
        tracer.create_arg({(x, 1): 2})

    _same_raise(script)


def _keys_star_star(d):
    return dict(**d)


def _keys_loop(d):
    return [k for k in d.keys()]


def _length(x):
    return len(x)


def _loop(x):
    return [v for v in x]


def _branch(x):
    return 1 if x.sum() > 0 else 0


@pytest.mark.parametrize("fn", [_keys_star_star, _keys_loop, _length, _loop, _branch])
def test_untraceable_uses_of_a_proxy(fn: Callable) -> None:
    _same_raise(lambda lib: lib.symbolic_trace(fn))


def test_wrap_bad_arguments() -> None:
    _same_raise(lambda lib: lib.wrap(42))
    _same_raise(lambda lib: lib.wrap(functools.partial(operator.add, 1)))
    _same_raise(lambda lib: lib.wrap("len"))  # not at module scope


def test_tracer_arguments() -> None:
    _same_raise(lambda lib: lib.Tracer(autowrap_modules=(3,)))
    for lib in (tfx, fxkit):
        lib.Tracer(autowrap_functions=(3,))  # accepted by both


def test_concrete_args_tuple_of_wrong_length() -> None:
    _same_raise(lambda lib: lib.symbolic_trace(lambda x, y: x + y, concrete_args=(1,)))


def test_create_proxy_checks_lowered_args() -> None:
    def script(lib: Any) -> None:
        class Listy(lib.Tracer):
            def create_arg(self, a):
                return list(a) if type(a) is tuple else super().create_arg(a)

        tracer = Listy()
        tracer.graph = lib.Graph()
        tracer.create_proxy("call_function", torch.relu, (1,), {})

    _same_raise(script)


def test_parameter_proxy_needs_a_parameter() -> None:
    def script(lib: Any) -> None:
        tracer = lib.Tracer()
        tracer.graph = lib.Graph()
        lib.proxy.ParameterProxy(tracer, tracer.graph.placeholder("w"), "w", torch.ones(1))

    _same_raise(script)


# --- 5. concrete_args with PH structures on a module root -----------------------------------


class _DictInput(torch.nn.Module):
    def forward(self, y, d):
        return {"out": d["a"] * d["b"][0] + y}


def _ph_args(lib: Any) -> dict:
    return {"d": {"a": lib.PH, "b": [lib.PH]}}


def test_concrete_args_ph_structure_on_module_root() -> None:
    ref = tfx.symbolic_trace(_DictInput(), concrete_args=_ph_args(tfx))
    got = fxkit.symbolic_trace(_DictInput(), concrete_args=_ph_args(fxkit))
    assert got.code == ref.code
    assert _graph(got) == _graph(ref)
    y, d = torch.randn(3), {"a": torch.randn(3), "b": [torch.randn(3)]}
    torch.testing.assert_close(got(y, d), ref(y, d))
    torch.testing.assert_close(got(y=y, d=d), ref(y, d))
    torch.testing.assert_close(copy.deepcopy(got)(y, d), ref(y, d))
    back = interop.from_torch_fx(ref)
    assert back.code == ref.code
    torch.testing.assert_close(back(y, d), ref(y, d))
    there = interop.to_torch_fx(got)
    assert there.code == ref.code
    torch.testing.assert_close(there(y, d), ref(y, d))


# --- 6. interop copies meta deeply, keeps the pytree CodeGen --------------------------------


@settings(max_examples=15, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["custom", "stack_trace", "tag", "nested"]),
        st.recursive(
            st.integers() | st.text(max_size=4),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=6,
        ),
    )
)
def test_interop_meta_is_copied_deeply(meta: dict) -> None:
    gm = fxkit.symbolic_trace(_DictInput(), concrete_args=_ph_args(fxkit))
    for node in gm.graph.nodes:
        node.meta.update(copy.deepcopy(meta))
        node.meta["mutable"] = [node.name]
    gm.meta["model"] = {"tags": ["a"]}
    there = interop.to_torch_fx(gm)
    back = interop.from_torch_fx(there)
    for a, b, c in zip(gm.graph.nodes, there.graph.nodes, back.graph.nodes):
        assert {k: v for k, v in b.meta.items() if k in meta} == meta
        assert c.meta["mutable"] == a.meta["mutable"] == [a.name]
        b.meta["mutable"].append("edited")
        c.meta["mutable"].append("edited too")
        assert a.meta["mutable"] == [a.name]
        assert b.meta["mutable"] == [a.name, "edited"]
    there.meta["model"]["tags"].append("b")
    assert gm.meta["model"] == back.meta["model"] == {"tags": ["a"]}
    assert type(there.graph._codegen).__name__ == "_PyTreeCodeGen"
    assert type(back.graph._codegen) is type(gm.graph._codegen)
    assert back.code == there.code == gm.code
