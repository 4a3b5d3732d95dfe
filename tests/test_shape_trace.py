"""Shape-aware tracing, the on_error="leaf" fallback and fxkit.explain on small modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fxkit
from fxkit._explain import explain, explain_main
from fxkit._shape_trace import ShapeAwareTracer
from fxkit.proxy import TraceError


class ShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor, mask=None) -> torch.Tensor:
        if x.shape[0] > 1:
            x = self.lin(x)
        rows = [r.sum() for r in x]  # iteration over a traced value
        n = len(x)
        y = x.view(x.size(0), -1) * n + torch.stack(rows)[:, None]
        if mask is not None:
            y = y + mask
        return self.bn(y) + torch.zeros(int(x.size(1)), dtype=x.dtype, device=x.device)


def test_shape_questions_resolve_and_are_guarded() -> None:
    m = ShapeBranch().train()
    x = torch.randn(3, 4)
    before = m.bn.num_batches_tracked.clone(), m.bn.running_mean.clone()
    gm = fxkit.symbolic_trace(m, example_inputs=(x,))
    # The fake run touched no real buffer.
    assert torch.equal(m.bn.num_batches_tracked, before[0])
    assert torch.equal(m.bn.running_mean, before[1])
    guards = [g for n in gm.graph.nodes for g in n.meta.get("guards", [])]
    constructs = sorted({g[0] for g in guards})
    assert constructs == ["bool", "int", "iter", "len"]
    assert all(g[2].startswith(__file__) for g in guards)
    m2 = ShapeBranch().train()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(gm(x), m2(x))


def test_tracer_guard_list_and_vals() -> None:
    tracer = ShapeAwareTracer((torch.randn(2, 4),))
    graph = tracer.trace(ShapeBranch())
    assert [g.construct for g in tracer.guards][:1] == ["bool"]
    assert tracer.guards[0].value is True
    ph = next(iter(graph.nodes))
    assert ph.meta["val"].shape == (2, 4)
    out = graph.output_node()
    assert out.meta["val"].shape == (2, 4)


def test_other_size_takes_other_branch_at_trace_time() -> None:
    class M(nn.Module):
        def forward(self, x):
            return x * 2 if x.shape[0] > 1 else x - 1

    big = fxkit.symbolic_trace(M(), example_inputs=(torch.ones(2, 3),))
    small = fxkit.symbolic_trace(M(), example_inputs=(torch.ones(1, 3),))
    assert torch.equal(big(torch.ones(2, 3)), torch.full((2, 3), 2.0))
    assert torch.equal(small(torch.ones(1, 3)), torch.zeros(1, 3))


def test_data_dependent_branch_still_fails_and_says_why() -> None:
    class M(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(TraceError, match="depends on tensor data") as info:
        fxkit.symbolic_trace(M(), example_inputs=(torch.randn(3),))
    assert f"{__file__}" in str(info.value)


def test_shape_aware_bad_arguments() -> None:
    with pytest.raises(TypeError, match="example_inputs"):
        fxkit.symbolic_trace(ShapeBranch(), example_inputs=torch.randn(2, 4))
    with pytest.raises(TypeError, match="meta_args"):
        fxkit.symbolic_trace(ShapeBranch(), meta_args=[torch.randn(2, 4)])
    with pytest.raises(TypeError, match="not parameters"):
        fxkit.symbolic_trace(ShapeBranch(), example_inputs={"y": torch.randn(2, 4)})
    with pytest.raises(TypeError, match="named inputs"):
        fxkit.symbolic_trace(ShapeBranch(), example_inputs=(1, 2, 3))
    with pytest.raises(ValueError, match="both"):
        fxkit.symbolic_trace(
            ShapeBranch(),
            example_inputs={"x": torch.randn(2, 4)},
            meta_args={"x": torch.empty(2, 4, device="meta")},
        )


# --- on_error="leaf" ------------------------------------------------------------------------


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x.relu()
        return x.neg()


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.bad = DataDependent()
        self.post = nn.Linear(3, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.post(self.bad(self.pre(x) * self.scale)) + 1


class OuterAsLeaf(fxkit.Tracer):
    def is_leaf_module(self, m, qualname):
        return qualname == "bad" or super().is_leaf_module(m, qualname)


class PartlyTraced(nn.Module):
    """The failure comes after nodes were recorded and a parameter was read."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))

    def forward(self, x):
        y = torch.relu(x * self.w) + torch.tensor([1.0, 2.0, 3.0])
        if y.mean() > 0:
            return y
        return -y


