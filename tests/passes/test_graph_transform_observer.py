"""GraphTransformObserver compared with torch.fx's on the same edits to fxkit and torch.fx
GraphModules: recorded names, provenance meta, hook cleanup, nesting, errors, switches, logs."""

from __future__ import annotations

import copy
import importlib.util
import operator
import sys

import pytest
import torch
import torch._inductor.config as inductor_config
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import graph_transform_observer as tgto

import fxkit
from fxkit.passes import graph_transform_observer as fgto

HOOK_LISTS = ("_create_node_hooks", "_erase_node_hooks", "_replace_hooks", "_deepcopy_hooks")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.lin(x) + 1
        z = torch.relu(y)
        return z * 2, y


def traced(lib):
    return lib.symbolic_trace(Net())


# (observer class, library that traces the module); the last one is fxkit's observer on a
# torch.fx GraphModule, which must work by duck typing.
PAIRS = {
    "torch": (tgto.GraphTransformObserver, tfx),
    "fxkit": (fgto.GraphTransformObserver, fxkit),
    "fxkit_on_torch_gm": (fgto.GraphTransformObserver, tfx),
}


@pytest.fixture
def provenance():
    """Turn recording on the way torch.fx's observer reads it (inductor provenance level 1)."""
    with inductor_config.patch({"trace.provenance_tracking_level": 1}):
        yield


def provenance_of(gm):
    """Per node: name and its from_node entries as (source name, pass, actions)."""
    return [
        (
            n.name,
            [
                (s.name, s.pass_name, [a.name for a in s.action])
                for s in n.meta.get("from_node", [])
            ],
        )
        for n in gm.graph.nodes
    ]


def hooks_left(gm):
    return {name: len(getattr(gm, name)) for name in HOOK_LISTS}


def node(gm, name):
    return next(n for n in gm.graph.nodes if n.name == name)


def edit(gm):
    """Insert a neg after relu and reroute relu's users to it; add and erase a scratch node;
    swap an input with replace_input_with."""
    g = gm.graph
    relu = node(gm, "relu")
    with g.inserting_after(relu):
        neg = g.call_function(torch.neg, (relu,))
    relu.replace_all_uses_with(neg)
    neg.args = (relu,)
    with g.inserting_after(neg):
        scratch = g.call_function(operator.add, (neg, 3))
    g.erase_node(scratch)
    mul = node(gm, "mul")
    mul.replace_input_with(neg, node(gm, "add"))
    g.erase_node(neg)
    gm.recompile()


def observed(which, body, passname="p"):
    cls, lib = PAIRS[which]
    gm = traced(lib)
    obs = cls(gm, passname)
    with obs:
        body(gm)
    return obs, gm


# --- differential ------------------------------------------------------------------------------


@pytest.mark.usefixtures("provenance")
def test_same_names_meta_and_cleanup():
    results = {}
    for which in PAIRS:
        obs, gm = observed(which, edit)
        results[which] = (
            sorted(obs.created_nodes),
            sorted(obs.erased_nodes),
            provenance_of(gm),
            hooks_left(gm),
            gm.code,
        )
    assert results["torch"][1] == ["add_1", "neg"]
    assert results["fxkit"] == results["torch"]
    assert results["fxkit_on_torch_gm"] == results["torch"]


@pytest.mark.usefixtures("provenance")
def test_replace_with_existing_node_meta():
    def body(gm):
        node(gm, "relu").replace_all_uses_with(node(gm, "add"))

    out = {w: provenance_of(observed(w, body, "swap")[1]) for w in PAIRS}
    assert ("add", [("relu", "swap", ["REPLACE"])]) in out["torch"]
    assert out["fxkit"] == out["torch"] == out["fxkit_on_torch_gm"]


@pytest.mark.usefixtures("provenance")
def test_nested_observers():
    results = {}
    for which, (cls, lib) in PAIRS.items():
        gm = traced(lib)
        outer = cls(gm, "outer")
        inner = cls(gm, "inner")
        with outer:
            with inner:
                assert hooks_left(gm)["_create_node_hooks"] == 2
                edit(gm)
            after_inner = hooks_left(gm)
            relu = node(gm, "relu")
            with gm.graph.inserting_after(relu):
                gm.graph.call_function(torch.sigmoid, (relu,))
        results[which] = (
            sorted(outer.created_nodes),
            sorted(outer.erased_nodes),
            sorted(inner.created_nodes),
            sorted(inner.erased_nodes),
            after_inner,
            hooks_left(gm),
            provenance_of(gm),
        )
    assert results["fxkit"] == results["torch"] == results["fxkit_on_torch_gm"]


