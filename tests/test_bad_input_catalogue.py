"""Every public entry point, given bad input, raises one clear exception that names the
offending argument, and leaves the graph / module / process state as it was."""

from __future__ import annotations

import operator
import pickle
import threading

import pytest
import torch
import torch.fx
from torch import nn

import fxkit
from fxkit._explain import explain


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.lin(x)) + 1


def _gm() -> fxkit.GraphModule:
    return fxkit.symbolic_trace(Small())


def _state(gm: fxkit.GraphModule) -> tuple:
    return str(gm.graph), gm.code, sorted(dict(gm.named_parameters()))


def _unchanged(gm: fxkit.GraphModule, before: tuple) -> None:
    assert _state(gm) == before
    gm.graph.lint()


# --- tracing entry points -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "kwargs", "exc", "words"),
    [
        (None, {}, AssertionError, "nn.Module or a Python function"),  # torch.fx's type
        (42, {}, AssertionError, "int"),
        ("forward", {}, AssertionError, "str"),
        (Small(), {"concrete_args": [1]}, TypeError, "concrete_args"),
        (Small(), {"on_error": "skip"}, ValueError, "on_error"),
        (Small(), {"example_inputs": torch.ones(1)}, TypeError, "example_inputs"),
        (Small(), {"meta_args": (torch.ones(1),)}, TypeError, "meta_args"),
        (Small(), {"example_inputs": {"y": torch.ones(1)}}, TypeError, "'y'"),
    ],
)
def test_symbolic_trace_rejects(root, kwargs, exc, words) -> None:
    with pytest.raises(exc, match=words):
        fxkit.symbolic_trace(root, **kwargs)


def test_failed_traces_leave_module_and_patches_alone() -> None:
    m = Small()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    attrs = set(vars(m))
    call, getattr_ = nn.Module.__call__, nn.Module.__getattr__
    with pytest.raises(TypeError):
        fxkit.symbolic_trace(m, example_inputs={"y": torch.ones(1)})
    assert set(vars(m)) == attrs
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert nn.Module.__call__ is call and nn.Module.__getattr__ is getattr_
    assert torch.jit.is_tracing() is False and not fxkit._symbolic_trace.is_fx_tracing()


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"autowrap_modules": (len,)}, AttributeError, "autowrap_modules"),  # torch.fx's type
        ({"on_error": 3}, ValueError, "on_error"),
    ],
)
def test_tracer_ctor_rejects(kwargs, exc, words) -> None:
    with pytest.raises(exc, match=words):
        fxkit.Tracer(**kwargs)


def test_tracer_trace_rejects_non_modules() -> None:
    for bad in (None, 3, [nn.Linear(1, 1)], Small().forward):
        with pytest.raises(AssertionError, match="Expected FunctionType") as ref:
            torch.fx.Tracer().trace(bad)
        with pytest.raises(AssertionError, match="nn.Module or a Python function") as got:
            fxkit.Tracer().trace(bad)
        assert type(got.value) is type(ref.value)
        assert str(got.value).startswith(str(ref.value))


def test_wrap_rejects() -> None:
    with pytest.raises(RuntimeError, match="callable or string") as ref:
        torch.fx.wrap(3)
    with pytest.raises(RuntimeError, match="callable or string") as got:
        fxkit.wrap(3)
    assert type(got.value) is type(ref.value)
    with pytest.raises(NotImplementedError, match="top level of a module"):
        fxkit.wrap("len")  # called inside a function, not at module scope


def test_explain_rejects() -> None:
    for bad in (None, "Small", 1.5):
        with pytest.raises(TypeError, match="explain"):
            explain(bad)


# --- Graph / Node edits ---------------------------------------------------------------------


def test_graph_methods_reject_bad_arguments_and_change_nothing() -> None:
    gm = _gm()
    g = gm.graph
    before = _state(gm)
    relu = next(n for n in g.nodes if n.target is torch.relu)
    other = _gm().graph
    foreign = next(iter(other.nodes))
    cases = [
        (lambda: g.erase_node("relu"), AttributeError),  # torch.fx's type
        (lambda: g.erase_node(foreign), RuntimeError),  # torch.fx's type
        (lambda: g.erase_node(relu), RuntimeError),  # still used
        (lambda: g.create_node("not_an_op", torch.relu), AssertionError),  # torch.fx's type
        (lambda: g.inserting_before(foreign).__enter__(), AssertionError),  # torch.fx's type
    ]
    for fn, exc in cases:
        with pytest.raises(exc):
            fn()
        _unchanged(gm, before)


def test_node_edits_reject_cycles_foreign_nodes_and_bad_indices() -> None:
    gm = _gm()
    g = gm.graph
    before = _state(gm)
    nodes = list(g.nodes)
    x, lin, relu, add = nodes[0], nodes[1], nodes[2], nodes[3]
    foreign = list(_gm().graph.nodes)[1]
    cases = [
        (lambda: relu.update_arg(5, x), IndexError),
        # Foreign inputs and longer cycles are accepted as in torch.fx (lint reports them);
        # only a self-loop is refused early.
        (lambda: lin.update_arg(0, lin), ValueError),
        (lambda: relu.replace_input_with(lin, relu), ValueError),
    ]
    for fn, exc in cases:
        with pytest.raises(exc):
            fn()
        _unchanged(gm, before)
    x2 = torch.randn(2, 3)
    torch.testing.assert_close(gm(x2), torch.relu(gm.lin(x2)) + 1)


def test_unpicklable_meta_is_dropped_from_the_pickle_and_the_module_kept() -> None:
    gm = _gm()
    before = _state(gm)
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    node.meta["lock"] = threading.Lock()
    node.meta["kept"] = [1, "two"]
    restored = pickle.loads(pickle.dumps(gm))  # torch.fx pickles it too (without meta)
    twin = next(n for n in restored.graph.nodes if n.name == node.name)
    assert "lock" not in twin.meta and twin.meta["kept"] == [1, "two"]
    assert "lock" in node.meta
    del node.meta["lock"], node.meta["kept"]
    _unchanged(gm, before)
    assert restored.code == gm.code


# --- GraphModule / Interpreter / replace_pattern --------------------------------------------


def test_graph_module_ctor_rejects() -> None:
    g = _gm().graph
    with pytest.raises(TypeError):
        fxkit.GraphModule(None, g)
    with pytest.raises(TypeError):
        fxkit.GraphModule(Small(), "graph")
    with pytest.raises((AttributeError, RuntimeError, KeyError)):
        fxkit.GraphModule(nn.Module(), g)  # root lacks the `lin` the graph calls


def test_interpreter_rejects() -> None:
    gm = _gm()
    before = _state(gm)
    with pytest.raises(TypeError):
        fxkit.Interpreter("gm")
    with pytest.raises(RuntimeError):
        fxkit.Interpreter(gm).run()  # missing the input
    # (Extra positional inputs are ignored, as in torch.fx; not an error.)
    _unchanged(gm, before)


def test_replace_pattern_rejects_and_keeps_graph() -> None:
    gm = _gm()
    before = _state(gm)

    def pattern(x):
        return torch.relu(x)

    with pytest.raises(TypeError):
        fxkit.replace_pattern(gm, pattern, 3)
    with pytest.raises(TypeError):
        fxkit.replace_pattern("gm", pattern, pattern)
    _unchanged(gm, before)

    def replacement(x):
        return operator.mul(x, 2)

    assert len(fxkit.replace_pattern(gm, pattern, replacement)) == 1
    gm.graph.lint()
