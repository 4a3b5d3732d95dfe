"""fxkit.experimental.graph_gradual_typechecker against torch.fx's: the same node types after
``type_check()``, ``refine()`` and ``symbolic_relations()``, the same constraints, and the same
exceptions (type and message) on ill-typed graphs. Each model is built twice, annotated with
each library's TensorType/Dyn, traced by that library's tracer and checked by its checker; the
graphs are compared node by node."""

import operator

import pytest
import sympy
import torch
import torch.fx as tfx
import torch.fx.experimental.graph_gradual_typechecker as theirs
import torch.fx.tensor_type as their_types
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxkit
import fxkit.experimental.graph_gradual_typechecker as ours
import fxkit.tensor_type as our_types
from zoo import CASES, make_root, trace

LIBS = {
    "fxkit": (fxkit, ours, our_types),
    "torch.fx": (tfx, theirs, their_types),
}


# ---------------------------------------------------------------------------------------------
# Helpers


def norm(t):
    """A library-independent form of a type, dimension or constraint."""
    kind = type(t).__name__
    if kind == "TensorType":
        return ("T", tuple(norm(d) for d in t.dims))
    if kind == "_DynType":
        return "Dyn"
    if kind == "Var":
        return ("Var", t.token)
    if kind == "Equality":
        return ("Eq", norm(t.lhs), norm(t.rhs))
    if isinstance(t, sympy.Basic):
        return ("sym", str(t))
    if isinstance(t, (tuple, list)):
        return tuple(norm(x) for x in t)
    if isinstance(t, type):
        return ("type", t.__name__)
    return t


def node_types(gm):
    return [(n.name, n.op, norm(n.type)) for n in gm.graph.nodes]


def broadcast_meta(n):
    """What add's rule records in ``meta``: the flag and the operands' broadcast types."""
    keys = ["broadcast"] + [str(a) for a in n.args if isinstance(a, (fxkit.Node, tfx.Node))]
    return [(k, norm(n.meta[k])) for k in keys if k in n.meta]


def outcome(fn):
    """What ``fn()`` did: its normalised result, or the exception type and message."""
    try:
        return ("ok", norm(fn()))
    except Exception as e:  # noqa: BLE001 -- the exception is the result being compared
        return ("raised", type(e), str(e))


def assert_same_outcome(ours_out, theirs_out):
    assert ours_out[0] == theirs_out[0], (ours_out, theirs_out)
    if ours_out[0] == "raised":
        assert issubclass(ours_out[1], theirs_out[1]), (ours_out, theirs_out)
        # fxkit may append detail after torch.fx's text.
        assert ours_out[2].startswith(theirs_out[2]), (ours_out[2], theirs_out[2])
    else:
        assert ours_out == theirs_out


def check_both(build, *, refine=False, symbolic=False, input_types=None):
    """Build the model for each library (``build(TensorType, Dyn)``), trace, type check (and
    refine), and assert that both libraries end in the same state. Returns fxkit's module."""
    results = {}
    for name, (lib, checker, types) in LIBS.items():
        root = build(types.TensorType, types.Dyn)
        gm = lib.symbolic_trace(root) if isinstance(root, nn.Module) else root(lib)
        if input_types is not None:
            placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
            for n, t in zip(placeholders, input_types(types.TensorType, types.Dyn)):
                n.type = t
        steps = [outcome(lambda: checker.GraphTypeChecker({}, gm).type_check())]
        if refine and steps[-1][0] == "ok":
            r = checker.Refine(gm)
            steps.append(outcome(r.refine))
            steps.append(("constraints", norm(r.constraints)))
            if symbolic:
                steps.append(outcome(r.symbolic_relations))
        meta = [(n.name, broadcast_meta(n)) for n in gm.graph.nodes]
        results[name] = (steps, node_types(gm), meta, gm)
    (s1, t1, m1, gm), (s2, t2, m2, _) = results["fxkit"], results["torch.fx"]
    assert len(s1) == len(s2)
    for a, b in zip(s1, s2):
        assert_same_outcome(a, b)
    assert t1 == t2
    assert m1 == m2
    return gm, s1


