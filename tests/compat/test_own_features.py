"""fxkit's own features give no silent wrong answers (issue 15, section 5).

* shape-aware tracing checks its guards on call (``GuardError`` naming the guard and the
  user's line), cheaply, with an opt-out, without changing ``gm.code``, through pickle/copy;
* ``on_error="leaf"`` specialises inputs that default to ``None``;
* ``explain()`` reports sites caused by defaulted inputs;
* the ``fxkit`` command line: bad targets and shapes in one line, ``--version``, help texts.

Where torch.fx defines the behaviour (the ``None`` specialisation, plain tracing errors) the
same script runs on both. ``shape_trace`` is what ``fxkit.symbolic_trace(m, example_inputs=...)``
runs (see ``fxkit._shape_trace``).
"""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxkit
from fxkit._auto_leaf import none_defaults_as_concrete
from fxkit._explain import explain
from fxkit._shape_trace import GuardedGraphModule, GuardError, _GuardProgram
from fxkit.cli import main

HERE = __file__


class BatchOfFive(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        if x.shape[0] == 5:
            return self.lin(x) * 2
        return self.lin(x) - 1


class Rows(nn.Module):
    def forward(self, x):
        return torch.stack([r.sum() for r in x])  # one node per row: len(x) is guarded


class Wide(nn.Module):
    def forward(self, x):
        if x.shape[1] > 2:  # only the width is guarded; any batch size works
            return x.relu()
        return x.abs()


def _line_of(text: str, cls: type) -> int:
    import inspect

    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if text in line)


# --- guards -----------------------------------------------------------------------------------


def test_guard_mismatch_raises_naming_the_guard_and_the_line() -> None:
    torch.manual_seed(0)
    m = BatchOfFive()
    gm = fxkit.symbolic_trace(m, example_inputs=(torch.randn(5, 3),))
    assert isinstance(gm, GuardedGraphModule) and isinstance(gm, fxkit.GraphModule)
    x5 = torch.randn(5, 3)
    torch.testing.assert_close(gm(x5), m(x5))
    with pytest.raises(GuardError) as info:
        gm(torch.randn(1, 3))
    text = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert f"{HERE}:{_line_of('x.shape[0] == 5', BatchOfFive)}" in text
    assert "if x.shape[0] == 5:" in text
    assert "was True at trace time" in text and "it was False" in text
    assert "check_guards = False" in text


def test_inputs_that_satisfy_the_guards_run_and_match_eager() -> None:
    gm = fxkit.symbolic_trace(Wide(), example_inputs=(torch.randn(4, 3),))
    for b in (1, 2, 7):
        x = torch.randn(b, 3)
        torch.testing.assert_close(gm(x), Wide()(x))
    with pytest.raises(GuardError, match="x.shape\\[1\\] > 2"):
        gm(torch.randn(4, 2))


def test_iteration_guard_names_the_length() -> None:
    gm = fxkit.symbolic_trace(Rows(), example_inputs=(torch.randn(3, 2),))
    x = torch.randn(3, 2)
    torch.testing.assert_close(gm(x), Rows()(x))
    with pytest.raises(GuardError, match="had 3 items to iterate at trace time") as info:
        gm(torch.randn(4, 2))
    assert "had 4 items to iterate" in str(info.value)


class FirstRow(nn.Module):
    def forward(self, x):
        for row in x:  # stops after one item: only len(x) >= 1 matters
            return row * 2
        return x.sum()


def test_a_loop_that_stops_early_guards_only_what_it_took() -> None:
    gm = fxkit.symbolic_trace(FirstRow(), example_inputs=(torch.randn(3, 2),))
    assert [g[:2] for n in gm.graph.nodes for g in n.meta.get("guards", [])] == [("iter_min", 1)]
    for b in (1, 3, 6):
        x = torch.randn(b, 2)
        torch.testing.assert_close(gm(x), FirstRow()(x))
    with pytest.raises(GuardError, match="had at least 1 items to iterate at trace time"):
        gm(torch.randn(0, 2))


class Floor(nn.Module):
    def forward(self, x):
        return x.clamp(min=torch.finfo(x.dtype).min / 2)  # a dtype-dependent constant


