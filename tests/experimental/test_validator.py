"""fxkit.experimental.validator against torch.fx's: the config switches, the z3 translation
of SymPy guards and of guard graphs, sat/unsat verdicts and their reports, bisection, bad
input, and the module without z3 (in a subprocess with z3 hidden)."""

from __future__ import annotations

import functools
import math
import operator
import subprocess
import sys

import pytest
import sympy
import torch
import torch.fx.experimental.validator as theirs
import torch.fx.traceback as torch_fx_traceback
from torch._dynamo.source import LocalSource
from torch._dynamo.variables.builder import TrackedFake
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental import _config as tv_config
from torch.fx.experimental.symbolic_shapes import (
    CURRENT_NODE_KEY,
    DimDynamic,
    ShapeEnv,
    StatelessSymbolicContext,
)
from torch.utils._sympy.functions import FloorDiv, Max, Min, Mod, PythonMod, ToFloat

import fxkit.experimental.validator as ours
from fxkit import interop

z3 = pytest.importorskip("z3", reason="the z3 extra (z3-solver) is not installed")

X, Y = sympy.symbols("x y", integer=True, positive=True)
N = sympy.Symbol("n", integer=True)


@pytest.mark.parametrize("enabled", [False, True], ids=["off", "on"])
def test_switches_read_torchs_config(enabled):
    with tv_config.patch(translation_validation=enabled, translation_validation_timeout=1234):
        assert ours.translation_validation_enabled() is theirs.translation_validation_enabled()
        assert ours.translation_validation_enabled() is enabled
        assert ours.translation_validation_timeout() == theirs.translation_validation_timeout()
        assert ours.translation_validation_timeout() == 1234


def test_public_names():
    assert set(ours.__all__) == set(theirs.__all__)
    assert issubclass(ours.ValidationException, theirs.ValidationException)
    assert issubclass(ours.BisectValidationException, theirs.BisectValidationException)


# --- validating SymPy guards ---------------------------------------------------------------------

# (source guards, target guards): the target is sound when it implies the source.
_GUARD_CASES = {
    "stronger_target": ([X > 3], [X > 4]),
    "weaker_target": ([X > 4], [X > 3]),
    "floordiv_mod_identity": ([sympy.Eq(FloorDiv(X, 2) * 2 + Mod(X, 2), X)], [X > 0]),
    "split_sum": ([X + Y < 10], [X < 5, Y < 5]),
    "ne_vs_gt": ([sympy.Ne(X, 2)], [X > 2]),
    "gt_vs_ne": ([X > 2], [sympy.Ne(X, 2)]),
    "min_max": ([Max(X, Y) <= 8], [X <= 8, Y <= 8]),
    "min_loose": ([Min(X, Y) <= 3], [X <= 3]),
    "min_wrong": ([Min(X, Y) <= 3], [X <= 4]),
    "python_mod": ([sympy.Eq(PythonMod(N, 3), 1)], [sympy.Eq(N, 4)]),
    "python_mod_wrong": ([sympy.Eq(PythonMod(N, 3), 1)], [sympy.Eq(N, -4)]),
    "float": ([ToFloat(X) / 2 > 1.5], [X >= 4]),
    "and_or": ([sympy.And(X > 1, sympy.Or(Y < 2, Y > 5))], [X > 1, Y > 6]),
}


def _validate(module, source, target):
    validator = module.TranslationValidator()
    validator.add_var(X, int)
    validator.add_var(Y, int)
    validator.add_var(N, int)
    for guard in source:
        validator.add_source_expr(validator.to_z3_boolean_expr(guard))
    for guard in target:
        validator.add_target_expr(guard)
    try:
        validator.validate()
    except theirs.ValidationException as e:
        return "unsound", str(e)
    return "sound", ""


@pytest.mark.parametrize("case", list(_GUARD_CASES))
def test_verdicts_and_reports_match_torchs(case):
    source, target = _GUARD_CASES[case]
    mine, torchs = _validate(ours, source, target), _validate(theirs, source, target)
    assert mine == torchs
    unsound = ("weaker_target", "gt_vs_ne", "python_mod_wrong", "min_wrong")
    expected = "unsound" if case in unsound else "sound"
    assert mine[0] == expected
    if expected == "unsound":
        assert mine[1].startswith("translation validation failed.\n\nModel:\n")


def test_nothing_to_validate_passes():
    validator = ours.TranslationValidator()
    validator.add_var(X, int)
    validator.add_target_expr(X > 100)
    validator.validate()  # no source guards


def test_assertions_restrict_the_search():
    for module in (ours, theirs):
        validator = module.TranslationValidator()
        validator.add_var(X, int)
        validator.add_source_expr(validator.to_z3_boolean_expr(X > 4))
        validator.add_target_expr(X > 3)
        validator.add_assertion(sympy.Ne(X, 4))
        validator.validate()  # x == 4 is excluded by the assertion


# --- z3 helpers ----------------------------------------------------------------------------------


