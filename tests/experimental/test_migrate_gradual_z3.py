"""fxkit.experimental.migrate_gradual_types with the z3 solver, against torch.fx's: the same
formulas, the same verdicts (sat/unsat) and the same solved output types on the classic
programs (broadcasting, reshape, conv2d, linear, transpose, getitem, size/view), and the same
verdicts for traced conditionals (``evaluate_conditional_with_constraints``)."""

from __future__ import annotations

import pytest

z3 = pytest.importorskip("z3", reason="the solver paths need the z3 extra (z3-solver)")

import torch  # noqa: E402
import torch.fx.experimental.migrate_gradual_types.transform_to_z3 as t_z3  # noqa: E402
import torch.fx.experimental.migrate_gradual_types.z3_types as t_types  # noqa: E402
from torch import nn  # noqa: E402

import fxkit.experimental.migrate_gradual_types.transform_to_z3 as f_z3  # noqa: E402
import fxkit.experimental.migrate_gradual_types.z3_types as f_types  # noqa: E402

from .test_migrate_gradual_types import (  # noqa: E402
    CASES as GENERATION_CASES,
)
from .test_migrate_gradual_types import (  # noqa: E402
    OURS,
    THEIRS,
    Add,
    Bmm,
    Embeddings,
    GetItems,
    LayerNorms,
    Reshape,
    SmallCNN,
    TransposeFlatten,
    ViewBySize,
    traced,
)

Z3 = {"torch.fx": (t_z3, t_types), "fxkit": (f_z3, f_types)}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(x)


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1))

    def forward(self, x):
        return self.conv(x)


CASES = {
    "add-broadcast": (Add, [(1, 2), (3, 1)]),
    "add-padding": (Add, [(3,), (2, 3)]),
    "add-dyn-dim": (Add, [(2, "?"), (2, 5)]),
    "add-mismatch": (Add, [(2, 3), (4, 3)]),
    "reshape": (Reshape, [(2, 3, 4)]),
    "reshape-indivisible": (Reshape, [(5, 3)]),
    "conv": (Conv, [(2, 3, 17, 20)]),
    "conv-dyn-batch": (Conv, [("?", 3, 17, 20)]),
    "conv-wrong-channels": (Conv, [(2, 4, 17, 20)]),
    "cnn": (SmallCNN, [("?", 3, 16, 16)]),
    "cnn-dyn": (SmallCNN, ["?"]),
    "linear": (Linear, [(7, 2, 4)]),
    "linear-mismatch": (Linear, [(2, 3)]),
    "transpose-flatten": (TransposeFlatten, [(2, 3, 4)]),
    "getitem": (GetItems, [(2, "?", 4)]),
    "view-size": (ViewBySize, [("?", 2, 4)]),
    "layer-norm": (LayerNorms, [(3, 4)]),
    "layer-norm-mismatch": (LayerNorms, [(3, 5)]),
    "bmm": (Bmm, [(2, 3, 4), (2, 4, 5)]),
    "embedding": (Embeddings, [(2, 7)]),
}


def solve(lib, build, types):
    """Verdict, solved type of the output value, and the formula of the traced program."""
    z3_module, types_module = Z3[lib.name]
    gm = traced(lib, build, types)
    generator = lib.gen.ConstraintGenerator(gm)
    constraints, counter = generator.generate_constraints(0)
    final, counter = z3_module.iterate_till_fixed_point(constraints, counter)
    formula, _ = z3_module.transform_to_z3(final, counter, {})
    solver = z3.Solver()
    solver.add(formula)
    verdict = solver.check()
    result = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    solved = None
    if verdict == z3.sat:
        var = z3.Const(generator.symbol_dict[result].tvar, types_module.tensor_type)
        solved = str(solver.model().eval(var))
    whole = z3_module.transform_all_constraints(gm)
    return verdict, solved, formula.sexpr(), whole.sexpr()


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_verdict_and_solution_as_torch_fx(case):
    build, types = CASES[case]
    theirs = solve(THEIRS, build, types)
    ours = solve(OURS, build, types)
    assert ours[:2] == theirs[:2]
    assert ours[2] == theirs[2]  # the very same formula
    assert ours[3] == theirs[3] == ours[2]


