"""fxkit.experimental.optimization against torch.fx's: same fused graphs and code, outputs
matching the unfused model, same errors."""

from __future__ import annotations

import copy
import operator
import random

import pytest
import torch
import torch.fx as tfx
import torch.fx.experimental.optimization as theirs
from torch import nn

import fxkit
import fxkit.experimental.optimization as ours
from zoo import BY_NAME, CASES, example, make_root, tensors_of

MKLDNN = torch.backends.mkldnn.is_available()
needs_mkldnn = pytest.mark.skipif(not MKLDNN, reason="optimize_for_inference needs MKLDNN")


class ConvBNs(nn.Module):
    """Every foldable pair, plus pairs that must not fold."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)
        self.c3, self.b3 = nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3)
        self.lin, self.blin = nn.Linear(5, 6), nn.BatchNorm1d(6)
        # conv output read twice: stays unfolded
        self.shared, self.bshared = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
        # batch statistics only: stays unfolded
        self.c2, self.nostats = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)
        # conv -> bn -> bn: both norms fold into the conv
        self.chain = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2))

    def forward(self, x1, x3, v, x2):
        a = self.b1(self.c1(x1))
        b = self.b3(self.c3(x3))
        c = self.blin(self.lin(v))
        s = self.shared(x2)
        d = self.bshared(s) + s
        e = self.nostats(self.c2(x2))
        return a, b, c, d, e, self.chain(x2)


def _conv_bns() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    m = ConvBNs()
    for bn in m.modules():  # non-trivial statistics so folding changes the weights
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats:
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    inputs = (
        torch.randn(2, 3, 7),
        torch.randn(2, 2, 4, 4, 4),
        torch.randn(3, 5),
        torch.randn(2, 2, 5, 5),
    )
    return m.eval(), inputs


def _resnet() -> tuple[nn.Module, tuple]:
    return make_root(BY_NAME["resnet"]), (torch.randn(2, 3, 8, 8),)


MODELS = {"conv_bns": _conv_bns, "resnet": _resnet}


def _close(got, want, tol=1e-5):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fuse_matches_torch_fx(name):
    model, inputs = MODELS[name]()
    fused, reference = ours.fuse(model), theirs.fuse(model)
    assert isinstance(fused, fxkit.GraphModule)
    assert fused.code == reference.code
    assert [n.name for n in fused.graph.nodes] == [n.name for n in reference.graph.nodes]
    assert sorted(fused.state_dict()) == sorted(reference.state_dict())
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value)
    _close(fused(*inputs), model(*inputs))


def test_fuse_folds_the_expected_layers():
    model, _ = _conv_bns()
    targets = {n.target for n in ours.fuse(model).graph.nodes if n.op == "call_module"}
    assert {"b1", "b3", "blin", "chain.1", "chain.2"}.isdisjoint(targets)
    assert {"bshared", "nostats"} <= targets


def test_fuse_leaves_the_model_alone():
    model, inputs = _conv_bns()
    before = copy.deepcopy(model.state_dict())
    expected = model(*inputs)
    ours.fuse(model)
    for key, value in before.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    _close(model(*inputs), expected)


class Tied(nn.Module):
    """Tied weights, a tensor constant and a BatchNorm that does not fold."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.conv, self.bn = nn.Conv1d(3, 3, 1), nn.BatchNorm1d(3)
        self.keep = nn.BatchNorm1d(3, affine=True)

    def forward(self, x):
        y = self.bn(self.conv(x.unsqueeze(-1))).squeeze(-1)
        return self.keep(self.b(self.a(y)) + torch.tensor([1.0, 2.0, 3.0]))


def test_fuse_result_shares_nothing_with_the_model():
    torch.manual_seed(0)
    model = Tied().eval()
    fused, reference = ours.fuse(model), theirs.fuse(model)
    assert fused.code == reference.code
    originals = {id(t) for t in [*model.parameters(), *model.buffers()]}
    assert not originals & {id(t) for t in [*fused.parameters(), *fused.buffers()]}
    assert not originals & {id(m) for m in fused.modules()}
    assert fused.b.weight is fused.a.weight  # tied weights stay tied, as after a deepcopy
    assert not any(name.startswith("_tensor_constant") for name in vars(model))
    with torch.no_grad():
        fused.keep.running_mean.add_(1.0)
        fused.a.weight.mul_(2.0)
    assert torch.equal(model.keep.running_mean, torch.zeros(3))
    x = torch.randn(4, 3)
    ref_out = theirs.fuse(model)(x)
    torch.testing.assert_close(model(x), ref_out)


