"""fxkit.passes.infra (PassBase, PassResult, PassManager) against torch.fx.passes.infra:
same schedules, results, recompiles and errors on both libraries' GraphModules; plus the
per-pass history fxkit adds."""

from __future__ import annotations

import operator
import re

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes.infra import pass_base as tbase
from torch.fx.passes.infra import pass_manager as tpm

import fxkit
from fxkit.passes.infra import pass_base as obase
from fxkit.passes.infra import pass_manager as opm
from fxkit.passes.infra.pass_manager import PassRecord, format_pass_history
from fxkit.passes.tests.test_pass_manager import TestInfraPassManager  # noqa: F401 - collected

# (graph library, pass manager module, pass base module)
OURS = (fxkit, opm, obase)
THEIRS = (tfx, tpm, tbase)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # the comparison is the point
        return (type(e), re.sub(r" at 0x[0-9a-f]+", "", str(e)))


def chain(fx, n=4):
    """x -> add 1 -> mul 2 -> add 1 -> ... (n ops)."""
    g = fx.Graph()
    cur = x = g.placeholder("x")
    for i in range(n):
        cur = g.call_function(operator.add if i % 2 == 0 else operator.mul, (cur, i + 1))
    g.output(g.call_function(operator.add, (cur, x)))
    return fx.GraphModule(torch.nn.Module(), g)


def code(gm):
    return gm.code.strip()


def adds_to_subs(lib):
    """A PassResult pass that turns the first remaining add into a sub."""
    _, _, base = lib

    def adds_to_subs(gm):
        for n in gm.graph.nodes:
            if n.target is operator.add:
                n.target = operator.sub
                return base.PassResult(gm, True)
        return base.PassResult(gm, False)

    return adds_to_subs


def run_both(script):
    """script(lib) -> value, on fxkit and torch.fx; returns both outcomes."""
    return outcome(script, OURS), outcome(script, THEIRS)


def test_public_names_are_a_superset():
    assert set(tpm.__all__) <= set(opm.__all__)
    assert set(tbase.__all__) == set(obase.__all__)


@pytest.mark.parametrize("steps", [None, 1, 2, 10])
def test_steps_run_until_unmodified(steps):
    def script(lib):
        fx, pm_mod, _ = lib
        pm = pm_mod.PassManager([adds_to_subs(lib)], steps=steps)
        res = pm(chain(fx))
        x = torch.tensor([3.0])
        return code(res.graph_module), res.modified, res.graph_module(x).tolist(), pm.steps

    ours, theirs = run_both(script)
    assert ours == theirs and ours[0] == "ok"


def test_result_type_and_recompile_on_torch_fx_module():
    gm = chain(tfx)
    res = opm.PassManager([adds_to_subs(OURS)])(gm)
    assert isinstance(res, obase.PassResult) and res._fields == ("graph_module", "modified")
    assert res.graph_module is gm and res.modified is True
    assert "x - 1" in gm.code  # recompiled by fxkit's manager


def test_pass_result_shape():
    for base in (obase, tbase):
        r = base.PassResult("gm", False)
        assert tuple(r) == ("gm", False) and r.graph_module == "gm" and not r.modified
        assert isinstance(r, tuple) and not hasattr(r, "__dict__")
    with pytest.raises(TypeError):
        obase.PassResult("gm")


def test_pass_base_protocol():
    def script(lib):
        fx, pm_mod, base = lib
        log = []

        class Counting(base.PassBase):
            def requires(self, gm):
                log.append("requires")

            def call(self, gm):
                log.append("call")
                return base.PassResult(gm, False)

            def ensures(self, gm):
                log.append("ensures")

        pm_mod.PassManager([Counting()])(chain(fx))
        return log, outcome(base.PassBase)[0]

    ours, theirs = run_both(script)
    assert ours == theirs == ("ok", (["requires", "call", "ensures"], TypeError))


