"""symbolic_trace / Tracer: differential tests against torch.fx over the zoo, the documented
behaviours (control flow, concrete_args, wrap, leaves, the training gotcha, constants),
stack traces, and bad input."""

from __future__ import annotations

import functools
import math
import os
import sys
import types

import pytest
import torch
import torch.fx as tfx
from torch import nn

import fxkit
import fxkit._symbolic_trace as st
import zoo
from fxkit._symbolic_trace import (
    PH,
    ProxyableClassMeta,
    Tracer,
    is_fx_tracing,
    symbolic_trace,
    wrap,
)
from fxkit.annotate import annotate
from fxkit.graph_module import GraphModule
from fxkit.proxy import Proxy, TraceError

ZOO_FILE = os.path.abspath(zoo.__file__)
# the package sources, wherever the checkout lives (its folder may itself be named fxkit)
FXKIT_SRC = os.path.dirname(os.path.abspath(fxkit.__file__)) + os.sep


# --- differential: same graphs and outputs as torch.fx --------------------------------------


@pytest.mark.parametrize("case", zoo.CASES, ids=lambda c: c.name)
def test_zoo_graph_matches_torch_fx(case: zoo.Case) -> None:
    ours = zoo.trace(case, fxkit)
    theirs = zoo.trace(case, tfx)
    assert zoo.graph_signature(ours) == zoo.graph_signature(theirs)


@pytest.mark.parametrize("case", zoo.CASES, ids=lambda c: c.name)
def test_zoo_outputs_match_eager_and_torch_fx(case: zoo.Case) -> None:
    root = zoo.make_root(case)
    ours = zoo.trace(case, fxkit)
    theirs = zoo.trace(case, tfx)
    args, kwargs = zoo.example(case)
    eager = zoo.tensors_of(root(*args, **kwargs))
    got = zoo.tensors_of(ours(*args, **kwargs))
    ref = zoo.tensors_of(theirs(*args, **kwargs))
    assert len(got) == len(eager) > 0
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("case", zoo.CASES, ids=lambda c: c.name)
def test_zoo_stack_traces_point_at_user_code(case: zoo.Case) -> None:
    gm = zoo.trace(case, fxkit)
    guards = (torch._assert, st._assert_is_none)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.target in guards or (node.users and all(u.target in guards for u in node.users)):
            # concrete_args input checks are made by the tracer, not by user code
            assert "fxkit_source" not in node.meta
            continue
        trace = node.meta.get("fxkit_source")
        assert trace, f"{node.name} has no stack trace"
        assert trace.startswith("File ")
        assert ZOO_FILE in trace, trace
        assert FXKIT_SRC not in trace and "site-packages" not in trace, trace


def test_stack_trace_names_innermost_line() -> None:
    gm = symbolic_trace(zoo.make_root(zoo.BY_NAME["encoder"]))
    softmax = next(n for n in gm.graph.nodes if n.target is torch.nn.functional.softmax)
    lines = softmax.meta["fxkit_source"].splitlines()
    assert lines[-1].strip() == "attn = F.softmax(scores, dim=-1)"
    assert any("x = layer(x, mask)" in ln for ln in lines)  # the outer frames come first


def test_retrace_graph_module() -> None:
    gm = symbolic_trace(zoo.make_root(zoo.BY_NAME["resnet"]))
    again = symbolic_trace(gm)
    assert zoo.graph_signature(again, meta=False) == zoo.graph_signature(gm, meta=False)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(again(x), gm(x))


# --- the documented behaviours --------------------------------------------------------------


class Activation(nn.Module):
    def __init__(self, do_activation: bool) -> None:
        super().__init__()
        self.do_activation = do_activation
        self.linear = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if self.do_activation:
            x = torch.relu(x)
        return x


def test_static_control_flow_specialises_per_instance() -> None:
    without = [n.op for n in symbolic_trace(Activation(False)).graph.nodes]
    with_act = symbolic_trace(Activation(True)).graph.nodes
    assert without == ["placeholder", "call_module", "output"]
    assert [n.target for n in with_act][2] is torch.relu


