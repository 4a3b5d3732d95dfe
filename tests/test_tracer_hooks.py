"""The subclassing surface: hook call sequences identical to torch.fx, and the subclass
patterns seen in the wild (custom proxies, old create_proxy signatures, custom to_bool...)."""

from __future__ import annotations

import operator
from typing import Any

import pytest
import torch
import torch.fx as tfx
from torch import nn

import fxkit
import fxkit._symbolic_trace as st
import zoo
from fxkit.proxy import Attribute, ParameterProxy, Proxy


def _summary(a: Any) -> Any:
    """A library-neutral description of a hook argument."""
    if isinstance(a, (str, int, float, bool)) or a is None:
        return a
    if isinstance(a, (tuple, list)):
        return (type(a).__name__, tuple(_summary(x) for x in a))
    if isinstance(a, dict):
        return ("dict", tuple((k, _summary(v)) for k, v in a.items()))
    if isinstance(a, nn.Module):
        return ("module", type(a).__name__)
    if callable(a) and not isinstance(a, (Proxy, tfx.Proxy)):
        return ("callable", getattr(a, "__name__", type(a).__name__))
    return type(a).__name__


def recording(base: type) -> type:
    class Recording(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.log: list = []

        def create_proxy(
            self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None
        ):  # type: ignore[no-untyped-def]
            self.log.append(("create_proxy", kind, _summary(target), _summary(args), name))
            return super().create_proxy(
                kind, target, args, kwargs, name, type_expr, proxy_factory_fn
            )

        def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):  # type: ignore[no-untyped-def]
            node = super().create_node(kind, target, args, kwargs, name, type_expr)
            self.log.append(("create_node", kind, _summary(target), node.name))
            return node

        def create_arg(self, a):  # type: ignore[no-untyped-def]
            self.log.append(("create_arg", _summary(a)))
            return super().create_arg(a)

        def call_module(self, m, forward, args, kwargs):  # type: ignore[no-untyped-def]
            self.log.append(("call_module", type(m).__name__, _summary(args)))
            return super().call_module(m, forward, args, kwargs)

        def is_leaf_module(self, m, qualname):  # type: ignore[no-untyped-def]
            leaf = super().is_leaf_module(m, qualname) or isinstance(m, zoo.Inner)
            self.log.append(("is_leaf_module", qualname, leaf))
            return leaf

        def path_of_module(self, mod):  # type: ignore[no-untyped-def]
            path = super().path_of_module(mod)
            self.log.append(("path_of_module", path))
            return path

        def getattr(self, attr, attr_val, parameter_proxy_cache):  # type: ignore[no-untyped-def]
            out = super().getattr(attr, attr_val, parameter_proxy_cache)
            self.log.append(("getattr", attr, type(out).__name__, sorted(parameter_proxy_cache)))
            return out

        def proxy(self, node):  # type: ignore[no-untyped-def]
            self.log.append(("proxy", node.name))
            return super().proxy(node)

        def keys(self, obj):  # type: ignore[no-untyped-def]
            self.log.append(("keys",))
            return super().keys(obj)

    return Recording


FxkitRecording = recording(fxkit._symbolic_trace.Tracer)
TorchRecording = recording(tfx.Tracer)


@pytest.mark.parametrize("case", zoo.CASES, ids=lambda c: c.name)
def test_hook_sequence_matches_torch_fx(case: zoo.Case) -> None:
    logs = []
    for cls, ph in ((FxkitRecording, st.PH), (TorchRecording, tfx._symbolic_trace.PH)):
        tracer = cls()
        concrete = case.concrete_args(ph) if case.concrete_args else None
        tracer.trace(zoo.make_root(case), concrete)
        logs.append(tracer.log)
    ours, theirs = logs
    assert len(ours) > 5
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"call {i} differs: {a} vs {b}"
    assert len(ours) == len(theirs)


def test_param_shapes_constant_hook_sequence() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w if self.w.shape[0] == 3 else x

    a, b = FxkitRecording(param_shapes_constant=True), TorchRecording(param_shapes_constant=True)
    a.trace(M())
    b.trace(M())
    assert a.log == b.log


# --- subclass patterns ----------------------------------------------------------------------


class EverythingProxy(Proxy):
    """Answers every attribute name (as some real tracers do): fxkit must never probe it."""

    def __getattr__(self, k: str) -> Any:
        return Attribute(self, k)


def test_proxy_subclass_answering_every_name() -> None:
    class T(st.Tracer):
        def proxy(self, node: fxkit.Node) -> Proxy:
            return EverythingProxy(node, self)

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.lin(x)) + x.sum()
            return y.view(-1)[0]

    g = T().trace(M())
    assert [n.op for n in g.nodes] == [
        "placeholder", "call_module", "call_function", "call_method", "call_function",
        "call_method", "call_function", "output",
    ]  # fmt: skip