def test_pass_result_wrapper():
    def script(lib):
        fx, pm_mod, base = lib
        gm = chain(fx)
        other = chain(fx)

        class Obj:
            def __call__(self, gm):
                return None

        w_none = pm_mod.pass_result_wrapper(lambda m: None)(gm)
        w_mod = pm_mod.pass_result_wrapper(lambda m: other)(gm)
        w_res = pm_mod.pass_result_wrapper(lambda m: base.PassResult(m, False))(gm)
        w_other = pm_mod.pass_result_wrapper(lambda m: 5)(gm)
        return (
            (w_none.graph_module is gm, w_none.modified),
            (w_mod.graph_module is other, w_mod.modified),
            (w_res.graph_module is gm, w_res.modified),
            w_other,
            pm_mod.pass_result_wrapper(Obj()).__name__,
            pm_mod.pass_result_wrapper(None),
        )

    ours, theirs = run_both(script)
    assert ours == theirs and ours[0] == "ok"


def test_accepts_torch_fx_pass_results():
    res = opm.PassManager([lambda gm: tbase.PassResult(gm, True)], steps=1)(chain(tfx))
    assert res.modified is True
    wrapped = opm.pass_result_wrapper(lambda gm: tbase.PassResult(gm, False))(chain(tfx))
    assert wrapped.modified is False


def test_constraints_reorder_and_validate():
    def script(lib):
        fx, pm_mod, _ = lib
        order = []

        def make(name):
            def p(gm):
                order.append(name)
                return lib[2].PassResult(gm, False)

            p.__name__ = name
            return p

        a, b, c = make("a"), make("b"), make("c")
        pm = pm_mod.PassManager([c, b, a])
        pm.add_constraint(pm_mod.this_before_that_pass_constraint(a, c))
        pm(chain(fx))
        pm.add_constraint(pm_mod.this_before_that_pass_constraint(c, a))
        v = outcome(pm.validate_constraints)
        cycle = outcome(pm.solve_constraints)
        return order, [p.__name__ for p in pm.passes], v[0], cycle

    ours, theirs = run_both(script)
    assert ours == theirs and ours[1][2] is RuntimeError and ours[1][3][0] is RuntimeError


def test_no_constraints_keeps_the_list_object():
    passes = [lambda gm: None]
    for pm_mod in (opm, tpm):
        assert pm_mod._topological_sort_passes(passes, []) is passes


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 6),
    pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=6),
)
def test_random_topological_sorts_agree(n, pairs):
    passes = [(lambda i: lambda gm: i)(i) for i in range(n)]

    def script(pm_mod):
        cons = [
            pm_mod.this_before_that_pass_constraint(passes[a % n], passes[b % n]) for a, b in pairs
        ]
        sort = outcome(pm_mod._topological_sort_passes, list(passes), cons)
        if sort[0] == "ok":
            sort = ("ok", [passes.index(p) for p in sort[1]])
        checks = [outcome(pm_mod._validate_pass_schedule_constraint, c, passes) for c in cons]
        return sort, checks

    assert script(opm) == script(tpm)


def test_errors_name_the_pass():
    def script(lib):
        fx, pm_mod, base = lib

        def fine(gm):
            return base.PassResult(gm, False)

        def broken(gm):
            raise ValueError("boom")

        def not_a_result(gm):
            return 3

        res = []
        for passes in ([fine, broken], [fine, fine, not_a_result]):
            try:
                pm_mod.PassManager(passes)(chain(fx))
            except Exception as e:
                res.append((type(e), str(e), type(e.__cause__), str(e.__cause__)))
        return res

    ours, theirs = run_both(script)
    assert ours[0] == theirs[0] == "ok"
    for o, t in zip(ours[1], theirs[1], strict=True):
        assert issubclass(o[0], t[0]) and o[2:] == t[2:]
        assert o[1].startswith(t[1]) and o[2].__name__ in o[1]