# ---------------------------------------------------------------------------------------------
# Models, built per library from its TensorType and Dyn


def add_model(TT, Dyn, tx, ty):
    class Add(nn.Module):
        def forward(self, x: TT(tx), y: TT(ty)):
            return torch.add(x, y)

    return Add()


@pytest.mark.parametrize(
    "tx,ty",
    [
        ((1, 2, 3, "D"), (1, 2, 3)),  # broadcast with a Dyn dimension
        ((1, 2), (2, 2)),  # 1 broadcast against 2
        ((2, 3), (2, 3)),  # no broadcasting
        ((1, 2, 3), (1, 2, 4)),  # mismatch -> TypeError naming the node
        ((2, "D"), (2, 5)),
        ((4,), (3, 1, 4)),
        ((3, 4), (3, 5, 4)),  # rank padding then mismatch
    ],
    ids=["dyn-dim", "broadcast-1", "same", "mismatch", "dyn-vs-int", "rank-pad", "rank-bad"],
)
def test_add_matches_torch_fx(tx, ty):
    def build(TT, Dyn):
        sub = lambda dims: tuple(Dyn if d == "D" else d for d in dims)  # noqa: E731
        return add_model(TT, Dyn, sub(tx), sub(ty))

    check_both(build, refine=True)


def test_add_error_message_names_node():
    _, steps = check_both(lambda TT, Dyn: add_model(TT, Dyn, (1, 2, 3), (1, 2, 4)))
    assert steps[0][1] is TypeError
    assert "in node add. Types should match" in steps[0][2]


def test_operator_add_of_int_annotated_input():
    def build(TT, Dyn):
        class M(nn.Module):
            def forward(self, x: TT((2, Dyn)), y: int):
                return x + y

        return M()

    gm, _ = check_both(build, refine=True)
    assert [str(n.type) for n in gm.graph.nodes][2] == "TensorType[(2, ~1)]"


def test_add_of_constant_is_an_assertion_as_in_torch_fx():
    def build(TT, Dyn):
        class M(nn.Module):
            def forward(self, x: TT((2, 3))):
                return x + 1

        return M()

    _, steps = check_both(build)
    assert steps[0][1] is AssertionError


@pytest.mark.parametrize(
    "dims,shape",
    [
        ((1, 2, 3, 5), [1, 2, 15]),
        ((1, 2, 3, 5), [-1, 6]),
        ((2, "D", 4), [8, -1]),
        ("D", [3, -1]),
        ((2, 3), [7]),  # not divisible -> TypeError
    ],
    ids=["exact", "minus-one", "dyn-dim", "dyn-input", "bad"],
)
def test_reshape(dims, shape):
    def build(TT, Dyn):
        t = Dyn if dims == "D" else TT(tuple(Dyn if d == "D" else d for d in dims))

        class M(nn.Module):
            def forward(self, x: t):
                return torch.reshape(x, shape)

        return M()

    check_both(build, refine=True)


@pytest.mark.parametrize(
    "dims,d0,d1",
    [((1, 2, 3), 0, 2), ((4, 5), 1, 0), ("D", 0, 1), ((2, 3), 0, 5)],
    ids=["rank3", "rank2", "dyn", "out-of-range"],
)
def test_transpose(dims, d0, d1):
    def build(TT, Dyn):
        t = Dyn if dims == "D" else TT(dims)

        class M(nn.Module):
            def forward(self, x: t):
                return torch.transpose(x, d0, d1)

        return M()

    check_both(build, refine=True)


