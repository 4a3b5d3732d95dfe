"""fxkit.experimental.unify_refinements (and refinement_types) against torch.fx's: the same node
types after ``infer_symbolic_types`` on annotated conv/linear/ResNet-style networks and on the
model zoo, and the helpers (convert_eq, unify_eq, substitutions, type equality) on tables."""

import pytest
import torch
import torch.fx as tfx
import torch.fx.experimental.refinement_types as TRT
import torch.fx.experimental.unification as TU
import torch.fx.experimental.unify_refinements as TR
import torch.fx.tensor_type as TT
from torch import nn

import fxkit
import fxkit.experimental.refinement_types as KRT
import fxkit.experimental.unification as KU
import fxkit.experimental.unify_refinements as KR
import fxkit.tensor_type as KT
from zoo import CASES, trace

LIBS = {
    "torch.fx": (tfx, TT, TR, "torch.fx.experimental.graph_gradual_typechecker"),
    "fxkit": (fxkit, KT, KR, "fxkit.experimental.graph_gradual_typechecker"),
}


def conv_net(tt):
    TensorType, Dyn = tt.TensorType, tt.Dyn

    class ConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(5, 120)
            self.pool2 = nn.AdaptiveAvgPool2d((6, 7))

        def forward(self, x: TensorType((4, 3, Dyn, Dyn))):
            out = self.pool(self.conv1(x))
            out = self.pool(self.conv2(out))
            out = self.pool2(self.fc1(out))
            return torch.flatten(out, 1)

    return ConvNet()


def linear_broadcast(tt):
    TensorType, Dyn = tt.TensorType, tt.Dyn

    class LinearAdd(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 5)

        def forward(self, x: TensorType((Dyn, 2, 4)), y: TensorType((Dyn, Dyn, 5))):
            return self.linear(x) + y

    return LinearAdd()


def res_block(tt):
    TensorType, Dyn = tt.TensorType, tt.Dyn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(8)

        def forward(self, x: TensorType((Dyn, 8, 16, Dyn))):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + x)

    return Block()


def mixed_ops(tt):
    TensorType, Dyn = tt.TensorType, tt.Dyn

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(6, 3)
            self.relu = nn.ReLU()

        def forward(self, x: TensorType((2, Dyn, 6)), y: TensorType((Dyn, 3))):
            out = self.linear(x)
            out = self.relu(out) + y
            out = torch.transpose(out, 0, 1)
            return torch.reshape(out, [-1, 2])

    return Mixed()


def fully_dynamic(tt):
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.linear = nn.Linear(5, 5)

        def forward(self, x):
            return self.linear(self.conv(x)).flatten(1)

    return Dynamic()


MODELS = {
    "conv-net": conv_net,
    "linear-broadcast": linear_broadcast,
    "res-block": res_block,
    "mixed-ops": mixed_ops,
    "fully-dynamic": fully_dynamic,
}


def outcome(thunk):
    try:
        return ("ok", thunk())
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return (type(exc).__name__, str(exc))


def node_types(gm):
    return [(n.name, str(n.type)) for n in gm.graph.nodes]


# torch.fx's Conv2d refinement rule returns None for an untyped convolution, which Refine then
# fails to add to its constraint list. fxkit's rule contributes no constraint instead.
_TORCH_FX_CONV_CRASH = ("TypeError", "'NoneType' object is not iterable")


def assert_same_as_torch_fx(ours, theirs):
    """Same outcome and node types, except where torch.fx crashes on an untyped Conv2d: there
    fxkit finishes and every node has a type."""
    if theirs[0] == _TORCH_FX_CONV_CRASH:
        assert ours[0] == ("ok", None)
        assert all(t != "None" for _, t in ours[1])
        # The nodes torch.fx refined before crashing got the same types.
        first_unreached = [t for _, t in theirs[1]].index("None")
        assert ours[1][:first_unreached] == theirs[1][:first_unreached]
    else:
        assert ours == theirs


def run(lib_name, make, type_check_first, single_pass):
    """Trace ``make``'s model with the library, optionally type-check it, infer symbolic types;
    returns the outcome and the node types afterwards."""
    fx, tt, refinements, checker_module = LIBS[lib_name]
    gm = fx.symbolic_trace(make(tt))

    def go():
        if type_check_first:
            checker = __import__(checker_module, fromlist=["GraphTypeChecker"])
            checker.GraphTypeChecker({}, gm).type_check()
        if single_pass:
            refinements.infer_symbolic_types_single_pass(gm)
        else:
            refinements.infer_symbolic_types(gm)

    return outcome(go), node_types(gm)


@pytest.mark.parametrize("single_pass", [False, True], ids=["two-pass", "single-pass"])
@pytest.mark.parametrize("type_check_first", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_same_node_types_as_torch_fx(model, type_check_first, single_pass):
    theirs = run("torch.fx", MODELS[model], type_check_first, single_pass)
    ours = run("fxkit", MODELS[model], type_check_first, single_pass)
    assert_same_as_torch_fx(ours, theirs)


def test_documented_conv_example():
    gm = fxkit.symbolic_trace(conv_net(KT))
    from fxkit.experimental.graph_gradual_typechecker import GraphTypeChecker

    GraphTypeChecker({}, gm).type_check()
    KR.infer_symbolic_types(gm)
    types = {n.name: n.type for n in gm.graph.nodes}
    assert types["flatten"] == KT.TensorType((4, 672))
    assert all(isinstance(t, KT.TensorType) for t in types.values())
    assert str(types["conv1"]) == "TensorType[(4, 6, floor(~0) - 4, floor(~1) - 4)]"


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name in ("mlp", "resnet", "encoder")], ids=lambda c: c.name
)
def test_zoo_models_same_as_torch_fx(case):
    results = []
    for lib, refinements in ((tfx, TR), (fxkit, KR)):
        gm = trace(case, lib)
        results.append((outcome(lambda: refinements.infer_symbolic_types(gm)), node_types(gm)))
    assert_same_as_torch_fx(results[1], results[0])