@pytest.mark.usefixtures("provenance")
def test_exception_in_block_unregisters_hooks():
    results = {}
    for which, (cls, lib) in PAIRS.items():
        gm = traced(lib)
        obs = cls(gm, "boom")

        def body(gm=gm):
            relu = node(gm, "relu")
            with gm.graph.inserting_after(relu):
                gm.graph.call_function(torch.neg, (relu,))
            raise ValueError("pass failed")

        with pytest.raises(ValueError, match="pass failed"):
            with obs:
                body()
        results[which] = (sorted(obs.created_nodes), hooks_left(gm))
    assert results["torch"][1] == dict.fromkeys(HOOK_LISTS, 0)
    assert results["fxkit"] == results["torch"] == results["fxkit_on_torch_gm"]


@pytest.mark.usefixtures("provenance")
def test_deepcopy_inside_block_is_unhooked():
    results = {}
    for which, (cls, lib) in PAIRS.items():
        gm = traced(lib)
        with cls(gm, "copying") as obs:
            dup = copy.deepcopy(gm)
            inside = hooks_left(dup)
        results[which] = (inside, hooks_left(dup), hooks_left(gm), len(obs.copied_gms))
    assert results["torch"][1] == dict.fromkeys(HOOK_LISTS, 0)
    assert results["fxkit"] == results["torch"] == results["fxkit_on_torch_gm"]


@pytest.mark.usefixtures("provenance")
def test_reentering_clears_previous_record():
    out = {}
    for which, (cls, lib) in PAIRS.items():
        gm = traced(lib)
        obs = cls(gm, "twice")
        with obs:
            edit(gm)
        with obs:
            pass
        out[which] = (sorted(obs.created_nodes), sorted(obs.erased_nodes))
    assert out["fxkit"] == out["torch"] == ([], [])


@pytest.mark.usefixtures("provenance")
def test_apply_passes_and_disabled_pass():
    def gm_pass(gm):
        edit(gm)
        return "gm-ran"

    def graph_pass(graph):
        return ("graph-ran", type(graph).__name__)

    out = {}
    for which, (cls, lib) in PAIRS.items():
        gm = traced(lib)
        obs = cls(gm, "mypass")
        ran_gm = obs.apply_gm_pass(gm_pass)
        ran_graph = cls(gm, "other").apply_graph_pass(graph_pass)
        with inductor_config.patch({"disabled_passes": "something,MYPASS"}):
            calls = []
            off = cls(gm, "mypass").apply_gm_pass(calls.append)
            off_graph = cls(gm, "MyPass").apply_graph_pass(calls.append)
            still_on = cls(gm, "other", subsystem="sub").apply_gm_pass(lambda g: 5)
        out[which] = (ran_gm, ran_graph, sorted(obs.erased_nodes), off, off_graph, calls, still_on)
        assert hooks_left(gm) == dict.fromkeys(HOOK_LISTS, 0)
    assert out["torch"][3:] == (None, None, [], 5)
    assert out["fxkit"] == out["torch"] == out["fxkit_on_torch_gm"]


@pytest.fixture
def quiet():
    """Recording off, as on a plain install."""
    off = {"trace.provenance_tracking_level": 0, "trace.log_url_for_graph_xform": None}
    with inductor_config.patch(off):
        yield


