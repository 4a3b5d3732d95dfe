"""``fxkit trace`` / ``show`` / ``diff``: views of a traced model or saved graph, one-line
errors with exit status 2 for bad input."""

from __future__ import annotations

import json

import pytest
import torch

import fxkit
from fxkit.cli import main

MODEL = "fxkit.cli:MyModule"


def test_trace_table_code_and_json(capsys):
    assert main(["trace", MODEL]) == 0
    table = capsys.readouterr().out
    assert "opcode" in table and "linear" in table
    assert main(["trace", MODEL, "--format", "code"]) == 0
    assert (
        capsys.readouterr().out.strip() == fxkit.symbolic_trace(fxkit.cli.MyModule()).code.strip()
    )
    assert main(["trace", MODEL, "--input", "3,4", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    nodes = doc["root"]["graph"]["nodes"]
    clamp = next(n for n in nodes if n[0] == "clamp")
    assert clamp[6]["tensor_meta"]["$nt"][1][0] == {"$size": [3, 5]}  # shapes propagated


@pytest.mark.parametrize(
    "fmt, marker", [("dot", "digraph"), ("mermaid", "flowchart"), ("html", "<html")]
)
def test_drawing_views(fmt, marker, tmp_path, capsys):
    out = tmp_path / f"g.{fmt}"
    assert main(["trace", MODEL, "--input", "3,4", "--format", fmt, "-o", str(out)]) == 0
    text = out.read_text()
    assert marker in text and "linear" in text
    saved = tmp_path / "g.fxkit"
    assert main(["trace", MODEL, "--format", "save", "-o", str(saved)]) == 0
    assert main(["show", str(saved), "--format", fmt]) == 0
    assert marker in capsys.readouterr().out


def test_diff_html(tmp_path):
    a = tmp_path / "a.fxkit"
    assert main(["trace", MODEL, "--format", "save", "-o", str(a)]) == 0
    page = tmp_path / "d.html"
    assert main(["diff", str(a), str(a), "--format", "html", "-o", str(page)]) == 0
    assert "<html" in page.read_text().lower()


def test_trace_save_show_and_diff(tmp_path, capsys):
    a, b = tmp_path / "a.fxkit", tmp_path / "b.fxkit"
    assert main(["trace", MODEL, "--format", "save", "-o", str(a)]) == 0
    assert (
        main(["trace", MODEL, "--leaf", "torch.nn:Linear", "--format", "save", "-o", str(b)]) == 0
    )
    loaded = fxkit.load(a)
    torch.testing.assert_close(loaded(torch.zeros(3, 4)).shape, torch.Size([3, 5]))
    capsys.readouterr()
    assert main(["show", str(a), "--format", "code"]) == 0
    assert "self.linear(add)" in capsys.readouterr().out
    assert main(["diff", str(a), str(a)]) == 0
    assert capsys.readouterr().out == ""
    out_file = tmp_path / "d.txt"
    assert (
        main(["diff", str(a), str(b), "-o", str(out_file)]) == 0
    )  # same graph: Linear is a leaf anyway
    assert (
        main(
            ["trace", MODEL, "--example-inputs", "--input", "3,4", "--format", "save", "-o", str(b)]
        )
        == 0
    )


def test_show_works_without_the_allowlist_but_refuses_to_run(tmp_path, capsys):
    g = fxkit.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.relu, (x,)))
    path = tmp_path / "g.fxkit"
    fxkit.save(fxkit.GraphModule(torch.nn.Module(), g), path)
    # edit the target to a name nothing allows: show prints it, load refuses it
    import io
    import zipfile

    src = zipfile.ZipFile(path)
    doc = json.loads(src.read("graph.json"))
    doc["root"]["graph"]["nodes"][1][2] = "somepkg.evil"
    edited = tmp_path / "e.fxkit"
    with zipfile.ZipFile(edited, "w") as z:
        z.writestr("graph.json", json.dumps(doc))
        for n in src.namelist():
            if n != "graph.json":
                z.writestr(n, src.read(n))
    assert main(["show", str(edited), "--format", "code"]) == 0
    assert "somepkg_evil(x)" in capsys.readouterr().out  # named as codegen names any global
    with pytest.raises(ValueError, match="allowlist|loaded object"):
        fxkit.load(io.BytesIO(edited.read_bytes()))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trace", "nope.module:Model"], "cannot import 'nope.module'"),
        (["trace", "fxkit.cli:Nope"], "has no attribute 'Nope'"),
        (["trace", MODEL, "--input", "x,y"], "expected a shape"),
        (["trace", MODEL, "--input", "3:floaty"], "unknown dtype"),
        (["trace", MODEL, "--leaf", "fxkit.cli:demo"], "--leaf takes nn.Module classes"),
        (["trace", MODEL, "--format", "save"], "needs -o FILE"),
        (["trace", MODEL, "--example-inputs"], "needs at least one --input"),
        (["show", "/nonexistent/file.fxkit"], "no such file"),
    ],
    ids=[
        "module",
        "attr",
        "shape",
        "dtype",
        "leaf",
        "save-no-o",
        "example-no-input",
        "show-missing",
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_model_that_fails_to_run_exits_1(capsys):
    assert main(["trace", MODEL, "--input", "2,2"]) == 1
    assert "fxkit trace: RuntimeError" in capsys.readouterr().err


def test_show_rejects_a_file_that_is_not_a_graph(tmp_path, capsys):
    bad = tmp_path / "bad.fxkit"
    bad.write_bytes(b"nope")
    assert main(["show", str(bad)]) == 2
    assert "not a zip" in capsys.readouterr().err
