"""fxkit.save / fxkit.load: round trips keep graph, code, meta and outputs; hostile or damaged
files fail with a clear error and run nothing."""

from __future__ import annotations

import io
import json
import operator
import os
import pickle
import sys
import zipfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxkit
from fxkit.passes.shape_prop import ShapeProp
from fxkit.serialize import DisallowedNameError, FormatError, load, save
from zoo import CASES, example, trace


def round_trip(gm, **load_kwargs):
    buf = io.BytesIO()
    save(gm, buf)
    buf.seek(0)
    return load(buf, **load_kwargs)


def outputs_equal(a, b):
    flat_a, flat_b = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_zoo_round_trip_keeps_graph_code_and_outputs(case):
    gm = trace(case, fxkit)
    loaded = round_trip(gm, allowed=["zoo"])
    assert str(loaded.graph) == str(gm.graph)
    assert loaded.code == gm.code
    assert type(loaded).__name__ == type(gm).__name__
    args, kwargs = example(case)
    torch.manual_seed(0)
    expected = gm(*args, **kwargs)
    torch.manual_seed(0)
    outputs_equal(loaded(*args, **kwargs), expected)
    assert loaded.state_dict().keys() == gm.state_dict().keys()


def test_user_functions_need_the_allowlist():
    case = next(c for c in CASES if c.name == "wrapped")
    gm = trace(case, fxkit)
    with pytest.raises(DisallowedNameError, match="zoo.pair_energy.*allowlist"):
        round_trip(gm)
    import zoo

    loaded = round_trip(gm, allowed=[zoo.pair_energy, zoo.clamp_rows])
    assert loaded.code == gm.code


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.head = nn.Linear(5, 2)
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        seq = y.flatten(2).transpose(1, 2)
        out, _ = self.lstm(seq)
        return self.head(out[:, -1]) * self.scale


def test_meta_and_module_state_survive():
    m = Block().eval()
    gm = fxkit.symbolic_trace(m)
    x = torch.randn(2, 3, 4, 4)
    ShapeProp(gm).propagate(x)
    loaded = round_trip(gm)
    for a, b in zip(gm.graph.nodes, loaded.graph.nodes):
        assert a.meta.get("tensor_meta") == b.meta.get("tensor_meta")
        assert a.meta.get("type") is b.meta.get("type")
        assert a.meta.get("stack_trace") == b.meta.get("stack_trace")
    assert "scale" in loaded._non_persistent_buffers_set
    assert not loaded.training
    assert loaded.lstm.batch_first and loaded.bn.eps == m.bn.eps
    outputs_equal(loaded(x), gm(x))
    # the flat-weight list of the RNN points at the loaded parameters, not copies
    assert loaded.lstm._flat_weights[0] is loaded.lstm.weight_ih_l0


def test_shared_parameters_stay_shared():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    loaded = round_trip(fxkit.symbolic_trace(Tied()))
    assert loaded.a.weight is loaded.b.weight


