"""FxGraphDrawer: the same DOT graphs as torch.fx's (differential, when pydot is installed),
correct record-label escaping for every target kind, and a working fallback without pydot."""

from __future__ import annotations

import math
import operator
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch
import torch.fx as tfx
from torch import nn

import fxkit
import fxkit.drawing.dot as dot_mod
import fxkit.passes.graph_drawer as drawer_mod
from fxkit.drawing.dot import DotGraph, label_lines
from fxkit.passes.graph_drawer import FxGraphDrawer
from fxkit.passes.shape_prop import ShapeProp
from fxkit.passes.shape_prop import TensorMetadata as FxkitTensorMetadata
from zoo import CASES, make_root, trace

try:
    import pydot
    from torch.fx.passes.graph_drawer import FxGraphDrawer as TorchDrawer
except ImportError:  # torch.fx's drawer needs pydot; without it only fxkit's side runs
    pydot = None
    TorchDrawer = None

needs_pydot = pytest.mark.skipif(pydot is None, reason="torch.fx's FxGraphDrawer needs pydot")
OPTIONS = {
    "default": {},
    "stack": {"parse_stack_trace": True},
    "names_no_weights": {"skip_node_names_in_args": False, "ignore_parameters_and_buffers": True},
    "normalized": {"normalize_args": True},
    "no_getattr": {"ignore_getattr": True},
    "shape_oval": {"dot_graph_shape": "box"},
}
# torch.fx drops a buffer's name from its label (an operator-precedence slip); fxkit labels
# buffers like parameters. Rewrite torch.fx's text to fxkit's before comparing.
_TORCH_BUFFER = re.compile(r'"([\w.]+)" \[label="\{buffer\\l')


def _torch_text(gm, name, **kw) -> str:
    text = TorchDrawer(gm, name, **kw).get_dot_graph().to_string()
    return _TORCH_BUFFER.sub(lambda m: f'"{m[1]}" [label="{{{m[1]}|op_code=get_buffer', text)


@pytest.fixture
def without_pydot(monkeypatch):
    monkeypatch.setattr(drawer_mod, "HAS_PYDOT", False)


# --- differential ---------------------------------------------------------------------------


@needs_pydot
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_dot_as_torch_fx_on_torch_fx_graphs(case, option):
    gm = trace(case, tfx)
    kw = OPTIONS[option]
    ours = FxGraphDrawer(gm, case.name, **kw).get_dot_graph()
    assert isinstance(ours, pydot.Dot)
    assert ours.to_string() == _torch_text(gm, case.name, **kw)


@needs_pydot
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fxkit_graph_draws_like_torch_fx_graph(case):
    # Separate roots: tracing stores tensor constants on the root, which renames later ones.
    theirs = _torch_text(trace(case, tfx, make_root(case)), case.name)
    ours = FxGraphDrawer(trace(case, fxkit, make_root(case)), case.name).get_dot_graph().to_string()
    # concrete_args guards call each library's own helper; only that target's text differs.
    helper = "torch.fx._symbolic_trace._assert_is_none"
    if helper in theirs:
        ours = ours.replace("fxkit._symbolic_trace._assert_is_none", helper)
        theirs, ours = (re.sub(r"fillcolor=\w+", "", t) for t in (theirs, ours))
    assert ours == theirs


@needs_pydot
def test_tensor_meta_lines_match():
    case = next(c for c in CASES if c.name == "resnet")
    root = make_root(case)
    ours, theirs = trace(case, fxkit, root), trace(case, tfx, root)
    inputs = case.inputs()
    ShapeProp(ours).propagate(*inputs)
    tfx.passes.shape_prop.ShapeProp(theirs).propagate(*inputs)
    text = FxGraphDrawer(ours, "r").get_dot_graph().to_string()
    assert "|shape=(2, 3, 8, 8)\\n|requires_grad=False" in text
    assert text == _torch_text(theirs, "r")


