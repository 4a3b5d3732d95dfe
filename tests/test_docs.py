"""The documentation site: API coverage, the generated tables, every snippet, the build.

* Coverage: every public module of ``fxkit`` (found by walking the package, so modules added
  later are included) imports, has a page, and every public name in it has a docstring.
* The generator: public-name rules, docstring detection, re-exports documented once, the
  torch.fx compatibility table agreeing with what actually imports, the benchmark table.
* Snippets: the ``python`` code blocks of each guide and cookbook page run, in order, in one
  namespace per page (a page can declare ``<!-- docs-test: requires MODULE -->``).
* Build: ``sphinx-build -W`` over ``docs/`` when Sphinx is installed (the ``docs`` extra).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import linecache
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.fx as tfx

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
sys.path.insert(0, str(REPO / "scripts"))

import docs_api  # noqa: E402

# --------------------------------------------------------------------------- coverage


def test_every_public_module_imports() -> None:
    modules, failures = docs_api.walk_modules()
    assert modules[0] == "fxkit" and "fxkit.passes.shape_prop" in modules
    assert failures == {}, "public modules that fail to import (no page can be built):\n" + (
        "\n".join(f"{m}: {e}" for m, e in failures.items())
    )


def test_every_public_name_has_a_docstring() -> None:
    missing = docs_api.missing_docstrings()
    assert missing == [], "public names without a docstring:\n" + "\n".join(missing)


def test_every_public_module_gets_a_page_naming_all_its_names(tmp_path: Path) -> None:
    modules = docs_api.write_api_pages(tmp_path)
    assert docs_api.page_gaps(tmp_path, modules) == []
    index = (tmp_path / "index.rst").read_text()
    entries, _ = docs_api.collect(modules)
    for modname in modules:
        assert f"   {modname}\n" in index
        page = (tmp_path / f"{modname}.rst").read_text()
        assert f".. automodule:: {modname}\n" in page
        for entry in entries[modname]:
            # Either documented here, or linked to the one page that documents it.
            assert (
                entry.qualname in page
                or f".{entry.name}>`" in page
                or (entry.kind == "module" and f"``{entry.name}``" in page)
            ), f"{entry.qualname} is not on its module's page"


def test_walk_skips_private_and_test_modules() -> None:
    modules, _ = docs_api.walk_modules()
    assert not [m for m in modules if any(p.startswith("_") for p in m.split(".")[1:])]
    assert not [m for m in modules if m.startswith("fxkit.passes.tests")]
    # ... but does find nested packages, including modules other helpers add later.
    assert "fxkit.passes.infra.partitioner" in modules
    assert "fxkit.experimental.unification.multipledispatch.core" in modules


def test_reexported_objects_are_documented_on_exactly_one_page(tmp_path: Path) -> None:
    # Sphinx warns (and -W fails) when one object is described twice.
    modules = docs_api.write_api_pages(tmp_path)
    seen: dict[str, str] = {}
    for modname in modules:
        text = (tmp_path / f"{modname}.rst").read_text()
        for name in re.findall(r"^\.\. auto(?:class|function):: (\S+)$", text, re.M):
            obj = docs_api.sys.modules[name.rpartition(".")[0]]
            key = f"{id(getattr(obj, name.rpartition('.')[2]))}:{name.rpartition('.')[2]}"
            assert key not in seen, f"{name} is documented on {seen.get(key)} and {modname}"
            seen[key] = modname
    graph_page = (tmp_path / "fxkit.rst").read_text()
    assert ":class:`Graph <fxkit.graph.Graph>`" in graph_page


# --------------------------------------------------------------------------- the generator


@pytest.fixture
def fake_module(tmp_path: Path, monkeypatch):
    """Import a throwaway module written to a file (the generator reads sources too)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(name: str, source: str) -> types.ModuleType:
        (tmp_path / f"{name}.py").write_text(source)
        created.append(name)
        return importlib.import_module(name)

    yield make
    for name in created:
        sys.modules.pop(name, None)


def test_public_names_follow_all_or_own_definitions(fake_module) -> None:
    with_all = fake_module("docs_fake_a", "import os\n__all__ = ['f', 'os']\ndef f(): pass\n")
    assert docs_api.public_names(with_all) == ["f", "os"]
    without = fake_module(
        "docs_fake_b",
        "import os\nfrom math import sqrt, pi\nfrom typing import TYPE_CHECKING\n"
        "FLAG = True\n_hidden = 1\n"
        "def g(): pass\nclass C: pass\ndef _h(): pass\nlogger = object()\n",
    )
    assert docs_api.public_names(without) == ["FLAG", "g", "C"]


