"""annotate_getitem_nodes against torch.fx's on many annotations and indexes, on traced code,
and on malformed getitem nodes."""

import operator
import re
from typing import Dict, ForwardRef, List, NamedTuple, Optional, Tuple

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes.annotate_getitem_nodes import (
    annotate_getitem_nodes as torch_annotate,
)

import fxkit
from fxkit.passes.annotate_getitem_nodes import annotate_getitem_nodes


class Pair(NamedTuple):
    first: torch.Tensor
    second: int


class Lazy(NamedTuple):
    name: "str"
    count: "List[int]"


class Annotated:
    field: int


ANNOTATIONS = [
    None, int, torch.Tensor, Pair, Lazy, Annotated,
    Tuple[int, str], Tuple[torch.Tensor, ...], Tuple[()], Tuple, tuple[int, float, str],
    tuple[int, ...], tuple, List[int], List, list[str], list, Dict[str, int], dict[str, int],
    Optional[Tuple[int, int]],
]  # fmt: skip
INDEXES = [0, 1, 2, -1, 5, slice(0, 1), "key"]


def graph_with(fx, annotation, indexes):
    g = fx.Graph()
    seq = g.placeholder("seq", type_expr=annotation)
    items = [g.call_function(operator.getitem, (seq, i)) for i in indexes]
    g.output(tuple(items))
    return g


def outcome(fx, annotate, annotation, indexes):
    g = graph_with(fx, annotation, indexes)
    try:
        annotate(g)
    except Exception as e:
        error = (type(e), str(e))
    else:
        error = None
    return error, [n.type for n in g.nodes]


@settings(max_examples=200, deadline=None)
@given(
    annotation=st.sampled_from(ANNOTATIONS),
    indexes=st.lists(st.sampled_from(INDEXES), min_size=1, max_size=3),
)
def test_same_types_and_errors_as_torch_fx(annotation, indexes):
    ours = outcome(fxkit, annotate_getitem_nodes, annotation, indexes)
    theirs = outcome(tfx, torch_annotate, annotation, indexes)
    assert ours == theirs


@pytest.mark.parametrize(
    "annotation,index,expected",
    [
        (Tuple[int, str], 1, str),
        (tuple[int, float], 0, int),
        (Tuple[torch.Tensor, ...], 7, torch.Tensor),
        (List[int], 3, int),
        (list[str], 0, str),
        (Pair, 0, torch.Tensor),
        (Pair, 1, int),
        (Lazy, 1, ForwardRef("List[int]")),  # string annotations stay unevaluated
        (Dict[str, int], "a", None),
        (torch.Tensor, 0, None),
        (None, 0, None),
    ],
)
def test_known_cases(annotation, index, expected):
    for fx, annotate in ((fxkit, annotate_getitem_nodes), (tfx, torch_annotate)):
        g = graph_with(fx, annotation, [index])
        annotate(g)
        assert list(g.nodes)[1].type == expected


@pytest.mark.parametrize(
    "annotation,index,error,text",
    [
        (Tuple[int, str], 2, AssertionError, "Index 2 out of range for parameterized_types"),
        (Tuple, 0, AssertionError, "(len=0)"),
        (List, 0, AssertionError, "Expected 1 parameterized type, got 0"),
        (Pair, 2, IndexError, ""),
        (Annotated, 0, AttributeError, "_fields"),
        (Tuple[int], slice(0, 1), TypeError, ""),
    ],
)
def test_errors(annotation, index, error, text):
    for fx, annotate in ((fxkit, annotate_getitem_nodes), (tfx, torch_annotate)):
        with pytest.raises(error, match=re.escape(text) if text else None):
            annotate(graph_with(fx, annotation, [index]))


class Splitter(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int]:
        return x, 3


def traced(fx):
    class Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.split = Splitter()

        def forward(self, x):
            a, b = self.split(x)
            return a * b

    class Leaves(fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, Splitter) or super().is_leaf_module(m, name)

    root = Root()
    graph = Leaves().trace(root)
    for node in graph.nodes:  # the annotation a caller (or a typed tracer) would set
        if node.op == "call_module":
            node.type = Tuple[torch.Tensor, int]
    return fx.GraphModule(root, graph)


def test_traced_module_gets_its_getitems_typed():
    types = []
    for fx, annotate in ((fxkit, annotate_getitem_nodes), (tfx, torch_annotate)):
        gm = traced(fx)
        annotate(gm.graph)
        types.append([(n.name, n.type) for n in gm.graph.nodes if n.target is operator.getitem])
    assert types[0] == types[1] == [("getitem", torch.Tensor), ("getitem_1", int)]


def malformed(fx, how):
    g = fx.Graph()
    x = g.placeholder("x", type_expr=Tuple[int, int])
    if how == "constant":
        g.call_function(operator.getitem, ((1, 2), 0))
    elif how == "one_arg":
        g.call_function(operator.getitem, (x,))
    else:
        g.call_function(operator.getitem, (x, 0, 1))
    return g


@pytest.mark.parametrize("how", ["constant", "one_arg", "three_args"])
def test_malformed_getitem_nodes_fail_like_torch_fx(how):
    with pytest.raises(Exception) as ours:
        annotate_getitem_nodes(malformed(fxkit, how))
    with pytest.raises(Exception) as theirs:
        torch_annotate(malformed(tfx, how))
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_other_nodes_and_bad_graph():
    g = graph_with(fxkit, Tuple[int], [0])
    g.call_function(torch.relu, (list(g.nodes)[0],))
    annotate_getitem_nodes(g)
    assert [n.type for n in g.nodes if n.target is torch.relu] == [None]
    for annotate in (annotate_getitem_nodes, torch_annotate):
        with pytest.raises(AttributeError, match="nodes"):
            annotate("not a graph")