def test_nothing_to_fuse_keeps_the_graph():
    model = make_root(BY_NAME["mlp"])
    fused = ours.fuse(model)
    assert fused.code == fxkit.symbolic_trace(model).code == theirs.fuse(model).code
    x = torch.randn(3, 8)
    torch.testing.assert_close(fused(x), model(x))


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_fuse_no_trace_reuses_graph_module(inplace):
    model, inputs = _resnet()
    gm = fxkit.symbolic_trace(model)
    code_before = gm.code
    fused = ours.fuse(gm, inplace=inplace, no_trace=True)
    reference = theirs.fuse(tfx.symbolic_trace(model), no_trace=True)
    assert fused.code == reference.code
    assert gm.code == code_before and len(gm.graph.nodes) > len(fused.graph.nodes)
    _close(fused(*inputs), model(*inputs))


def test_fuse_training_mode_raises_torch_fx_error():
    model, _ = _conv_bns()
    model.train()
    with pytest.raises(AssertionError) as theirs_err:
        theirs.fuse(model)
    with pytest.raises(AssertionError) as ours_err:
        ours.fuse(model)
    assert str(ours_err.value) == str(theirs_err.value) == "Fusion only for eval!"


@pytest.mark.parametrize("bad", [None, 3, "model"], ids=["none", "int", "str"])
def test_fuse_bad_input_same_exception_type(bad):
    with pytest.raises(Exception) as theirs_err:
        theirs.fuse(bad)
    with pytest.raises(type(theirs_err.value)):
        ours.fuse(bad)


@pytest.mark.parametrize("case", ["mlp", "resnet", "encoder"])
def test_remove_dropout_matches_torch_fx(case):
    model = make_root(BY_NAME[case])
    model.train()  # dropout would be active: its removal shows in the outputs
    stripped, reference = ours.remove_dropout(model), theirs.remove_dropout(model)
    assert stripped.code == reference.code
    assert not any(isinstance(m, nn.Dropout) for m in stripped.modules())
    model.eval()
    stripped.eval()
    args = BY_NAME[case].inputs()
    _close(stripped(*args), model(*args))


def test_extract_subgraph_matches_torch_fx():
    model = make_root(BY_NAME["resnet"])
    results = []
    for lib, mod in ((fxkit, ours), (tfx, theirs)):
        gm = lib.symbolic_trace(model)
        nodes = list(gm.graph.nodes)
        inputs, body = [nodes[3]], nodes[4:8]
        results.append(mod.extract_subgraph(gm, body, inputs, [body[-1], body[1]]))
    sub, reference = results
    assert isinstance(sub, fxkit.GraphModule)
    assert sub.code == reference.code
    x = torch.randn(2, 8, 8, 8)
    _close(tuple(sub(x)), tuple(reference(x)))


def test_matches_module_pattern_and_replace_node_module():
    model, _ = _conv_bns()
    gm = fxkit.symbolic_trace(model)
    modules = dict(gm.named_modules())
    by_name = {n.name: n for n in gm.graph.nodes}
    check = ours.matches_module_pattern
    assert check((nn.Conv1d, nn.BatchNorm1d), by_name["b1"], modules)
    assert not check((nn.Conv2d, nn.BatchNorm1d), by_name["b1"], modules)
    assert not check((nn.Conv1d, nn.BatchNorm1d), by_name["c1"], modules)  # arg: placeholder
    assert not check((nn.Conv1d, nn.BatchNorm1d), by_name["x1"], modules)  # no args
    assert not check((nn.Conv1d, nn.BatchNorm1d), by_name["add"], {})
    # a subclass is not the pattern's type
    assert not check((nn.Module, nn.BatchNorm1d), by_name["b1"], modules)

    new = nn.Identity()
    ours.replace_node_module(by_name["chain_1"], modules, new)
    assert modules["chain.1"] is new and getattr(gm.chain, "1") is new
    by_name["chain_1"].target = operator.add
    with pytest.raises(AssertionError, match="Expected str target"):
        ours.replace_node_module(by_name["chain_1"], modules, new)


def test_union_find_agrees_with_torch_fx():
    rng = random.Random(7)
    n = 40
    a, b = ours.UnionFind(n), theirs.UnionFind(n)
    for v in range(n):
        a.make_set(v)
        b.make_set(v)
    for _ in range(80):
        x, y = rng.randrange(n), rng.randrange(n)
        assert a.join(x, y) == b.join(x, y)
    groups_a = {v: {w for w in range(n) if a.find(w) == a.find(v)} for v in range(n)}
    groups_b = {v: {w for w in range(n) if b.find(w) == b.find(v)} for v in range(n)}
    assert groups_a == groups_b
    assert a.size == b.size
    fresh = ours.UnionFind(2)
    with pytest.raises(AssertionError, match="Parent is None"):
        fresh.find(1)