def test_missing_docstrings_are_reported(fake_module) -> None:
    fake_module(
        "docs_fake_c",
        "import dataclasses\n__all__ = ['good', 'bare', 'Point', 'Gone', 'VALUE']\n"
        "def good():\n    'Documented.'\n"
        "def bare(): pass\n"
        "@dataclasses.dataclass\nclass Point:\n    x: int\n"
        "VALUE = 3\n",
    )
    assert docs_api.missing_docstrings(["docs_fake_c"]) == [
        "docs_fake_c.Gone (in __all__, not defined)",
        "docs_fake_c (module)",
        "docs_fake_c.bare",
        "docs_fake_c.Point",  # the dataclass's invented "Point(x: int)" doesn't count
    ]


def test_class_docstring_hidden_by_a_doc_property_is_found() -> None:
    from fxkit.experimental.unification.multipledispatch import Dispatcher

    assert not isinstance(Dispatcher.__doc__, str)  # a property: the reason for the fallback
    assert docs_api.docstring_of(Dispatcher)
    # A multi-line docstring that starts like a signature (torch.fx's style) is real.
    assert docs_api.docstring_of(__import__("fxkit").Tracer)


def test_explicit_signature_covers_what_inspect_rejects() -> None:
    def f(self, name, type_expr=None, default_value=inspect.Signature.empty, *rest, k=1, **kw):
        pass

    with pytest.raises(ValueError):
        inspect.Signature(list(inspect.signature(f).parameters.values()))
    sig = docs_api._explicit_signature(f)
    assert sig == "(name, type_expr=None, default_value=inspect.Signature.empty, *rest, k=1, **kw)"

    class Holder:
        def m(self, a=1, b=inspect.Signature.empty):
            """Doc."""

        def fine(self, a=1):
            """Doc."""

    assert docs_api._unsignable_methods(Holder) == {"m": "(a=1, b=inspect.Signature.empty)"}


def test_compat_table_agrees_with_what_imports() -> None:
    rows, extras = docs_api.compat_rows()
    by_path = {r.torch_module: r for r in rows}
    assert "torch.fx" in by_path and "torch.fx.passes.shape_prop" in by_path
    root = by_path["torch.fx"]
    assert root.torch_names == list(tfx.__all__) and root.missing == []
    for row in rows:
        if not row.module_present:
            assert importlib.util.find_spec(row.fxkit_module) is None
            continue
        ours = importlib.import_module(row.fxkit_module)
        for name in row.torch_names:
            assert docs_api._provides(ours, name) == (name not in row.missing), (row, name)
    assert "fxkit.serialize" in extras and "fxkit.graph" not in extras
    table = docs_api.compat_table_markdown()
    assert "| {py:mod}`passes.shape_prop <fxkit.passes.shape_prop>` | " in table
    assert "| {py:mod}`(the package) <fxkit>` | 12 / 12 | — |" in table


def test_bench_table_from_results_and_without(tmp_path: Path) -> None:
    assert "make bench" in docs_api.bench_table_markdown(tmp_path / "absent.json")
    results = tmp_path / "latest.json"
    rows = [
        {"name": "a | b", "fxkit_s": 0.001, "torch_fx_s": 0.004, "target": 0.5, "ratio": 0.25},
        {"name": "slow", "fxkit_s": 0.003, "torch_fx_s": 0.002, "target": 1.0, "ratio": 1.5},
        {"name": "free", "fxkit_s": 0.001, "torch_fx_s": 0.001, "target": None, "ratio": 1.0},
    ]
    results.write_text(json.dumps({"header": "2026-01-01, x86_64", "rows": rows}))
    table = docs_api.bench_table_markdown(results)
    assert "Last run: 2026-01-01, x86_64" in table
    assert "| a \\| b | 1.00 | 4.00 | 0.250 | ≤ 0.5 |" in table
    assert "1.500 (short of target)" in table
    assert "| free | 1.00 | 1.00 | 1.000 | — |" in table


def test_cli_check_and_generate(tmp_path: Path, capsys) -> None:
    code = docs_api.main(["--check"])
    out = capsys.readouterr().out
    assert code == (0 if out.startswith("every public name has a docstring\n") else 1)
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert all("not valid reST, shown verbatim: fxkit" in note for note in notes)
    assert docs_api.main(["--docs", str(tmp_path)]) == 0
    assert (tmp_path / "api" / "index.rst").is_file()
    assert (tmp_path / "api" / "_generated" / "compat_table.md").is_file()
    assert (tmp_path / "api" / "_generated" / "bench_table.md").is_file()