def test_an_input_dtype_the_trace_read_is_guarded() -> None:
    gm = fxkit.symbolic_trace(Floor(), example_inputs=(torch.randn(2),))
    assert "float32" not in gm.code  # the constant is baked in, as in any trace
    x = torch.randn(5)
    torch.testing.assert_close(gm(x), Floor()(x))
    with pytest.raises(GuardError, match="had dtype torch.float32 at trace time") as info:
        gm(x.double())
    assert "it had dtype torch.float64" in str(info.value)


def test_code_text_is_what_a_plain_graph_module_prints() -> None:
    m = BatchOfFive()
    gm = fxkit.symbolic_trace(m, example_inputs=(torch.randn(5, 3),))
    plain = fxkit.symbolic_trace(m, example_inputs=(torch.randn(5, 3),))
    assert gm.code == plain.code == fxkit.GraphModule(gm, gm.graph).code
    assert type(gm).__name__ == "BatchOfFive"
    assert "guard" not in gm.code


def test_opt_out_on_the_module_and_at_trace_time() -> None:
    m = BatchOfFive()
    x1 = torch.randn(1, 3)
    off = fxkit.symbolic_trace(m, example_inputs=(torch.randn(5, 3),), check_guards=False)
    torch.testing.assert_close(off(x1), m.lin(x1) * 2)  # the traced branch, unchecked
    gm = fxkit.symbolic_trace(m, example_inputs=(torch.randn(5, 3),))
    gm.check_guards = False
    torch.testing.assert_close(gm(x1), m.lin(x1) * 2)
    gm.check_guards = True
    with pytest.raises(GuardError):
        gm(x1)


def test_no_guards_gives_a_plain_graph_module() -> None:
    gm = fxkit.symbolic_trace(nn.Linear(2, 2), example_inputs=(torch.randn(3, 2),))
    assert type(gm).__mro__[1] is fxkit.GraphModule


def test_a_known_signature_is_checked_once(monkeypatch) -> None:
    gm = fxkit.symbolic_trace(Wide(), example_inputs=(torch.randn(4, 3),))
    runs = []
    real = _GuardProgram._run

    def counting(self, *a):
        runs.append(1)
        return real(self, *a)

    monkeypatch.setattr(_GuardProgram, "_run", counting)
    x = torch.randn(2, 3)
    for _ in range(5):
        gm(x)
    assert len(runs) == 1  # meta run, accepted, cached
    gm(torch.randn(2, 3, dtype=torch.float64))  # a new dtype is a new signature
    assert len(runs) == 2


def test_guards_survive_pickle_copy_deepcopy_and_save() -> None:
    gm = fxkit.symbolic_trace(BatchOfFive(), example_inputs=(torch.randn(5, 3),))
    buf = io.BytesIO()
    torch.save(gm, buf)
    buf.seek(0)
    copies = [
        pickle.loads(pickle.dumps(gm)),
        copy.deepcopy(gm),
        copy.copy(gm),
        torch.load(buf, weights_only=False),
    ]
    x5 = torch.randn(5, 3)
    for other in copies:
        assert isinstance(other, GuardedGraphModule) and other.code == gm.code
        torch.testing.assert_close(other(x5), gm(x5))
        with pytest.raises(GuardError):
            other(torch.randn(1, 3))
    gm.check_guards = False
    assert copy.deepcopy(gm).check_guards is False