@needs_pydot
def test_quantized_tensor_meta_and_buffer_clusters_match():
    gm = trace(CASES[0], tfx)
    nodes = list(gm.graph.nodes)
    qparams = {"qscheme": torch.per_tensor_affine, "scale": 0.5, "zero_point": 3}
    fields = dict(
        shape=torch.Size([2, 3]), dtype=torch.quint8, requires_grad=False, stride=(3, 1),
        memory_format=torch.contiguous_format, is_quantized=True, qparams=qparams,
    )  # fmt: skip
    nodes[1].meta["tensor_meta"] = [tfx.passes.shape_prop.TensorMetadata(**fields), 7]
    for n in nodes[1:3]:
        n.meta["buf_meta"] = SimpleNamespace(name="buf0", n_origin=2)
    with pytest.raises(RuntimeError, match="Unsupported tensor meta type"):
        TorchDrawer(gm, "q")  # torch.fx fails on the plain int in the list
    nodes[1].meta["tensor_meta"] = [tfx.passes.shape_prop.TensorMetadata(**fields)]
    theirs = _torch_text(gm, "q")
    nodes[1].meta["tensor_meta"] = [FxkitTensorMetadata(**fields), 7]  # fxkit skips the int
    ours = FxGraphDrawer(gm, "q").get_dot_graph()
    assert ours.to_string() == theirs
    assert "|q_scale=0.5\\n|q_zero_point=3\\n" in theirs
    assert [s.get_name() for s in ours.get_subgraphs()] == ["cluster_buf0"]


@needs_pydot
def test_submodule_graphs_match():
    from torch.fx.passes.split_module import split_module

    case = next(c for c in CASES if c.name == "mlp")
    gm = trace(case, tfx)
    split = split_module(gm, gm, lambda n: 0 if "layers_0" in n.name else 1)
    ours = FxGraphDrawer(split, "split")
    theirs = TorchDrawer(split, "split")
    assert set(ours.get_all_dot_graphs()) == set(theirs.get_all_dot_graphs())
    assert set(ours.get_all_dot_graphs()) == {"split", "split_submod_0", "split_submod_1"}
    for key in theirs.get_all_dot_graphs():
        # fxkit escapes the "<>" of "<locals>" in the class name; torch.fx leaves them raw.
        expected = _torch_text_of(theirs, key).replace("<locals>", "\\<locals\\>")
        assert ours.get_all_dot_graphs()[key].to_string() == expected
    assert ours.get_submod_dot_graph("submod_0") is ours.get_dot_graph("submod_0")
    assert ours.get_main_dot_graph() is ours.get_dot_graph()


def _torch_text_of(drawer, key) -> str:
    text = drawer.get_all_dot_graphs()[key].to_string()
    return _TORCH_BUFFER.sub(lambda m: f'"{m[1]}" [label="{{{m[1]}|op_code=get_buffer', text)


# --- escaping --------------------------------------------------------------------------------


class _NoName:
    def __call__(self, x):
        return x


def _hostile_module() -> fxkit.GraphModule:
    g = fxkit.Graph()
    x = g.placeholder("x")
    text = 'a|b<c>{d}"e"\nf\\g'
    calls = [
        g.call_function(operator.or_, (x, x)),
        g.call_function(operator.lt, (x, 0)),
        g.call_function(lambda t, s: t, (x, text)),
        g.call_function(torch.ops.aten.add.Tensor, (x, x), {"alpha": 2}),
        g.call_function(torch.ops.aten.sum, (x,)),
        g.call_function(_NoName(), (x,)),
        g.call_method("view", (x, [1, -1]), {"note": {"k": "<v>"}}),
        g.call_function(torch.clamp, (x,), {"min": -math.inf, "max": "}{"}),
    ]
    calls[2].meta["stack_trace"] = (
        'File "/w/p/model.py", line 3, in forward\n    y = {x | z} < "q"\n'
    )
    g.output(tuple(calls))
    return fxkit.GraphModule(torch.nn.Module(), g)


def _unquote(value: str) -> str:
    assert value.startswith('"') and value.endswith('"'), value
    return value[1:-1].replace('\\"', '"')


def _check_record(label: str) -> None:
    """Record syntax: braces balance and ``<``/``>`` (ports) never appear unescaped."""
    depth = 0
    chars = iter(label)
    for ch in chars:
        if ch == "\\":
            next(chars, None)
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            assert depth >= 0, label
        else:
            assert ch not in "<>", label
    assert depth == 0, label


def _labels(text: str) -> dict[str, str]:
    found = {}
    for m in re.finditer(r'^("?[\w.]+"?) \[label=("(?:[^"\\]|\\.)*")', text, re.M):
        found[m[1].strip('"')] = _unquote(m[2])
    return found


