"""fxkit.drawing: DOT, Mermaid, SVG, the layered layout (property-tested) and the HTML viewer
(self-contained, complete, script-safe), on fxkit and torch.fx graphs."""

from __future__ import annotations

import json
import operator
import re
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st

import fxkit
from fxkit.drawing import diff_html, layered_layout, to_dot, to_html, to_mermaid, to_svg
from fxkit.drawing._model import graph_view, source_line
from fxkit.drawing.dot import DotGraph, label_lines, quote
from fxkit.drawing.html import diff_status
from fxkit.passes.shape_prop import ShapeProp
from zoo import CASES, trace

RESNET = next(c for c in CASES if c.name == "resnet")
HOSTILE = '</script><script>alert("x")</script> <!-- & "q" #1 `b` a|b {c}'


def _resnet(lib=fxkit):
    gm = trace(RESNET, lib)
    (ShapeProp if lib is fxkit else tfx.passes.shape_prop.ShapeProp)(gm).propagate(*RESNET.inputs())
    return gm


def _hostile_gm():
    g = fxkit.Graph()
    x = g.placeholder("x")
    y = g.call_function(torch.add, (x, HOSTILE))
    y.meta["stack_trace"] = f'File "/a/b.py", line 7, in forward\n    y = x + "{HOSTILE}"'
    z = g.call_method("relu", (y,))
    g.output(z)
    return fxkit.GraphModule(torch.nn.Module(), g)


def _chain(lib, n: int):
    g = lib.Graph()
    cur = skip = g.placeholder("x")
    for i in range(n):
        if i % 5 == 4:
            cur = skip = g.call_function(operator.add, (cur, skip))
        else:
            cur = g.call_function(torch.relu, (cur,))
    g.output(cur)
    return lib.GraphModule(torch.nn.Module(), g)


# --- the shared snapshot -------------------------------------------------------------------


def test_graph_view_facts():
    gm = _resnet()
    view = graph_view(gm)
    names = [n.name for n in gm.graph.nodes]
    assert [n.name for n in view.nodes] == names
    assert len(view.edges) == sum(len(n.all_input_nodes) for n in gm.graph.nodes)
    conv = view.by_name()["stem_0"]
    assert conv.kind == "Conv2d" and conv.scopes == ("stem",) and conv.module_path == "stem.0"
    assert conv.shape == "[2, 8, 8, 8]" and conv.dtype == "float32"
    assert conv.source.startswith(__file__.rsplit("/", 1)[0] + "/zoo.py:")
    assert view.by_name()["add"].scopes == ("stages.0",)
    assert source_line(None) == "" and source_line("no frames here") == ""


def test_graph_view_accepts_graphs_and_torch_fx():
    assert len(graph_view(_resnet().graph).nodes) == len(graph_view(_resnet(tfx)).nodes)
    with pytest.raises(TypeError, match="expected a GraphModule or a Graph"):
        graph_view(42)


def test_graph_view_of_aten_graph():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, y):
        return torch.relu(x @ y).sum(0, keepdim=True) * (x > 0)

    gm = make_fx(f, tracing_mode="fake")(torch.randn(3, 3), torch.randn(3, 3))
    nodes = graph_view(gm).by_name()
    assert nodes["mm"].target == "torch.ops.aten.mm.default"
    assert nodes["sum_1"].label() == "sum_1: aten.sum.dim_IntList"
    assert (nodes["sum_1"].shape, nodes["gt"].dtype) == ("[1, 3]", "bool")  # from meta["val"]
    page = to_html(gm)
    assert "torch.ops.aten.mul.Tensor" in page


# --- DOT -------------------------------------------------------------------------------------


def _check_dot_text(text: str, dot: DotGraph) -> None:
    depth = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[{}]', text):  # braces outside quoted strings
        depth += {"{": 1, "}": -1}.get(m[0], 0)
        assert depth >= 0
    assert depth == 0
    declared = {n.get_name() for n in _all_nodes(dot)}
    for edge in dot.get_edges():
        assert edge.get_source() in declared and edge.get_destination() in declared


def _all_nodes(dot):
    yield from dot.get_nodes()
    for sub in dot.get_subgraphs():
        yield from _all_nodes(sub)