def flag_fn(x: torch.Tensor, flag: bool) -> torch.Tensor:
    if flag:
        return x
    return x * 2


def test_dynamic_control_flow_error_names_line_value_and_fixes() -> None:
    with pytest.raises(TraceError) as info:
        symbolic_trace(flag_fn)
    text = str(info.value)
    assert "cannot be used as inputs to control flow" in text
    assert f'File "{os.path.abspath(__file__)}"' in text and "if flag:" in text
    assert "Proxy(flag)" in text and "'flag'" in text
    assert "concrete_args" in text and "wrap" in text and "leaf" in text


def test_concrete_args_specialise_and_guard() -> None:
    gm = symbolic_trace(flag_fn, concrete_args={"flag": True})
    x = torch.randn(3)
    torch.testing.assert_close(gm(x, True), x)
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"][-1] is torch._assert
    with pytest.raises(AssertionError, match="specialized to have value True"):
        gm(x, False)


def test_concrete_args_tuple_form_and_none() -> None:
    m = zoo.Specialised()
    gm = symbolic_trace(m, concrete_args={"flag": False, "extra": None})
    x = torch.randn(2)
    torch.testing.assert_close(gm(x, False, None), x + 1)
    tracer = Tracer()
    g = tracer.trace(flag_fn, concrete_args=(PH, True))
    assert [n.name for n in g.nodes if n.op == "placeholder"] == ["x_1", "flag_1"]
    with pytest.raises(RuntimeError, match="expected 2 arguments but got 1"):
        Tracer().trace(flag_fn, concrete_args=(PH,))


def test_pytree_concrete_args_flatten_inputs() -> None:
    def f(x: dict) -> torch.Tensor:
        out = 0
        for v in x.values():
            out += v
        return out

    gm = symbolic_trace(f, concrete_args={"x": {"a": PH, "b": PH, "c": PH}})
    assert gm({"a": 1, "b": 2, "c": 4}) == 7
    assert [n.name for n in gm.graph.nodes if n.op == "placeholder"] == ["x_1", "x_2", "x_3"]


def test_ph_with_meta_attributes_reach_placeholder() -> None:
    def f(x: dict) -> torch.Tensor:
        return x["a"] * 2

    gm = symbolic_trace(f, concrete_args={"x": {"a": st.PHWithMeta(ph_key="first")}})
    ph = next(iter(gm.graph.nodes))
    # torch.fx sets an attribute; fxkit's slotted Node keeps it in meta
    assert getattr(ph, "ph_key", ph.meta.get("ph_key")) == "first"


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / math.sqrt(len(x))


def test_len_error_then_wrapped_len_and_sqrt() -> None:
    with pytest.raises(TraceError, match="fxkit.wrap\\('len'\\)") as info:
        symbolic_trace(normalize)
    assert isinstance(info.value, RuntimeError)  # torch.fx raises RuntimeError here
    # zoo registered wrap("len") for its own module only: normalize lives here.
    gm = symbolic_trace(zoo.UsesWrapped())
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert len in targets and zoo.pair_energy in targets and zoo.clamp_rows in targets
    assert all(
        n.meta.get("is_wrapped") for n in gm.graph.nodes if n.target in (len, zoo.pair_energy)
    )


def test_wrapped_function_is_restored_after_trace() -> None:
    before = zoo.__dict__["pair_energy"], zoo.__dict__["clamp_rows"]
    symbolic_trace(zoo.UsesWrapped())
    assert (zoo.__dict__["pair_energy"], zoo.__dict__["clamp_rows"]) == before
    assert "len" not in zoo.__dict__  # builtins patched in are removed again
    assert torch.nn.Module.__call__ is st._ORIG_MODULE_CALL
    assert torch.nn.Module.__getattr__ is st._ORIG_MODULE_GETATTR


