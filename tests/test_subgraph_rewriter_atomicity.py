"""replace_pattern is atomic: a rewrite that raises midway (a replacement callback, a
filter, a node hook, a bad replacement) leaves the graph exactly as it was, on fxkit and on
torch.fx GraphModules alike."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx import subgraph_rewriter as tfx_rw

import fxkit
from fxkit import subgraph_rewriter as rw
from fxkit._symbolic_trace import symbolic_trace
from test_subgraph_rewriter import canon


def _chain_gm(fx, n: int):
    """``n`` occurrences of relu(x + y) feeding each other, in library ``fx``."""
    g = fx.Graph()
    x, y = g.placeholder("x"), g.placeholder("y")
    cur = x
    for _ in range(n):
        cur = g.call_function(torch.relu, (g.call_function(operator.add, (cur, y)),))
        cur.meta["tag"] = cur.name
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


def _snapshot(gm):
    rows = [(n.name, n.op, str(n.target), repr(n.args), repr(n.kwargs), dict(n.meta))
            for n in gm.graph.nodes]  # fmt: skip
    return rows, gm.code


def _add_relu(a, b):
    return torch.relu(a + b)


def _sub(a, b):
    return torch.sub(a, b)


def _sub_neg(a, b):
    return torch.sub(a, b).neg()


def _raise_on_call(k: int, exc: Exception):
    calls = []

    def fn(*args):
        calls.append(args)
        if len(calls) == k:
            raise exc
        return True

    return fn


@pytest.mark.parametrize("fx", [fxkit, tfx], ids=["fxkit_gm", "torch_fx_gm"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), data=st.data())
def test_raising_replacement_callback_leaves_graph_unchanged(fx, n, data):
    k = data.draw(st.integers(1, n))
    gm = _chain_gm(fx, n)
    before = _snapshot(gm)

    def failing_callback(rep):
        fails = _raise_on_call(k, ValueError("boom"))

        def callback(match, original, pattern):
            fails()
            return rep

        return callback

    callback = failing_callback(symbolic_trace(_sub).graph)
    with pytest.raises(ValueError, match="boom"):
        rw.replace_pattern_with_filters(gm, _add_relu, replacement_callback=callback)
    assert _snapshot(gm) == before
    gm.graph.lint()
    # torch.fx lets the same exception through (leaving its graph half rewritten).
    callback = failing_callback(tfx.symbolic_trace(_sub).graph)
    with pytest.raises(ValueError, match="boom"):
        tfx_rw.replace_pattern_with_filters(
            _chain_gm(tfx, n), _add_relu, replacement_callback=callback
        )
    # After the failure the rewrite still works, as on a fresh graph.
    rw.replace_pattern(gm, _add_relu, _sub)
    fresh = _chain_gm(tfx, n)
    tfx.replace_pattern(fresh, _add_relu, _sub)
    assert canon(gm.graph) == canon(fresh.graph)


@pytest.mark.parametrize("fx", [fxkit, tfx], ids=["fxkit_gm", "torch_fx_gm"])
def test_raising_filter_leaves_graph_unchanged(fx):
    for lib, gm in ((rw, _chain_gm(fx, 3)), (tfx_rw, _chain_gm(tfx, 3))):
        before = _snapshot(gm)
        with pytest.raises(KeyError):
            lib.replace_pattern_with_filters(
                gm, _add_relu, _sub, match_filters=[_raise_on_call(2, KeyError("f"))]
            )
        assert _snapshot(gm) == before


@pytest.mark.parametrize("fx", [fxkit, tfx], ids=["fxkit_gm", "torch_fx_gm"])
def test_node_creation_failing_mid_insertion_leaves_graph_unchanged(fx):
    gm = _chain_gm(fx, 3)
    before = _snapshot(gm)
    created = []

    def hook(node):
        created.append(node)
        if len(created) == 4:  # inside the second occurrence's copy
            raise RuntimeError("no more nodes")

    gm._create_node_hooks = [hook]
    with pytest.raises(RuntimeError, match="no more nodes"):
        rw.replace_pattern(gm, _add_relu, _sub_neg)
    gm._create_node_hooks = []
    assert _snapshot(gm) == before
    gm.graph.lint()


def test_replacement_returning_a_constant_leaves_graph_unchanged():
    gm = _chain_gm(fxkit, 2)
    before = _snapshot(gm)
    rep = fxkit.Graph()
    a, b = rep.placeholder("a"), rep.placeholder("b")
    rep.call_function(torch.sub, (a, b))
    rep.output(3)
    with pytest.raises(TypeError, match="must be a node"):
        rw.replace_pattern(gm, _add_relu, rep)
    assert _snapshot(gm) == before
