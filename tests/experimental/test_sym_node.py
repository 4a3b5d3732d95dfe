"""fxkit.experimental.sym_node against torch.fx's: the same method tables, the same SymPy
expressions from the builders, the same layout predicates on concrete and symbolic sizes, and
the same results and guards for the sym_* functions on ints, floats and SymInts."""

from __future__ import annotations

import math
import operator

import pytest
import sympy
import torch
import torch.fx.experimental.sym_node as theirs
from torch._dynamo.source import ConstantSource
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

import fxkit.experimental.sym_node as ours

_TABLES = [
    "magic_methods",
    "METHOD_TO_OPERATOR",
    "reflectable_magic_methods",
    "sizes_strides_methods",
    "bitwise_ops",
]
_SETS = [
    "unary_magic_methods",
    "unary_nonmagic_methods",
    "unary_methods",
    "only_bool_magic_methods",
    "bool_becomes_int_magic_methods",
    "also_bool_magic_methods",
    "bool_magic_methods",
    "only_float_magic_methods",
    "magic_methods_on_operator_with_trailing_underscore",
    "always_float_magic_methods",
    "always_int_magic_methods",
    "always_bool_magic_methods",
]


@pytest.mark.parametrize("name", _TABLES)
def test_tables_have_the_same_keys(name):
    mine, torchs = list(getattr(ours, name)), list(getattr(theirs, name))
    if name == "METHOD_TO_OPERATOR":  # a lookup table: only the keys matter
        mine, torchs = sorted(mine), sorted(torchs)
    assert mine == torchs


@pytest.mark.parametrize("name", _SETS)
def test_method_sets_are_equal(name):
    assert getattr(ours, name) == getattr(theirs, name)


def test_method_to_operator_gives_the_same_functions():
    for method in theirs.METHOD_TO_OPERATOR:
        mine, torchs = ours.method_to_operator(method), theirs.method_to_operator(method)
        if method == "is_integer":  # a lambda on both sides
            assert [mine(v) for v in (2.0, 2.5)] == [torchs(v) for v in (2.0, 2.5)] == [True, False]
        else:
            # make_fx records these as graph targets: they must be the very same objects.
            assert mine is torchs, method


def test_public_names_and_identity_of_torch_classes():
    assert set(theirs.__all__) <= set(ours.__all__)
    assert ours.SymNode is theirs.SymNode
    assert ours.DynamicInt is theirs.DynamicInt
    for name in ("sqrt", "cos", "cosh", "sin", "sinh", "tan", "tanh", "asin", "acos", "atan"):
        assert getattr(ours, f"sym_{name}")(0.5) == getattr(torch, f"_sym_{name}")(0.5)
        assert getattr(ours, f"sym_{name}").__doc__
    assert ours.sym_sqrt(16) == 4.0 and ours.sym_log2(8) == 3.0
    assert ours.sym_float is torch.sym_float and ours.sym_int is torch.sym_int


def test_star_import_works():
    # torch.fx lists sym_sqrt & co. in __all__ without defining them; fxkit defines them.
    namespace: dict = {}
    exec("from fxkit.experimental.sym_node import *", namespace)
    assert namespace["sym_sqrt"](9) == 3.0 and "magic_methods" in namespace


# --- the SymPy builders ---------------------------------------------------------------------------

_X, _Y, _Z = sympy.symbols("x y z", integer=True, positive=True)
_N = sympy.Symbol("n", integer=True)  # may be negative
_F = sympy.Symbol("f", real=True)


def _operands(method):
    if method == "sym_ite":
        return [(_X > 2, _Y, _Z)]
    if method in theirs.only_bool_magic_methods or method in ("and", "or"):
        return [(_X > 2, _Y < 4)] if method != "sym_not" else [(_X > 2,)]
    if method in theirs.unary_methods or method == "round":
        return [(_X,), (_F,), (_N,)] if method != "is_integer" else [(_F,)]
    return [(_X, _Y), (_N, _Y), (_X, sympy.Integer(3))]