def test_guards_checked_after_loading_in_a_fresh_process(tmp_path) -> None:
    path = tmp_path / "gm.pt"
    torch.save(fxkit.symbolic_trace(BatchOfFive(), example_inputs=(torch.randn(5, 3),)), path)
    code = textwrap.dedent(
        f"""
        import torch, fxkit
        gm = torch.load({str(path)!r}, weights_only=False)
        print(gm(torch.randn(5, 3)).shape)
        try:
            gm(torch.randn(1, 3))
        except RuntimeError as e:
            print(type(e).__name__)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch.Size([5,", "3])", "GuardError"]


def test_guard_survives_dead_code_elimination() -> None:
    # The guarded comparison has no users in the graph; removing it must not drop the check.
    gm = fxkit.symbolic_trace(BatchOfFive(), example_inputs=(torch.randn(5, 3),))
    gm.graph.eliminate_dead_code()
    gm.recompile()
    assert "eq" not in [n.name for n in gm.graph.nodes]
    with pytest.raises(GuardError):
        gm(torch.randn(1, 3))


def test_wrong_argument_count_is_the_usual_type_error() -> None:
    gm = fxkit.symbolic_trace(BatchOfFive(), example_inputs=(torch.randn(5, 3),))
    eager_error = None
    try:
        BatchOfFive()(torch.randn(5, 3), torch.randn(1))
    except TypeError as e:
        eager_error = e
    assert eager_error is not None
    with pytest.raises(TypeError):
        gm(torch.randn(5, 3), torch.randn(1))


_TRACED = {}


@settings(max_examples=30, deadline=None)
@given(traced=st.integers(1, 4), called=st.integers(1, 4), width=st.integers(1, 4))
def test_guarded_module_is_right_or_refuses(traced: int, called: int, width: int) -> None:
    # Whatever it was traced with, a guarded module agrees with eager or raises GuardError.
    class Branchy(nn.Module):
        def forward(self, x):
            y = x * 2 if x.shape[0] > 2 else x - 1
            return y + len(x) if x.shape[1] == 3 else y

    key = (traced, width)
    if key not in _TRACED:
        _TRACED[key] = fxkit.symbolic_trace(Branchy(), example_inputs=(torch.ones(traced, width),))
    x = torch.randn(called, width)
    same = (traced > 2) == (called > 2) and (width != 3 or traced == called)
    if same:
        torch.testing.assert_close(_TRACED[key](x), Branchy()(x))
    else:
        with pytest.raises(GuardError):
            _TRACED[key](x)


# --- on_error="leaf" and inputs that default to None -----------------------------------------


class ApplyMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("default", torch.full((4,), 0.5))

    def forward(self, y, mask):
        if mask is None:
            mask = self.default
        elif mask.sum() > 0:  # data-dependent: this module cannot be traced, it is a leaf
            mask = mask / mask.sum()
        return y * mask


class MaskedRoot(nn.Module):
    """timm's hiera/naflexvit pattern: an optional mask decides whether a block runs."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.apply_mask = ApplyMask()

    def forward(self, x, mask=None, scale: float = 1.0):
        y = self.proj(x) * scale
        if mask is not None:
            y = self.apply_mask(y, mask)
        return y


def _ops(gm):
    # Each library's _assert_is_none is its own function: compare targets by name.
    return [(n.op, n.name, getattr(n.target, "__name__", n.target)) for n in gm.graph.nodes]


def test_none_defaults_are_specialised_like_torch_fx_concrete_args() -> None:
    torch.manual_seed(0)
    m = MaskedRoot()
    x = torch.randn(2, 4)
    # Without the specialisation the Proxy takes the eager-skipped branch and the leaf,
    # called with mask=None at run time, quietly scales by 0.5.
    tracer = fxkit.Tracer(on_error="leaf")
    wrong = fxkit.GraphModule(m, tracer.trace(m))
    assert not torch.allclose(wrong(x), m(x))
    concrete = none_defaults_as_concrete(m)
    assert concrete == {"mask": None}
    ours = fxkit.symbolic_trace(m, concrete_args=concrete, on_error="leaf")
    assert _ops(fxkit.symbolic_trace(m, on_error="leaf")) == _ops(ours)  # the default does it
    theirs = tfx.symbolic_trace(m, concrete_args={"mask": None})
    assert _ops(ours) == _ops(theirs)
    torch.testing.assert_close(ours(x), m(x))
    torch.testing.assert_close(ours(x), theirs(x))
    # Passing a mask to the specialised module fails loudly, the same way on both.
    errors = []
    for gm in (ours, theirs):
        with pytest.raises(AssertionError) as info:
            gm(x, torch.ones(4))
        errors.append(str(info.value))
    assert errors[0].startswith(errors[1])


def test_none_defaults_helper_keeps_given_values_and_tuples() -> None:
    m = MaskedRoot()
    assert none_defaults_as_concrete(m, {"mask": 3}) == {"mask": 3}
    assert none_defaults_as_concrete(m, (1, 2, 3)) == (1, 2, 3)
    assert none_defaults_as_concrete(nn.Linear(2, 2)) is None

    def f(x, y=None, *, z=None):
        return x

    assert none_defaults_as_concrete(f) == {"y": None, "z": None}


def test_shape_aware_leaf_mode_takes_the_eager_branch() -> None:
    torch.manual_seed(0)
    m = MaskedRoot()
    x = torch.randn(2, 4)
    gm = fxkit.symbolic_trace(m, example_inputs=(x,), on_error="leaf")
    torch.testing.assert_close(gm(x), m(x))


# --- explain and defaulted inputs ---------------------------------------------------------------


class Flagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, flag=False, repeat=2):
        if flag:
            x = x * 3
        for _ in range(repeat):
            x = self.lin(x)
        return x


