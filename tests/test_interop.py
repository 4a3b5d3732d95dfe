"""fxkit <-> torch.fx conversion keeps structure, names, meta, pytree conventions and outputs."""

import pytest
import torch
import torch.fx as tfx

import fxkit
import zoo
from fxkit.interop import from_torch_fx, graph_from_torch_fx, graph_to_torch_fx, to_torch_fx

CASES = ["mlp", "resnet", "encoder", "kw_only", "pytree_inputs", "specialised", "named_tuple"]


def rows(graph):
    return [(n.op, n.name, str(n.target), str(n.args), str(dict(n.kwargs))) for n in graph.nodes]


@pytest.mark.parametrize("name", CASES)
def test_round_trips_with_same_code_and_outputs(name):
    case = zoo.BY_NAME[name]
    ours = zoo.trace(case, fxkit)
    converted = to_torch_fx(ours)
    assert isinstance(converted, tfx.GraphModule)
    assert rows(converted.graph) == rows(ours.graph)
    back = from_torch_fx(converted)
    assert isinstance(back, fxkit.GraphModule)
    assert back.code == ours.code
    args, kwargs = zoo.example(case)
    for a, b in zip(
        zoo.tensors_of(ours(*args, **kwargs)), zoo.tensors_of(converted(*args, **kwargs))
    ):
        assert torch.allclose(a, b)


def test_meta_is_carried():
    g = fxkit.Graph()
    x = g.placeholder("x")
    y = g.call_function(torch.relu, (x,))
    y.meta["custom"] = {"k": 1}
    g.output(y)
    t = graph_to_torch_fx(g)
    assert [n.meta.get("custom") for n in t.nodes] == [None, {"k": 1}, None]
    assert graph_from_torch_fx(t).find_nodes(op="call_function")[0].meta["custom"] == {"k": 1}


def test_bad_input():
    with pytest.raises(TypeError, match="fxkit GraphModule"):
        to_torch_fx(torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="torch.fx GraphModule"):
        from_torch_fx(torch.nn.Linear(1, 1))
    with pytest.raises(TypeError):
        graph_to_torch_fx(tfx.Graph())
    with pytest.raises(TypeError):
        graph_from_torch_fx(fxkit.Graph())
