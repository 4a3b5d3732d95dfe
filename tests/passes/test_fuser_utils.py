"""fuser_utils compared with torch.fx's: fused submodule code, parent code and outputs on zoo
models and random partitions; each building block; bad input (cycles, a node in two
partitions, foreign nodes) raising torch.fx's exception types."""

from __future__ import annotations

import operator
import random

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes.utils import fuser_utils as tfu

import fxkit
from fxkit.passes.utils import fuser_utils as fu
from zoo import BY_NAME, example, tensors_of, trace

LIBS = {"fxkit": (fxkit, fu), "torch.fx": (tfx, tfu)}


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("shift", torch.ones(4))

    def forward(self, x):
        y = self.lin(x).relu()
        z = torch.sin(y) + self.shift
        w = y * 2
        return torch.cos(z) + w, z


def _by_name(gm):
    return {n.name: n for n in gm.graph.nodes}


def _fuse(lib, model, groups, **kwargs):
    fx, module = LIBS[lib]
    gm = fx.symbolic_trace(model)
    nodes = _by_name(gm)
    parts = [dict.fromkeys(nodes[name] for name in group) for group in groups]
    return module.fuse_by_partitions(gm, parts, **kwargs)


GROUPS = {
    "two": [["lin", "relu"], ["sin", "shift", "add", "mul", "cos", "add_1"]],
    "middle": [["sin", "mul", "add"]],
    "unordered": [["add_1", "cos", "mul"], ["relu", "lin"]],
    "single_outputs": [["cos"], ["relu"]],
}


@pytest.mark.parametrize("groups", sorted(GROUPS))
@pytest.mark.parametrize("always_tuple", [False, True], ids=["bare", "tuple"])
def test_fuse_by_partitions_matches_torch_fx(groups, always_tuple):
    torch.manual_seed(0)
    model = Block()
    ours = _fuse("fxkit", model, GROUPS[groups], always_return_tuple=always_tuple)
    theirs = _fuse("torch.fx", model, GROUPS[groups], always_return_tuple=always_tuple)
    assert ours.code == theirs.code
    for name, sub in theirs.named_children():
        if name.startswith("fused_"):
            assert getattr(ours, name).code == sub.code
            assert type(getattr(ours, name)).__name__ == name
    x = torch.randn(3, 4)
    torch.testing.assert_close(ours(x), model(x))
    ours.graph.lint()


def test_prefix_and_meta_val():
    model = Block()
    gm = fxkit.symbolic_trace(model)
    for node in gm.graph.nodes:
        node.meta["val"] = node.name
    nodes = _by_name(gm)
    fu.fuse_by_partitions(gm, [dict.fromkeys([nodes["sin"], nodes["mul"]])], prefix="part_")
    call = _by_name(gm)["part_0"]
    assert call.meta["val"] == ("sin", "mul")
    assert [u.meta["val"] for u in call.users] == ["sin", "mul"]


@pytest.mark.parametrize("case", ["mlp", "resnet", "encoder"])
def test_fuse_zoo_models_in_chunks(case):
    outs = {}
    for lib in LIBS:
        fx, module = LIBS[lib]
        gm = trace(BY_NAME[case], fx)
        compute = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
        chunks = [compute[i : i + 5] for i in range(0, len(compute), 5)]
        parts = [dict.fromkeys(c) for c in chunks if module.validate_partition(c)]
        module.fuse_by_partitions(gm, parts)
        outs[lib] = gm
    assert outs["fxkit"].code == outs["torch.fx"].code
    args, kwargs = example(BY_NAME[case])
    expected = tensors_of(trace(BY_NAME[case], fxkit)(*args, **kwargs))
    torch.testing.assert_close(tensors_of(outs["fxkit"](*args, **kwargs)), expected)


def _random_graph(fx, seed, size):
    rng = random.Random(seed)
    g = fx.Graph()
    values = [g.placeholder("a"), g.placeholder("b")]
    for _ in range(size):
        fn = rng.choice([torch.add, torch.mul, torch.sub, torch.relu, torch.neg])
        arity = 1 if fn in (torch.relu, torch.neg) else 2
        values.append(g.call_function(fn, tuple(rng.choice(values[-5:]) for _ in range(arity))))
    g.output(tuple(v for v in values[2:] if not v.users))
    return fx.GraphModule(torch.nn.Module(), g)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 25), st.integers(1, 4))