def test_autowrap_modules_and_functions() -> None:
    gm = symbolic_trace(zoo.MathOps())
    assert math.sqrt in [n.target for n in gm.graph.nodes]
    with pytest.raises(TypeError, match="must be real number"):
        Tracer(autowrap_modules=()).trace(zoo.MathOps())

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x * half_of(x.size(0))

    g = Tracer(autowrap_functions=(half_of,)).trace(scaled)
    assert half_of in [n.target for n in g.nodes]


def half_of(n: int) -> float:
    return n / 2 if n > 0 else 0.0


class MySpecialSubmodule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.neg(x)


class UsesSpecial(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.submod = MySpecialSubmodule()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.submod(self.linear(x))


def test_leaf_modules_default_and_override() -> None:
    gm = symbolic_trace(UsesSpecial())
    assert [(n.op, n.target) for n in gm.graph.nodes][1:3] == [
        ("call_module", "linear"),
        ("call_function", torch.neg),
    ]

    class LeafTracer(Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == "submod" or super().is_leaf_module(m, qualname)

    g = LeafTracer().trace(UsesSpecial())
    assert [n.target for n in g.nodes if n.op == "call_module"] == ["linear", "submod"]


def test_sequential_is_traced_through() -> None:
    gm = symbolic_trace(zoo.MLP())
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == [
        "layers.0",
        "layers.1",
        "layers.2",
        "layers.3",
    ]


def test_dropout_training_gotcha() -> None:
    class DropoutRepro(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.dropout(x, training=self.training)

    traced = symbolic_trace(DropoutRepro())
    node = [n for n in traced.graph.nodes if n.op == "call_function"][0]
    assert node.kwargs["training"] is True  # baked in
    traced.eval()
    x = torch.randn(5, 3)
    assert not torch.equal(traced(x), x)

    class DropoutRepro2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(x)

    traced2 = symbolic_trace(DropoutRepro2())
    traced2.eval()
    torch.testing.assert_close(traced2(x), x)


def test_tensor_constructors_become_constants() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.ones(3) + torch.randn(3)

    m = M()
    gm = symbolic_trace(m)
    consts = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    assert consts == ["_tensor_constant0", "_tensor_constant1"]
    x = torch.zeros(3)
    torch.testing.assert_close(gm(x), gm(x))  # one random value, embedded


def test_torch_randn_wrapped_stays_random() -> None:
    gm = symbolic_trace(_randn_user)
    assert _torch_randn in [n.target for n in gm.graph.nodes]
    x = torch.zeros(5)
    assert not torch.equal(gm(x), gm(x))


@wrap
def _torch_randn(x: torch.Tensor, shape: int) -> torch.Tensor:
    return torch.randn(shape)


def _randn_user(x: torch.Tensor) -> torch.Tensor:
    return x + _torch_randn(x, 5)


def test_type_annotations_are_preserved() -> None:
    def f(x: torch.Tensor, y: int) -> torch.Tensor:
        return x + y

    types_ = [n.type for n in symbolic_trace(f).graph.nodes]
    assert types_ == [n.type for n in tfx.symbolic_trace(f).graph.nodes]
    # this file uses `from __future__ import annotations`, so they are strings
    assert types_[:2] == ["torch.Tensor", "int"] and types_[-1] == "torch.Tensor"


def test_param_shapes_constant() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.weight.shape[0] == 4 and self.weight.dim() == 2:
                return x @ self.weight.t()
            return x

    with pytest.raises(TraceError):
        Tracer().trace(M())
    g = Tracer(param_shapes_constant=True).trace(M())
    assert [n.op for n in g.nodes] == [
        "placeholder",
        "get_attr",
        "call_method",
        "call_function",
        "output",
    ]


def test_shared_parameters_and_buffers_use_first_path() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = self.a  # same module twice
            self.register_buffer("scale", torch.tensor(3.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(x) * self.b.weight.sum() + torch.add(x, self.scale)

    ours, theirs = symbolic_trace(M()), tfx.symbolic_trace(M())
    assert zoo.graph_signature(ours) == zoo.graph_signature(theirs)
    assert "a.weight" in [n.target for n in ours.graph.nodes]


def test_path_maps_built_once_per_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    root = nn.Sequential(*[Block() for _ in range(40)])
    calls = []
    orig = nn.Module.named_parameters
    monkeypatch.setattr(
        nn.Module, "named_parameters", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k)
    )
    gm = symbolic_trace(root)
    assert len([n for n in gm.graph.nodes if n.op == "get_attr"]) == 40
    assert len(calls) <= 2, f"named_parameters() called {len(calls)} times"


def test_proxyable_class_meta() -> None:
    class TensorPair(metaclass=ProxyableClassMeta):
        def __init__(self, left: torch.Tensor, right: torch.Tensor) -> None:
            self.left, self.right = left, right

        def add(self, other: "TensorPair") -> "TensorPair":
            return TensorPair(self.left + other.left, self.right + other.right)

    def use(x: torch.Tensor) -> torch.Tensor:
        p = TensorPair(x, x)
        return p.add(p)

    g = Tracer().trace(use)
    assert TensorPair in [n.target for n in g.nodes]
    plain = TensorPair(torch.ones(1), torch.zeros(1))  # outside tracing: a real instance
    assert isinstance(plain, TensorPair) and plain.left.item() == 1


def test_is_fx_tracing_only_inside_trace() -> None:
    seen = []

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(is_fx_tracing())
            return x

    assert not is_fx_tracing()
    symbolic_trace(M())
    assert seen == [True] and not is_fx_tracing()
    M()(torch.ones(1))
    assert seen == [True, False]


def test_annotate_sets_node_type() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        y = annotate(x.sum(), int)
        return y + 1

    g = Tracer().trace(f)
    assert [n.type for n in g.nodes if n.op == "call_method"] == [int]
    assert annotate(3, int) == 3  # a non-proxy passes through
    with pytest.raises(RuntimeError, match="already had a type"):
        Tracer().trace(lambda x: annotate(annotate(x.sum(), int), float))


def test_kwargs_only_and_var_args_forwards() -> None:
    gm = symbolic_trace(zoo.KwOnly())
    assert [n.target for n in gm.graph.nodes if n.op == "placeholder"] == ["x", "bias", "scale"]
    torch.testing.assert_close(gm(torch.ones(2), bias=torch.ones(2)), torch.full((2,), 3.0))
    gv = symbolic_trace(zoo.VarArgs())
    assert [n.target for n in gv.graph.nodes if n.op == "placeholder"] == ["*args", "**kwargs"]


def test_traced_func_name() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x * 3

    tracer = Tracer()
    tracer.traced_func_name = "encode"
    g = tracer.trace(M())
    assert [n.target for n in g.nodes if n.op == "call_function"] == [__import__("operator").mul]
    tracer.traced_func_name = "nope"
    with pytest.raises(AssertionError, match="traced_func_name=nope doesn't exist"):
        tracer.trace(M())  # torch.fx's type
    ref = tfx.Tracer()
    ref.traced_func_name = "nope"
    with pytest.raises(AssertionError, match="nope"):
        ref.trace(M())


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "root",
    [3, "forward", functools.partial(flag_fn, flag=True), types.SimpleNamespace()],
    ids=["int", "str", "partial", "object"],
)
def test_root_must_be_module_or_function(root: object) -> None:
    with pytest.raises(AssertionError, match="Expected FunctionType") as ref:
        tfx.symbolic_trace(root)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="nn.Module or a Python function") as got:
        symbolic_trace(root)  # type: ignore[arg-type]
    assert type(got.value) is type(ref.value)
    assert str(got.value).startswith(str(ref.value))


def test_bound_method_root_gets_a_hint() -> None:
    with pytest.raises(AssertionError, match="bound method"):  # torch.fx's type
        symbolic_trace(zoo.MLP().forward)


def test_bad_concrete_args() -> None:
    # torch.fx ignores unknown names (the trace then fails where `flag` is used): fxkit warns.
    with pytest.warns(UserWarning, match=r"\['flga'\] are not parameters of flag_fn"):
        with pytest.raises(TraceError, match="control flow"):
            symbolic_trace(flag_fn, concrete_args={"flga": True})
    with pytest.raises(TypeError, match="must be a dict"):
        symbolic_trace(flag_fn, concrete_args=["flag"])  # type: ignore[arg-type]
    symbolic_trace(zoo.VarArgs(), concrete_args={"kwargs": {}})  # var-param names are accepted


def test_failed_trace_leaves_root_and_patches_unchanged() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.lin(x) + torch.ones(2)  # stores a _tensor_constant0 on root
            if y.sum() > 0:
                return y
            return -y

    m = M()
    before = dict(m.__dict__), list(m.state_dict())
    with pytest.raises(TraceError):
        symbolic_trace(m)
    assert not hasattr(m, "_tensor_constant0")
    assert (dict(m.__dict__), list(m.state_dict())) == before
    assert torch.nn.Module.__call__ is st._ORIG_MODULE_CALL
    assert not is_fx_tracing()
    assert st._slots == {}


def test_other_errors_get_a_location_note() -> None:
    def f(x: torch.Tensor) -> int:
        return int(x)

    with pytest.raises(TypeError) as info:
        symbolic_trace(f)
    notes = getattr(info.value, "__notes__", [])
    if sys.version_info >= (3, 11):
        assert any("return int(x)" in n and os.path.abspath(__file__) in n for n in notes)


def test_module_outside_root_is_a_name_error() -> None:
    outside = nn.Linear(2, 2)

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return outside(x)

    with pytest.raises(NameError, match="not installed as a submodule"):
        symbolic_trace(M())


def test_parameter_outside_root_is_a_name_error() -> None:
    stray = nn.Parameter(torch.ones(2))

    def f(x: torch.Tensor) -> torch.Tensor:
        return x + stray

    with pytest.raises(NameError, match="parameter is not a member"):
        symbolic_trace(f)


def test_wrap_bad_inputs() -> None:
    with pytest.raises(NotImplementedError, match="top level of a module"):
        wrap("len")
    with pytest.raises(RuntimeError, match="callable or string"):  # torch.fx's type
        wrap(42)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="top level of a module"):
        wrap(lambda x: x)
    with pytest.raises(AttributeError, match="no __name__") as got:
        wrap(functools.partial(flag_fn))
    with pytest.raises(AttributeError, match="has no attribute '__name__'") as ref:
        tfx.wrap(functools.partial(flag_fn))
    assert type(got.value) is type(ref.value)
    ns: dict = {"wrap": wrap}
    before = dict(st._wrapped_fns_to_patch)
    exec("def g(x):\n    return x\nwrap('g')", ns)
    assert len(st._wrapped_fns_to_patch) == len(before) + 1
    del st._wrapped_fns_to_patch[(id(ns), "g")]


def test_tracer_rejects_bad_autowrap() -> None:
    with pytest.raises(AttributeError, match="autowrap_modules") as got:
        Tracer(autowrap_modules=("math",))  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="has no attribute '__dict__'") as ref:
        tfx.Tracer(autowrap_modules=("math",))  # type: ignore[arg-type]
    assert type(got.value) is type(ref.value)
    Tracer(autowrap_functions=(1,))  # type: ignore[arg-type]  (accepted, as by torch.fx)


def test_symbolic_trace_returns_named_graph_module() -> None:
    gm = symbolic_trace(zoo.MLP())
    assert isinstance(gm, GraphModule) and type(gm).__name__ == "MLP"
    assert type(symbolic_trace(flag_fn, concrete_args={"flag": 1})).__name__ == "flag_fn"
    assert isinstance(next(iter(gm.graph.nodes)), fxkit.Node)
    assert not isinstance(gm, Proxy)
