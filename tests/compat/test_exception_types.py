"""Differential: bad input raises exactly torch.fx's exception type (not a subclass mixing in
another builtin), and fxkit's message starts with torch.fx's text."""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import pytest
import torch
import torch.fx as tfx
import torch.fx.traceback as tfx_traceback
from torch.fx.passes.utils import matcher_utils as tfx_matcher

import fxkit
import fxkit.traceback as fk_traceback
from fxkit.passes.utils import matcher_utils as fk_matcher

# Each script takes (fx, fx.traceback, matcher_utils) and must raise.
Script = Callable[[Any, Any, Any], Any]


def _graph_with_relu(fx: Any) -> Any:
    g = fx.Graph()
    x = g.placeholder("x")
    return g, g.call_function(torch.relu, (x,))


def _bad_create_arg(fx: Any) -> None:
    class Broken(fx.Tracer):
        def create_arg(self, a: Any) -> Any:
            r = super().create_arg(a)
            return list(r) if isinstance(r, tuple) else r

    Broken().trace(lambda x: torch.relu(x))


def _param_proxy(fx: Any) -> None:
    g = fx.Graph()
    fx.proxy.ParameterProxy(fx.proxy.GraphAppendingTracer(g), g.get_attr("w"), "w", torch.ones(1))


def _dead_pattern(fx: Any, mu: Any) -> None:
    g = fx.Graph()
    x = g.placeholder("x")
    g.call_function(torch.neg, (x,))
    g.output(x)
    mu.SubgraphMatcher(g)


def _missing_traced_func(fx: Any) -> None:
    t = fx.Tracer()
    t.traced_func_name = "nope"
    t.trace(torch.nn.ReLU())


class _NoName:
    def __call__(self) -> None:
        pass


CASES: Dict[str, Script] = {
    "create_arg returns a list": lambda fx, tb, mu: _bad_create_arg(fx),
    "ParameterProxy of a tensor": lambda fx, tb, mu: _param_proxy(fx),
    "NodeSource with a str action": lambda fx, tb, mu: tb.NodeSource(None, "p", ["create"]),
    "NodeSource._from_dict of a list": lambda fx, tb, mu: tb.NodeSource._from_dict([1]),
    "SubgraphMatcher of a dead-code pattern": lambda fx, tb, mu: _dead_pattern(fx, mu),
    "output_node without an output": lambda fx, tb, mu: _graph_with_relu(fx)[0].output_node(),
    "create_node with list args": lambda fx, tb, mu: fx.Graph().create_node(
        "call_function", torch.relu, [1]
    ),
    "create_node with list kwargs": lambda fx, tb, mu: fx.Graph().create_node(
        "call_function", torch.relu, (1,), [("a", 1)]
    ),
    "create_node with an unknown op": lambda fx, tb, mu: fx.Graph().create_node("bogus", "x"),
    "erase_node of a str": lambda fx, tb, mu: fx.Graph().erase_node("x"),
    "erase_node of None": lambda fx, tb, mu: fx.Graph().erase_node(None),
    "insert_arg out of range": lambda fx, tb, mu: _graph_with_relu(fx)[1].insert_arg(5, 1),
    "insert_arg negative": lambda fx, tb, mu: _graph_with_relu(fx)[1].insert_arg(-1, 1),
    "map_arg with a non-callable": lambda fx, tb, mu: fx.node.map_arg((1,), 3),
    "Tracer(autowrap_modules=(int,))": lambda fx, tb, mu: fx.Tracer(autowrap_modules=(1,)),
    "traced_func_name missing": lambda fx, tb, mu: _missing_traced_func(fx),
    "symbolic_trace of a builtin": lambda fx, tb, mu: fx.symbolic_trace(torch.nn.functional.gelu),
    "symbolic_trace of a bound method": lambda fx, tb, mu: fx.symbolic_trace(
        torch.nn.ReLU().forward
    ),
    "symbolic_trace of a partial": lambda fx, tb, mu: fx.symbolic_trace(
        functools.partial(torch.add, 1)
    ),
    "wrap of an int": lambda fx, tb, mu: fx.wrap(3),
    "wrap of a nameless callable": lambda fx, tb, mu: fx.wrap(_NoName()),
}


def _replacement_without_output(fx: Any) -> Any:
    rep = fx.Graph()
    rep.call_function(torch.neg, (rep.placeholder("x"),))
    return rep


@pytest.mark.parametrize("rewriter", [tfx.subgraph_rewriter, fxkit.subgraph_rewriter])
def test_replacement_without_an_output_is_a_type_error(rewriter: Any) -> None:
    fx = tfx if rewriter is tfx.subgraph_rewriter else fxkit
    gm = fx.symbolic_trace(lambda x: torch.relu(x) + 1)
    before = gm.code
    with pytest.raises(TypeError):
        rewriter.replace_pattern_with_filters(
            gm, lambda x: torch.relu(x), _replacement_without_output(fx)
        )
    if fx is fxkit:
        assert gm.code == before and "relu" in str(gm.graph)


@pytest.mark.parametrize("script", list(CASES.values()), ids=list(CASES))
def test_same_exception_type_as_torch_fx(script: Script) -> None:
    with pytest.raises(Exception) as ref:
        script(tfx, tfx_traceback, tfx_matcher)
    with pytest.raises(Exception) as got:
        script(fxkit, fk_traceback, fk_matcher)
    assert type(got.value) is type(ref.value)
    assert str(got.value).startswith(str(ref.value).split("\n", 1)[0])