@pytest.mark.parametrize(
    "dims,args",
    [
        ((2, 3, 4, 5), ()),
        ((2, 3, 4, 5), (2,)),
        ((2, 3, 4, 5), (0, 2)),
        ((2, "D", 4, 5), (1, 2)),
        ((2, 3, 4, 5), (-1,)),
        ((2, 3), (3,)),  # start beyond rank -> TypeError
    ],
    ids=["default", "start2", "0-2", "dyn-in-run", "minus-one", "bad"],
)
def test_flatten(dims, args):
    def build(TT, Dyn):
        t = TT(tuple(Dyn if d == "D" else d for d in dims))

        class M(nn.Module):
            def forward(self, x: t):
                return torch.flatten(x, *args)

        return M()

    check_both(build, refine=True)


# ---------------------------------------------------------------------------------------------
# Modules


def single_module(module_factory, in_type):
    def build(TT, Dyn):
        t = in_type(TT, Dyn)

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.m = module_factory()

            def forward(self, x: t):
                return self.m(x)

        return M()

    return build


MODULE_CASES = {
    "conv": (lambda: nn.Conv2d(2, 2, kernel_size=2), lambda TT, D: TT((1, 2, 4, 4))),
    "conv-dyn-hw": (lambda: nn.Conv2d(3, 8, 3, 2, 1), lambda TT, D: TT((D, 3, D, 10))),
    "conv-dyn": (lambda: nn.Conv2d(3, 8, 3), lambda TT, D: D),
    "conv-dilation": (
        lambda: nn.Conv2d(3, 4, (3, 2), 1, (1, 0), (2, 1)),
        lambda TT, D: TT((1, 3, 9, 9)),
    ),
    "conv-bad-channels": (lambda: nn.Conv2d(3, 8, 3), lambda TT, D: TT((1, 4, 8, 8))),
    "conv-bad-rank": (lambda: nn.Conv2d(3, 8, 3), lambda TT, D: TT((3, 8, 8))),
    "bn": (lambda: nn.BatchNorm2d(2), lambda TT, D: TT((2, 2, 5, D))),
    "bn-dyn": (lambda: nn.BatchNorm2d(2), lambda TT, D: D),
    "bn-bad": (lambda: nn.BatchNorm2d(2), lambda TT, D: TT((2, 3, 5, 4))),
    "relu": (nn.ReLU, lambda TT, D: TT((2, D, 4))),
    "relu-dyn": (nn.ReLU, lambda TT, D: D),
    "maxpool": (lambda: nn.MaxPool2d(2), lambda TT, D: TT((1, 3, 8, 9))),
    "maxpool-rank3": (lambda: nn.MaxPool2d(3, 2, 1), lambda TT, D: TT((3, D, 9))),
    "maxpool-bad": (lambda: nn.MaxPool2d(2), lambda TT, D: TT((8, 9))),
    "avgpool": (lambda: nn.AdaptiveAvgPool2d((6, 7)), lambda TT, D: TT((1, 3, 8, 9))),
    "avgpool-none": (lambda: nn.AdaptiveAvgPool2d((None, 2)), lambda TT, D: TT((3, 8, 9))),
    "avgpool-int": (lambda: nn.AdaptiveAvgPool2d(1), lambda TT, D: TT((D, 3, 8, 9))),
    "avgpool-bad": (lambda: nn.AdaptiveAvgPool2d(1), lambda TT, D: TT((8, 9))),
    "linear": (lambda: nn.Linear(4, 6), lambda TT, D: TT((2, 3, 4))),
    "linear-dyn-last": (lambda: nn.Linear(4, 6), lambda TT, D: TT((2, D))),
    "linear-bad": (lambda: nn.Linear(4, 6), lambda TT, D: TT((2, 5))),
    "linear-rank1": (lambda: nn.Linear(4, 6), lambda TT, D: TT((4,))),
    "no-rule": (nn.Sigmoid, lambda TT, D: TT((2, 3))),
}


@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_module_rules(case):
    factory, in_type = MODULE_CASES[case]
    check_both(single_module(factory, in_type), refine=True, symbolic=True)