@pytest.mark.usefixtures("quiet")
def test_inactive_by_default_records_nothing():
    out = {}
    for which, (cls, lib) in PAIRS.items():
        gm = traced(lib)
        obs = cls(gm, "quiet")
        with obs:
            during = hooks_left(gm)
            edit(gm)
        out[which] = (obs.active, during, provenance_of(gm), obs.get_current_pass_count())
    assert out["torch"][0] is False and out["torch"][1] == dict.fromkeys(HOOK_LISTS, 0)
    assert out["fxkit"][:3] == out["torch"][:3] == out["fxkit_on_torch_gm"][:3]
    # fxkit keeps the attributes readable (torch only creates them when recording).
    obs = fgto.GraphTransformObserver(traced(fxkit), "quiet")
    assert obs.created_nodes == set() and obs.erased_nodes == set()
    # track=True (fxkit) records without inductor's switches.
    gm = traced(fxkit)
    with fgto.GraphTransformObserver(gm, "forced", track=True) as obs:
        edit(gm)
    assert sorted(obs.erased_nodes) == ["add_1", "neg"]


def test_settings_from_environment_when_inductor_not_loaded(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "torch._inductor.config")
    monkeypatch.setenv("INDUCTOR_PROVENANCE", "1")
    assert fgto.GraphTransformObserver(traced(fxkit), "env").active
    monkeypatch.setenv("INDUCTOR_PROVENANCE", "0")
    assert not fgto.GraphTransformObserver(traced(fxkit), "env").active
    monkeypatch.setenv("INDUCTOR_LOG_URL_FOR_GRAPH_XFORM", str(tmp_path))
    obs = fgto.GraphTransformObserver(traced(fxkit), "env")
    assert obs.active and obs.log_url == str(tmp_path)
    monkeypatch.setenv("TORCHINDUCTOR_DISABLED_PASSES", "env")
    assert fgto.GraphTransformObserver(traced(fxkit), "env").apply_gm_pass(lambda g: 1) is None


# --- log_url ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("quiet")
def test_log_url_counts_passes_and_writes_snapshots(tmp_path):
    torch_before = tgto.GraphTransformObserver.get_current_pass_count()
    torch_dir = tmp_path.parent / f"{tmp_path.name}_torch"
    torch_dir.mkdir()
    if importlib.util.find_spec("pydot") is None:
        # Without pydot torch.fx counts the pass, then fails drawing it.
        with pytest.raises(RuntimeError, match="requires the pydot package"):
            tgto.GraphTransformObserver(traced(tfx), "logged", log_url=str(torch_dir))
    else:
        tgto.GraphTransformObserver(traced(tfx), "logged", log_url=str(torch_dir))
    assert tgto.GraphTransformObserver.get_current_pass_count() == torch_before + 1

    cls = fgto.GraphTransformObserver
    start = cls.get_current_pass_count()
    gm = traced(fxkit)
    with cls(gm, "noop", log_url=str(tmp_path)):
        pass
    assert cls.get_current_pass_count() == start + 1
    assert list(tmp_path.iterdir()) == []  # nothing changed, nothing written

    with cls(gm, "logged", log_url=str(tmp_path)) as obs:
        edit(gm)
    n = start + 2
    assert obs.active and cls.get_current_pass_count() == n
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        f"pass_{n}_logged_{side}_graph.{ext}"
        for side in ("input", "output")
        for ext in ("dot", "txt")
    ]
    before_dot = (tmp_path / f"pass_{n}_logged_input_graph.dot").read_text()
    assert '"neg"' not in before_dot and before_dot.startswith('digraph "logged"')
    after_dot = (tmp_path / f"pass_{n}_logged_output_graph.dot").read_text()
    assert '"add" -> "mul"' in after_dot and "fillcolor=yellow" not in after_dot
    assert (tmp_path / f"pass_{n}_logged_output_graph.txt").read_text() == str(gm.graph)
    # Erased nodes are yellow in the input picture, created ones in the output picture.
    with cls(gm, "swap", log_url=str(tmp_path)):
        add = node(gm, "add")
        with gm.graph.inserting_after(add):
            neg = gm.graph.call_function(torch.neg, (add,))
        gm.graph.erase_node(node(gm, "relu"))
    n += 1
    yellow_in = (tmp_path / f"pass_{n}_swap_input_graph.dot").read_text()
    yellow_out = (tmp_path / f"pass_{n}_swap_output_graph.dot").read_text()
    assert '"relu" [label="{relu | call_function | ' in yellow_in
    assert [ln for ln in yellow_in.splitlines() if "yellow" in ln] == [
        ln for ln in yellow_in.splitlines() if ln.startswith('  "relu" [')
    ]
    assert [ln.split()[0] for ln in yellow_out.splitlines() if "yellow" in ln] == [f'"{neg.name}"']
    # Not recording-only: an observer without log_url does not count.
    cls(gm, "unlogged", track=True)
    assert cls.get_current_pass_count() == n


