"""Open the HTML viewer in headless Chromium, as a person would: every node is rendered, no
JavaScript error, search finds a node, module scopes collapse, and in a diff page selecting a
node selects its counterpart. The page's own self-test (run when the URL ends in
``#selftest``) writes its findings into ``<pre id="selftest">``, read back with ``--dump-dom``.
The screenshot lands in pytest's tmp dir, and in ``$FXKIT_TEST_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import html
import json
import operator
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import fxkit
from fxkit.drawing import diff_html, to_html
from fxkit.passes.shape_prop import ShapeProp
from zoo import CASES, trace

CHROMIUM = Path("/usr/bin/chromium")
# A developer machine without chromium skips these; CI sets FXKIT_REQUIRE_BROWSER=1 after
# installing it, so a missing browser fails there instead of passing silently.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("FXKIT_REQUIRE_BROWSER"),
    reason="needs Debian's chromium at /usr/bin/chromium (CI installs it: apt-get install chromium)",
)
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
]


def _chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _self_test(tmp_path: Path, page: Path) -> dict:
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri() + "#selftest")
    found = re.search(r'<pre id="selftest" data-done="1">(.*?)</pre>', dom, re.S)
    assert found, "the viewer's self-test did not finish (a JavaScript error at start-up?)"
    return json.loads(html.unescape(found[1]))


def _check_pane(pane: dict) -> None:
    assert pane["rendered"] == pane["nodes"] > 0  # every node is in the DOM...
    assert pane["sized"] == pane["nodes"]  # ...and laid out with a visible box
    assert pane["edges"] == pane["expectedEdges"]
    assert pane["hits"] >= 1 and pane["hitMarked"], pane  # search finds and highlights
    assert pane["detailRows"] >= 3  # clicking shows the node's details
    assert pane["scopeToggle"]
    assert pane["zoomed"] and pane["panned"] and pane["clicked"]  # wheel, drag, click


def _resnet():
    case = next(c for c in CASES if c.name == "resnet")
    gm = trace(case, fxkit)
    ShapeProp(gm).propagate(*case.inputs())
    return gm


def _big(n: int):
    g = fxkit.Graph()
    cur = skip = g.placeholder("x")
    for i in range(n):
        if i % 6 == 5:
            cur = skip = g.call_function(operator.add, (cur, skip))
        else:
            cur = g.call_method("relu" if i % 2 else "sigmoid", (cur,))
    g.output(cur)
    return fxkit.GraphModule(torch.nn.Module(), g)


def test_zoo_model_in_browser(tmp_path):
    page = tmp_path / "resnet.html"
    to_html(_resnet(), page)
    report = _self_test(tmp_path, page)
    assert report["errors"] == []
    (pane,) = report["panes"]
    _check_pane(pane)
    assert pane["scopes"] == 4
    shot = tmp_path / "viewer.png"
    _chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    keep = os.environ.get("FXKIT_TEST_ARTIFACTS")  # CI sets it to collect the screenshot
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "viewer.png")


def test_two_thousand_nodes_in_browser(tmp_path):
    page = tmp_path / "big.html"
    gm = _big(2000)
    to_html(gm, page)
    report = _self_test(tmp_path, page)
    assert report["errors"] == []
    (pane,) = report["panes"]
    _check_pane(pane)
    assert pane["nodes"] == len(gm.graph.nodes)


def test_diff_page_in_browser(tmp_path):
    before, after = _resnet(), _resnet()
    add = next(n for n in after.graph.nodes if n.name == "add")
    with after.graph.inserting_after(add):
        extra = after.graph.call_function(torch.sigmoid, (add,))
    add.replace_all_uses_with(extra, delete_user_cb=lambda u: u is not extra)
    after.recompile()
    page = tmp_path / "diff.html"
    diff_html(before, after, page)
    report = _self_test(tmp_path, page)
    assert report["errors"] == []
    assert [p["nodes"] for p in report["panes"]] == [24, 25]
    for pane in report["panes"]:
        _check_pane(pane)
    assert report["synced"] is True