def test_random_partitions_match_torch_fx_or_both_refuse(seed, size, count):
    rng = random.Random(seed)
    ours, theirs = _random_graph(fxkit, seed, size), _random_graph(tfx, seed, size)
    names = [n.name for n in ours.graph.nodes if n.op == "call_function"]
    rng.shuffle(names)
    groups = [names[i::count] for i in range(count)]
    groups = [g[: rng.randint(1, len(g))] for g in groups if g]
    args = (torch.randn(3), torch.randn(3))
    expected = tensors_of(ours(*args))
    results = []
    for gm, module in ((ours, fu), (theirs, tfu)):
        nodes = _by_name(gm)
        try:
            module.fuse_by_partitions(gm, [dict.fromkeys(nodes[n] for n in g) for g in groups])
            results.append(None)
        except AssertionError:
            results.append(AssertionError)
    assert results[0] == results[1]
    if results[0] is None:
        assert ours.code == theirs.code
        ours.graph.lint()
        torch.testing.assert_close(tensors_of(ours(*args)), expected)


def test_topo_sort_is_stable_and_rejects_cycles():
    for lib in LIBS:
        fx, module = LIBS[lib]
        gm = fx.symbolic_trace(Block())
        nodes = _by_name(gm)
        order = [nodes[n] for n in ["mul", "cos", "relu", "sin", "add_1", "lin", "add"]]
        assert [n.name for n in module.topo_sort(order)] == [
            "lin", "relu", "mul", "sin", "add", "cos", "add_1"
        ]  # fmt: skip
    g = fxkit.Graph()
    a = g.call_function(torch.sin, (g.placeholder("x"),))
    b = g.call_function(torch.cos, (a,))
    a.args = (b,)
    with pytest.raises(AssertionError, match="topological sorted nodes"):
        fu.topo_sort([a, b])


def test_validate_partition_matches_torch_fx():
    for groups, valid in ((["lin", "sin"], False), (["lin", "relu", "sin", "mul"], True)):
        for lib in LIBS:
            fx, module = LIBS[lib]
            nodes = _by_name(fx.symbolic_trace(Block()))
            assert module.validate_partition([nodes[n] for n in groups]) is valid


def test_fuse_as_graphmodule_and_insert_step_by_step():
    gm = fxkit.symbolic_trace(Block())
    nodes = _by_name(gm)
    part = [nodes["sin"], nodes["add"], nodes["mul"]]
    sub, inputs, outputs = fu.fuse_as_graphmodule(gm, part, "piece")
    assert [n.name for n in inputs] == ["relu", "shift"]
    assert [n.name for n in outputs] == ["add", "mul"]
    assert type(sub).__name__ == "piece" and isinstance(sub, fxkit.GraphModule)
    fu.insert_subgm(gm, sub, inputs, outputs)
    fu.erase_nodes(gm, part)
    gm.graph.lint()
    gm.recompile()
    x = torch.randn(2, 4)
    torch.testing.assert_close(gm(x), fxkit.symbolic_trace(gm)(x))
    with pytest.raises(AssertionError, match="Cannot determine insertion point"):
        fu.insert_subgm(gm, sub, inputs, ())


def test_bad_partitions_raise_assertion_like_torch_fx():
    cases = {
        "cycle": [["lin", "sin"]],
        "node_in_two": [["sin", "mul"], ["mul", "cos"]],
    }
    for groups in cases.values():
        for lib in LIBS:
            with pytest.raises(AssertionError):
                _fuse(lib, Block(), groups)
    with pytest.raises(AssertionError, match="Invalid partition, found dependency cycles"):
        _fuse("fxkit", Block(), cases["cycle"])
    with pytest.raises(AssertionError, match="has been removed from owning graph"):
        _fuse("fxkit", Block(), cases["node_in_two"])


def test_foreign_node_is_rejected():
    gm = fxkit.symbolic_trace(Block())
    other = fxkit.symbolic_trace(Block())
    foreign = _by_name(other)["sin"]
    with pytest.raises(AssertionError, match="doesn't belong to passed in graph module"):
        fu.fuse_by_partitions(gm, [{foreign: None}])


def test_empty_partition_raises_index_error_like_torch_fx():
    for lib in LIBS:
        fx, module = LIBS[lib]
        with pytest.raises(IndexError):
            module.fuse_by_partitions(fx.symbolic_trace(Block()), [{}])


def test_works_on_torch_fx_graph_modules():
    gm = tfx.symbolic_trace(Block())
    expected = tfx.symbolic_trace(Block())
    nodes, other = _by_name(gm), _by_name(expected)
    fu.fuse_by_partitions(gm, [dict.fromkeys([nodes["sin"], nodes["add"], nodes["cos"]])])
    tfu.fuse_by_partitions(expected, [dict.fromkeys([other["sin"], other["add"], other["cos"]])])
    assert isinstance(gm.graph, tfx.Graph)
    assert gm.code == expected.code


def test_getitem_for_single_tuple_output():
    gm = fxkit.symbolic_trace(Block())
    nodes = _by_name(gm)
    fu.fuse_by_partitions(gm, [dict.fromkeys([nodes["cos"]])], always_return_tuple=True)
    assert any(n.target is operator.getitem for n in gm.graph.nodes)