@pytest.mark.parametrize("method", list(theirs.magic_methods))
def test_sympy_builders_build_the_same_expressions(method):
    for args in _operands(method):
        assert ours.magic_methods[method](*args) == theirs.magic_methods[method](*args), args


def test_round_with_digits_and_mod_sign_handling():
    assert ours.magic_methods["round"](_F, 2) == theirs.magic_methods["round"](_F, 2)
    # Mod for non-negative operands, PythonMod otherwise.
    assert type(ours.magic_methods["mod"](_X, _Y)) is type(theirs.magic_methods["mod"](_X, _Y))
    assert type(ours.magic_methods["mod"](_N, _Y)) is type(theirs.magic_methods["mod"](_N, _Y))


_SIZES = sympy.symbols("s0:5", integer=True, positive=True)
_STRIDES = sympy.symbols("t0:5", integer=True, nonnegative=True)


@pytest.mark.parametrize("method", list(theirs.sizes_strides_methods))
@pytest.mark.parametrize("rank", [4, 5])
def test_sizes_strides_builders_build_the_same_expressions(method, rank):
    sizes, strides = list(_SIZES[:rank]), list(_STRIDES[:rank])
    mine = ours.sizes_strides_methods[method](sizes, strides)
    assert mine == theirs.sizes_strides_methods[method](sizes, strides)


# --- layout predicates on concrete sizes ----------------------------------------------------------


def _layouts():
    yield torch.empty(2, 3, 4, 5)
    yield torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last)
    yield torch.empty(2, 3, 4, 5).transpose(1, 3)
    yield torch.empty(2, 1, 4, 1)
    yield torch.empty(2, 1, 1, 1).to(memory_format=torch.channels_last)
    yield torch.empty(0, 3, 4, 5)
    yield torch.empty(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d)
    yield torch.empty(2, 3, 4, 5, 6)[:, :, ::2]
    yield torch.empty(2, 3, 4, 5).expand(2, 3, 4, 5)[:, :1].expand(2, 3, 4, 5)


_PREDICATES = [
    "is_contiguous",
    "is_channels_last_contiguous_2d",
    "is_channels_last_contiguous_3d",
    "is_channels_last_strides_2d",
    "is_channels_last_strides_3d",
    "is_non_overlapping_and_dense_indicator",
]


@pytest.mark.parametrize("predicate", _PREDICATES)
def test_layout_predicates_on_concrete_sizes(predicate):
    for t in _layouts():
        size, stride = list(t.shape), list(t.stride())
        if predicate.endswith("_2d") and t.dim() != 4 or predicate.endswith("_3d") and t.dim() != 5:
            continue  # torch indexes strides[1] unguarded; only meaningful ranks are compared
        mine = getattr(ours, predicate)(size, stride)
        assert mine == getattr(theirs, predicate)(size, stride), (predicate, size, stride)
        assert type(mine) is type(getattr(theirs, predicate)(size, stride))


# --- on SymInts from a ShapeEnv ------------------------------------------------------------------


def _symints(*hints):
    env = ShapeEnv()
    values = []
    for i, hint in enumerate(hints):
        symbol = env.create_symbol(hint, ConstantSource(f"s{i}"), dynamic_dim=DimDynamic.DYNAMIC)
        values.append(env.create_symintnode(symbol, hint=hint))
    return env, values


def _guards(env):
    return [str(g.expr) for g in env.guards]


def _run_both(fn_name, build):
    """Run build(module, symints) on fresh ShapeEnvs for fxkit and torch; return the
    (result string, guards) pairs."""
    results = []
    for module in (ours, theirs):
        env, values = _symints(5, 7, 3)
        result = build(getattr(module, fn_name), values)
        results.append((str(result), _guards(env)))
    return results


@pytest.mark.parametrize(
    "method",
    ["sym_max", "sym_min", "sym_float", "sym_not", "add", "int_floordiv", "mod", "pow_by_natural"],
)
def test_operators_on_symints_give_same_expressions_and_guards(method):
    def build(method_to_operator, values):
        op = method_to_operator(method)
        a, b, _ = values
        if method == "sym_not":
            return op(a > b)
        if method == "sym_float":
            return op(a * b)
        return op(a, b) if method != "mod" else op(a + 10, b)

    mine, torchs = _run_both("method_to_operator", build)
    assert mine == torchs


