"""fxkit.passes.net_min_base, differentially against torch.fx: a minimizer whose ``run_b``
adds noise at one planted node must find that node with every search mode, with the same
culprits and the same reports as torch.fx's minimizer on the same setup."""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import re

import pytest
import torch
import torch.fx as tfx
from torch.fx.passes import net_min_base as t_nm

import fxkit
from fxkit.passes import net_min_base as f_nm

LIBS = {"torch.fx": (tfx, t_nm), "fxkit": (fxkit, f_nm)}


class Chain(torch.nn.Module):
    """Shifts and elementwise max/min: a planted error never fades out downstream."""

    def __init__(self, depth: int = 6) -> None:
        super().__init__()
        self.depth = depth

    def forward(self, x):
        prev = x
        for _ in range(self.depth):
            y = torch.maximum(x + 0.25, prev)
            prev, x = x, y - 0.5
        return x


class TwoOutputs(torch.nn.Module):
    def forward(self, x):
        a = torch.relu(x) + 1
        b = torch.abs(x) * 2
        return a - b, b + 3


def _execute(mod, inputs, noisy: frozenset, failing: frozenset = frozenset()):
    """Run ``mod``'s graph node by node; nodes in ``noisy`` get +1 (the broken "accelerated"
    kernel), nodes in ``failing`` raise."""
    env = {}
    it = iter(inputs)

    def value(a):
        if isinstance(a, (tuple, list)):
            return type(a)(value(v) for v in a)
        return env[a.name] if hasattr(a, "op") else a

    for n in mod.graph.nodes:
        if n.op == "placeholder":
            env[n.name] = next(it)
        elif n.op == "output":
            return value(n.args[0])
        elif n.op == "call_method":
            args = value(n.args)
            env[n.name] = getattr(args[0], n.target)(*args[1:])
        else:
            if n.name in failing:
                raise RuntimeError(f"kernel for {n.name} crashed")
            result = n.target(*value(n.args), **value(dict(n.kwargs)))
            env[n.name] = result + 1 if n.name in noisy else result
    raise AssertionError("no output node")


def _minimizer(lib: str, gm, inputs, noisy=(), failing=(), **settings_kw):
    _, nm = LIBS[lib]
    noisy, failing = frozenset(noisy), frozenset(failing)
    extra = {k: settings_kw.pop(k) for k in ("module_exporter", "exclusion_fn") if k in settings_kw}

    class Minimizer(nm._MinimizerBase):
        def run_a(self, mod, inputs, report_idx=-1):
            return _execute(mod, inputs, frozenset())

        def run_b(self, mod, inputs, report_idx=-1):
            return _execute(mod, inputs, noisy, failing)

    settings = nm._MinimizerSettingBase(**settings_kw)
    return Minimizer(gm, inputs, _compare, settings, **extra)


def _compare(a, b, names):
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    err = max((float((x - y).abs().max()) for x, y in zip(a, b)), default=0.0)
    return err, err < 1e-5


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fn(*args, **kwargs)
    return result, out.getvalue()


_SET = re.compile(r"\{[^{}]*\}")


def _normalise(text: str) -> str:
    # Printed node sets come out in hash order: sort their members.
    return _SET.sub(lambda m: "{" + ", ".join(sorted(m.group(0)[1:-1].split(", "))) + "}", text)


def _run_both(module_factory, inputs, minimize_kw=None, **kw):
    """Minimize with torch.fx and fxkit; return {lib: (culprit names, printed, minimizer)}."""
    out = {}
    for lib in LIBS:
        gm = LIBS[lib][0].symbolic_trace(module_factory())
        m = _minimizer(lib, gm, inputs, **dict(kw))
        culprits, printed = _quiet(m.minimize, **(minimize_kw or {}))
        out[lib] = (sorted(n.name for n in culprits), _normalise(printed), m)
    return out


