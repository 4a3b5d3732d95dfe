"""RewritingTracer / AST_Rewriter against torch.fx's: asserts become torch._assert calls with
the same graph and code text; asserts in helpers and submodules (where torch.fx stops with a
TraceError) are recorded the same way by fxkit; bad input raises torch.fx's exception types.

PYTEST_DONT_REWRITE: the models' own ``assert`` statements must stay plain Python asserts.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from torch.fx.annotate import annotate as torch_annotate
from torch.fx.experimental.rewriter import AST_Rewriter as TorchASTRewriter
from torch.fx.experimental.rewriter import RewritingTracer as TorchRewritingTracer

import fxkit
from fxkit.annotate import annotate as fxkit_annotate
from fxkit.experimental.rewriter import AST_Rewriter, RewritingTracer
from fxkit.proxy import TraceError
from zoo import CASES, make_root
from zoo import trace as zoo_trace

# --- models ---------------------------------------------------------------------------------


class PlainAsserts(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        assert x.sum() > 0
        assert x.shape[0] == 2, "batch must be 2"
        return self.lin(x).relu()


class NestedAsserts(torch.nn.Module):
    def forward(self, x):
        for i in range(2):
            if i == 1:
                assert (x > -100).all(), f"step {i} out of range"
            x = x * 2
        return x


class AnnotatedAssign(torch.nn.Module):
    def forward(self, x):
        y: torch.Tensor = x + 1
        assert y.dim() == 2, "two dims"
        return y


class CallsOtherMethod(torch.nn.Module):
    def scale(self, x):
        return x * 3

    def forward(self, x):
        assert x.numel() > 0
        return self.scale(x)


def checked_helper(x):
    assert x.abs().sum() >= 0, "helper says no"
    return x + 1


class HelperAssert(torch.nn.Module):
    def forward(self, x):
        return checked_helper(x) * 2


class SubWithAssert(torch.nn.Module):
    def forward(self, x):
        assert x.dim() == 2, f"sub wants 2 dims, got {x.dim()}"
        return x - 1


class OuterWithSub(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub = SubWithAssert()

    def forward(self, x):
        return self.sub(x).neg()


class BranchOnValue(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x + 1
        return x - 1


def module_level_fn(x):
    assert x.sum() > 0, "free function"
    return x * 5


def _make_closure(k):
    def inner(x):
        assert x.sum() > 0, "closure"
        return x * k

    return inner


def _make_nested():
    def nested_fn(x):
        assert x.sum() > 0, "nested"
        return x * 4

    return nested_fn


# --- helpers --------------------------------------------------------------------------------


def _trace(lib, root, concrete_args=None):
    # A rewritten ``y: T = v`` calls the global ``annotate``: each library's own.
    globals()["annotate"] = fxkit_annotate if lib is fxkit else torch_annotate
    tracer = (RewritingTracer if lib is fxkit else TorchRewritingTracer)()
    graph = tracer.trace(root, concrete_args)
    return lib.GraphModule(tracer.root, graph)


def _shape(gm):
    return [
        (n.op, n.name, getattr(n.target, "__name__", n.target), str(n.args)) for n in gm.graph.nodes
    ]


def _both(root_factory):
    torch.manual_seed(0)
    root = root_factory()
    return _trace(fxkit, root), _trace(tfx, root), root


# --- differential: what torch.fx traces -----------------------------------------------------


@pytest.mark.parametrize(
    "factory", [PlainAsserts, NestedAsserts, AnnotatedAssign], ids=lambda f: f.__name__
)
def test_same_graph_and_code_as_torch_fx(factory):
    ours, theirs, root = _both(factory)
    assert _shape(ours) == _shape(theirs)
    assert ours.code == theirs.code
    x = torch.rand(2, 3) + 0.1
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours(x), root(x))


def test_assert_nodes_carry_messages():
    ours, _, _ = _both(PlainAsserts)
    asserts = [n for n in ours.graph.nodes if n.target is torch._assert]
    assert [n.args[1] for n in asserts] == ["", "batch must be 2"]
    assert [n.name for n in asserts] == ["_assert", "_assert_1"]


def test_failing_assert_raises_at_run_time_like_torch_fx():
    ours, theirs, _ = _both(PlainAsserts)
    bad = torch.rand(3, 3) + 0.1
    for gm in (ours, theirs):
        with pytest.raises(AssertionError, match="batch must be 2"):
            gm(bad)


def test_root_is_a_rewritten_copy_sharing_state():
    root = PlainAsserts()
    tracer = RewritingTracer()
    tracer.trace(root)
    torch_tracer = TorchRewritingTracer()
    torch_tracer.trace(root)
    assert type(tracer.root).__name__ == type(torch_tracer.root).__name__ == "RewrittenModule"
    assert tracer.root is not root
    assert tracer.root.lin is root.lin
    assert tracer.root.lin.weight is root.lin.weight


def test_closure_function():
    fn = _make_closure(4)
    with pytest.raises(NameError):
        _trace(tfx, fn)  # torch.fx loses the closure cells
    gm = _trace(fxkit, fn)
    x = torch.rand(2, 2) + 0.1
    torch.testing.assert_close(gm(x), x * 4)
    assert [n.args[1] for n in gm.graph.nodes if n.target is torch._assert] == ["closure"]


def test_nested_function_same_graph():
    fn = _make_nested()
    ours, theirs = _trace(fxkit, fn), _trace(tfx, fn)
    assert _shape(ours) == _shape(theirs)
    assert ours.code == theirs.code
    x = torch.rand(2, 2) + 0.1
    torch.testing.assert_close(ours(x), x * 4)


def test_ast_rewriter_rewrite_function_directly():
    ours = AST_Rewriter().rewrite(module_level_fn)
    assert ours.__name__ == "module_level_fn"
    assert ours.__globals__ is module_level_fn.__globals__
    with pytest.raises(AssertionError, match="free function"):
        ours(-torch.ones(2))
    torch.testing.assert_close(ours(torch.ones(2)), torch.ones(2) * 5)
    # torch.fx cannot rewrite a module-level function whose name is already a global
    with pytest.raises(AssertionError):
        TorchASTRewriter().rewrite(module_level_fn)
    gm = _trace(fxkit, module_level_fn)
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"][-2] is torch._assert


def test_rewritten_code_keeps_user_line_numbers():
    gm = _trace(fxkit, PlainAsserts())
    node = next(n for n in gm.graph.nodes if n.name == "_assert_1")
    assert "batch must be 2" in node.meta["fxkit_source"]
    assert __file__ in node.meta["fxkit_source"]


def test_graph_module_root_same_graph():
    root = fxkit.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    ours, theirs = _trace(fxkit, root), _trace(tfx, root)
    assert _shape(ours) == _shape(theirs)
    assert ours.code == theirs.code


# --- beyond torch.fx: asserts the source rewrite does not reach ----------------------------


def test_other_methods_of_the_root_stay_callable():
    with pytest.raises(AttributeError):
        _trace(tfx, CallsOtherMethod())  # torch.fx's RewrittenModule drops other methods
    gm = _trace(fxkit, CallsOtherMethod())
    x = torch.rand(2, 2)
    torch.testing.assert_close(gm(x), x * 3)


def test_sequential_root():
    root = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(TypeError):
        _trace(tfx, root)  # torch.fx's RewrittenModule is not iterable
    gm = _trace(fxkit, root)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["0", "1"]


class TypeCheckingOnlyAnnotation(torch.nn.Module):
    def forward(self, x: OnlyForTypeCheckers) -> torch.Tensor:  # noqa: F821
        assert x.dim() == 2
        return x + 1


def test_annotation_that_cannot_be_evaluated():
    with pytest.raises(NameError):
        _trace(tfx, TypeCheckingOnlyAnnotation())
    gm = _trace(fxkit, TypeCheckingOnlyAnnotation())
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"][-2] is torch._assert


def test_assert_in_helper_function():
    with pytest.raises(tfx.proxy.TraceError):
        _trace(tfx, HelperAssert())
    gm = _trace(fxkit, HelperAssert())
    ops = [(n.op, str(n.target)) for n in gm.graph.nodes]
    assert ("call_function", str(torch._assert)) in ops
    node = next(n for n in gm.graph.nodes if n.target is torch._assert)
    assert node.args[1] == "helper says no"
    x = torch.rand(2, 2)
    torch.testing.assert_close(gm(x), (x + 1) * 2)


def test_assert_in_submodule_with_fstring_message():
    with pytest.raises(tfx.proxy.TraceError):
        _trace(tfx, OuterWithSub())
    gm = _trace(fxkit, OuterWithSub())
    node = next(n for n in gm.graph.nodes if n.target is torch._assert)
    assert node.args[1].startswith("sub wants 2 dims, got ")
    assert list(node.meta["nn_module_stack"]) == ["sub"]
    x = torch.rand(2, 2)
    torch.testing.assert_close(gm(x), -(x - 1))
    with pytest.raises(AssertionError):
        gm(torch.rand(2, 2, 2))


def test_same_graph_as_torch_fx_with_assert_moved_into_forward():
    # What torch.fx produces when the helper's assert is written in forward directly.
    class Inline(torch.nn.Module):
        def forward(self, x):
            assert x.abs().sum() >= 0, "helper says no"
            add = x + 1
            return add * 2

    ours = _trace(fxkit, HelperAssert())
    theirs = _trace(tfx, Inline())
    assert _shape(ours) == _shape(theirs)


def test_if_on_traced_value_is_a_trace_error_as_in_torch_fx():
    for lib in (fxkit, tfx):
        with pytest.raises(TraceError if lib is fxkit else tfx.proxy.TraceError):
            _trace(lib, BranchOnValue())
    with pytest.raises(ValueError):  # both TraceErrors are ValueErrors
        _trace(fxkit, BranchOnValue())


def _config_check(x, limit):
    assert limit > 10, "limit too small"  # a plain value: an ordinary assert
    return x * limit


def test_assert_on_plain_value_still_fails_while_tracing():
    class UsesConfig(torch.nn.Module):
        def forward(self, x):
            return _config_check(x, 3)

    with pytest.raises(AssertionError, match="limit too small"):
        _trace(fxkit, UsesConfig())


def test_user_to_bool_override_still_wins_outside_asserts():
    class Lenient(RewritingTracer):
        def to_bool(self, obj):
            return True if not _is_assert_call() else super().to_bool(obj)

    def _is_assert_call():
        return False

    tracer = Lenient()
    graph = tracer.trace(BranchOnValue())
    assert [n.target for n in graph.nodes if n.op == "call_function"][-1] is operator.add


# --- the model zoo: rewriting changes nothing where there is nothing to rewrite -------------

_ZOO = [c for c in CASES if not c.leaf_types]


@pytest.mark.parametrize("case", _ZOO, ids=[c.name for c in _ZOO])
def test_zoo_same_graph_as_torch_fx_or_better(case):
    results = []
    for lib in (fxkit, tfx):
        root = make_root(case)
        concrete = (
            case.concrete_args(lib.PH if lib is fxkit else tfx._symbolic_trace.PH)
            if (case.concrete_args)
            else None
        )
        try:
            results.append(_trace(lib, root, concrete))
        except Exception as e:  # noqa: BLE001  (compared below)
            results.append(e)
    ours, theirs = results
    assert isinstance(ours, fxkit.GraphModule)
    if isinstance(theirs, Exception):
        # torch.fx's rewrite loses methods, iteration and module-level functions; fxkit's
        # rewritten trace then has the plain trace's nodes.
        assert _shape(ours) == _shape(zoo_trace(case, fxkit))
        return
    assert _shape(ours) == _shape(theirs)
    # Same text too, annotations included (evaluated, as torch.fx's rewrite evaluates them).
    assert ours.code == theirs.code.replace("torch.fx._symbolic_trace", "fxkit._symbolic_trace")


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [3, "forward", torch.relu], ids=["int", "str", "builtin"])
def test_bad_root_same_exception_type(bad):
    with pytest.raises(Exception) as theirs:
        TorchRewritingTracer().trace(bad)
    with pytest.raises(Exception) as ours:
        RewritingTracer().trace(bad)
    assert isinstance(ours.value, type(theirs.value))