def test_shape_aware_trace_keeps_its_guards():
    class Branchy(nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:
                return x.sum(0)
            return x * 2

    gm = fxkit.symbolic_trace(Branchy(), example_inputs=(torch.randn(4, 3),))
    loaded = round_trip(gm)
    assert type(loaded).__mro__[1].__name__ == "GuardedGraphModule"
    outputs_equal(loaded(torch.ones(5, 3)), gm(torch.ones(5, 3)))
    with pytest.raises(Exception, match="shape") as info:
        loaded(torch.ones(1, 3))
    assert type(info.value).__name__ == "GuardError"


def test_make_fx_graph_round_trip_restores_fake_values():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        return torch.nn.functional.gelu(x @ w).sum(-1)

    x, w = torch.randn(3, 4), torch.randn(4, 5)
    aten = make_fx(f, tracing_mode="fake")(x, w)
    loaded = round_trip(aten)  # a torch.fx GraphModule is converted on the way in
    assert [n.target for n in loaded.graph.nodes if n.op == "call_function"] == [
        n.target for n in aten.graph.nodes if n.op == "call_function"
    ]
    outputs_equal(loaded(x, w), f(x, w))
    vals = [n.meta.get("val") for n in loaded.graph.nodes if n.op == "call_function"]
    assert vals[0].shape == (3, 5) and vals[-1].shape == (3,)


def test_nested_graph_modules_round_trip():
    inner = fxkit.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    g = fxkit.Graph()
    x = g.placeholder("x")
    y = g.call_module("inner", (x,))
    g.output(g.call_function(operator.add, (y, x)))
    root = nn.Module()
    root.inner = inner
    outer = fxkit.GraphModule(root, g)
    loaded = round_trip(outer)
    assert isinstance(loaded.inner, fxkit.GraphModule)
    assert loaded.inner.code == inner.code
    t = torch.randn(2, 3)
    outputs_equal(loaded(t), outer(t))


def test_torch_weights_format_when_safetensors_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    gm = fxkit.symbolic_trace(nn.Linear(3, 2))
    buf = io.BytesIO()
    save(gm, buf)
    assert "weights.pt" in zipfile.ZipFile(io.BytesIO(buf.getvalue())).namelist()
    buf.seek(0)
    loaded = load(buf)
    torch.testing.assert_close(loaded.weight, gm.weight)


# --- damaged and hostile files ------------------------------------------------------------------


def saved_bytes(gm=None) -> bytes:
    buf = io.BytesIO()
    save(gm if gm is not None else fxkit.symbolic_trace(nn.Sequential(nn.Linear(3, 3))), buf)
    return buf.getvalue()


def rewrite(data: bytes, edit) -> io.BytesIO:
    """Apply ``edit`` to the parsed graph.json of a saved file and re-pack it."""
    src = zipfile.ZipFile(io.BytesIO(data))
    doc = json.loads(src.read("graph.json"))
    edit(doc)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("graph.json", json.dumps(doc))
        for name in src.namelist():
            if name != "graph.json":
                z.writestr(name, src.read(name))
    out.seek(0)
    return out


def first_call(doc):
    return next(n for n in doc["root"]["graph"]["nodes"] if n[1] == "call_function")


def fn_graph_bytes():
    def f(x):
        return torch.relu(x) + 1

    return saved_bytes(fxkit.symbolic_trace(f))


@pytest.mark.parametrize(
    "target",
    [
        "os.system",
        "builtins.exec",
        "builtins.eval",
        "torch.load",
        "subprocess.call",
        "pickle.loads",
    ],
)
def test_edited_call_target_is_refused(target):
    def edit(doc):
        first_call(doc)[2] = target

    with pytest.raises(DisallowedNameError, match="allowlist|loaded object"):
        load(rewrite(fn_graph_bytes(), edit))


@pytest.mark.parametrize("attr", ["__class__", "__globals__", "relu.__globals__", "a b"])
def test_introspection_attributes_are_refused(attr):
    def edit(doc):
        node = first_call(doc)
        node[1], node[2] = "call_method", attr

    with pytest.raises(DisallowedNameError, match="not allowed"):
        load(rewrite(fn_graph_bytes(), edit))


def test_module_class_outside_the_allowlist_is_refused():
    def edit(doc):
        doc["root"]["children"]["0"]["class"] = "subprocess.Popen"

    with pytest.raises(DisallowedNameError, match="subprocess.Popen"):
        load(rewrite(saved_bytes(), edit))


def test_allowlisted_name_that_is_not_a_module_class_is_refused():
    def edit(doc):
        doc["root"]["children"]["0"]["class"] = "torch.relu"

    with pytest.raises(DisallowedNameError, match="not an nn.Module class"):
        load(rewrite(saved_bytes(), edit))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda doc: doc.update(version=99), "version 99"),
        (lambda doc: doc.update(format="other"), "not an fxkit graph file"),
        (lambda doc: first_call(doc).__setitem__(3, {"$zzz": 1}), "unknown value tag"),
        (lambda doc: first_call(doc).__setitem__(3, {"$t": [{"$n": "nope"}]}), "nope"),
        (lambda doc: first_call(doc).__setitem__(1, "call_everything"), "unknown op"),
        (lambda doc: first_call(doc).__setitem__(0, "not a name"), "bad node name"),
        (lambda doc: doc["root"]["graph"]["nodes"].append([1, 2]), "malformed node"),
    ],
    ids=["version", "format", "tag", "dangling", "op", "name", "short-node"],
)
def test_edited_documents_fail_clearly(edit, match):
    with pytest.raises(FormatError, match=match):
        load(rewrite(fn_graph_bytes(), edit))