# ---- helpers ----------------------------------------------------------------------------------


def test_equality():
    for lib in (TRT, KRT):
        e = lib.Equality(1, KU.Var("a"))
        assert str(e) == repr(e) == "1 = ~a"
        assert e == lib.Equality(1, KU.Var("a")) and e != lib.Equality(1, 2) and e != (1, "a")
        with pytest.raises(TypeError):
            hash(e)
    assert KRT.Equality(1, 2) != TRT.Equality(1, 2)


def constraints(Var, Equality):
    a, b, c = Var(0), Var(1), Var(2)
    return [Equality(a, 3), Equality(b, a), Equality((c, 3), (5, b))]


def test_convert_and_unify_eq_match_torch_fx():
    ours = constraints(KU.Var, KRT.Equality)
    theirs = constraints(TU.Var, TRT.Equality)
    assert str(KR.convert_eq(ours)) == str(TR.convert_eq(theirs))
    assert KR.convert_eq([]) == ((), ()) == TR.convert_eq([])
    assert str(KR.unify_eq(ours)) == str(TR.unify_eq(theirs))
    assert KR.unify_eq([]) == {} == TR.unify_eq([])
    conflict_k = [KRT.Equality(KU.Var(0), 1), KRT.Equality(KU.Var(0), 2)]
    conflict_t = [TRT.Equality(TU.Var(0), 1), TRT.Equality(TU.Var(0), 2)]
    assert outcome(lambda: KR.unify_eq(conflict_k)) == outcome(lambda: TR.unify_eq(conflict_t))
    assert outcome(lambda: KR.unify_eq(conflict_k))[0] == "NotImplementedError"
    rank_k = [KRT.Equality((KU.Var(0), 1), (2,))]
    assert KR.unify_eq(rank_k) is False is TR.unify_eq([TRT.Equality((TU.Var(0), 1), (2,))])
    with pytest.raises(AttributeError):
        KR.convert_eq([1])


def substitution_table(Var, tt):
    a, b, c = Var(0), Var(1), Var(2)
    mapping = {a: 3, b: c, c: 7}
    return mapping, [
        a,
        Var(9),
        tt.TensorType((a, b, 5)),
        tt.TensorType(()),
        [a, tt.TensorType((c,)), (b, 2)],
        (a, [b]),
        int,
        None,
        tt.Dyn,
        "text",
    ]


def test_substitute_solution_one_type_matches_torch_fx():
    k_map, k_types = substitution_table(KU.Var, KT)
    t_map, t_types = substitution_table(TU.Var, TT)
    for ours, theirs in zip(k_types, t_types):
        k_out = outcome(lambda: KR.substitute_solution_one_type(k_map, ours))
        t_out = outcome(lambda: TR.substitute_solution_one_type(t_map, theirs))
        assert (k_out[0], str(k_out[1])) == (t_out[0], str(t_out[1]))
        assert type(k_out[1]).__name__ == type(t_out[1]).__name__
    nested = KR.substitute_solution_one_type(k_map, KT.TensorType((KU.Var(1),)))
    assert nested == KT.TensorType((KU.Var(2),))  # one step only: chains are resolved earlier
    # A torch.fx TensorType keeps its class (torch.fx's version returns it unchanged).
    assert KR.substitute_solution_one_type(k_map, TT.TensorType((KU.Var(0),))) == TT.TensorType(
        (3,)
    )


def test_substitute_all_types_and_type_equality():
    results = []
    for fx, tt, refinements, Var in ((tfx, TT, TR, TU.Var), (fxkit, KT, KR, KU.Var)):
        graph = fx.Graph()
        x = graph.placeholder("x", type_expr=tt.TensorType((Var(0), Var(1))))
        y = graph.call_function(torch.relu, (x,), type_expr=Var(1))
        graph.output(y)
        mapping = {Var(0): Var(1), Var(1): Var(2), Var(2): 5}
        refinements.substitute_all_types(graph, mapping)
        results.append((str(mapping), [str(n.type) for n in graph.nodes], type(x.type).__module__))
        other = fx.Graph()
        other.placeholder("x", type_expr=tt.TensorType((5, 5)))
        assert refinements.check_for_type_equality(graph, other)
        other.placeholder("z", type_expr=int)
        assert refinements.check_for_type_equality(graph, other) is False
        assert refinements.check_for_type_equality(fx.Graph(), other)
        with pytest.raises(TypeError):
            refinements.substitute_all_types(graph, False)
    assert results[0][:2] == results[1][:2]
    assert results[1][2] == "fxkit.tensor_type"


def test_module_names():
    from fxkit.experimental.graph_gradual_typechecker import Refine
    from fxkit.experimental.unify_refinements import Refine as reexported

    assert reexported is Refine
    assert set(KR.__all__) == set(TR.__all__)
    with pytest.raises(AttributeError):
        KR.no_such_name  # noqa: B018