def test_use_mkl_length():
    sub = ours.MklSubgraph(fxkit.Graph())
    assert not ours.use_mkl_length(sub)
    sub.nodes = [object()] * 3
    assert ours.use_mkl_length(sub)


@needs_mkldnn
def test_modules_to_mkldnn_round_trip():
    model, _ = _resnet()
    gm = fxkit.symbolic_trace(ours.fuse(model))
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    old = ours.modules_to_mkldnn(nodes, modules)
    swapped = {type(m).__name__ for m in old}
    assert swapped == {"MkldnnConv2d", "MkldnnLinear"}
    assert isinstance(gm.fc, torch.utils.mkldnn.MkldnnLinear)
    ours.reset_modules(nodes, modules, old)
    assert isinstance(gm.fc, nn.Linear)
    x = torch.randn(2, 3, 8, 8)
    _close(gm(x), model(x))


@needs_mkldnn
@pytest.mark.parametrize("name", sorted(MODELS))
def test_optimize_for_inference_matches_torch_fx(name):
    model, inputs = MODELS[name]()
    if name == "conv_bns":
        inputs = inputs[3:]
        model = model.chain
    optimized = ours.optimize_for_inference(model)
    reference = theirs.optimize_for_inference(model)
    assert optimized.code == reference.code
    assert "to_mkldnn" in optimized.code or name == "conv_bns"
    _close(optimized(*inputs), model(*inputs), tol=1e-4)


@needs_mkldnn
def test_optimize_for_inference_configs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 6, 6)
    off = {"mkldnn_layout_optimize": False}
    plain = ours.optimize_for_inference(model, off)
    assert plain.code == theirs.optimize_for_inference(model, off).code
    assert "to_mkldnn" not in plain.code
    never = {"mkldnn_layout_optimize": {"heuristic": lambda g: False}}
    assert ours.optimize_for_inference(model, never).code == plain.code
    for bad, message in (
        ({"mkldnn_layout_optimize": True}, "is not a dict"),
        ({"mkldnn_layout_optimize": {}}, "Heuristic not found"),
    ):
        with pytest.raises(RuntimeError, match=message):
            theirs.optimize_for_inference(model, bad)
        with pytest.raises(RuntimeError, match=message):
            ours.optimize_for_inference(model, bad)


@needs_mkldnn
def test_optimize_for_inference_refuses_non_float():
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()).double().eval()
    for mod in (theirs, ours):
        with pytest.raises(AssertionError, match="only for torch.float"):
            mod.optimize_for_inference(model)


@needs_mkldnn
def test_gen_mkl_autotuner_runs():
    # torch.fx's autotuner reads node.shape, which nothing sets (AttributeError); fxkit's
    # reads the propagated shape from node.meta.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 6, 6)
    calls = []
    tuner = ours.gen_mkl_autotuner([x], iters=1, warmup=0)

    def heuristic(sub):
        calls.append(len(sub.nodes))
        return tuner(sub)

    optimized = ours.optimize_for_inference(
        model, {"mkldnn_layout_optimize": {"heuristic": heuristic}}
    )
    assert calls
    _close(optimized(x), model(x), tol=1e-4)


def _norm(code: str) -> str:
    # wrap lines and tracer helpers name the library itself, by design
    return code.replace("torch.fx.", "fxkit.")


@pytest.mark.parametrize("fn", ["fuse", "remove_dropout", "optimize_for_inference"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zoo_differential(case, fn):
    if fn == "optimize_for_inference" and not MKLDNN:
        pytest.skip("optimize_for_inference needs MKLDNN")
    try:
        reference = getattr(theirs, fn)(make_root(case))
    except AttributeError:
        # torch.fx's optimize_for_inference reads `.target` of every argument of `x + 1`
        # and crashes on the constant; fxkit's must run and match the model instead.
        assert fn == "optimize_for_inference"
        reference = make_root(case)
    except Exception as exc:  # not traceable: fxkit raises its own TraceError (a ValueError)
        expected = ValueError if type(exc).__name__ == "TraceError" else type(exc)
        with pytest.raises(expected):
            getattr(ours, fn)(make_root(case))
        return
    result = getattr(ours, fn)(make_root(case))
    if isinstance(reference, tfx.GraphModule):
        assert result.code == _norm(reference.code)
    args, kwargs = example(case)
    got, want = tensors_of(result(*args, **kwargs)), tensors_of(reference(*args, **kwargs))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