def test_checks_run_before_and_after_each_pass():
    def script(lib):
        fx, pm_mod, base = lib
        seen = []
        pm = pm_mod.PassManager([adds_to_subs(lib)] * 2, run_checks_after_each_pass=True)
        pm.add_checks(lambda gm: seen.append(len(gm.graph.nodes)))
        pm(chain(fx))
        bad = outcome(pm.add_checks, lambda a, b: None)

        def failing(gm):
            if any(n.target is operator.sub for n in gm.graph.nodes):
                raise AssertionError("no subs allowed")

        pm2 = pm_mod.PassManager([adds_to_subs(lib)], run_checks_after_each_pass=True)
        pm2.add_checks(failing)
        err = outcome(pm2, chain(fx))
        return seen, bad, err[0], err[1].split("\n")[0]

    ours, theirs = run_both(script)
    assert ours == theirs and ours[0] == "ok" and ours[1][1][0] is TypeError


@pytest.mark.parametrize("fx", [fxkit, tfx], ids=["fxkit-gm", "torch.fx-gm"])
def test_lint_after_each_pass_names_the_breaking_pass(fx):
    def dangling(gm):
        stranger = fx.Graph().placeholder("y")  # a node owned by another graph
        out = next(n for n in gm.graph.nodes if n.op == "output")
        out.args = (stranger,)
        return obase.PassResult(gm, True)

    # torch.fx does not lint, and neither does fxkit unless asked.
    opm.PassManager([dangling])(chain(fx))
    with pytest.raises(Exception, match="running the 'dangling' pass after the following"):
        opm.PassManager([dangling], lint_after_each_pass=True)(chain(fx))


def test_history_counts_and_format():
    def grow(gm):
        g = gm.graph
        out = next(n for n in g.nodes if n.op == "output")
        with g.inserting_before(out):
            extra = g.call_function(operator.neg, (out.args[0],))
        out.args = (extra,)
        return obase.PassResult(gm, True)

    def shrink(gm):
        g = gm.graph
        neg = next(n for n in g.nodes if n.target is operator.neg)
        neg.replace_all_uses_with(neg.args[0])
        g.erase_node(neg)
        return obase.PassResult(gm, False)

    pm = opm.PassManager([grow, shrink], steps=3)
    res = pm(chain(fxkit))
    assert res.modified is True
    got = [(r.name, r.step, r.modified, r.added, r.removed, r.changed) for r in pm.history]
    row = [("grow", 0, True, 1, 0, 1), ("shrink", 0, False, 0, 1, 1)]
    assert got == row + [(n, 1, *rest) for n, _, *rest in row] + [
        (n, 2, *rest) for n, _, *rest in row
    ]
    assert all(isinstance(r, PassRecord) and r.seconds >= 0 for r in pm.history)
    with pytest.raises(AttributeError):
        pm.history[0].name = "x"
    text = format_pass_history(pm)
    assert text.splitlines()[0].split()[:2] == ["step", "pass"]
    assert "6 pass runs" in text and format_pass_history(pm.history) == text


def test_history_on_plain_modules_and_opt_out():
    pm = opm.PassManager([lambda m: obase.PassResult(m, False)])
    pm(torch.nn.Linear(2, 2))
    assert [(r.added, r.removed, r.changed) for r in pm.history] == [(0, 0, 0)]
    pm = opm.PassManager([lambda m: obase.PassResult(m, False)], record_history=False)
    pm(chain(fxkit))
    assert pm.history == [] and "0 pass runs" in format_pass_history(pm)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    n_add=st.integers(0, 4),
    to_erase=st.sets(st.integers(0, 11), max_size=4),
    to_retarget=st.sets(st.integers(0, 11), max_size=4),
    fx=st.sampled_from([fxkit, tfx]),
)
def test_history_matches_edits(n, n_add, to_erase, to_retarget, fx):
    """Random edits: the recorded counts are exactly what the pass did."""
    ops = lambda gm: [m for m in gm.graph.nodes if m.op == "call_function"]
    erase = {i for i in to_erase if i < n}
    retarget = {i for i in to_retarget if i < n} - erase

    def edit(gm):
        g, nodes = gm.graph, ops(gm)
        for i in retarget:
            nodes[i].target = operator.truediv
        for i in sorted(erase, reverse=True):
            # Reroute uses to the node's first input before removing it.
            nodes[i].replace_all_uses_with(nodes[i].args[0])
            g.erase_node(nodes[i])
        out = next(m for m in g.nodes if m.op == "output")
        for _ in range(n_add):
            with g.inserting_before(out):
                out.args = (g.call_function(operator.neg, (out.args[0],)),)
        g.lint()
        return obase.PassResult(gm, True)

    pm = opm.PassManager([edit])
    pm(chain(fx, n))
    (rec,) = pm.history
    assert (rec.added, rec.removed) == (n_add, len(erase))
    # Changed: retargeted survivors, users of erased nodes whose input was rerouted, and
    # the output node if new nodes were put in front of it.
    assert rec.changed >= len(retarget)
    assert rec.changed <= len(retarget) + len(erase) + 1 + (n_add > 0)