def test_leaf_fallback_matches_eager_and_records_reason() -> None:
    m = Outer()
    with pytest.raises(TraceError):
        fxkit.symbolic_trace(m)
    gm = fxkit.symbolic_trace(m, on_error="leaf")
    leaf = [n for n in gm.graph.nodes if "fxkit_leaf_reason" in n.meta]
    assert [(n.op, n.target) for n in leaf] == [("call_module", "bad")]
    assert "TraceError" in leaf[0].meta["fxkit_leaf_reason"]
    assert __file__ in leaf[0].meta["fxkit_leaf_reason"]
    for sign in (1.0, -1.0):
        x = sign * torch.rand(2, 3) + sign
        torch.testing.assert_close(gm(x), m(x))


def test_leaf_fallback_undoes_the_failed_attempt_exactly() -> None:
    class Host(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = PartlyTraced()
            self.b = nn.Linear(3, 3)

        def forward(self, x):
            # (w read before a is called: see the GraphModule._copy_attr note in the report)
            return self.a.w * self.b(self.a(x))

    class AsLeaf(fxkit.Tracer):
        def is_leaf_module(self, m, qualname):
            return qualname == "a" or super().is_leaf_module(m, qualname)

    host = Host()
    expected = AsLeaf().trace(host)
    tracer = fxkit.Tracer(on_error="leaf")
    got = tracer.trace(host)
    assert str(got) == str(expected)  # same nodes, same names: nothing half-edited
    assert not any(k.startswith("_tensor_constant") for k in vars(host))
    assert [f.qualname for f in tracer.leaf_fallbacks] == ["a"]
    gm = fxkit.GraphModule(tracer.root, got)
    x = torch.randn(2, 3)
    torch.testing.assert_close(gm(x), host(x))


def test_leaf_fallback_innermost_only_and_graph_lints() -> None:
    class Mid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = DataDependent()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.inner(x)) * 2

    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mid = Mid()

        def forward(self, x):
            return self.mid(x) - 1

    gm = fxkit.symbolic_trace(Top(), on_error="leaf")
    gm.graph.lint()
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert targets == ["mid.inner", "mid.lin"]


def test_root_failure_is_not_swallowed() -> None:
    with pytest.raises(TraceError):
        fxkit.symbolic_trace(DataDependent(), on_error="leaf")


def test_on_error_bad_value() -> None:
    with pytest.raises(ValueError, match="on_error"):
        fxkit.symbolic_trace(Outer(), on_error="ignore")
    with pytest.raises(ValueError, match="on_error"):
        fxkit.Tracer(on_error=None)  # type: ignore[arg-type]


# --- explain --------------------------------------------------------------------------------


class Lenny(nn.Module):
    def forward(self, x):
        return x * len(x)


class Calls(nn.Module):
    def forward(self, x):
        return torch.full(x.tolist(), 1.0)  # a Python list of traced values


class Many(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shape_branch = ShapeBranch()
        self.data = DataDependent()
        self.lenny = Lenny()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, flag: int = 1):
        y = self.lin(self.shape_branch(x)) + self.data(x) + self.lenny(x)
        if flag > 0:
            y = y + 1
        return y