def test_attribute_subclass_skipping_proxy_init() -> None:
    class LazyAttr(Attribute):
        def __init__(self, root: Proxy, attr: str) -> None:  # no super().__init__ at all
            self.root, self.attr, self.tracer, self._node = root, attr, root.tracer, None

    g = fxkit.Graph()
    x = Proxy(g.placeholder("x"))
    a = LazyAttr(x, "shape")
    out = a[0]  # materialises a getattr node, then getitem
    assert [n.target for n in g.nodes] == ["x", getattr, operator.getitem]
    assert out.node.args[0] is a.node


def test_parameter_proxy_direct_construction() -> None:
    g = fxkit.Graph()
    tracer = fxkit.proxy.GraphAppendingTracer(g)
    param = nn.Parameter(torch.ones(2, 3))
    p = ParameterProxy(tracer, g.get_attr("w"), "w", param)
    assert (p.shape, p.size(), p.size(1), p.dim(), p.ndim, p.numel(), p.nelement()) == (
        torch.Size([2, 3]), torch.Size([2, 3]), 3, 2, 2, 6, 6,
    )  # fmt: skip
    assert repr(p) == "ParameterProxy(w)"
    with pytest.raises(AssertionError, match="Expected Parameter") as got:
        ParameterProxy(tracer, g.get_attr("w"), "w", torch.ones(1))  # type: ignore[arg-type]
    assert "nn.Parameter" in str(got.value)
    tg = tfx.Graph()
    with pytest.raises(AssertionError, match="Expected Parameter") as ref:
        tfx.proxy.ParameterProxy(
            tfx.proxy.GraphAppendingTracer(tg), tg.get_attr("w"), "w", torch.ones(1)
        )  # type: ignore[arg-type]
    assert type(got.value) is type(ref.value)


def test_old_create_proxy_signature_without_factory() -> None:
    class Old(st.Tracer):
        def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None):  # type: ignore[no-untyped-def,override]
            return super().create_proxy(kind, target, args, kwargs, name, type_expr)

    g = Old(param_shapes_constant=True).trace(zoo.TinyEncoder())
    assert "pos" in [n.target for n in g.nodes]


def test_custom_to_bool_iter_and_keys() -> None:
    class Permissive(st.Tracer):
        def to_bool(self, obj: Proxy) -> bool:
            return True

        def iter(self, obj: Proxy) -> Any:
            return iter([obj[0], obj[1]])

        def keys(self, obj: Proxy) -> Any:
            return ["a", "b"]

    def f(x: torch.Tensor, d: Any) -> torch.Tensor:
        if x.sum() > 0:
            x = x + 1
        total = sum(v for v in x)
        return total + g(**d)

    def g(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b

    graph = Permissive().trace(f)
    names = [n.name for n in graph.nodes]
    assert "add" in names and "getitem" in names and "mul" in names


def test_buffers_as_proxies_and_custom_getattr() -> None:
    class T(st.Tracer):
        proxy_buffer_attributes = True

    class Raw(st.Tracer):
        def getattr(self, attr: str, attr_val: Any, cache: dict) -> Any:
            return attr_val  # parameters become constants instead of get_attr proxies

    class UsesW(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))
            self.register_buffer("b", torch.zeros(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w + self.b

    g_buf = T().trace(UsesW())
    assert [n.target for n in g_buf.nodes if n.op == "get_attr"] == ["w", "b"]
    g_raw = Raw().trace(UsesW())
    # create_arg still maps the parameter back to its path
    assert [n.target for n in g_raw.nodes if n.op == "get_attr"] == ["w", "b"]


def test_call_module_override_sees_forward_closure() -> None:
    seen = []

    class T(st.Tracer):
        def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
            seen.append(type(m).__name__)
            if isinstance(m, nn.ReLU):
                return args[0]  # drop ReLUs
            return super().call_module(m, forward, args, kwargs)

    g = T().trace(zoo.MLP())
    assert seen == ["Sequential", "Linear", "ReLU", "Dropout", "Linear"]
    assert [n.target for n in g.nodes if n.op == "call_module"] == [
        "layers.0",
        "layers.2",
        "layers.3",
    ]


def test_graph_has_tracer_cls_and_node_name_to_scope() -> None:
    tracer = st.Tracer()
    g = tracer.trace(zoo.MLP())
    assert g._tracer_cls is st.Tracer
    assert tracer.node_name_to_scope["layers_0"] == ("layers.0", nn.Linear)
    assert tracer.node_name_to_scope["log_softmax"] == ("", None)
    gm = fxkit.GraphModule(tracer.root, g)
    assert gm._tracer_cls is st.Tracer


def test_tracer_deepcopy_keeps_autowrap_modules() -> None:
    import copy
    import math

    t = st.Tracer()
    t2 = copy.deepcopy(t)
    assert t2._autowrap_search == [math] and t2._autowrap_search is not t._autowrap_search
