"""The tracer's fast paths behave like the slow ones they replace: per-class ``__getattr__``
patches, the ``_call_impl`` trampoline, reused trampolines, cached autowrap ids and the
per-trace stack-trace cache."""

from __future__ import annotations

import math
import types
from typing import Any, Iterator

import pytest
import torch
import torch.fx as tfx
from torch import nn

import fxkit._patching as patching
import fxkit._symbolic_trace as st
import zoo
from fxkit._symbolic_trace import Tracer, symbolic_trace
from test_tracer_hooks import FxkitRecording, TorchRecording


def _targets(gm: Any) -> list:
    return [(n.op, str(n.target)) for n in gm.graph.nodes]


def _no_patches_left() -> None:
    assert st._slots == {}
    assert nn.Module.__call__ is st._ORIG_MODULE_CALL
    assert nn.Module.__getattr__ is st._ORIG_MODULE_GETATTR
    assert nn.Module._call_impl is patching._ORIG_CALL_IMPL


@pytest.mark.parametrize("case", zoo.CASES, ids=lambda c: c.name)
def test_no_class_is_left_patched(case: zoo.Case) -> None:
    root = zoo.make_root(case)
    classes = {type(m) for m in root.modules()} if isinstance(root, nn.Module) else set()
    had = {cls: "__getattr__" in cls.__dict__ for cls in classes}
    zoo.trace(case, st, root)
    _no_patches_left()
    assert {cls: "__getattr__" in cls.__dict__ for cls in classes} == had


class OwnGetattr(nn.Module):
    """Has its own __getattr__ that defers to nn.Module's: its reads must still be seen."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.lin = nn.Linear(3, 3)

    def __getattr__(self, name: str) -> Any:
        if name == "alias":
            return super().__getattr__("w")
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x * self.alias + self.w)


class Boxed(nn.Module):
    """Parameters and buffers inside plain ``nn.Module()`` containers."""

    def __init__(self) -> None:
        super().__init__()
        self.box = nn.Module()
        self.box.w = nn.Parameter(torch.ones(3))
        self.box.register_buffer("b", torch.zeros(3))
        self.inner = nn.Sequential(OwnGetattr())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.box.w) * self.box.b


@pytest.mark.parametrize("make", [OwnGetattr, Boxed])
def test_getattr_hooks_match_torch_fx(make: Any) -> None:
    ours, theirs = FxkitRecording(), TorchRecording()
    ours.proxy_buffer_attributes = theirs.proxy_buffer_attributes = True
    ours.trace(make())
    theirs.trace(make())
    assert ours.log == theirs.log
    assert [e for e in ours.log if e[0] == "getattr"]  # the hook really ran
    assert _targets(symbolic_trace(make())) == _targets(tfx.symbolic_trace(make()))
    _no_patches_left()


def test_compiled_submodule_is_still_intercepted() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).relu()

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the compiled call ran during tracing")

    ours, theirs = M(), M()
    for m in (ours, theirs):
        m.lin._compiled_call_impl = never  # what Module.compile() sets; skips _call_impl
    assert _targets(symbolic_trace(ours)) == _targets(tfx.symbolic_trace(theirs))
    assert ("call_module", "lin") in _targets(symbolic_trace(ours))
    _no_patches_left()


def test_module_outside_the_tree_still_named() -> None:
    stray = nn.Linear(2, 2)

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return stray(x)

    with pytest.raises(NameError, match="not installed as a submodule"):
        symbolic_trace(M())
    _no_patches_left()


def test_trampolines_follow_a_rebound_global() -> None:
    ns = types.ModuleType("fxkit_test_rebound")

    def first(x: Any) -> Any:
        return x

    def second(x: Any) -> Any:
        return x

    exec("def f(x):\n    return op(x) + 1\n", ns.__dict__)
    ns.op = first
    tracer_kwargs = {"autowrap_functions": (first, second)}
    for _ in range(2):  # the second trace reuses the first trace's trampoline
        g = Tracer(**tracer_kwargs).trace(ns.f)
        assert [n.target for n in g.nodes if n.op == "call_function"][0] is first
        assert ns.op is first
    ns.op = second  # a new value must get a new trampoline, and be what is restored
    g = Tracer(**tracer_kwargs).trace(ns.f)
    assert [n.target for n in g.nodes if n.op == "call_function"][0] is second
    assert ns.op is second
    assert st._slots == {}


def test_autowrap_ids_follow_module_changes() -> None:
    mod = types.ModuleType("fxkit_test_autowrap")
    mod.one = math.sqrt
    before = patching.public_callable_ids(mod)
    assert patching.public_callable_ids(mod) is before  # cached
    mod.two = math.floor
    after = patching.public_callable_ids(mod)
    assert id(math.floor) in after and id(math.floor) not in before
    mod.one = math.ceil  # same names, another value
    assert id(math.sqrt) not in patching.public_callable_ids(mod)


class NoStackCache:
    """Mixin: every stack trace is computed from scratch (no per-trace cache)."""

    _stack_cache = property(lambda self: None, lambda self, value: None)


class Uncached(NoStackCache, Tracer):
    pass


def helper_gen(x: torch.Tensor) -> Iterator[torch.Tensor]:
    y = x + 1
    yield y
    yield y * 2


class UsesGenerator(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = helper_gen(x)
        a = next(gen)
        b = self.step(gen)
        return a + b

    def step(self, gen: Iterator[torch.Tensor]) -> torch.Tensor:
        return next(gen).relu()


@pytest.mark.parametrize("case", [*zoo.CASES, None], ids=lambda c: c.name if c else "generator")
def test_stack_traces_same_with_and_without_cache(case: Any) -> None:
    if case is None:
        graphs = [t().trace(UsesGenerator()) for t in (Tracer, Uncached)]
    else:
        graphs = []
        for uncached in (False, True):
            root = zoo.make_root(case)
            tracer = zoo.tracer_for(case, st)
            if uncached:
                tracer.__class__ = type("T", (NoStackCache, type(tracer)), {})
            concrete = case.concrete_args(st.PH) if case.concrete_args else None
            graphs.append(tracer.trace(root, concrete))
    cached, uncached = ([n.meta.get("fxkit_source") for n in g.nodes] for g in graphs)
    assert cached == uncached
    assert any(cached)
    if case is None:
        # nodes made inside the generator name its lines and the line that resumed it
        text = {n.name: n.meta.get("fxkit_source", "") for n in graphs[0].nodes}
        assert "yield y * 2" in text["mul"] and "return next(gen).relu()" in text["mul"]
        assert "y = x + 1" in text["add"] and "a = next(gen)" in text["add"]


class SharedChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Module()
        self.a.t = torch.arange(3.0)
        self.a.dtype_attr = torch.float32
        self.b = self.a  # the same child under two names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b.t


def test_tensor_attrs_and_paths_match_torch_fx() -> None:
    assert _targets(symbolic_trace(SharedChild())) == _targets(tfx.symbolic_trace(SharedChild()))
    m = SharedChild()
    paths = st._module_paths(m)
    expected: dict = {}
    for name, mod in m.named_modules():
        expected.setdefault(mod, name)
    assert list(paths.items()) == list(expected.items())