@pytest.mark.parametrize("backend", ["own", "pydot"])
def test_labels_escaped_for_every_target_kind(backend, monkeypatch):
    if backend == "pydot" and pydot is None:
        pytest.skip("pydot is not installed")
    if backend == "own":
        monkeypatch.setattr(drawer_mod, "HAS_PYDOT", False)
    gm = _hostile_module()
    dot = FxGraphDrawer(gm, "hostile", parse_stack_trace=True).get_dot_graph()
    text = dot.to_string()
    labels = _labels(text)
    assert len(labels) == len(gm.graph.nodes)
    for label in labels.values():
        _check_record(label)
    joined = "\n".join(" ".join(label_lines(v)) for v in labels.values())
    assert 'a|b<c>{d}"e"' in joined and "f\\g" in joined
    assert "target=_operator.or_" in joined and "target=_operator.lt" in joined
    assert "target=torch.ops.aten.add.Tensor" in joined and "alpha: 2" in joined
    assert "torch.ops.aten.sum" in joined and "<lambda>" in joined and "_NoName" in joined
    assert "note: {k: <v>}" in joined and "max: }{" in joined
    assert 'file=p/model.py:3 y = {x | z} < "q"' in joined
    if pydot is not None:  # the text is valid DOT
        (parsed,) = pydot.graph_from_dot_data(text)
        assert {n.get_name().strip('"') for n in parsed.get_nodes()} >= set(labels)


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs graphviz's dot program")
@pytest.mark.parametrize("backend", ["own", "pydot"])
def test_graphviz_accepts_every_label(backend, monkeypatch):
    if backend == "pydot" and pydot is None:
        pytest.skip("pydot is not installed")
    monkeypatch.setattr(drawer_mod, "HAS_PYDOT", backend == "pydot")
    text = FxGraphDrawer(_hostile_module(), "h", parse_stack_trace=True).get_dot_graph().to_string()
    done = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True)
    assert done.returncode == 0 and not done.stderr, done.stderr
    if backend == "own":  # create_svg goes through dot when it is installed
        svg = FxGraphDrawer(_hostile_module(), "h").get_dot_graph().create_svg()
        assert b"<svg" in svg and b"</svg>" in svg
    if TorchDrawer is not None:  # torch.fx's labels for the same graph make dot fail
        gm = trace(CASES[0], tfx)
        node = next(n for n in gm.graph.nodes if n.op == "call_method")
        node.kwargs = {**node.kwargs, "tag": "<a|b>"}
        theirs = TorchDrawer(gm, "m").get_dot_graph().to_string()
        done = subprocess.run(["dot", "-Tsvg"], input=theirs.encode(), capture_output=True)
        assert b"bad label format" in done.stderr


@needs_pydot
def test_torch_fx_labels_are_broken_where_fxkit_escapes():
    """The bug fxkit fixes: torch.fx leaves ``|`` and ``<>`` of user text unescaped."""
    gm = trace(CASES[0], tfx)
    node = next(n for n in gm.graph.nodes if n.op == "call_method")
    node.kwargs = {**node.kwargs, "tag": "<a|b>"}
    theirs = _labels(TorchDrawer(gm, "m").get_dot_graph().to_string())[node.name]
    with pytest.raises(AssertionError):
        _check_record(theirs)
    _check_record(_labels(FxGraphDrawer(gm, "m").get_dot_graph().to_string())[node.name])


# --- without pydot ---------------------------------------------------------------------------


