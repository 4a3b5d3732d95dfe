"""passes.utils.common compared with torch.fx's: HolderModule, lift_subgraph_as_module (the
module tree, fqn map and code it builds) and compare_graphs on equal and different graphs."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from torch.fx.passes.utils import common as tcommon

import fxkit
from fxkit.passes.utils import common as fcommon


class Nested(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
        self.head = torch.nn.Linear(3, 2)
        self.register_buffer("offset", torch.arange(3.0))
        self.plain = torch.ones(3)  # a tensor attribute that is neither parameter nor buffer

    def forward(self, x):
        h = self.block[0](x) + self.offset + self.plain
        return self.head(self.block[1](h))


def _subgraph(lib, gm, keep):
    """Copy the nodes named in ``keep`` (plus inputs as placeholders) into a new graph."""
    g = lib.Graph()
    env = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder" or (node.op != "output" and node.name in keep):
            env[node] = g.node_copy(node, lambda n: env[n])
    g.output(env[[n for n in gm.graph.nodes if n.name in keep][-1]])
    return g


@pytest.mark.parametrize(
    "keep",
    [
        ("block_0", "offset", "add", "plain", "add_1"),
        ("block_0", "offset", "add", "plain", "add_1", "block_1", "head"),
    ],
    ids=["front", "all"],
)
def test_lift_subgraph_as_module_matches(keep):
    torch.manual_seed(0)
    model = Nested()
    seen = []
    for lib, mod in ((tfx, tcommon), (fxkit, fcommon)):
        gm = lib.symbolic_trace(model)
        sub, mapping = mod.lift_subgraph_as_module(gm, _subgraph(lib, gm, keep), "comp", "Lifted")
        seen.append(
            (
                sub.code,
                mapping,
                type(sub).__name__,
                [name for name, _ in sub.named_modules()],
                [name for name, _ in sub.named_parameters()],
                [name for name, _ in sub.named_buffers()],
            )
        )
        assert getattr(sub.block, "0") is model.block[0]
        x = torch.randn(2, 3)
        if "head" in keep:
            torch.testing.assert_close(sub(x), model(x))
    assert seen[1] == seen[0]


def test_lift_subgraph_missing_attribute():
    for lib, mod in ((tfx, tcommon), (fxkit, fcommon)):
        g = lib.Graph()
        g.output(g.get_attr("nope.weight"))
        with pytest.raises(AttributeError):
            mod.lift_subgraph_as_module(torch.nn.Module(), g)


def test_holder_module():
    a, b = torch.nn.Linear(1, 1), torch.nn.ReLU()
    for mod in (tcommon, fcommon):
        holder = mod.HolderModule({"a": a, "b": b, "none": None})
        assert [name for name, _ in holder.named_children()] == ["a", "b"]
        assert holder.none is None and holder.a is a


def _graph(lib, ops, swap=False, extra_input=False):
    g = lib.Graph()
    x = g.placeholder("x")
    y = g.placeholder("y")
    if extra_input:
        g.placeholder("z")
    cur = g.call_function(operator.add, (y, x) if swap else (x, y))
    for op in ops:
        cur = g.call_function(op, (cur,))
    g.output(cur)
    return g


@pytest.mark.parametrize(
    "left, right",
    [
        ({"ops": [torch.relu, torch.neg]}, {"ops": [torch.relu, torch.neg]}),
        ({"ops": [torch.relu, torch.neg]}, {"ops": [torch.neg, torch.relu]}),
        ({"ops": [torch.relu]}, {"ops": [torch.relu], "swap": True}),
        ({"ops": [torch.relu]}, {"ops": [torch.relu], "extra_input": True}),
        ({"ops": [torch.relu]}, {"ops": [torch.relu, torch.relu]}),
    ],
    ids=["same", "reordered_ops", "swapped_args", "extra_input", "longer"],
)
def test_compare_graphs_matches(left, right):
    theirs = tcommon.compare_graphs(_graph(tfx, **left), _graph(tfx, **right))
    ours = fcommon.compare_graphs(_graph(fxkit, **left), _graph(fxkit, **right))
    assert ours is theirs


def test_compare_graphs_ignores_names():
    left = _graph(fxkit, [torch.relu])
    right = _graph(fxkit, [torch.relu])
    for node in right.nodes:
        if node.op == "call_function":
            node.name = node.name + "_renamed"
    assert fcommon.compare_graphs(left, right)