def test_conv_output_size_and_refinement():
    build = single_module(*MODULE_CASES["conv-dyn-hw"])
    gm, _ = check_both(build, refine=True, symbolic=True)
    conv = next(n for n in gm.graph.nodes if n.op == "call_module")
    # After refine + symbolic_relations, H_out is an expression of the input's symbol.
    assert conv.type.dims[1] == 8 and conv.type.dims[3] == 5
    assert isinstance(conv.type.dims[2], sympy.Expr)


def test_annotated_node_type_is_merged():
    """A node's existing annotation (set before checking) takes part in the bound."""

    def build(lib):
        root = single_module(lambda: nn.Linear(4, 6), lambda TT, D: D)(
            *(
                (our_types.TensorType, our_types.Dyn)
                if lib is fxkit
                else (their_types.TensorType, their_types.Dyn)
            )
        )
        gm = lib.symbolic_trace(root)
        types = our_types if lib is fxkit else their_types
        node = next(n for n in gm.graph.nodes if n.op == "call_module")
        node.type = types.TensorType((3, types.Dyn))
        return gm

    gm, _ = check_both(lambda TT, Dyn: build, refine=True)
    x = next(iter(gm.graph.nodes))
    assert norm(x.type) == ("T", (("Var", 0), ("Var", 1)))


class ResBlock(nn.Module):
    """A ResNet basic block made only of operations the checker knows (out-of-place add)."""

    def __init__(self, TT, Dyn, c=4):
        super().__init__()
        self.in_type = TT((Dyn, c, 8, 8))
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.relu(out + x)
        return self.fc(torch.flatten(self.pool(out), 1))


def test_resnet_block():
    gm, _ = check_both(
        ResBlock, refine=True, symbolic=True, input_types=lambda TT, Dyn: [TT((Dyn, 4, 8, 8))]
    )
    out = [n for n in gm.graph.nodes if n.op == "output"][0]
    assert norm(out.type)[1][1] == 3


def test_resnet_block_with_dyn_input():
    check_both(ResBlock, refine=True, symbolic=True, input_types=lambda TT, Dyn: [Dyn])


def test_get_attr_parameter_and_multiple_outputs():
    def build(TT, Dyn):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(3, 4))

            def forward(self, x: TT((Dyn, 4))):
                return x + self.w, torch.transpose(x, 0, 1)

        return M()

    gm, _ = check_both(build, refine=True)
    w = next(n for n in gm.graph.nodes if n.op == "get_attr")
    assert norm(w.type) == ("T", (3, 4))


@pytest.mark.parametrize("attr", ["shape", "dtype"])
def test_getattr(attr):
    def build(TT, Dyn):
        class M(nn.Module):
            def forward(self, x: TT((2, 3))):
                return getattr(x, attr)

        return M()

    check_both(build)


def test_shape_indexing_has_no_rule():
    def build(TT, Dyn):
        class M(nn.Module):
            def forward(self, x: TT((2, 3))):
                return torch.reshape(x, [x.shape[0], -1])

        return M()

    _, steps = check_both(build)
    assert steps[0][1] is RuntimeError and "No inference rule registered for target" in steps[0][2]


def test_call_method_is_not_implemented():
    def build(TT, Dyn):
        class M(nn.Module):
            def forward(self, x: TT((2, 3))):
                return x.relu()

        return M()

    _, steps = check_both(build)
    assert steps[0][1] is NotImplementedError


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name != "plain_function"], ids=lambda c: c.name
)
def test_zoo_models_with_dyn_inputs(case):
    """Every zoo model, inputs typed Dyn: same types, or the same failure, on both sides."""

    def build(TT, Dyn):
        return lambda lib: trace(case, lib, make_root(case))

    check_both(build, refine=True)


# ---------------------------------------------------------------------------------------------
# Refine details


