"""operator_support compared with torch.fx's: support tables with dtype rules, functional
wrappers, and/or chains, the ready-made OpSupports checks, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.fx as tfx
from torch.fx.passes import operator_support as tos
from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp

import fxkit
from fxkit.passes import operator_support as fos
from fxkit.passes.shape_prop import ShapeProp
from zoo import CASES, example, trace

LIBS = {"fxkit": (fxkit, fos, ShapeProp), "torch.fx": (tfx, tos, TorchShapeProp)}


class Mixed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x, idx):
        y = self.lin(x).relu()
        z = torch.add(y, x, alpha=2)
        w = y.index_select(0, idx)
        return z.to(torch.float16) + 1, w.sum(dim=0, keepdim=True), torch.add(x, other=y)


def _inputs():
    return torch.randn(3, 4), torch.tensor([0, 2])


TABLES = {
    "empty": {},
    "any_dtype": {"torch.add": None, "relu": None, "_operator.add": None},
    "float_args": {
        "torch.add": (([torch.float32], [torch.float32]), {}),
        "index_select": ((None, None, [torch.int32]), {}),
        "torch.nn.modules.linear.Linear": (([torch.float16],), {}),
        "_operator.add": (([torch.float16], None), {}),
    },
    "kwarg_rules": {
        "torch.add": ((), {"other": [torch.float64], "alpha": [torch.float32]}),
        "sum": (([torch.float32],), {"dim": [torch.int64]}),
        "to": None,
    },
}


def _support_of(lib, make_support, with_meta=True):
    fx, module, prop = LIBS[lib]
    gm = fx.symbolic_trace(Mixed())
    if with_meta:
        prop(gm).propagate(*_inputs())
    support = make_support(module)
    mods = dict(gm.named_modules())
    return {n.name: support.is_node_supported(mods, n) for n in gm.graph.nodes}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_operator_support_table_matches_torch_fx(table):
    def make(module):
        return module.OperatorSupport(TABLES[table])

    assert _support_of("fxkit", make) == _support_of("torch.fx", make)


def test_default_table_supports_only_non_callables():
    result = _support_of("fxkit", lambda m: m.OperatorSupport())
    assert result["x"] and result["idx"] and result["output"]
    assert not result["relu"] and not result["lin"]


COMBOS = {
    "chain": lambda m: m.chain(
        m.OperatorSupport(TABLES["any_dtype"]),
        m.OpSupports.decline_if_node_in_names({"relu"}),
    ),
    "any_chain": lambda m: m.any_chain(
        m.OperatorSupport({"relu": None}),
        m.create_op_support(lambda mods, n: n.op == "call_module"),
    ),
    "decline_int64": lambda m: m.OpSupports.decline_if_input_dtype(torch.int64),
    "decline_float32": lambda m: m.OpSupports.decline_if_input_dtype(torch.float32),
    "nested": lambda m: m.any_chain(
        m.chain(m.OperatorSupport(TABLES["float_args"])),
        m.chain(),
    ),
    "empty_any": lambda m: m.any_chain(),
}


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_combinators_match_torch_fx(combo):
    assert _support_of("fxkit", COMBOS[combo]) == _support_of("torch.fx", COMBOS[combo])


def test_chains_stop_at_first_answer():
    calls = []

    def record(answer):
        def check(mods, node):
            calls.append(answer)
            return answer

        return fos.create_op_support(check)

    node = fxkit.Graph().placeholder("x")
    assert not fos.chain(record(False), record(True)).is_node_supported({}, node)
    assert fos.any_chain(record(True), record(False)).is_node_supported({}, node)
    assert calls == [False, True]


@pytest.mark.parametrize("case", CASES[:3], ids=[c.name for c in CASES[:3]])
def test_support_on_zoo_models(case):
    table = {
        "torch.nn.modules.conv.Conv2d": None,
        "torch.nn.modules.linear.Linear": (([torch.float32],), {}),
        "relu": None,
        "_operator.add": None,
        "torch.relu": None,
        "size": None,
    }
    results = []
    for lib, fx in (("fxkit", fxkit), ("torch.fx", tfx)):
        gm = trace(case, fx)
        args, kwargs = example(case)
        LIBS[lib][2](gm).propagate(*args, *kwargs.values())
        support = LIBS[lib][1].OperatorSupport(table)
        mods = dict(gm.named_modules())
        results.append([support.is_node_supported(mods, n) for n in gm.graph.nodes])
    assert results[0] == results[1]


def test_works_on_torch_fx_nodes():
    gm = tfx.symbolic_trace(Mixed())
    TorchShapeProp(gm).propagate(*_inputs())
    mods = dict(gm.named_modules())
    ours = fos.OperatorSupport(TABLES["float_args"])
    theirs = tos.OperatorSupport(TABLES["float_args"])
    assert [ours.is_node_supported(mods, n) for n in gm.graph.nodes] == [
        theirs.is_node_supported(mods, n) for n in gm.graph.nodes
    ]


def test_dtype_rule_without_shape_prop_raises_key_error_like_torch_fx():
    def make(module):
        return module.OperatorSupport(TABLES["float_args"])

    for lib in LIBS:
        with pytest.raises(KeyError):
            _support_of(lib, make, with_meta=False)


def test_base_class_is_abstract():
    with pytest.raises(TypeError):
        fos.OperatorSupportBase()

    class Partial(fos.OperatorSupportBase):
        def is_node_supported(self, submodules, node):
            return super().is_node_supported(submodules, node)

    with pytest.raises(NotImplementedError):
        Partial().is_node_supported({}, fxkit.Graph().placeholder("x"))


def test_unknown_submodule_raises_key_error():
    g = fxkit.Graph()
    node = g.call_module("missing", (g.placeholder("x"),))
    with pytest.raises(KeyError):
        fos.OperatorSupport({"relu": None}).is_node_supported({}, node)


def test_non_node_argument_to_dtype_check_is_an_assertion():
    with pytest.raises(AssertionError, match="Expected torch.fx.Node"):
        fos._get_arg_dtype(3)
    with pytest.raises(AssertionError, match="Expected torch.fx.Node"):
        tos._get_arg_dtype(3)


def test_public_names():
    assert set(fos.__all__) == set(tos.__all__)
    assert fos.TargetTypeName is str
    assert fos.SupportDict is not None and fos.IsNodeSupported is not None