@pytest.mark.parametrize("lib", [fxkit, tfx], ids=["fxkit", "torch_fx"])
def test_to_dot_clusters_and_edges(lib):
    gm = _resnet(lib)
    dot = to_dot(gm, "resnet")
    text = dot.to_string()
    _check_dot_text(text, dot)
    assert {n.get_name() for n in _all_nodes(dot)} == {n.name for n in gm.graph.nodes}
    assert len(dot.get_edges()) == len(graph_view(gm).edges)
    if lib is fxkit:  # torch.fx's tracer records no nn_module_stack here
        clusters = [s.get_name() for s in dot.get_subgraphs()]
        assert clusters == ["cluster_stem", "cluster_stages.0", "cluster_stages.1"]
        assert 'subgraph "cluster_stages.1.down"' in text
    svg = dot.create_svg()
    ET.fromstring(svg)


def test_dot_quoting_and_label_lines():
    assert quote("abc_1") == "abc_1" and quote("1.5") == "1.5" and quote("graph") == '"graph"'
    assert quote('a "b"\nc') == '"a \\"b\\"\\nc"' and quote('"x y"') == '"x y"'
    assert label_lines("{name=%x|op\\n|t=a\\{b\\}\\l}") == ["name=%x", "op", "t=a{b}"]

    def odd(x):
        return x

    odd.__name__ = 'q"uo\\te{|}'
    g = fxkit.Graph()
    g.output(g.call_function(odd, (g.placeholder("x"),)))
    dot = to_dot(g)
    text = dot.to_string()
    _check_dot_text(text, dot)
    # the quote is escaped and the backslash doubled, so the label is still one DOT string
    assert '.q\\"uo\\\\te{|}", shape=box' in text
    with pytest.raises(ValueError, match="unsupported format"):
        dot.write("x.png", format="png")


# --- Mermaid -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES[:6], ids=[c.name for c in CASES[:6]])
def test_mermaid_nodes_edges_and_safe_ids(case):
    gm = trace(case, fxkit)
    text = to_mermaid(gm)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    view = graph_view(gm)
    for node in view.nodes:
        assert re.search(rf"^\s+n{node.index}[\[(]", text, re.M), node.name
        assert node.name in text
    edges = re.findall(r"^\s+(n\d+) --> (n\d+)$", text, re.M)
    assert edges == [(f"n{a}", f"n{b}") for a, b in view.edges]
    assert sum(ln.strip().startswith("subgraph ") for ln in lines) == sum(
        ln.strip() == "end" for ln in lines
    )


def test_mermaid_escapes_labels():
    text = to_mermaid(_hostile_gm(), direction="LR")
    assert text.startswith("flowchart LR")
    for m in re.finditer(r'\["(.*?)"\]', text):
        assert '"' not in m[1] and "<" not in m[1].replace("<br/>", "")
    with pytest.raises(ValueError, match="direction"):
        to_mermaid(_hostile_gm(), direction="up")


# --- layout --------------------------------------------------------------------------------


def _check_layout(n, edges, layout, acyclic=True):
    assert len(layout.boxes) == n and len(layout.routes) == len(edges)
    by_layer: dict[int, list[int]] = {}
    for i, layer in enumerate(layout.layers):
        by_layer.setdefault(layer, []).append(i)
    for i in range(n):  # no two boxes overlap
        xi, yi, wi, hi = layout.boxes[i]
        assert 0 <= xi - wi / 2 and xi + wi / 2 <= layout.width
        assert 0 <= yi - hi / 2 and yi + hi / 2 <= layout.height
        for j in range(i + 1, n):
            xj, yj, wj, hj = layout.boxes[j]
            apart_x = abs(xi - xj) >= (wi + wj) / 2
            apart_y = abs(yi - yj) >= (hi + hj) / 2
            assert apart_x or apart_y, (i, j)
    for (u, v), route in zip(edges, layout.routes):
        if acyclic and u != v:
            assert layout.layers[v] > layout.layers[u]
            assert layout.boxes[v][1] > layout.boxes[u][1]  # edges go downwards
            assert all(a[1] <= b[1] for a, b in zip(route, route[1:]))
        assert len(route) >= 2


@st.composite
def _dags(draw, cyclic=False):
    n = draw(st.integers(1, 40))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    raw = draw(st.lists(pairs, max_size=3 * n))
    edges = raw if cyclic else [(min(a, b), max(a, b)) for a, b in raw if a != b]
    sizes = draw(
        st.lists(st.tuples(st.integers(10, 90), st.integers(10, 40)), min_size=n, max_size=n)
    )
    return sizes, edges


@settings(max_examples=40, deadline=None)
@given(_dags())
def test_layout_valid_on_random_dags(dag):
    sizes, edges = dag
    _check_layout(len(sizes), edges, layered_layout(sizes, edges))