def _verdict(lib, build, types):
    z3_module, _ = Z3[lib.name]
    formula = z3_module.transform_all_constraints(traced(lib, build, types))
    solver = z3.Solver()
    solver.add(formula)
    return solver.check(), formula.sexpr()


@pytest.mark.parametrize("case", sorted(GENERATION_CASES))
def test_generation_cases_same_formula_and_verdict(case):
    build, types = GENERATION_CASES[case]
    assert _verdict(OURS, build, types) == _verdict(THEIRS, build, types)


def test_classic_verdicts():
    # Pin down a few results independently of torch.fx.
    assert solve(OURS, Add, [(1, 2), (3, 1)])[:2] == (
        z3.sat,
        "tensor2(dim(1, 3), dim(1, 2))",
    )
    assert solve(OURS, Add, [(2, 3), (4, 3)])[0] == z3.unsat
    assert solve(OURS, Reshape, [(5, 3)])[0] == z3.unsat
    assert solve(OURS, Conv, [(2, 4, 17, 20)])[0] == z3.unsat
    verdict, solved, *_ = solve(OURS, Conv, [(2, 3, 17, 20)])
    # (17 + 2 - 2*2 - 1) // 2 + 1 = 8 and (20 + 4 - 4 - 1) // 2 + 1 = 10
    assert (verdict, solved) == (z3.sat, "tensor4(dim(1, 2), dim(1, 6), dim(1, 8), dim(1, 10))")


# --------------------------------------------------------------------------- conditionals


class SizeAbove(nn.Module):
    def forward(self, x):
        return x.size(0) > 3


class SizesBelow(nn.Module):
    def forward(self, x):
        return x.size(0) < x.size(1)


class SizeEquals(nn.Module):
    def forward(self, x):
        return x.size(1) == 4


class SizeArithmetic(nn.Module):
    def forward(self, x):
        return (x.size(0) * 2) > 7


class SizesDiffer(nn.Module):
    def forward(self, x):
        return x.size() != (x.size(0), 3, 4)


class TensorCompare(nn.Module):
    def forward(self, x):
        return x.size(0) > x.dim()


CONDITIONALS = {
    "gt-dyn": (SizeAbove, [("?", 2)]),
    "gt-known-true": (SizeAbove, [(5, 2)]),
    "gt-known-false": (SizeAbove, [(2, 2)]),
    "gt-unannotated": (SizeAbove, [None]),
    "lt-dims": (SizesBelow, [(2, 3)]),
    "lt-dyn": (SizesBelow, [("?", 3)]),
    "eq-true": (SizeEquals, [(1, 4)]),
    "eq-false": (SizeEquals, [(1, 5)]),
    "arith": (SizeArithmetic, [(4, 1)]),
    "arith-dyn": (SizeArithmetic, [("?", 1)]),
    "ne-same": (SizesDiffer, [(2, 3, 4)]),
    "ne-other": (SizesDiffer, [(2, 3, 5)]),
    "ne-rank": (SizesDiffer, [(2, 3)]),
    "dim-compare": (TensorCompare, [(3, 1, 1)]),
}


def conditional(lib, build, types, user=None):
    z3_module, _ = Z3[lib.name]
    gm = traced(lib, build, types)
    condition = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    verdicts = z3_module.evaluate_conditional_with_constraints(
        gm, gm.graph, condition, user_constraints=user
    )
    positive, negative = z3_module.transform_all_constraints_trace_time(gm, gm.graph, condition)
    return verdicts, positive.sexpr(), negative.sexpr()


@pytest.mark.parametrize("case", sorted(CONDITIONALS))
def test_conditionals_match_torch_fx(case):
    build, types = CONDITIONALS[case]
    assert conditional(OURS, build, types) == conditional(THEIRS, build, types)


def test_conditional_verdicts():
    assert conditional(OURS, SizeAbove, [(5, 2)])[0] == (z3.sat, z3.unsat)
    assert conditional(OURS, SizeAbove, [(2, 2)])[0] == (z3.unsat, z3.sat)
    assert conditional(OURS, SizeAbove, [("?", 2)])[0] == (z3.sat, z3.sat)
    never = z3.BoolVal(False)
    assert conditional(OURS, SizeAbove, [("?", 2)], never)[0] == (z3.unsat, z3.unsat)
    assert conditional(THEIRS, SizeAbove, [("?", 2)], never)[0] == (z3.unsat, z3.unsat)


