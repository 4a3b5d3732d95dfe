"""param_fetch against torch.fx's: attribute extraction for every book entry, lifting onto
traced CNNs (with nested graph modules), and the errors for unknown or newer modules."""

from __future__ import annotations

import pytest
import torch
import torch.fx as tfx
from torch import nn
from torch.fx.passes import param_fetch as tpf

import fxkit
from fxkit.passes import param_fetch as pf

MODULES = [
    lambda: nn.Linear(4, 3),
    lambda: nn.Linear(4, 3, bias=False),
    lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1, groups=1),
    lambda: nn.Conv2d(4, 4, (3, 1), padding="same", groups=2, padding_mode="reflect"),
    lambda: nn.BatchNorm2d(8, eps=1e-3),
    lambda: nn.AdaptiveAvgPool2d(1),
    lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    lambda: nn.ReLU(inplace=True),
]


def same_attrs(a, b):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        assert (x is y) if isinstance(x, torch.Tensor) else x == y, k


@pytest.mark.parametrize("make", MODULES, ids=lambda f: repr(f()))
def test_extracted_attributes_match_torch_fx(make):
    mod = make()
    ours, theirs = pf.extract_attrs_for_lowering(mod), tpf.extract_attrs_for_lowering(mod)
    same_attrs(ours, theirs)
    assert ours["name"] == torch.typename(mod)


def test_the_book_lists_the_same_classes_and_attributes():
    ours = {k: (v[0], v[1]) for k, v in pf.module_fetch_book.items()}
    theirs = {k: (v[0], v[1]) for k, v in tpf.module_fetch_book.items()}
    assert ours == theirs
    assert pf.default_matching("weight", 3) == tpf.default_matching("weight", 3) == "weight"


def raised(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def assert_same_error(ours_fn, theirs_fn):
    ours, theirs = raised(ours_fn), raised(theirs_fn)
    assert isinstance(ours, type(theirs))
    assert str(theirs) in str(ours)


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Sigmoid(), lambda: nn.Conv1d(2, 2, 1), lambda: "not a module", lambda: None],
    ids=["sigmoid", "conv1d", "string", "none"],
)
def test_unknown_modules_raise_like_torch_fx(make):
    assert_same_error(
        lambda: pf.extract_attrs_for_lowering(make()),
        lambda: tpf.extract_attrs_for_lowering(make()),
    )
    with pytest.raises(RuntimeError, match="is not in the module_fetch_book yet"):
        pf.extract_attrs_for_lowering(make())


def test_a_newer_module_version_raises_like_torch_fx():
    def newer():
        m = nn.Linear(2, 2)
        m._version = 5
        return m

    assert_same_error(
        lambda: pf.extract_attrs_for_lowering(newer()),
        lambda: tpf.extract_attrs_for_lowering(newer()),
    )
    with pytest.raises(RuntimeError, match="Fetcher version 1 try to fetch"):
        pf.extract_attrs_for_lowering(newer())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.avg(x), 1))


def lifted(gm):
    return [
        (n.name, getattr(n, "attrs_for_lowering", None))
        for n in gm.graph.nodes
        if n.op == "call_module"
    ]


def test_lifting_onto_a_traced_cnn_matches_torch_fx():
    net = Net()
    ours, theirs = fxkit.symbolic_trace(net), tfx.symbolic_trace(net)
    pf.lift_lowering_attrs_to_nodes(ours)
    tpf.lift_lowering_attrs_to_nodes(theirs)
    a, b = lifted(ours), lifted(theirs)
    assert [n for n, _ in a] == [n for n, _ in b] == ["conv", "bn", "relu", "pool", "avg", "fc"]
    for (_, x), (_, y) in zip(a, b):
        same_attrs(x, y)
    assert a[0][1]["weight"] is ours.conv.weight
    assert all(
        not hasattr(n, "attrs_for_lowering") for n in ours.graph.nodes if n.op != "call_module"
    )


def nested(fx):
    inner = fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner
            self.fc = nn.Linear(3, 1)

        def forward(self, x):
            return self.fc(self.inner(x))

    class KeepInner(fx.Tracer):
        def is_leaf_module(self, m, name):
            return m is inner or super().is_leaf_module(m, name)

    outer = Outer()
    return fx.GraphModule(outer, KeepInner().trace(outer)), inner


def test_nested_graph_modules_are_lifted_recursively():
    (ours, ours_inner), (theirs, theirs_inner) = nested(fxkit), nested(tfx)
    pf.lift_lowering_attrs_to_nodes(ours)
    tpf.lift_lowering_attrs_to_nodes(theirs)
    assert [(n, a is None) for n, a in lifted(ours)] == [("inner", True), ("fc", False)]
    assert [(n, a is None) for n, a in lifted(ours)] == [(n, a is None) for n, a in lifted(theirs)]
    inner_names = [(n, a["name"]) for n, a in lifted(ours_inner)]
    assert inner_names == [(n, a["name"]) for n, a in lifted(theirs_inner)]
    assert inner_names == [
        ("_0", "torch.nn.modules.linear.Linear"),
        ("_1", "torch.nn.modules.activation.ReLU"),
    ]


def test_torch_fx_graph_modules_are_accepted():
    (theirs, inner) = nested(tfx)
    pf.lift_lowering_attrs_to_nodes(theirs)
    assert [a["name"] for _, a in lifted(inner)][0] == "torch.nn.modules.linear.Linear"


def test_lift_errors_match_torch_fx():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(x)

    assert_same_error(
        lambda: pf.lift_lowering_attrs_to_nodes(fxkit.symbolic_trace(Odd())),
        lambda: tpf.lift_lowering_attrs_to_nodes(tfx.symbolic_trace(Odd())),
    )

    def dangling(fx):
        g = fx.Graph()
        g.output(g.call_module("gone", (g.placeholder("x"),)))
        gm = fx.GraphModule(nn.Module(), g)
        return gm

    # a GraphModule checks call_module targets at construction; both refuse the same way
    assert_same_error(lambda: dangling(fxkit), lambda: dangling(tfx))
    assert_same_error(
        lambda: pf.lift_lowering_attrs_to_nodes("not a module"),
        lambda: tpf.lift_lowering_attrs_to_nodes("not a module"),
    )