@settings(max_examples=25, deadline=None)
@given(_dags(cyclic=True))
def test_layout_survives_cycles_and_self_loops(dag):
    sizes, edges = dag
    _check_layout(len(sizes), edges, layered_layout(sizes, edges, sweeps=1), acyclic=False)


def test_layout_handles_long_edges_and_empty():
    n = 200
    edges = [(i, i + 1) for i in range(n - 1)] + [(0, n - 1), (3, 20)]
    layout = layered_layout([(40, 20)] * n, edges)
    _check_layout(n, edges, layout)
    assert len(layout.routes[-1]) > 2  # bends around the nodes in between
    assert len(layout.routes[-2]) == 2  # too long to route: drawn straight
    empty = layered_layout([], [])
    assert empty.boxes == [] and empty.width > 0


# --- SVG -----------------------------------------------------------------------------------


def test_svg_is_well_formed_and_complete(tmp_path):
    gm = _hostile_gm()
    text = to_svg(gm, tmp_path / "g.svg")
    root = ET.fromstring(text)
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g") if "node" in g.get("class", "").split()]
    assert [g.get("data-name") for g in groups] == [n.name for n in gm.graph.nodes]
    assert len([p for p in root.iter(f"{ns}path") if p.get("class") == "edge"]) == 3
    assert (tmp_path / "g.svg").read_text() == text


# --- HTML ----------------------------------------------------------------------------------


def _payload(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="fx-data">(.*?)</script>', page, re.S)
    return json.loads(m[1])


def _assert_self_contained(page: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "@import" not in page and "url(http" not in page
    assert "<link" not in page


@pytest.mark.parametrize("lib", [fxkit, tfx], ids=["fxkit", "torch_fx"])
def test_html_self_contained_and_complete(lib, tmp_path):
    gm = _resnet(lib)
    page = to_html(gm, tmp_path / "v.html", title="ResNet <tiny>")
    assert (tmp_path / "v.html").read_text(encoding="utf-8") == page
    _assert_self_contained(page)
    assert "<title>ResNet &lt;tiny&gt;</title>" in page
    data = _payload(page)
    (pane,) = data["panes"]
    assert [n["name"] for n in pane["nodes"]] == [n.name for n in gm.graph.nodes]
    for node in gm.graph.nodes:
        assert f'data-name="{node.name}"' in page
    conv = pane["nodes"][1]
    assert conv["op"] == "call_module" and conv["shape"] == "[2, 8, 8, 8]"
    if lib is fxkit:
        assert {s["path"] for s in pane["scopes"]} == {
            "stem",
            "stages.0",
            "stages.1",
            "stages.1.down",
        }


def test_html_escapes_script_breakers():
    gm = _hostile_gm()
    page = to_html(gm)
    # one closing tag each for the error trap, the JSON data and the viewer script
    assert page.count("</script>") == 3
    assert "<!--" not in page
    node = _payload(page)["panes"][0]["nodes"][1]
    assert HOSTILE in node["args"] and HOSTILE in node["source"]
    _assert_self_contained(page)


def test_diff_html_statuses_and_counterparts():
    before = _resnet()
    after = _resnet()
    graph = after.graph
    add = next(n for n in graph.nodes if n.name == "add")
    with graph.inserting_after(add):
        extra = graph.call_function(torch.sigmoid, (add,))
    add.replace_all_uses_with(extra, delete_user_cb=lambda u: u is not extra)
    after.recompile()
    left, right = diff_status(graph_view(before), graph_view(after))
    by_name_after = dict(zip((n.name for n in graph.nodes), right))
    assert by_name_after["sigmoid"] == "added"
    assert by_name_after["stages_0_relu_1"] == "changed"  # reads sigmoid now
    assert set(left) <= {"same", "changed"} and left.count("changed") == 1
    page = diff_html(before, after)
    _assert_self_contained(page)
    a, b = _payload(page)["panes"]
    assert a["status"] == left and b["status"] == right
    assert "added 1, removed 0, changed 1" in page


def test_html_bad_input():
    with pytest.raises(TypeError, match="expected a GraphModule or a Graph"):
        to_html(object())
    with pytest.raises(TypeError):
        diff_html(_hostile_gm(), "not a graph")


def test_html_large_graph_has_every_node():
    gm = _chain(fxkit, 3000)
    page = to_html(gm)
    assert page.count('class="node ') == len(gm.graph.nodes)
    assert len(_payload(page)["panes"][0]["boxes"]) == len(gm.graph.nodes)