def _z3_expressions():
    a, b = z3.Int("a"), z3.Int("b")
    r = z3.Real("r")
    yield a + b + a * b
    yield z3.Not(a == b)
    yield z3.Not(a <= b)
    yield z3.Not(a >= b)
    yield z3.ToInt(z3.ToReal(a) / z3.ToReal(b))
    yield a**b
    yield z3.ToReal(a) + r
    yield z3.And(a > 1, z3.Or(b < 2, a == b))
    yield z3.If(a > b, a, b)
    yield z3.IntVal(7)
    yield z3.RealVal(2.5) * r
    yield z3.Bool("p")


def test_z3str_matches_torchs():
    for e in _z3_expressions():
        assert ours.z3str(e) == theirs.z3str(e), e


_Z3OPS = [
    operator.not_,
    operator.and_,
    operator.or_,
    operator.lshift,
    operator.rshift,
    operator.floordiv,
    operator.truediv,
    operator.mod,
    operator.abs,
    round,
    math.ceil,
    math.floor,
    math.trunc,
    torch.sym_float,
    torch.sym_max,
    torch.sym_min,
    torch.sym_sum,
    torch.sym_ite,
    torch._sym_sqrt,
    operator.add,
    operator.mul,
    operator.lt,
    operator.eq,
]


def _z3op_operands(op):
    a, b = z3.Int("a"), z3.Int("b")
    if op is torch.sym_sum:
        return ([a, b, 3],)
    if op is torch.sym_ite:
        return (a > b, a, 2)
    if op is operator.not_:
        return (1,)
    if op in (operator.abs, round, math.ceil, math.floor, math.trunc, torch.sym_float):
        return (z3.ToReal(a) / 2,)
    if op is torch._sym_sqrt:
        return (a,)
    return (a, b) if op not in (operator.and_, operator.or_) else (a > 1, True)


@pytest.mark.parametrize("op", _Z3OPS, ids=lambda op: getattr(op, "__name__", str(op)))
def test_z3op_matches_torchs(op):
    results = []
    for module in (ours, theirs):
        validator = module.TranslationValidator()
        value = module.z3op(op, validator)(*_z3op_operands(op))
        results.append((str(z3.simplify(value)), sorted(str(e) for e in validator._assertions)))
    assert results[0] == results[1]


def test_z3op_keeps_torch_assert_and_rejects_unliftable_values():
    validator = ours.TranslationValidator()
    assert ours.z3op(torch._assert, validator) is torch._assert
    for module in (ours, theirs):
        with pytest.raises(ValueError, match="can't lift type"):
            module.z3op(operator.add, module.TranslationValidator())("a", 1)


def test_sympy_to_z3_handlers():
    for module in (ours, theirs):
        validator = module.TranslationValidator()
        validator.add_var(X, int)
        converter = module.SympyToZ3(validator)
        assert not hasattr(converter, "sym_sum") and not hasattr(converter, "sqrt")
        assert converter.add is operator.add
        assert str(converter.run(FloorDiv(X, 3) + 1)) == str(
            theirs.SympyToZ3(validator).run(FloorDiv(X, 3) + 1)
        )
    with pytest.raises(AttributeError, match="unhandled operator: sqrt"):
        ours.SympyToZ3(ours.TranslationValidator()).sqrt


# --- guard graphs from a ShapeEnv ----------------------------------------------------------------


def _env_with_guards():
    env = ShapeEnv(should_record_events=True)
    env.tracked_fakes = []  # as dynamo does: guard events then snapshot the tracked inputs
    mode = FakeTensorMode(shape_env=env)
    context = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC] * 2)
    x = mode.from_tensor(torch.randn(5, 7), symbolic_context=context, source=LocalSource("x"))
    env.tracked_fakes.append(TrackedFake(x, LocalSource("x"), context))
    s0, s1 = x.shape
    assert bool(s0 < s1) and bool(s0 * 2 > 8) and int(s0 + s1) == 12
    return env, x


def _source_exprs(module, graph, symbols):
    validator = module.TranslationValidator()
    for symbol in symbols:
        validator.add_var(symbol, int)
    with torch_fx_traceback.preserve_node_meta():  # torch's reads the node meta through it
        module.PopulateValidator(graph, validator).run()
    return sorted(str(e) for e in validator._source_exprs)


def test_populate_validator_on_a_shape_env_graph():
    with tv_config.patch(translation_validation=True):
        env, _ = _env_with_guards()
    symbols = list(env.validator.symbols)
    torchs = _source_exprs(theirs, env.graph, symbols)
    assert len(torchs) == 3
    assert _source_exprs(ours, env.graph, symbols) == torchs
    # The same graph as an fxkit Graph.
    graph = interop.graph_from_torch_fx(env.graph)
    assert _source_exprs(ours, graph, symbols) == torchs


def test_produce_guards_and_bisect_on_a_sound_shape_env():
    with tv_config.patch(translation_validation=True):
        env, x = _env_with_guards()
        guards = env.produce_guards([x], [LocalSource("x")])
        assert guards
        assert ours.bisect(env) is None and theirs.bisect(env) is None


def _unsound_env():
    env, x = _env_with_guards()
    # Drop the guard that pins s0 below s1: the issued guards get weaker than the graph's.
    env.guards = [g for g in env.guards if "<" not in str(g.expr)]
    return env, x