def test_refine_fresh_variables_and_sympy_symbols():
    r = ours.Refine(None)
    t = r.replace_dyn_with_fresh_var(our_types.TensorType((our_types.Dyn, 2, our_types.Dyn)))
    assert norm(t) == ("T", (("Var", 0), 2, ("Var", 1)))
    assert norm(r.replace_dyn_with_fresh_var([our_types.Dyn, 3])) == (("Var", 2), 3)
    converted = r.convert_to_sympy_symbols(t)
    assert converted.dims[0] == sympy.symbols("~0") and converted.dims[1] == 2
    assert r.replace_dyn_with_fresh_var((our_types.Dyn,)) == (ours.Var(3),)


def test_refine_of_conv_with_untyped_output_does_not_crash():
    """torch.fx fails adding None to its constraint list here; fxkit adds nothing."""
    gm = fxkit.symbolic_trace(
        single_module(lambda: nn.Conv2d(3, 4, 3), lambda TT, D: D)(
            our_types.TensorType, our_types.Dyn
        )
    )
    r = ours.Refine(gm)
    assert r.refine() is True
    assert r.constraints == []


def test_checker_accepts_torch_fx_graph_module():
    """Duck typing: a torch.fx GraphModule annotated with fxkit's types checks the same."""
    root = ResBlock(our_types.TensorType, our_types.Dyn)
    gm = tfx.symbolic_trace(root)
    next(iter(gm.graph.nodes)).type = our_types.TensorType((our_types.Dyn, 4, 8, 8))
    assert ours.GraphTypeChecker({}, gm).type_check()
    ref = fxkit.symbolic_trace(ResBlock(our_types.TensorType, our_types.Dyn))
    next(iter(ref.graph.nodes)).type = our_types.TensorType((our_types.Dyn, 4, 8, 8))
    ours.GraphTypeChecker({}, ref).type_check()
    assert node_types(gm) == node_types(ref)


# ---------------------------------------------------------------------------------------------
# Helpers and registries


dims = st.one_of(st.integers(1, 4), st.just("D"))
shapes = st.lists(dims, min_size=0, max_size=4)


def _typed(lib_types, spec):
    if spec == "D":
        return lib_types.Dyn
    return lib_types.TensorType(tuple(lib_types.Dyn if d == "D" else d for d in spec))


@settings(max_examples=40, deadline=None)
@given(st.one_of(shapes, st.just("D")), st.one_of(shapes, st.just("D")))
def test_broadcast_and_upper_bound_match_torch_fx(a, b):
    for fn in ("broadcast_types", "get_greatest_upper_bound"):
        mine = outcome(lambda: getattr(ours, fn)(_typed(our_types, a), _typed(our_types, b)))
        ref = outcome(lambda: getattr(theirs, fn)(_typed(their_types, a), _typed(their_types, b)))
        assert_same_outcome(mine, ref)


@settings(max_examples=30, deadline=None)
@given(shapes.filter(bool), st.integers(-3, 3), st.integers(-4, 3))
def test_flatten_check_matches_torch_fx(spec, start, end):
    mine = outcome(lambda: ours.flatten_check(_typed(our_types, spec), start, end))
    ref = outcome(lambda: theirs.flatten_check(_typed(their_types, spec), start, end))
    assert_same_outcome(mine, ref)


@pytest.mark.parametrize("spec,n", [("D", 3), ((1, 2), 2), ((1, 2), 3)], ids=["dyn", "same", "bad"])
def test_expand_to_tensor_dim(spec, n):
    mine = outcome(lambda: ours.expand_to_tensor_dim(_typed(our_types, spec), n))
    ref = outcome(lambda: theirs.expand_to_tensor_dim(_typed(their_types, spec), n))
    assert_same_outcome(mine, ref)


def test_expand_and_broadcast_reject_non_types():
    with pytest.raises(TypeError, match="Cannot match the type 3"):
        ours.expand_to_tensor_dim(3, 2)
    with pytest.raises(TypeError, match="Cannot broadcast types"):
        ours.broadcast_types(int, our_types.TensorType((1,)))