def test_history_with_tensor_constants_in_args():
    """Swapping a tensor constant for an equal-looking new one counts as a change, and
    comparing multi-element tensors never raises (duck-typed module and nodes)."""

    class NS:  # hashable by identity, like a Node
        def __init__(self, **kw):
            self.__dict__.update(kw)

    node = NS(op="call_function", target=torch.add, args=("x", torch.ones(3)), kwargs={})
    gm = NS(graph=NS(nodes=[node]))

    def swap(gm):
        node.args = ("x", torch.ones(3))
        return obase.PassResult(gm, True)

    pm = opm.PassManager([swap])
    pm(gm)
    assert [(r.added, r.removed, r.changed) for r in pm.history] == [(0, 0, 1)]


@pytest.mark.parametrize("lib", [fxkit, tfx], ids=["fxkit_gm", "torch_fx_gm"])
def test_a_failing_pass_leaves_the_graph_as_it_was(lib):
    def f(x):
        return torch.relu(x) + 1

    gm = lib.symbolic_trace(f)
    before = str(gm.graph)
    code = gm.code

    def half_edit_then_fail(m):
        node = next(n for n in m.graph.nodes if n.op == "call_function")
        node.target = torch.neg
        raise ValueError("pass broke")

    pm = opm.PassManager([half_edit_then_fail])
    with pytest.raises(Exception, match="half_edit_then_fail") as info:
        pm(gm)
    assert isinstance(info.value.__cause__, ValueError)
    assert str(gm.graph) == before and gm.code == code
    torch.testing.assert_close(gm(torch.ones(2)), f(torch.ones(2)))
    keep = opm.PassManager([half_edit_then_fail], restore_on_failure=False)
    with pytest.raises(Exception, match="half_edit_then_fail"):
        keep(gm)
    assert "neg" in str(gm.graph)  # opted out: the half edit stays


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["insert", "erase", "retarget", "rename", "regraph"]), max_size=4))
def test_failing_pass_restores_after_any_edits(edits):
    def f(x):
        return torch.sigmoid(torch.relu(x) + 1)

    gm = fxkit.symbolic_trace(f)
    before, x = str(gm.graph), torch.randn(3)

    def edit_then_fail(m):
        g = m.graph
        for kind in edits:
            calls = [n for n in g.nodes if n.op == "call_function"]
            if kind == "insert":
                with g.inserting_after(calls[0]):
                    g.call_function(torch.neg, (calls[0],))
            elif kind == "erase" and calls[-1].users and len(calls) > 1:
                calls[-1].replace_all_uses_with(calls[0])
                g.erase_node(calls[-1])
            elif kind == "retarget":
                calls[0].target = torch.tanh
            elif kind == "rename":
                calls[0].name = "renamed"
            elif kind == "regraph":
                m.graph = fxkit.symbolic_trace(lambda y: y * 3).graph
                g = m.graph
        raise RuntimeError("fail")

    with pytest.raises(Exception, match="edit_then_fail"):
        opm.PassManager([edit_then_fail])(gm)
    assert str(gm.graph) == before
    torch.testing.assert_close(gm(x), f(x))