X = (torch.randn(3, 4),)
MODES = ["sequential", "binary", "accumulate", "block", "skip"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bug", ["add", "maximum_2", "sub_5"])
def test_every_mode_finds_planted_bug_like_torch_fx(mode: str, bug: str) -> None:
    kw = {"skip_nodes": ["add_3"]} if mode == "skip" else {}
    res = _run_both(Chain, X, kw, noisy={bug}, traverse_method=mode)
    (t_culprits, t_out, _), (f_culprits, f_out, f_min) = res["torch.fx"], res["fxkit"]
    assert f_culprits == t_culprits
    assert f_out == t_out
    if mode == "skip":
        assert f_culprits == [] or bug in f_culprits
    else:
        assert bug in f_culprits
        assert len(f_culprits) == 1 or mode == "block"
    # the minimizer says what it tried, and the planted node is in a mismatching attempt
    assert any(bug in a.nodes and a.outcome == "mismatch" for a in f_min.tried_nodes)


@pytest.mark.parametrize("find_last_node", [True, False], ids=["last", "first"])
def test_block_half_searches_match_torch_fx(find_last_node: bool) -> None:
    res = _run_both(
        Chain,
        X,
        {"find_last_node": find_last_node},
        noisy={"maximum_2"},
        traverse_method="block",
    )
    assert res["fxkit"][0] == res["torch.fx"][0]
    assert res["fxkit"][1] == res["torch.fx"][1]


def test_defined_mode_returns_the_mismatching_range() -> None:
    res = _run_both(Chain, X, {"start": "add_1", "end": "sub_3"}, noisy={"maximum_2"},
                    traverse_method="defined")  # fmt: skip
    # torch.fx reports the culprit set but returns an empty set; fxkit returns it.
    assert res["torch.fx"][0] == []
    assert "Found culprit" in res["torch.fx"][1]
    assert res["fxkit"][1] == res["torch.fx"][1]
    assert "maximum_2" in res["fxkit"][0]
    assert res["fxkit"][0][0] == "add_1" and "sub_3" in res["fxkit"][0]
    clean = _run_both(Chain, X, {"start": "add_1", "end": "sub_1"}, noisy={"maximum_2"},
                      traverse_method="defined")  # fmt: skip
    assert clean["fxkit"][0] == clean["torch.fx"][0] == []


@pytest.mark.parametrize("mode", MODES + ["defined"])
def test_no_bug_no_culprit(mode: str) -> None:
    kw = {"skip_nodes": ["add_3"]} if mode == "skip" else {}
    res = _run_both(Chain, X, kw, traverse_method=mode)
    assert res["fxkit"][0] == res["torch.fx"][0] == []


@pytest.mark.parametrize("mode", ["sequential", "binary"])
def test_find_all_finds_two_bugs_like_torch_fx(mode: str) -> None:
    res = _run_both(Chain, X, noisy={"add_1", "sub_4"}, traverse_method=mode, find_all=True)
    assert res["fxkit"][0] == res["torch.fx"][0]
    assert res["fxkit"][1] == res["torch.fx"][1]
    if mode == "sequential":
        assert {"add_1", "sub_4"} <= set(res["fxkit"][0])


@pytest.mark.parametrize("mode", ["sequential", "binary", "accumulate", "block"])
def test_run_errors_are_culprits_like_torch_fx(mode: str) -> None:
    res = _run_both(Chain, X, failing={"maximum_3"}, traverse_method=mode)
    assert res["fxkit"][0] == res["torch.fx"][0]
    assert "maximum_3" in res["fxkit"][0]
    assert any(a.outcome == "run_error" for a in res["fxkit"][2].tried_nodes)


def test_accumulate_error_and_multiple_outputs_match_torch_fx() -> None:
    for mode in ("sequential", "binary"):
        res = _run_both(TwoOutputs, X, noisy={"abs_1"}, traverse_method=mode, accumulate_error=True)
        assert res["fxkit"][0] == res["torch.fx"][0] == ["abs_1"]
        assert res["fxkit"][1] == res["torch.fx"][1]


def test_exclusion_fn_and_module_exporter() -> None:
    exported = {lib: [] for lib in LIBS}
    culprits = {}
    for lib in LIBS:
        gm = LIBS[lib][0].symbolic_trace(Chain())

        def exclude(nodes, start, end):
            nodes[:] = [n for n in nodes if n.name != "add"]

        m = _minimizer(
            lib,
            gm,
            X,
            noisy={"add", "sub_2"},
            traverse_method="sequential",
            find_all=True,
            exclusion_fn=exclude,
            module_exporter=lambda inputs, mod, name, lib=lib: exported[lib].append(name),
        )
        culprits[lib] = sorted(n.name for n in _quiet(m.minimize)[0])
    assert culprits["fxkit"] == culprits["torch.fx"] == ["sub_2"]
    assert exported["fxkit"] == exported["torch.fx"] == ["sub_2_cpu", "sub_2_acc"]


def test_run_nodes_and_results_match_torch_fx() -> None:
    results = {}
    for lib in LIBS:
        gm = LIBS[lib][0].symbolic_trace(Chain())
        m = _minimizer(lib, gm, X, noisy={"add_1"}, return_intermediate=True)
        _, printed = _quiet(m.run_nodes, start="add", end="sub_2")
        assert "Result mismatch" in printed
        results[lib] = (m.results, sorted(m.a_outputs))
    assert results["fxkit"] == results["torch.fx"]


def test_settings_str_matches_torch_fx() -> None:
    kw = {"traverse_method": "binary", "find_all": True}
    assert str(f_nm._MinimizerSettingBase(**kw)) == str(t_nm._MinimizerSettingBase(**kw))


@pytest.mark.parametrize("tqdm_installed", [True, False], ids=["tqdm", "no_tqdm"])
def test_progress_logged_when_no_bar_is_shown(tqdm_installed: bool, monkeypatch, caplog) -> None:
    # Under pytest stderr is not a terminal, so even with tqdm the progress goes to the log.
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    if not tqdm_installed:
        monkeypatch.setattr(builtins, "__import__", no_tqdm)
    gm = fxkit.symbolic_trace(Chain(depth=8))  # 24 call nodes: a "long" sequential search
    m = _minimizer("fxkit", gm, X, noisy={"sub_7"}, traverse_method="sequential")
    with caplog.at_level(logging.INFO, logger=f_nm.__name__):
        culprits, _ = _quiet(m.minimize)
    assert [n.name for n in culprits] == ["sub_7"]
    assert any(
        re.search(r"minimize \(sequential\): \d+/~24 runs", r.message) for r in caplog.records
    )
    assert any(r.message.startswith("Trying 1 node(s): sub_7") for r in caplog.records)
    assert len(m.tried_nodes) == 24


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", list(LIBS))
def test_rejects_plain_module(lib: str) -> None:
    with pytest.raises(AssertionError, match="Expected GraphModule"):
        _minimizer(lib, Chain(), X)


@pytest.mark.parametrize("lib", list(LIBS))
def test_placeholder_count_mismatch(lib: str) -> None:
    gm = LIBS[lib][0].symbolic_trace(Chain())
    with pytest.raises(AssertionError, match=r"Placeholder count \(1\) does not match"):
        _minimizer(lib, gm, X + X)


@pytest.mark.parametrize("lib", list(LIBS))
def test_unknown_method_and_missing_skip_nodes(lib: str) -> None:
    gm = LIBS[lib][0].symbolic_trace(Chain())
    with pytest.raises(RuntimeError, match="Unknown traverse method bogus!"):
        _quiet(_minimizer(lib, gm, X, traverse_method="bogus").minimize)
    with pytest.raises(RuntimeError, match="'skip_nodes' can't be None"):
        _quiet(_minimizer(lib, gm, X, traverse_method="skip").minimize)


@pytest.mark.parametrize("lib", list(LIBS))
def test_unimplemented_run_a_is_run_func_error(lib: str) -> None:
    _, nm = LIBS[lib]
    gm = LIBS[lib][0].symbolic_trace(Chain())
    m = nm._MinimizerBase(gm, X, _compare, nm._MinimizerSettingBase())
    split, name = m._build_submodule({n for n in gm.graph.nodes if n.name == "add"})
    with pytest.raises(nm.FxNetMinimizerRunFuncError, match="run_a\\(\\) is not implemented"):
        m._run_and_compare(split, name, ["add"])


@pytest.mark.parametrize("lib", list(LIBS))
def test_mismatch_error_type(lib: str) -> None:
    _, nm = LIBS[lib]
    gm = LIBS[lib][0].symbolic_trace(Chain())
    m = _minimizer(lib, gm, X, noisy={"add"})
    split, name = m._build_submodule({n for n in gm.graph.nodes if n.name == "add"})
    with pytest.raises(nm.FxNetMinimizerResultMismatchError, match="Result mismatch for"):
        m._run_and_compare(split, name, ["add"])


@pytest.mark.parametrize("lib", list(LIBS))
def test_missing_minimize_submodule_is_bad_module_error(lib: str, monkeypatch) -> None:
    _, nm = LIBS[lib]
    gm = LIBS[lib][0].symbolic_trace(Chain())
    m = _minimizer(lib, gm, X, traverse_method="binary")
    # A split that loses the minimize submodule: the search must stop with the error.
    monkeypatch.setattr(nm, "split_by_tags", lambda module, tags: torch.nn.Module())
    with pytest.raises(nm.FxNetMinimizerBadModuleError, match="Minimize submodule was not found"):
        _quiet(m.minimize)


def test_accepts_torch_fx_graph_module() -> None:
    gm = tfx.symbolic_trace(Chain())
    m = _minimizer("fxkit", gm, X, noisy={"maximum_2"}, traverse_method="binary")
    culprits, _ = _quiet(m.minimize)
    assert [n.name for n in culprits] == ["maximum_2"]
    assert all(n.graph is gm.graph for n in culprits)
