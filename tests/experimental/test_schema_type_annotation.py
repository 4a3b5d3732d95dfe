"""fxkit.experimental.schema_type_annotation against torch.fx's: the node types it infers
(functionals, torch.nn modules, attributes), its switches, and its errors."""

from __future__ import annotations

import typing

import pytest
import torch
import torch.fx as tfx
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.schema_type_annotation import AnnotateTypesWithSchema as TA

import fxkit
from fxkit.experimental.schema_type_annotation import AnnotateTypesWithSchema as KA
from zoo import CASES, graph_signature, trace

SWITCHES = {
    "all": {},
    "no_functionals": {"annotate_functionals": False},
    "no_modules": {"annotate_modules": False},
    "no_get_attrs": {"annotate_get_attrs": False},
}


def types_of(gm):
    return [(n.name, repr(n.type)) for n in gm.graph.nodes]


def assert_same_types(t_gm, k_gm, **switches):
    theirs = TA(t_gm, **switches).transform()
    ours = KA(k_gm, **switches).transform()
    assert types_of(ours) == types_of(theirs)
    assert graph_signature(ours) == graph_signature(theirs)
    return ours


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zoo_types_equal_torch_fx(case):
    assert_same_types(trace(case, tfx), trace(case, fxkit))


class Annotated(nn.Module):
    """Functionals (plain and boolean-dispatched), torch.nn and custom modules, and
    attributes of several kinds read with get_attr."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.sub = nn.Module()
        self.sub.weight = nn.Parameter(torch.randn(4))
        self.register_buffer("table", torch.arange(4.0))
        self.custom = Custom()
        self.seq = nn.Sequential(nn.ReLU())

    def forward(self, x):
        y = F.relu(self.lin(x)) + self.sub.weight + self.table
        pooled = F.max_pool1d(y.unsqueeze(0), 2)  # branches return the same type
        both = F.max_pool1d(y.unsqueeze(0), 2, return_indices=True)  # branches differ
        z = F.gelu(self.custom(y)) * F.dropout(y, 0.0)
        return pooled, both, self.seq(z), torch.relu(z), z.sum()


class Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.parametrize("switch", list(SWITCHES), ids=list(SWITCHES))
def test_annotated_model(switch):
    ours = assert_same_types(
        tfx.symbolic_trace(Annotated()), fxkit.symbolic_trace(Annotated()), **SWITCHES[switch]
    )
    types = dict(types_of(ours))
    if switch == "all":
        assert types["lin"] == repr(torch.Tensor)
        assert types["relu"] == repr(torch.Tensor)
        assert types["sub_weight"] == repr(torch.Tensor)
        assert types["dropout"] == repr(torch.Tensor)
        assert types["gelu"] == "None"  # a builtin: no signature to read
    if switch == "no_modules":
        assert types["lin"] == "None"


def test_get_attr_of_non_tensor_values():
    def build(lib):
        root = nn.Module()
        root.ints = [1, 2, 3]
        root.scale = 2.5
        root.name = "n"
        root.pair = (torch.ones(1), 3)
        g = lib.Graph()
        x = g.placeholder("x")
        outs = [g.get_attr(a) for a in ("ints", "scale", "name", "pair")]
        g.output((x, *outs))
        return lib.GraphModule(root, g)

    ours = assert_same_types(build(tfx), build(fxkit))
    types = dict(types_of(ours))
    assert types["ints"] == repr(typing.List[int])
    assert types["scale"] == repr(float)


def test_accepts_a_torch_fx_graph_module():
    theirs = TA(tfx.symbolic_trace(Annotated())).transform()
    ours = KA(tfx.symbolic_trace(Annotated())).transform()
    assert isinstance(ours, fxkit.GraphModule)
    assert types_of(ours) == types_of(theirs)


def test_return_type_helper():
    t_pass, k_pass = TA(tfx.symbolic_trace(Custom())), KA(fxkit.symbolic_trace(Custom()))
    for fn in (F.relu, Custom().forward, len, lambda x: x, torch.add):
        assert k_pass._extract_python_return_type(fn) == t_pass._extract_python_return_type(fn)
    with pytest.raises(AssertionError):
        t_pass._extract_python_return_type("relu")
    with pytest.raises(AssertionError):
        k_pass._extract_python_return_type("relu")


# --- bad input ------------------------------------------------------------------------------


def _missing_attr(lib):
    g = lib.Graph()
    g.output(g.get_attr("sub.missing"))
    root = nn.Module()
    root.sub = nn.Module()
    root.sub.missing = torch.ones(1)
    gm = lib.GraphModule(root, g)
    del gm.sub.missing  # removed after construction, which copies what get_attr reads
    return gm


def test_missing_attribute_raises_like_torch_fx():
    with pytest.raises(RuntimeError) as theirs:
        TA(_missing_attr(tfx)).transform()
    with pytest.raises(RuntimeError) as ours:
        KA(_missing_attr(fxkit)).transform()
    want = str(theirs.value).splitlines()[0]
    assert "Node referenced nonextent target sub!" in want
    assert want in str(ours.value)


def test_missing_attribute_without_get_attr_annotation():
    # Not looked up by the pass; building the result module then fails to copy it.
    with pytest.raises(AttributeError):
        TA(_missing_attr(tfx), annotate_get_attrs=False).transform()
    with pytest.raises(AttributeError):
        KA(_missing_attr(fxkit), annotate_get_attrs=False).transform()


def test_not_a_module():
    with pytest.raises(AttributeError):
        TA(object())
    with pytest.raises(AttributeError):
        KA(object())