# --------------------------------------------------------------------------- snippets

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_REQUIRES = re.compile(r"<!-- docs-test: requires ([\w.]+) -->")
PAGES = sorted(
    p.relative_to(DOCS).as_posix()
    for p in [*DOCS.glob("*.md"), *DOCS.glob("cookbook/*.md")]
    if _FENCE.search(p.read_text())
)


def test_guides_and_every_recipe_have_snippets() -> None:
    expected = {"getting-started.md", "migrating.md"} | {
        f"cookbook/{name}.md"
        for name in (
            "transform shape-propagation conv-bn-fusion split-pipeline partition-accelerator "
            "minimizer hf-models explain-auto-leaf save-and-view make-fx"
        ).split()
    }
    assert expected <= set(PAGES)
    toc = (DOCS / "cookbook" / "index.md").read_text()
    for page in expected - {"getting-started.md", "migrating.md"}:
        assert f"\n{Path(page).stem}\n" in toc, f"{page} is not in the cookbook's toctree"


@pytest.mark.parametrize("page", PAGES)
def test_snippets_run(page: str, tmp_path: Path, monkeypatch) -> None:
    text = (DOCS / page).read_text()
    for module in _REQUIRES.findall(text):
        if importlib.util.find_spec(module) is None:
            # an optional extra may be missing on a developer machine; fxkit's own may not
            assert not module.startswith("fxkit"), f"{page} documents missing {module}"
            pytest.skip(f"{page} documents {module}, an optional package not installed here")
    monkeypatch.chdir(tmp_path)  # recipes write files (saved graphs, HTML)
    torch.manual_seed(0)
    namespace: dict = {"__name__": f"docs.{page}"}
    for i, block in enumerate(_FENCE.findall(text)):
        filename = f"docs/{page}#block{i}"
        # Registered so tracebacks, explain() and guards can show the snippet's lines.
        linecache.cache[filename] = (len(block), None, block.splitlines(True), filename)
        try:
            exec(compile(block, filename, "exec"), namespace)
        finally:
            linecache.cache.pop(filename, None)


# --------------------------------------------------------------------------- the build


def test_verbatim_fallback_for_docstrings_that_are_not_rest() -> None:
    pytest.importorskip("sphinx", reason="the docs extension needs Sphinx (the docs extra)")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import fxkit_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    assert fxkit_docs.rest_problems("unbalanced ``literal") != []
    assert fxkit_docs.rest_problems("A :class:`Graph` and :func:`x`.\n\n* item\n") == []
    lines = ["Broken ``literal", "second line"]
    fxkit_docs._process_docstring(None, "function", "f", len, None, lines)
    assert lines[:2] == ["::", ""] and lines[2] == "   Broken ``literal"

    value_lines = (dict.__doc__ or "").splitlines()
    fxkit_docs._process_docstring(None, "data", "d", {}, None, value_lines)
    assert value_lines == []  # a dict's type doc is not the value's doc


def test_unresolved_python_reference_in_a_guide_fails_the_build(tmp_path: Path, capsys) -> None:
    for tool in ("sphinx", "myst_parser"):
        pytest.importorskip(tool, reason="building the docs needs the docs extra")
    src = tmp_path / "src"
    src.mkdir()
    paths = [str(REPO / "src"), str(REPO / "scripts"), str(DOCS / "_ext")]
    (src / "conf.py").write_text(
        f"import sys\nsys.path[:0] = {paths!r}\n"
        "extensions = ['sphinx.ext.autodoc', 'myst_parser', 'fxkit_docs']\n"
    )
    (src / "index.md").write_text(
        "# Guide\n\n```{py:module} fxkit.node\n```\n\n"
        "{py:mod}`fxkit.node` exists; {py:func}`fxkit.no_such_function` does not.\n"
    )
    from sphinx.cmd.build import build_main

    saved_path = list(sys.path)
    try:  # in-process: a second interpreter start would double this test's time
        status = build_main(["-q", "-W", "-b", "dummy", str(src), str(tmp_path / "out")])
    finally:
        sys.path[:] = saved_path
    errors = capsys.readouterr().err
    assert status != 0
    assert "unresolved Python reference 'fxkit.no_such_function'" in errors
    assert "fxkit.node'" not in errors


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    for tool in ("sphinx", "myst_parser", "furo"):
        pytest.importorskip(tool, reason="building the docs needs the docs extra")
    # The dummy builder reads, cross-references and checks every page like the HTML build
    # (`make docs`) but skips writing HTML, which halves the time.
    command = [sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-b", "dummy"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