def test_fallback_dot_object(without_pydot, tmp_path, monkeypatch):
    monkeypatch.setattr(dot_mod.shutil, "which", lambda name: None)  # fxkit's own SVG
    case = next(c for c in CASES if c.name == "resnet")
    gm = trace(case, fxkit)
    dot = FxGraphDrawer(gm, "resnet").get_dot_graph()
    assert isinstance(dot, DotGraph) and dot.get_name() == "resnet"
    text = dot.to_string()
    assert text.startswith("digraph resnet {") and text.rstrip().endswith("}")
    declared = {n.get_name() for n in dot.get_nodes()}
    assert {n.name for n in gm.graph.nodes} <= declared
    assert "stem_0.weight" in declared and "stem_1.running_mean" in declared
    for edge in dot.get_edges():
        assert edge.get_source() in declared and edge.get_destination() in declared
    svg = dot.create_svg()
    assert svg.startswith(b"<svg") and svg.count(b'class="node"') == len(declared)
    dot.write_svg(tmp_path / "g.svg")
    dot.write_raw(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == text
    assert (tmp_path / "g.svg").read_bytes() == svg
    if pydot is not None:
        (parsed,) = pydot.graph_from_dot_data(text)
        assert len(parsed.get_edges()) == len(dot.get_edges())


def test_fallback_matches_pydot_text(without_pydot):
    if pydot is None:
        pytest.skip("pydot is not installed")
    gm = trace(CASES[0], tfx)
    ours = FxGraphDrawer(gm, "mlp").get_dot_graph().to_string()
    drawer_mod.HAS_PYDOT = True
    try:
        via_pydot = FxGraphDrawer(gm, "mlp").get_dot_graph().to_string()
    finally:
        drawer_mod.HAS_PYDOT = False
    assert ours == via_pydot


# torch.fx 2.13's text for the zoo MLP (pydot 4), the reference when pydot is absent here.
_MLP_GOLDEN = r"""
digraph mlp {
rankdir=TB;
x [label="{name=%x|op_code=placeholder\n|target=x\n|num_users=1\n}", shape=record, fillcolor="AliceBlue", style="filled,rounded", fontcolor="#000000"];
layers_0 [label="{name=%layers_0|op_code=call_module\n\ntorch.nn.modules.linear.Linear\n|in_features: 8\nout_features: 16\n}", shape=record, fillcolor=LemonChiffon1, style="filled,rounded", fontcolor="#000000"];
"layers_0.weight" [label="{layers_0.weight|op_code=get_parametertorch.float32[16, 8]\n}", fillcolor=Salmon, style="filled,rounded", fontcolor="#000000", shape=record];
"layers_0.weight" -> layers_0;
"layers_0.bias" [label="{layers_0.bias|op_code=get_parametertorch.float32[16]\n}", fillcolor=Salmon, style="filled,rounded", fontcolor="#000000", shape=record];
"layers_0.bias" -> layers_0;
layers_1 [label="{name=%layers_1|op_code=call_module\n\ntorch.nn.modules.activation.ReLU\n|inplace: False\n}", shape=record, fillcolor=LemonChiffon1, style="filled,rounded", fontcolor="#000000"];
layers_2 [label="{name=%layers_2|op_code=call_module\n\ntorch.nn.modules.dropout.Dropout\n|p: 0.1\ninplace: False\n}", shape=record, fillcolor=LemonChiffon1, style="filled,rounded", fontcolor="#000000"];
layers_3 [label="{name=%layers_3|op_code=call_module\n\ntorch.nn.modules.linear.Linear\n|in_features: 16\nout_features: 4\n}", shape=record, fillcolor=LemonChiffon1, style="filled,rounded", fontcolor="#000000"];
"layers_3.weight" [label="{layers_3.weight|op_code=get_parametertorch.float32[4, 16]\n}", fillcolor=Salmon, style="filled,rounded", fontcolor="#000000", shape=record];
"layers_3.weight" -> layers_3;
"layers_3.bias" [label="{layers_3.bias|op_code=get_parametertorch.float32[4]\n}", fillcolor=Salmon, style="filled,rounded", fontcolor="#000000", shape=record];
"layers_3.bias" -> layers_3;
log_softmax [label="{name=%log_softmax|op_code=call_method\n|target=log_softmax\n|kwargs=\{dim: -1,\}|num_users=1\n}", shape=record, fillcolor=MistyRose1, style="filled,rounded", fontcolor="#000000"];
output [label="{name=%output|op_code=output\n|target=output\n|num_users=0\n}", shape=record, fillcolor=PowderBlue, style="filled,rounded", fontcolor="#000000"];
x -> layers_0;
layers_0 -> layers_1;
layers_1 -> layers_2;
layers_2 -> layers_3;
layers_3 -> log_softmax;
log_softmax -> output;
}
"""


def test_fallback_text_is_torch_fx_text(without_pydot):
    dot = FxGraphDrawer(trace(CASES[0], fxkit), "mlp").get_dot_graph()
    assert dot.to_string() == _MLP_GOLDEN.lstrip("\n")


# --- bad input -------------------------------------------------------------------------------


def test_missing_submodule_raises_runtime_error():
    g = fxkit.Graph()
    g.output(g.call_module("missing", (g.placeholder("x"),)))
    root = nn.Module()
    root.missing = nn.ReLU()
    gm = fxkit.GraphModule(root, g)
    del gm.missing
    with pytest.raises(RuntimeError, match="does not have attribute missing!"):
        FxGraphDrawer(gm, "m")


def test_bad_arguments():
    gm = trace(CASES[0], fxkit)
    drawer = FxGraphDrawer(gm, "m")
    with pytest.raises(KeyError):
        drawer.get_submod_dot_graph("nope")
    with pytest.raises(AttributeError):
        FxGraphDrawer(42, "m")
    if TorchDrawer is not None:
        with pytest.raises(AttributeError):
            TorchDrawer(42, "m")