def test_an_unsound_shape_env_is_reported():
    with tv_config.patch(translation_validation=True, translation_validation_no_bisect=True):
        env, x = _unsound_env()
        with pytest.raises(theirs.ValidationException):
            env.produce_guards([x], [LocalSource("x")])
        messages = []
        for module in (ours, theirs):
            with pytest.raises(theirs.ValidationException) as error:
                module.bisect(env)
            messages.append(str(error.value))
        assert messages[0] == messages[1]


def test_bisect_without_the_failure_in_the_events_fails_like_torch():
    # The failure comes from an edit the events do not record: bisection finds no failing
    # prefix, and both implementations give up with the same AssertionError.
    with tv_config.patch(translation_validation=True):
        env, _ = _unsound_env()
        messages = []
        for module in (ours, theirs):
            with pytest.raises(AssertionError) as error:
                module.bisect(env)
            messages.append(str(error.value))
        assert messages[0] == messages[1] == "Expected ValidationException at bisect result"


def test_bisect_finds_the_first_unsound_guard(monkeypatch):
    # A simplification bug that survives replay: "a < b" between two sizes is taken as
    # statically true, so no guard is issued for it while the graph still asserts it.
    real = ShapeEnv._maybe_evaluate_static

    @functools.lru_cache(None)  # ShapeEnv clears this cache
    def buggy(self, expr, *args, **kwargs):
        if isinstance(expr, sympy.Lt) and len(expr.free_symbols) == 2:
            return sympy.true
        return real(self, expr, *args, **kwargs)

    monkeypatch.setattr(ShapeEnv, "_maybe_evaluate_static", buggy)
    with tv_config.patch(translation_validation=True):
        env, _ = _env_with_guards()
        for node in env.graph.nodes:  # dynamo records the node being traced; fake it
            node.meta[CURRENT_NODE_KEY] = node
        errors = []
        for module in (ours, theirs):
            with pytest.raises(theirs.BisectValidationException) as error:
                module.bisect(env)
            errors.append(error.value)
    assert type(errors[0]) is ours.BisectValidationException
    assert str(errors[0]) == str(errors[1])
    assert errors[0].msg.startswith("translation validation failed when evaluating: ")
    assert "<" in errors[0].msg


def test_exception_texts():
    a = z3.Int("a")
    solver = z3.Solver()
    solver.add(a > 2)
    assert solver.check() == z3.sat
    model = solver.model()
    args = (model, {a > 0}, {a > 2}, [a > 5])
    mine, torchs = ours.ValidationException(*args), theirs.ValidationException(*args)
    assert str(mine) == str(torchs) and mine.details == torchs.details
    with tv_config.patch(translation_validation=True):
        env, _ = _env_with_guards()
    node = next(iter(env.graph.nodes))
    bisect_args = (mine, X > 2, "evaluating", node)
    assert str(ours.BisectValidationException(*bisect_args)) == str(
        theirs.BisectValidationException(*bisect_args)
    )


# --- bad input -----------------------------------------------------------------------------------


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return type(e), str(e)
    return None


def test_bad_input_raises_like_torch():
    def cases(module):
        validator = module.TranslationValidator()
        converter = module.SympyToZ3(validator)
        yield validator.z3var, X
        yield validator.add_var, X, str
        yield validator.add_target_expr, X > 1  # X has no variable yet
        yield validator.add_assertion, 3
        yield converter.constant, 1, torch.int32
        yield converter.to_dtype, z3.Int("a"), torch.int32
        yield module.z3str, 3
        yield module.z3op(operator.truediv, validator), "x", 2

    for mine, torchs in zip(cases(ours), cases(theirs)):
        result = _raised(mine[0], *mine[1:])
        assert result is not None and result == _raised(torchs[0], *torchs[1:]), result


# --- without z3 ----------------------------------------------------------------------------------


def test_without_z3_the_module_imports_and_names_the_extra():
    code = """
import importlib
import fxkit.experimental.validator as v
import torch.fx.experimental.validator as t
from torch.fx.experimental import _config
assert sorted(v.__all__) == sorted(t.__all__), (v.__all__, t.__all__)
assert v.translation_validation_enabled() is False
assert isinstance(v.translation_validation_timeout(), int)
for name in ("TranslationValidator", "SympyToZ3", "PopulateValidator", "z3op", "z3str"):
    try:
        getattr(v, name)
    except ImportError as e:
        assert "fxkit[z3]" in str(e), e
    else:
        raise SystemExit(name + " exists without z3")
try:
    from fxkit.experimental.validator import TranslationValidator
except ImportError as e:
    assert "fxkit[z3]" in str(e)
else:
    raise SystemExit("import worked")
# Asking for validation without z3: torch's AssertionError, on use and on (re)import.
_config.translation_validation = True
for attempt in (v.translation_validation_enabled, lambda: importlib.reload(v)):
    try:
        attempt()
    except AssertionError as e:
        assert "translation validation requires Z3 package" in str(e), e
    else:
        raise SystemExit("no AssertionError")
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['z3'] = None\n" + code],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
