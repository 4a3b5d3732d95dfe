"""get_source_partitions / check_subgraphs_connected over hand-written node meta, compared
with torch.fx on the same graphs."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from torch.fx.passes.utils import source_matcher_utils as tsm

import fxkit
from fxkit.passes.utils.source_matcher_utils import (
    SourcePartition,
    check_subgraphs_connected,
    get_source_partitions,
)

F = torch.nn.functional


def host(fx):
    """Two linear calls (decomposed into get_attr + t + addmm), a relu from nn.ReLU
    recorded only in nn_module_stack, an add recorded through torch_fn."""
    g = fx.Graph()
    x = g.placeholder("x")
    nodes = {}

    def add(name, op, target, args=(), meta=None):
        n = g.create_node(op, target, args, {}, name=name)
        n.meta.update(meta or {})
        nodes[name] = n
        return n

    lin1 = {"source_fn_stack": [("linear_1", torch.nn.Linear)]}
    lin2 = {"source_fn_stack": [("linear_2", torch.nn.Linear)]}
    w1 = add("w1", "get_attr", "w1", meta=lin1)
    t1 = add("t1", "call_function", torch.t, (w1,), lin1)
    mm1 = add("mm1", "call_function", torch.mm, (x, t1), lin1)
    relu_meta = {"nn_module_stack": {"act": ("act", torch.nn.ReLU)}}
    r = add("r", "call_function", torch.relu, (mm1,), relu_meta)
    w2 = add("w2", "get_attr", "w2", meta=lin2)
    t2 = add("t2", "call_function", torch.t, (w2,), lin2)
    mm2 = add("mm2", "call_function", torch.mm, (r, t2), lin2)
    s = add("s", "call_function", operator.add, (mm2, mm1), {"torch_fn": ("add_1", "builtin.add")})
    f = add("f", "call_function", F.gelu, (s,), {"source_fn_stack": [("gelu_1", F.gelu)]})
    # a module-stack entry recorded as a string type, and a non-call_function node that must
    # not fall back to the module stack
    q = add(
        "q",
        "call_function",
        torch.neg,
        (f,),
        {"nn_module_stack": {"act": ("act2", "torch.nn.modules.activation.ReLU")}},
    )
    add("m", "call_method", "relu", (q,), relu_meta)
    g.output(nodes["m"])
    return g


def as_names(parts):
    return {
        src: [
            (
                [n.name for n in p.nodes],
                sorted(n.name for n in p.input_nodes),
                sorted(n.name for n in p.output_nodes),
                sorted(n.name for n in p.params),
                p.source,
            )
            for p in plist
        ]
        for src, plist in parts.items()
    }


WANTED = [
    [torch.nn.Linear],
    [torch.nn.ReLU],
    [F.gelu, torch.nn.Linear],
    ["add"],
    [torch.nn.Conv2d],
]


@pytest.mark.parametrize("wanted", WANTED)
def test_partitions_agree_with_torch_fx(wanted):
    ours = get_source_partitions(host(fxkit), wanted)
    theirs = tsm.get_source_partitions(host(tfx), wanted)
    assert as_names(ours) == as_names(theirs)


def test_linear_partitions_in_detail():
    parts = get_source_partitions(host(fxkit), [torch.nn.Linear])[torch.nn.Linear]
    assert [[n.name for n in p.nodes] for p in parts] == [["w1", "t1", "mm1"], ["w2", "t2", "mm2"]]
    first, second = parts
    assert isinstance(first, SourcePartition)
    assert [n.name for n in first.input_nodes] == ["x"]
    assert [n.name for n in first.output_nodes] == ["mm1"]
    assert [n.name for n in first.params] == ["w1"]
    assert sorted(n.name for n in second.input_nodes) == ["r"]


def test_filter_fn_drops_whole_partitions():
    def no_w2(n):
        return n.name != "w2"

    ours = get_source_partitions(host(fxkit), [torch.nn.Linear], no_w2)
    theirs = tsm.get_source_partitions(host(tfx), [torch.nn.Linear], no_w2)
    assert as_names(ours) == as_names(theirs)
    assert len(ours[torch.nn.Linear]) == 1


def test_check_subgraphs_connected_is_directional():
    g = host(fxkit)
    parts = get_source_partitions(g, [torch.nn.Linear, torch.nn.ReLU])
    lin1, lin2 = parts[torch.nn.Linear]
    relu, relu_from_string = parts[torch.nn.ReLU]  # the second came from a type name
    assert [n.name for n in relu_from_string.nodes] == ["q"]
    assert check_subgraphs_connected(lin1, relu)
    assert not check_subgraphs_connected(relu, lin1)
    assert check_subgraphs_connected(relu, lin2)
    assert not check_subgraphs_connected(lin1, lin2)  # only through relu, not directly
    assert not check_subgraphs_connected(lin2, lin1)
    tg = host(tfx)
    tparts = tsm.get_source_partitions(tg, [torch.nn.Linear, torch.nn.ReLU])
    tl1, tl2 = tparts[torch.nn.Linear]
    tr = tparts[torch.nn.ReLU][0]
    for a, b, ta, tb in [(lin1, relu, tl1, tr), (relu, lin1, tr, tl1), (lin2, lin1, tl2, tl1)]:
        assert check_subgraphs_connected(a, b) == tsm.check_subgraphs_connected(ta, tb)


def test_empty_graph_and_no_meta():
    g = fxkit.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.relu, (x,)))
    assert get_source_partitions(g, [torch.nn.ReLU]) == {}


def test_bad_input():
    with pytest.raises(TypeError, match="Graph"):
        get_source_partitions("graph", [torch.nn.Linear])
    with pytest.raises(TypeError, match="wanted_sources"):
        get_source_partitions(host(fxkit), torch.nn.Linear)