class EitherOr(nn.Module):
    def forward(self, x, a=None, b=None):
        if a is not None and b is not None:
            raise ValueError("give a or b, not both")
        return x + 1


@pytest.mark.parametrize("with_inputs", [True, False])
def test_explain_reports_sites_of_defaulted_inputs(with_inputs: bool) -> None:
    m = Flagged()
    for lib in (tfx, fxkit):
        with pytest.raises(lib.proxy.TraceError):
            lib.symbolic_trace(m)
    report = explain(m, torch.randn(2, 4)) if with_inputs else explain(m)
    assert not report.plain_ok
    sites = {f.source: f for f in report}
    assert set(sites) == {"if flag:", "for _ in range(repeat):"}
    assert all(f.kind == "input-value" for f in report)
    assert "concrete_args={'flag'" in sites["if flag:"].fix
    assert sites["if flag:"].outcome == "answered False"  # from the default
    assert report.exact and report.graph_module is not None


def test_explain_names_inputs_defaulting_to_none() -> None:
    m = EitherOr()
    with pytest.raises(ValueError, match="not both"):
        tfx.symbolic_trace(m)
    with pytest.raises(ValueError, match="not both"):
        fxkit.symbolic_trace(m)
    report = explain(m, torch.randn(2))
    assert not report.plain_ok and len(report) == 1
    site = report.failures[0]
    # The site is where plain tracing stops; the fix names the inputs behind it.
    assert site.kind == "input-value" and "not both" in site.source
    assert "a, b are Proxies, not None" in site.value
    assert "concrete_args={'a': None, 'b': None}" in site.fix
    assert report.fatal is None and report.graph_module is not None
    fixed = fxkit.symbolic_trace(m, concrete_args={"a": None, "b": None})
    torch.testing.assert_close(fixed(torch.ones(2)), torch.full((2,), 2.0))


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def target_module(tmp_path):
    (tmp_path / "fxkit_cli_targets.py").write_text(
        textwrap.dedent(
            """
            import torch
            lin = torch.nn.Linear(4, 4)
            class Needs(torch.nn.Module):
                def __init__(self, n):
                    super().__init__()
                    self.n = n
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    yield "fxkit_cli_targets"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("fxkit_cli_targets", None)


def _one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fxkit explain: "), err
    assert needle in err
    return err


def test_cli_class_needing_arguments(capsys, target_module) -> None:
    err = _one_line_error(capsys, ["explain", f"{target_module}:Needs"], "without arguments")
    assert "missing 1 required positional argument: 'n'" in err
    _one_line_error(capsys, ["explain", "torch.nn:Linear", "--input-shape", "2,4"], "Linear")


def test_cli_bad_input_shapes(capsys, target_module) -> None:
    for bad in ("2,a", "2,-1", "x"):
        _one_line_error(capsys, ["explain", "torch.nn:Identity", "--input-shape", bad], bad)
    err = _one_line_error(
        capsys, ["explain", f"{target_module}:lin", "--input-shape", "2,3"], "(2, 3)"
    )
    assert "check --input-shape" in err and "mat1 and mat2" in err
    assert main(["explain", f"{target_module}:lin", "--input-shape", "2,4"]) == 0


def test_cli_version_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fxkit {fxkit.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "demo" in top and "explain" in top and "--version" in top
    for command, needle in (("demo", "rewrite"), ("explain", "--input-shape")):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert needle in capsys.readouterr().out