# --- diff --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", [fxkit, tfx])
def test_diff_of_pass(lib):
    gm = traced(lib)
    obs = fgto.GraphTransformObserver(gm, "edit")
    assert obs.diff() == ""
    with obs:
        assert obs.diff() == ""
        relu = node(gm, "relu")
        with gm.graph.inserting_after(relu):
            gm.graph.call_function(torch.neg, (relu,))
        live = obs.diff()
    text = obs.diff()
    assert text == live
    assert text.splitlines()[:2] == ["--- edit (before)", "+++ edit (after)"]
    added = [line for line in text.splitlines() if line.startswith("+") and "neg" in line]
    assert len(added) == 1 and "torch.neg" in added[0]
    # Only relu's line changes besides the new one: it gained a user.
    removed = [line for line in text.splitlines()[2:] if line.startswith("-")]
    assert len(removed) == 1 and "%relu" in removed[0] and "num_users=1" in removed[0]


def test_graph_diff_across_libraries():
    a, b = traced(fxkit), traced(tfx)
    assert fgto.graph_diff(a, b.graph) == ""
    assert fgto.graph_diff(str(a.graph), a) == ""
    edit(a)
    text = fgto.graph_diff(b, a, fromfile="torch", tofile="fxkit", n=0)
    assert text.startswith("--- torch\n+++ fxkit\n@@")
    assert "-    %add_1" not in text  # add_1 was erased and never printed in torch's graph
    with pytest.raises(TypeError, match="expects a Graph, a GraphModule or a str, got int"):
        fgto.graph_diff(1, a)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("provenance")
@pytest.mark.parametrize("entry", ["enter", "apply_gm_pass", "apply_graph_pass"])
def test_non_graph_module_input(entry):
    messages = []
    for cls in (tgto.GraphTransformObserver, fgto.GraphTransformObserver):
        obs = cls(object(), "p")
        with pytest.raises(AttributeError) as info:
            if entry == "enter":
                with obs:
                    pass
            else:
                getattr(obs, entry)(lambda g: g)
        messages.append(str(info.value))
    assert messages[0] in messages[1]


@pytest.mark.usefixtures("quiet")
def test_non_graph_module_input_when_inactive():
    for cls in (tgto.GraphTransformObserver, fgto.GraphTransformObserver):
        with cls(object(), "p") as obs:
            pass
        assert obs.apply_gm_pass(lambda g: "ok") == "ok"


# --- properties ---------------------------------------------------------------------------------

# One edit step: (kind, which node index) — resolved against the current graph in both libraries.
STEPS = st.lists(
    st.tuples(st.sampled_from(["insert", "erase", "reroute"]), st.integers(0, 50)),
    max_size=8,
)


def apply_steps(gm, steps):
    g = gm.graph
    for kind, idx in steps:
        inner = [n for n in g.nodes if n.op not in ("placeholder", "output")]
        if not inner:
            return
        target = inner[idx % len(inner)]
        if kind == "insert":
            with g.inserting_after(target):
                new = g.call_function(torch.neg, (target,))
            if kind == "insert" and idx % 2:
                target.replace_all_uses_with(new)
                new.args = (target,)
        elif kind == "erase" and not target.users:
            g.erase_node(target)
        elif kind == "reroute":
            first = next(n for n in g.nodes if n.op == "placeholder")
            target.replace_all_uses_with(first)


@pytest.mark.usefixtures("provenance")
@settings(max_examples=30, deadline=None)
@given(steps=STEPS)
def test_random_edits_match_torch(steps):
    results = {}
    for which in PAIRS:
        obs, gm = observed(which, lambda gm: apply_steps(gm, steps), "rand")
        results[which] = (
            sorted(obs.created_nodes),
            sorted(obs.erased_nodes),
            provenance_of(gm),
            hooks_left(gm),
        )
    assert results["fxkit"] == results["torch"] == results["fxkit_on_torch_gm"]
    assert results["torch"][3] == dict.fromkeys(HOOK_LISTS, 0)