def test_calculate_out_dimension():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    for d in (our_types.Dyn, 9, sympy.symbols("h")):
        mine = ours.calculate_out_dimension(d, conv, 0)
        ref = theirs.calculate_out_dimension(their_types.Dyn if d is our_types.Dyn else d, conv, 0)
        assert norm(mine) == norm(ref)
    with pytest.raises(TypeError, match="must be a number or Dyn"):
        ours.calculate_out_dimension(2.5, conv, 0)


def test_registries_have_torch_fx_targets():
    for name in ("_INFERENCE_RULES", "_REFINEMENT_RULES", "_RULES"):
        assert set(getattr(ours, name)) == set(getattr(theirs, name))
    assert ours._INFERENCE_RULES[operator.add] is ours.add_inference_rule
    assert set(ours.__all__) == set(theirs.__all__)


@pytest.mark.parametrize(
    "register,registry,message",
    [
        ("register_inference_rule", "_INFERENCE_RULES", "Inference rule already registered"),
        ("register_refinement_rule", "_REFINEMENT_RULES", "Refinement rule already registered"),
        ("register_algebraic_expressions_inference_rule", "_RULES", "Rule already registered"),
    ],
)
def test_register_and_duplicate(register, registry, message):
    class Custom(nn.Module):
        pass

    def rule(n, *rest):
        return []

    table = getattr(ours, registry)
    try:
        assert getattr(ours, register)(Custom)(rule) is rule
        assert table[Custom] is rule
        with pytest.raises(RuntimeError, match=message):
            getattr(ours, register)(Custom)(rule)
    finally:
        table.pop(Custom, None)


def test_registered_rule_is_used():
    def cat_rule(n):
        first = n.args[0][0].type
        n.type = our_types.TensorType((first.dims[0] * len(n.args[0]),) + tuple(first.dims[1:]))
        return n.type

    ours.register_inference_rule(torch.cat)(cat_rule)
    try:

        class M(nn.Module):
            def forward(self, x: our_types.TensorType((2, 3))):
                return torch.cat([x, x])

        gm = fxkit.symbolic_trace(M())
        ours.GraphTypeChecker({}, gm).type_check()
        assert norm([n.type for n in gm.graph.nodes][1]) == ("T", (4, 3))
    finally:
        del ours._INFERENCE_RULES[torch.cat]


def test_get_parameter():
    gm = fxkit.symbolic_trace(ResBlock(our_types.TensorType, our_types.Dyn))
    assert ours.get_parameter(gm, "conv1.weight") is gm.conv1.weight
    with pytest.raises(AttributeError, match="Conv2d has no attribute `nope`"):
        ours.get_parameter(gm, "conv1.nope")
    with pytest.raises(AttributeError):
        ours.get_parameter(gm, "missing.weight")


# ---------------------------------------------------------------------------------------------
# Bad input and random programs


@pytest.mark.parametrize("entry", ["type_check", "refine", "symbolic_relations"])
def test_not_a_graph_module(entry):
    def call(mod):
        driver = mod.GraphTypeChecker({}, None) if entry == "type_check" else mod.Refine(None)
        return getattr(driver, entry)()

    assert_same_outcome(outcome(lambda: call(ours)), outcome(lambda: call(theirs)))
    with pytest.raises(AttributeError):
        call(ours)


@pytest.mark.parametrize("what", ["submodule", "parameter"])
def test_missing_submodule_or_attribute(what):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.w = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return self.lin(x) + self.w

    results = []
    for lib, mod in ((fxkit, ours), (tfx, theirs)):
        gm = lib.symbolic_trace(M())
        table = gm._modules if what == "submodule" else gm._parameters
        del table["lin" if what == "submodule" else "w"]
        results.append(outcome(lambda: mod.GraphTypeChecker({}, gm).type_check()))
    assert_same_outcome(*results)
    assert results[0][1] is AttributeError


def test_refine_without_type_check():
    build = single_module(lambda: nn.Linear(4, 6), lambda TT, D: TT((D, 4)))
    results = []
    for lib, mod, types in LIBS.values():
        gm = lib.symbolic_trace(build(types.TensorType, types.Dyn))
        r = mod.Refine(gm)
        results.append((outcome(r.refine), norm(r.constraints), node_types(gm)))
    assert results[0] == results[1]