@pytest.mark.parametrize("fn", ["sym_sqrt", "sym_cos", "sym_log2", "sym_float", "sym_int"])
def test_sym_functions_on_ints_floats_and_symints(fn):
    mine, torchs = getattr(ours, fn), getattr(torch, "sym_" + fn[4:], None)
    torchs = torchs or getattr(torch, "_" + fn)
    for value in (4, 2.5):
        assert mine(value) == torchs(value)
    env, (s0, s1, _) = _symints(5, 7, 3)
    result = mine(s0 * s1)
    assert str(result) == str(torchs(s0 * s1))
    if fn == "sym_int":
        assert int(result) == 35
    else:
        assert math.isclose(float(result), float(torchs(35)))


def test_sym_sum_and_ite():
    env, (s0, s1, s2) = _symints(5, 7, 3)
    assert str(ours.sym_sum([s0, s1, s2, 4])) == str(torch.sym_sum([s0, s1, s2, 4]))
    assert ours.sym_sum([1, 2, 3]) == 6
    chosen = ours.sym_ite(s0 < s1, s1, s2)
    assert int(chosen) == 7
    assert ours.sym_ite(True, 1, 2) == 1


@pytest.mark.parametrize("predicate", _PREDICATES[:2] + _PREDICATES[3:4])
def test_layout_predicates_on_symints(predicate):
    def build(fn, values):
        s0, s1, s2 = values
        sizes = [2, s0, s1, s2]
        strides = [s0 * s1 * s2, 1, s0 * s2, s0]  # channels-last
        return bool(fn(sizes, strides))

    mine, torchs = _run_both(predicate, build)
    assert mine == torchs


def test_non_overlapping_indicator_on_symints():
    def build(fn, values):
        s0, s1, _ = values
        return int(fn([s0, s1], [s1, 1]))

    mine, torchs = _run_both("is_non_overlapping_and_dense_indicator", build)
    assert mine == torchs and mine[0] == "1"


def test_to_node_and_wrap_node():
    env, (s0, s1, _) = _symints(5, 7, 3)
    node = s0.node
    assert ours.to_node(node, s1) is s1.node
    for value in (True, 3, 2.5):
        mine, torchs = ours.to_node(node, value), theirs.to_node(node, value)
        assert type(mine) is type(torchs)
        assert ours.wrap_node(mine) == theirs.wrap_node(torchs) == value
    assert ours.wrap_node(node) is not None and str(ours.wrap_node(node)) == str(s0)
    assert isinstance(ours.wrap_node((s0 > s1).node), torch.SymBool)
    assert isinstance(ours.wrap_node(torch.sym_float(s0).node), torch.SymFloat)


# --- bad input ------------------------------------------------------------------------------------


def _exception_type(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return type(e)
    return None


def test_bad_input_raises_torchs_exception_types():
    env, (s0, _, _) = _symints(5, 7, 3)
    cases = [
        ("method_to_operator", ("no_such_method",)),
        ("wrap_node", (object(),)),
        ("DynamicInt", ("4",)),
        ("sym_max", ("a", 1)),
        ("is_contiguous", ([2, 3], [1])),
    ]
    for name, args in cases:
        mine = _exception_type(getattr(ours, name), *args)
        assert mine is not None and mine is _exception_type(getattr(theirs, name), *args), name
    assert ours.to_node(s0.node, "3") is NotImplemented is theirs.to_node(s0.node, "3")
    assert ours.to_node(s0.node, ours.DynamicInt(3)) is NotImplemented


def test_dynamic_int_behaves_as_torchs():
    value = ours.DynamicInt(6)
    assert repr(value) == "DynamicInt(6)" and isinstance(value, int)
    assert isinstance(value // 4, ours.DynamicInt) and value // 4 == 1
    assert operator.add(value, 1) == 7
