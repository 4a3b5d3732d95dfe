"""split_by_tags compared with torch.fx's (code of the top module and every component, fqn
mapping, parameters and buffers, outputs) on small models and zoo models; tag errors;
getattr_recursive / setattr_recursive; Component; move_non_tensor_nodes_on_boundary."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import split_utils as tsu

import fxkit
from fxkit.passes import split_utils as fsu
from zoo import BY_NAME, example, tensors_of, trace


class TwoBranch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(4, 4)
        self.l2 = torch.nn.Linear(4, 4)
        self.l3 = torch.nn.Linear(8, 4)
        self.register_buffer("buf", torch.ones(4))
        self.scale = torch.nn.Parameter(torch.full((4,), 2.0))

    def forward(self, a, b):
        r1 = self.l1(a) + self.buf
        r2 = self.l2(b) * self.scale
        r3 = torch.cat([r1, r2], -1)
        return self.l3(r3), r1, self.scale


def _tag_two_branch(gm):
    for node in gm.graph.nodes:
        if node.op in ("call_module", "call_function", "call_method"):
            node.tag = "ro" if node.name in ("l1", "add") else "main"


def _snapshot(split, mapping=None):
    return {
        "code": split.code.replace("torch.fx._symbolic_trace.", "fxkit._symbolic_trace."),
        "children": [
            (name, child.code.replace("torch.fx._symbolic_trace.", "fxkit._symbolic_trace."))
            for name, child in split.named_children()
            if hasattr(child, "graph")
        ],
        "parameters": [name for name, _ in split.named_parameters()],
        "buffers": [name for name, _ in split.named_buffers()],
        "mapping": mapping,
        "tags": [
            getattr(n, "tag", None)
            for _, child in split.named_children()
            if hasattr(child, "graph")
            for n in child.graph.nodes
        ],
    }


@pytest.mark.parametrize("return_tuple", [False, True], ids=["plain", "tuple"])
@pytest.mark.parametrize("fqn", [False, True], ids=["no_fqn", "fqn"])
def test_two_branch_matches_torch_fx(return_tuple, fqn):
    torch.manual_seed(0)
    model = TwoBranch()
    seen = []
    for lib, mod in ((tfx, tsu), (fxkit, fsu)):
        gm = lib.symbolic_trace(model)
        _tag_two_branch(gm)
        result = mod.split_by_tags(
            gm, ["ro", "main"], return_fqn_mapping=fqn, return_tuple=return_tuple
        )
        split, mapping = result if fqn else (result, None)
        seen.append(_snapshot(split, mapping))
        a, b = torch.randn(2, 4), torch.randn(2, 4)
        for got, want in zip(split(a, b), model(a, b)):
            torch.testing.assert_close(got, want)
    assert seen[1] == seen[0]


def _tag_by_thirds(gm, tags):
    calls = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    for i, node in enumerate(calls):
        node.tag = tags[i * len(tags) // len(calls)]


@pytest.mark.parametrize("case_name", ["mlp", "resnet", "encoder", "math_ops", "operators"])
def test_zoo_matches_torch_fx(case_name):
    case = BY_NAME[case_name]
    tags = ["first", "second", "third"]
    seen = []
    for lib, mod in ((tfx, tsu), (fxkit, fsu)):
        gm = trace(case, lib)
        _tag_by_thirds(gm, tags)
        split, mapping = mod.split_by_tags(gm, tags, return_fqn_mapping=True)
        seen.append(_snapshot(split, mapping))
        args, kwargs = example(case)
        for got, want in zip(tensors_of(split(*args, **kwargs)), tensors_of(gm(*args, **kwargs))):
            torch.testing.assert_close(got, want)
    assert seen[1] == seen[0]


def test_graph_module_cls_and_torch_fx_input():
    class Mine(fxkit.GraphModule):
        pass

    gm = tfx.symbolic_trace(TwoBranch())
    _tag_two_branch(gm)
    split = fsu.split_by_tags(gm, ["ro", "main"], GraphModuleCls=Mine)
    assert isinstance(split, Mine)
    theirs = tsu.split_by_tags(gm, ["ro", "main"])
    assert _snapshot(split) == _snapshot(theirs)


def test_unused_tag_gives_empty_component():
    seen = []
    for lib, mod in ((tfx, tsu), (fxkit, fsu)):
        gm = lib.symbolic_trace(TwoBranch())
        _tag_two_branch(gm)
        seen.append(_snapshot(mod.split_by_tags(gm, ["ro", "spare", "main"])))
    assert seen[1] == seen[0]


# --- bad input ---------------------------------------------------------------------------------


def _tagged(lib, tag_of):
    gm = lib.symbolic_trace(TwoBranch())
    for node in gm.graph.nodes:
        if node.op in ("call_module", "call_function", "call_method"):
            tag = tag_of(node)
            if tag is not None:
                node.tag = tag
    return gm


@pytest.mark.parametrize(
    "tag_of, tags, error, match",
    [
        (lambda n: "ro", ["main"], KeyError, "ro"),
        (
            lambda n: None if n.name == "cat" else "main",
            ["main"],
            AssertionError,
            "Node does not have tag",
        ),
        (
            lambda n: "ro" if n.name == "l3" else "main",
            ["ro", "main"],
            AssertionError,
            "order must be >=",
        ),
    ],
    ids=["tag_not_listed", "untagged_node", "order_violated"],
)
def test_bad_tags(tag_of, tags, error, match):
    for lib, mod in ((tfx, tsu), (fxkit, fsu)):
        with pytest.raises(error, match=match):
            mod.split_by_tags(_tagged(lib, tag_of), tags)


def test_missing_tag_message_names_node():
    with pytest.raises(KeyError) as info:
        fsu.split_by_tags(_tagged(fxkit, lambda n: "elsewhere"), ["main"])
    assert "l1" in str(info.value) and "['main']" in str(info.value)


# --- property: random tag assignments ---------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=9, max_size=9))
def test_random_monotone_tags(steps):
    # Tags along the graph never go back (a cut per step), so any assignment is valid.
    model = TwoBranch()
    seen = []
    for lib, mod in ((tfx, tsu), (fxkit, fsu)):
        gm = lib.symbolic_trace(model)
        calls = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function")]
        level = 0
        for node, step in zip(calls, steps):
            level = min(level + (step == 2), 2)
            node.tag = f"t{level}"
        split = mod.split_by_tags(gm, ["t0", "t1", "t2"])
        split.graph.lint()
        seen.append(_snapshot(split))
        a, b = torch.randn(1, 4), torch.randn(1, 4)
        for got, want in zip(split(a, b), model(a, b)):
            torch.testing.assert_close(got, want)
    assert seen[1] == seen[0]


# --- helpers -----------------------------------------------------------------------------------


def test_getattr_recursive():
    model = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2)]))
    for mod in (tsu, fsu):
        assert mod.getattr_recursive(model, "0.0.weight") is model[0][0].weight
        assert mod.getattr_recursive(model, "0.5") is None
        assert mod.getattr_recursive(model, "0.0.nope") is None
        assert mod.getattr_recursive(model, "missing.x") is None


def test_setattr_recursive():
    for mod in (tsu, fsu):
        model = torch.nn.Sequential(torch.nn.Linear(2, 2))
        mod.setattr_recursive(model, "0.extra", 5)
        mod.setattr_recursive(model, "top", 6)
        assert model[0].extra == 5 and model.top == 6
        with pytest.raises(AttributeError):
            mod.setattr_recursive(model, "nope.x", 1)


def test_component_fields():
    ours = [(f.name, f.default is dataclasses.MISSING) for f in dataclasses.fields(fsu.Component)]
    theirs = [(f.name, f.default is dataclasses.MISSING) for f in dataclasses.fields(tsu.Component)]
    assert ours == theirs
    comp = fsu.Component(fxkit.Graph(), 0, "a")
    assert comp.orig_inputs == [] and comp.gm is None
    assert comp.orig_inputs is not fsu.Component(fxkit.Graph(), 1, "b").orig_inputs


# --- move_non_tensor_nodes_on_boundary ---------------------------------------------------------


def _boundary_case(lib):
    """acc: x.size(0) -> int -> add; the int feeds the gpu subgraph."""

    def f(x):
        n = x.size(0)
        m = n + 1
        y = x.relu()
        return x.view(m - 1, -1) + y

    gm = lib.symbolic_trace(f)
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in ("size", "add", "relu"):
        nodes[name].meta["type"] = int if name in ("size", "add") else torch.Tensor
    for name in ("sub", "view", "add_1"):
        nodes[name].meta["type"] = int if name == "sub" else torch.Tensor
    acc = SimpleNamespace(is_acc=True, nodes=[nodes["size"], nodes["add"], nodes["relu"]])
    gpu = SimpleNamespace(is_acc=False, nodes=[nodes["sub"], nodes["view"], nodes["add_1"]])
    return [acc, gpu]


def test_move_non_tensor_nodes_on_boundary(capsys):
    results = []
    for lib, mod in ((tfx, tsu), (fxkit, fsu)):
        subgraphs = _boundary_case(lib)
        mod.move_non_tensor_nodes_on_boundary(subgraphs)
        results.append([sorted(n.name for n in s.nodes) for s in subgraphs])
    assert results[1] == results[0]
    assert results[1] == [["relu"], ["add", "add_1", "size", "sub", "view"]]
    out = capsys.readouterr().out
    assert "moved node size from acc_0 to gpu_1" in out


def test_move_non_tensor_nodes_passes_torch_fx_own_tests(monkeypatch):
    # torch.fx's unit tests for this function, run against fxkit's: they mock torch.fx's
    # is_node_output_tensor, so fxkit's module-level one is pointed at it.
    import unittest

    from torch.fx.passes.tests import _test_split_utils as upstream

    def ours(subgraphs):
        with monkeypatch.context() as patched:
            patched.setattr(fsu, "is_node_output_tensor", lambda n: tsu.is_node_output_tensor(n))
            fsu.move_non_tensor_nodes_on_boundary(subgraphs)

    monkeypatch.setattr(upstream, "move_non_tensor_nodes_on_boundary", ours)
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(
        upstream.TestMoveNonTensorNodesOnBoundary
    )
    result = unittest.TestResult()
    suite.run(result)
    assert result.testsRun >= 8
    assert result.wasSuccessful(), result.failures + result.errors