_OPS = st.sampled_from(
    [
        ("relu",),
        ("linear", 4, 3),
        ("linear", 3, 4),
        ("transpose", 0, 1),
        ("transpose", 1, 3),
        ("reshape", [-1]),
        ("reshape", [2, -1]),
        ("reshape", [-1, 3, 2, 2]),
        ("flatten", 1),
        ("flatten", 0, 2),
        ("add_self",),
        ("conv", 3, 4, 3),
        ("conv", 4, 3, 1),
        ("bn", 3),
        ("maxpool", 2),
        ("avgpool", 2),
    ]
)
_DIMS = st.lists(st.sampled_from([1, 2, 3, 4, 12, "D"]), min_size=1, max_size=4)


def _chain(TT, Dyn, ops):
    factories = {
        "linear": lambda a, b: nn.Linear(a, b),
        "conv": lambda a, b, k: nn.Conv2d(a, b, k),
        "bn": lambda c: nn.BatchNorm2d(c),
        "maxpool": lambda k: nn.MaxPool2d(k),
        "avgpool": lambda s: nn.AdaptiveAvgPool2d(s),
        "relu": lambda: nn.ReLU(),
    }

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = nn.ModuleList(
                [factories[op[0]](*op[1:]) for op in ops if op[0] in factories]
            )

        def forward(self, x):
            modules = iter(self.mods)
            for op in ops:
                if op[0] in factories:
                    x = next(modules)(x)
                elif op[0] == "transpose":
                    x = torch.transpose(x, *op[1:])
                elif op[0] == "reshape":
                    x = torch.reshape(x, op[1])
                elif op[0] == "flatten":
                    x = torch.flatten(x, *op[1:])
                else:
                    x = x + x
            return x

    return Chain()


@settings(max_examples=40, deadline=None)
@given(st.lists(_OPS, min_size=1, max_size=5), st.one_of(_DIMS, st.just("D")))
def test_random_chains_match_torch_fx(ops, dims):
    """Random chains of the supported operations on random input types: the same types,
    constraints and errors as torch.fx, wherever the chain goes wrong."""
    check_both(
        lambda TT, Dyn: _chain(TT, Dyn, ops),
        refine=True,
        symbolic=True,
        input_types=lambda TT, Dyn: [_typed_for(TT, Dyn, dims)],
    )


def _typed_for(TT, Dyn, dims):
    return Dyn if dims == "D" else TT(tuple(Dyn if d == "D" else d for d in dims))


@pytest.mark.parametrize("which", ["resblock", "broadcast-add", "conv-dyn-hw"])
def test_with_infer_symbolic_types(which):
    """The whole pipeline users run: type_check, then unify_refinements.infer_symbolic_types
    (two Refine rounds, unification, symbolic_relations)."""
    import torch.fx.experimental.unify_refinements as their_unify

    import fxkit.experimental.unify_refinements as our_unify

    builds = {
        "resblock": lambda TT, Dyn: ResBlock(TT, Dyn),
        "broadcast-add": lambda TT, Dyn: add_model(TT, Dyn, (Dyn, 2, 1), (3, Dyn, 2, 4)),
        "conv-dyn-hw": lambda TT, Dyn: single_module(*MODULE_CASES["conv-dyn-hw"])(TT, Dyn),
    }
    results = []
    for (lib, mod, types), unify in zip(LIBS.values(), (our_unify, their_unify)):
        gm = lib.symbolic_trace(builds[which](types.TensorType, types.Dyn))
        if which == "resblock":
            next(iter(gm.graph.nodes)).type = types.TensorType((types.Dyn, 4, 8, types.Dyn))
        mod.GraphTypeChecker({}, gm).type_check()
        results.append((outcome(lambda: unify.infer_symbolic_types(gm)), node_types(gm)))
    assert_same_outcome(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]