def test_truncated_and_garbage_files_fail_clearly(tmp_path):
    data = saved_bytes()
    for bad in (data[: len(data) // 2], b"", b"not a zip at all"):
        with pytest.raises(FormatError, match="truncated or not a zip"):
            load(io.BytesIO(bad))
    path = tmp_path / "g.fxkit"
    path.write_bytes(data[:-10])
    with pytest.raises(FormatError):
        load(path)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fxkit_pwned_by_test",))


def test_a_pickle_inside_is_never_unpickled(tmp_path):
    marker = "/tmp/fxkit_pwned_by_test"
    if os.path.exists(marker):
        os.remove(marker)
    data = saved_bytes()
    src = zipfile.ZipFile(io.BytesIO(data))
    # an extra entry holding a pickle
    extra = io.BytesIO()
    with zipfile.ZipFile(extra, "w") as z:
        for name in src.namelist():
            z.writestr(name, src.read(name))
        z.writestr("data.pkl", pickle.dumps(_Boom()))
    with pytest.raises(FormatError, match="unexpected entries"):
        load(io.BytesIO(extra.getvalue()))
    # a weights.pt that is a hostile pickle in torch's format
    hostile = io.BytesIO()
    torch.save({"w": _Boom()}, hostile)
    swapped = io.BytesIO()
    with zipfile.ZipFile(swapped, "w") as z:
        z.writestr("graph.json", src.read("graph.json"))
        z.writestr("weights.pt", hostile.getvalue())
    with pytest.raises(FormatError, match="weights.pt"):
        load(io.BytesIO(swapped.getvalue()))
    assert not os.path.exists(marker)


def test_save_bad_inputs():
    with pytest.raises(TypeError, match="expects a GraphModule"):
        save(nn.Linear(2, 2), io.BytesIO())
    g = fxkit.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(lambda t: t + 1, (x,)))
    with pytest.raises(TypeError, match="node .*qualified name"):
        save(fxkit.GraphModule(nn.Module(), g), io.BytesIO())
    gm = fxkit.symbolic_trace(nn.Linear(2, 2))
    gm.register_forward_hook(lambda *a: None)
    with pytest.raises(TypeError, match="hooks"):
        save(gm, io.BytesIO())


def test_unencodable_meta_is_dropped_with_a_warning():
    gm = fxkit.symbolic_trace(nn.ReLU())
    node = next(iter(gm.graph.nodes))
    node.meta["custom"] = object()
    node.meta["kept"] = {"a": (1, 2.5, None)}
    buf = io.BytesIO()
    with pytest.warns(UserWarning, match="custom"):
        save(gm, buf)
    buf.seek(0)
    loaded = load(buf)
    first = next(iter(loaded.graph.nodes))
    assert "custom" not in first.meta and first.meta["kept"] == {"a": (1, 2.5, None)}


# --- property: random graphs ---------------------------------------------------------------------

_UNARY = [torch.relu, torch.neg, torch.sin, torch.tanh]
_BINARY = [operator.add, operator.mul, torch.add, torch.maximum]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 50), st.integers(0, 50)), max_size=25))
def test_random_graphs_round_trip(steps):
    g = fxkit.Graph()
    values = [g.placeholder("x"), g.placeholder("y")]
    for kind, i, j in steps:
        a, b = values[i % len(values)], values[j % len(values)]
        if kind < 4:
            values.append(g.call_function(_UNARY[kind], (a,)))
        elif kind < 7:
            values.append(g.call_function(_BINARY[kind - 4], (a, b)))
        else:
            values.append(g.call_method("clamp", (a,), {"min": -1.0, "max": float(j % 3)}))
    g.output((values[-1], [values[0], {"k": values[len(values) // 2]}]))
    gm = fxkit.GraphModule(nn.Module(), g)
    loaded = round_trip(gm)
    assert str(loaded.graph) == str(gm.graph) and loaded.code == gm.code
    x, y = torch.randn(3), torch.randn(3)
    outputs_equal(loaded(x, y), gm(x, y))