def test_graph_given_separately_from_root():
    # Trace-time use: a root module plus the graph built so far (no output node yet).
    results = []
    for lib in (THEIRS, OURS):
        g = lib.fx.Graph()
        x = g.placeholder("x", type_expr=lib.TT((lib.Dyn, 4)))
        size = g.call_method("size", (x, 1))
        g.call_function(__import__("operator").eq, (size, 4))
        z3_module, _ = Z3[lib.name]
        results.append(z3_module.evaluate_conditional_with_constraints(torch.nn.Module(), g, None))
    assert results[0] == results[1] == (z3.sat, z3.unsat)


# --------------------------------------------------------------------------- encoder pieces


def _pieces(lib):
    C, TT, Dyn = lib.C, lib.TT, lib.Dyn
    d1, d2 = C.DVar(1), C.DVar(2)
    return [
        C.BinConstraintD(d1, Dyn, "!="),
        C.BinConstraintD(Dyn, d1, "!="),
        C.BinConstraintD(3, d1, "!="),
        C.BinConstraintD(d1, 3, "!="),
        C.BinConstraintD(d1, d2, "!="),
        C.BinConstraintD(d1, C.BinConstraintD(C.Prod([d2, 3]), 2, "%"), "="),
        C.BinConstraintD(0, d1, "\u2264"),
        C.BinConstraintD(d1, d2, ">"),
        C.BinConstraintD(d1, 4, "<"),
        C.BinConstraintD(C.BVar(3), C.BinConstraintD(d1, d2, ">"), "="),
        C.BinConstraintT(C.TVar(1), TT([Dyn, d1, 2]), "="),
        C.BinConstraintT(C.TVar(1), Dyn, "="),
        C.Conj([C.T(), C.Disj([C.F(), C.BinConstraintD(d1, d2, "=")])]),
    ]


@pytest.mark.parametrize("index", range(len(_pieces(OURS))))
def test_encoding_of_each_form_matches(index):
    theirs, n_theirs = t_z3.transform_to_z3(_pieces(THEIRS)[index], 10, {})
    ours, n_ours = f_z3.transform_to_z3(_pieces(OURS)[index], 10, {})
    assert n_ours == n_theirs
    assert (
        z3.simplify(z3.BoolVal(True) == ours).sexpr()
        == z3.simplify(z3.BoolVal(True) == theirs).sexpr()
    )


def test_unsupported_forms_raise_like_torch_fx():
    def errors(lib):
        z3_module, _ = Z3[lib.name]
        C = lib.C
        out = []
        for c in (
            C.CanReshape(C.TVar(1), lib.TT([2])),
            C.BinConstraintT(C.TVar(1), C.TVar(2), "~"),
            C.BinConstraintD(C.DVar(1), C.DVar(2), "~"),
            C.BinConstraintD(C.BinConstraintD(1, 2, "+"), 3, "!="),
        ):
            with pytest.raises(Exception) as info:
                z3_module.transform_to_z3(c, 0, {})
            out.append(info.type)
        with pytest.raises(Exception) as info:
            z3_module.transform_var(lib.TT([1, 2, 3, 4, 5]), 0, {})
        out.append(info.type)
        with pytest.raises(Exception) as info:
            z3_module.transform_dimension("x", 0, {})
        out.append(info.type)
        return out

    assert errors(OURS) == errors(THEIRS)


def test_dimension_numbering_shared_through_dict():
    for lib in (THEIRS, OURS):
        z3_module, _ = Z3[lib.name]
        seen: dict[int, int] = {}
        first, n = z3_module.transform_dimension(lib.C.DVar(7), 3, seen)
        again, m = z3_module.transform_dimension(lib.C.DVar(7), n, seen)
        assert (n, m, seen) == (4, 4, {7: 4})
        assert first.sexpr() == again.sexpr() == "(dim k!4 k!7)"


def test_formula_of_torch_fx_graph_module_is_the_same():
    gm = traced(THEIRS, SmallCNN, [("?", 3, 16, 16)])
    ours = f_z3.transform_all_constraints(gm).sexpr()
    assert ours == t_z3.transform_all_constraints(gm).sexpr()
