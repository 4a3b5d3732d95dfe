"""fxkit.experimental.merge_matmul against torch.fx's: same merged graph, same outputs, the
same dependency answers."""

from __future__ import annotations

import pytest
import torch
import torch.fx as tfx
import torch.fx.experimental.merge_matmul as theirs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxkit
import fxkit.experimental.merge_matmul as ours
from zoo import CASES, example, make_root, tensors_of


class SharedWeight(nn.Module):
    """Three independent matmuls with one weight (read through separate get_attrs)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 5))

    def forward(self, a, b, c):
        return torch.matmul(a, self.w) + torch.matmul(b, self.w) * torch.matmul(c.relu(), self.w)


class SharedInput(nn.Module):
    """The shared right-hand side is a graph input."""

    def forward(self, a, b, rhs):
        return torch.matmul(a, rhs).sum() + torch.matmul(b, rhs).sum()


class Dependent(nn.Module):
    """The second matmul reads the first: nothing merges."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, a):
        return torch.matmul(torch.matmul(a, self.w), self.w)


class TwoGroups(nn.Module):
    """Two right-hand sides with two matmuls each (torch.fx raises "wrong graph" here)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.v = nn.Parameter(torch.randn(4, 4))

    def forward(self, a, b, c, d):
        x = torch.matmul(a, self.w) + torch.matmul(b, self.w)
        return x + torch.matmul(c, self.v) + torch.matmul(d, self.v)


class NoMatmul(nn.Module):
    def forward(self, x):
        return x.relu() @ x.t()


def _inputs(name):
    torch.manual_seed(1)
    shapes = {
        "shared_weight": [(3, 4), (2, 4), (3, 4)],
        "shared_input": [(3, 4), (2, 4), (4, 6)],
        "dependent": [(3, 4)],
        "two_groups": [(3, 4)] * 4,
        "no_matmul": [(3, 3)],
    }[name]
    return tuple(torch.randn(s) for s in shapes)


MODELS = {
    "shared_weight": SharedWeight,
    "shared_input": SharedInput,
    "dependent": Dependent,
    "no_matmul": NoMatmul,
}


def _code_of(gm) -> str:
    # the merged graph calls each library's own split_result_tensors
    return gm.code.replace("torch.fx.experimental", "fxkit.experimental")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_merge_matches_torch_fx(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    merged, reference = ours.merge_matmul(model), theirs.merge_matmul(model)
    assert isinstance(merged, fxkit.GraphModule)
    assert _code_of(merged) == _code_of(reference)
    args = _inputs(name)
    if name == "shared_weight":
        args = (args[0], args[0], args[2])  # the rows feed an elementwise product
    torch.testing.assert_close(merged(*args), model(*args))


def test_shared_weight_becomes_one_matmul():
    merged = ours.merge_matmul(SharedWeight())
    matmuls = [n for n in merged.graph.nodes if n.target is torch.matmul]
    assert len(matmuls) == 1
    assert any(n.target is ours.split_result_tensors for n in merged.graph.nodes)


def test_two_groups_merge_where_torch_fx_raises():
    torch.manual_seed(0)
    model = TwoGroups()
    with pytest.raises(RuntimeError, match="wrong graph"):
        theirs.merge_matmul(model)
    merged = ours.merge_matmul(model)
    assert sum(n.target is torch.matmul for n in merged.graph.nodes) == 2
    args = _inputs("two_groups")
    torch.testing.assert_close(merged(*args), model(*args))


def test_bad_input_same_exception_type():
    for bad in (None, 3):
        with pytest.raises(Exception) as theirs_err:
            theirs.merge_matmul(bad)
        with pytest.raises(type(theirs_err.value)):
            ours.merge_matmul(bad)


def test_split_result_tensors():
    inputs = [torch.randn(2, 3), torch.randn(4, 3)]
    result = torch.randn(6, 5)
    got, want = (
        ours.split_result_tensors(result, inputs),
        theirs.split_result_tensors(result, inputs),
    )
    assert [t.shape for t in got] == [t.shape for t in want] == [(2, 5), (4, 5)]
    # traced: recorded as a call, not split by concrete sizes
    gm = fxkit.symbolic_trace(lambda r, a, b: ours.split_result_tensors(r, [a, b]))
    assert any(n.target is torch.split for n in gm.graph.nodes)


def _chain_graphs(lib, edges, n):
    """The same DAG built in ``lib``: node i reads the nodes ``edges[i]`` (all < i)."""
    g = lib.Graph()
    nodes = []
    for i in range(n):
        inputs = [nodes[j] for j in edges[i]]
        if inputs:
            nodes.append(
                g.call_function(torch.add, tuple(inputs[:2]) if len(inputs) > 1 else (inputs[0], 1))
            )
            for extra in inputs[2:]:
                nodes[-1] = g.call_function(torch.add, (nodes[-1], extra))
        else:
            nodes.append(g.placeholder(f"p{i}"))
    g.output(nodes[-1])
    return nodes


@st.composite
def _dags(draw):
    n = draw(st.integers(2, 12))
    edges = [[]]
    for i in range(1, n):
        edges.append(sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))))
    return n, edges


@settings(max_examples=30, deadline=None)
@given(_dags(), st.integers(0, 7))
def test_may_depend_on_agrees_with_torch_fx(dag, depth):
    n, edges = dag
    ours_nodes, theirs_nodes = _chain_graphs(fxkit, edges, n), _chain_graphs(tfx, edges, n)
    for i in range(n):
        for j in range(n):
            want = theirs.may_depend_on(theirs_nodes[i], theirs_nodes[j], depth)
            assert ours.may_depend_on(ours_nodes[i], ours_nodes[j], depth) == want
    picks = list(range(0, n, 2))
    assert ours.are_nodes_independent([ours_nodes[i] for i in picks]) == (
        theirs.are_nodes_independent([theirs_nodes[i] for i in picks])
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zoo_differential(case):
    try:
        reference = theirs.merge_matmul(make_root(case))
    except Exception as exc:  # not traceable: fxkit raises its own TraceError (a ValueError)
        expected = ValueError if type(exc).__name__ == "TraceError" else type(exc)
        with pytest.raises(expected):
            ours.merge_matmul(make_root(case))
        return
    merged = ours.merge_matmul(make_root(case))
    assert merged.code == reference.code.replace("torch.fx.", "fxkit.")
    args, kwargs = example(case)
    got, want = tensors_of(merged(*args, **kwargs)), tensors_of(reference(*args, **kwargs))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
