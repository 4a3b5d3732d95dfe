"""The legacy pass manager (fxkit.passes.pass_manager) against torch.fx.passes.pass_manager:
same schedules and outputs, same constraint errors (type and text), same wrapper behaviour."""

from __future__ import annotations

import functools
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import pass_manager as theirs_mod

from fxkit.passes import pass_manager as ours_mod
from fxkit.passes.tests.test_pass_manager import TestPassManager  # noqa: F401 - collected

LIBS = pytest.mark.parametrize("pm_mod", [ours_mod, theirs_mod], ids=["fxkit", "torch.fx"])


def outcome(fn, *args, **kwargs):
    """(kind, value): the return value, or the exception type and message."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:  # the comparison is the point
        # Wrappers are distinct objects per library: compare their reprs without addresses.
        return (type(e), re.sub(r" at 0x[0-9a-f]+", "", str(e)))


def both(script):
    """Run ``script(module)`` on both libraries; return the two outcomes."""
    return outcome(script, ours_mod), outcome(script, theirs_mod)


def make_passes(n):
    """n distinct passes that append their index to a list, so the run order is visible."""
    passes = []
    for i in range(n):

        def p(trace, i=i):
            return [*trace, i]

        p.__name__ = f"pass_{i}"
        passes.append(p)
    return passes


def test_public_names_match():
    assert sorted(ours_mod.__all__) == sorted(theirs_mod.__all__)


def test_run_order_and_output():
    passes = make_passes(5)
    ours, theirs = both(lambda m: m.PassManager(list(passes))([]))
    assert ours == theirs == ("ok", [0, 1, 2, 3, 4])


def test_passes_list_is_kept_not_copied():
    for mod in (ours_mod, theirs_mod):
        passes = make_passes(2)
        pm = mod.PassManager(passes)
        assert pm.passes is passes
        passes.append(make_passes(3)[2])
        assert pm([]) == [0, 1, 2]


@LIBS
def test_build_from_passlist(pm_mod):
    pm = pm_mod.PassManager.build_from_passlist(make_passes(3))
    assert type(pm) is pm_mod.PassManager and pm.constraints == [] and pm([]) == [0, 1, 2]


def test_violated_constraint_same_error():
    passes = make_passes(4)

    def script(m):
        pm = m.PassManager(list(passes))
        pm.add_constraint(m.this_before_that_pass_constraint(passes[3], passes[1]))
        return pm([])

    ours, theirs = both(script)
    assert ours == theirs
    assert ours[0] is RuntimeError and "at index1" in ours[1]


def test_these_before_those_unwraps():
    passes = make_passes(3)

    def script(m):
        pm = m.PassManager([m.loop_pass(passes[2], 2), m.inplace_wrapper(passes[0])])
        pm.add_constraint(m.these_before_those_pass_constraint(passes[0], passes[2]))
        pm.validate()

    ours, theirs = both(script)
    assert ours == theirs and ours[0] is RuntimeError


def test_validation_is_cached_until_a_change():
    for mod in (ours_mod, theirs_mod):
        calls = []

        def constraint(a, b):
            calls.append((a, b))
            return True

        pm = mod.PassManager(make_passes(3), [constraint])
        pm.validate()
        pm.validate()
        assert len(calls) == 3
        pm.add_pass(make_passes(1)[0])
        pm.validate()
        assert len(calls) == 3 + 6


def test_remove_and_replace_pass():
    def script(m):
        passes = make_passes(4)
        pm = m.PassManager(list(passes))
        pm.remove_pass(["pass_1", "pass_3"])
        pm.remove_pass(None)
        pm.replace_pass(passes[2], lambda t: [*t, "new"])
        return pm([])

    ours, theirs = both(script)
    assert ours == theirs == ("ok", [0, "new"])


def test_loop_pass_behaviour_and_errors():
    double = lambda x: 2 * x
    cases = [
        lambda m: m.loop_pass(double, n_iter=4)(1),
        lambda m: m.loop_pass(double, predicate=lambda v: v < 100)(3),
        lambda m: m.loop_pass(double),
        lambda m: m.loop_pass(double, n_iter=2, predicate=bool),
        lambda m: m.loop_pass(double, n_iter=0)(1),
        lambda m: m.loop_pass(double, n_iter=-3)(1),
    ]
    results = [both(c) for c in cases]
    for ours, theirs in results:
        assert ours == theirs
    assert [r[0][0] for r in results] == ["ok", "ok", AssertionError, AssertionError] + [
        RuntimeError
    ] * 2


@LIBS
def test_wrappers_keep_identity(pm_mod):
    def edit(d):
        d["k"] = 1
        return "changed"

    wrapped = pm_mod.inplace_wrapper(edit)
    d = {}
    assert wrapped(d) is d and d == {"k": 1}
    assert wrapped.__name__ == "edit" and wrapped.__wrapped__ is edit
    assert pm_mod.log_hook(edit).__wrapped__ is edit


def test_log_hook_logs_the_same_text(caplog):
    def my_pass(x):
        return x + 1

    texts = []
    for mod in (ours_mod, theirs_mod):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            assert mod.log_hook(my_pass, level=logging.WARNING)(1) == 2
        texts.append([(r.levelno, r.getMessage()) for r in caplog.records])
    assert texts[0] == texts[1] and len(texts[0]) == 1


@pytest.mark.parametrize(
    "script",
    [
        lambda m: m.PassManager([1])(0),  # a non-callable pass
        lambda m: m.PassManager([lambda x: x], [lambda a: True]).validate(),  # bad arity
        lambda m: m.PassManager([functools.partial(max, 0)]).remove_pass(["max"]),  # no __name__
        lambda m: m.PassManager().replace_pass(object(), max),
        lambda m: m.inplace_wrapper(None),
    ],
    ids=["non-callable", "constraint-arity", "partial-remove", "replace-unnamed", "wrap-none"],
)
def test_bad_input_same_outcome(script):
    ours, theirs = both(script)
    assert ours[0] == theirs[0]
    if ours[0] != "ok":
        assert ours[1] == theirs[1]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_random_schedules_agree(n, pairs, order):
    """Any pass list and this-before-that constraints: same output or the same error."""
    passes = make_passes(n)
    order.shuffle(passes)

    def script(m):
        constraints = [
            m.this_before_that_pass_constraint(passes[a % n], passes[b % n]) for a, b in pairs
        ]
        return m.PassManager(list(passes), constraints)([])

    ours, theirs = both(script)
    assert ours == theirs