def test_explain_lists_every_site_with_kind_and_fix() -> None:
    m = Many()
    report = explain(m, torch.randn(2, 4), 1)
    assert not report.plain_ok and not report.ok
    by_kind = {}
    for f in report:
        by_kind.setdefault(f.kind, []).append(f)
    assert {"shape-dependent", "data-dependent", "input-value"} <= set(by_kind)
    data = by_kind["data-dependent"][0]
    assert data.module == "data" and "x.sum() > 0" in data.source and "wrap" in data.fix
    assert "concrete_args={'flag'" in by_kind["input-value"][0].fix
    assert all(f.where.startswith(__file__) for f in report)
    assert not report.exact  # it guessed the data-dependent branch
    assert report.shape_aware_ok is False  # the data-dependent branch stops that mode too
    text = str(report)
    assert "Many" in text and "x.sum() > 0" in text and "guessed True" in text


def test_explain_without_inputs_and_leafing() -> None:
    report = explain(Many())
    # Only the defaulted ``flag`` has a known value; the tensor-driven sites stay unknown.
    assert {f.kind for f in report} == {"unknown", "input-value"}
    assert [f.source for f in report if f.kind == "input-value"] == ["if flag > 0:"]
    assert "lenny" in report.leaf_modules
    assert report.graph_module is not None


def test_explain_clean_module() -> None:
    report = explain(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), torch.randn(1, 2))
    assert report.ok and len(report) == 0 and "nothing to explain" in str(report)


def test_explain_root_failure_is_reported() -> None:
    report = explain(DataDependent(), torch.randn(3))
    assert report.graph_module is not None  # the bool was guessed, so the root went on
    report = explain(Lenny())
    assert report.fatal is not None and report.graph_module is None
    assert "tracing stopped" in report.failures[-1].outcome


def test_explain_bad_input() -> None:
    with pytest.raises(TypeError, match="nn.Module or a Python function"):
        explain(42)
    with pytest.raises(TypeError, match="concrete_args"):
        explain(Many(), concrete_args=[1])


def test_explain_main(tmp_path, capsys) -> None:
    mod = tmp_path / "explain_target_mod.py"
    mod.write_text(
        textwrap.dedent(
            """
            import torch
            class Net(torch.nn.Module):
                def forward(self, x):
                    if x.shape[0] > 1:
                        return x * 2
                    return x
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert explain_main(["explain_target_mod:Net", "--input-shape", "2,3"]) == 1
        out = capsys.readouterr().out
        assert "shape-dependent" in out and "x.shape[0] > 1" in out
        assert explain_main(["no_such_module_xyz:Net"]) == 2
        assert explain_main(["explain_target_mod"]) == 2
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("explain_target_mod", None)


def test_explain_main_runs_as_a_script() -> None:
    code = (
        "import sys; from fxkit._explain import explain_main; sys.exit(explain_main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "torch.nn:Identity", "--input-shape", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "nothing to explain" in proc.stdout


def test_patches_are_per_thread_and_undone() -> None:
    import threading

    seen = {}
    inside, done = threading.Event(), threading.Event()
    ones, is_tracing = torch.ones, torch.jit.is_tracing

    def other_thread() -> None:
        inside.wait(10)
        seen["is_tracing"] = torch.jit.is_tracing()
        seen["ones"] = torch.ones(2)
        done.set()

    class Waits(nn.Module):
        def forward(self, x):
            seen["traced_is_tracing"] = torch.jit.is_tracing()
            inside.set()
            done.wait(10)
            return x + torch.ones(x.shape[0])

    t = threading.Thread(target=other_thread)
    t.start()
    gm = fxkit.symbolic_trace(Waits(), example_inputs=(torch.zeros(3),))
    t.join(10)
    assert seen["traced_is_tracing"] is True and seen["is_tracing"] is False
    assert isinstance(seen["ones"], torch.Tensor) and torch.equal(seen["ones"], torch.ones(2))
    assert torch.ones is ones and torch.jit.is_tracing is is_tracing
    # torch.ones(x.shape[0]) was recorded with the traced size, so other sizes work.
    assert torch.equal(gm(torch.zeros(5)), torch.ones(5))
