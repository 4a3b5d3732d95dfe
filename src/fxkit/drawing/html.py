"""A self-contained HTML graph viewer: one file, inline SVG, CSS and JavaScript, no network.

:func:`to_html` shows one graph: pan (drag) and zoom (wheel), search by node name or target
(matches are highlighted; Enter jumps to the next), click a node for its op, target, arguments,
dtype/shape, source line and module path, and collapse module scopes from the side panel.
:func:`diff_html` puts two graphs side by side (e.g. before and after a pass), colours added,
removed and changed nodes, and selecting a node selects its namesake on the other side.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from fxkit.drawing._assets import ERROR_TRAP_JS, VIEWER_CSS, VIEWER_JS
from fxkit.drawing._model import GraphView, graph_view
from fxkit.drawing.layout import Layout, gc_paused
from fxkit.drawing.svg import layout_view, render_svg

__all__ = ["to_html", "diff_html", "diff_status"]

# Inside <script> a JSON text must not contain "</" (it would close the element) nor "<!--";
# escaping every "<", ">" and "&" as \u escapes keeps the JSON equal and the HTML inert.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_LEGEND = (
    ("placeholder", "#f0f8ff"),
    ("call_module", "#fffacd"),
    ("get_attr", "#d3d3d3"),
    ("output", "#b0e0e6"),
)
_DIFF_LEGEND = (("added", "#b9f6ca"), ("removed", "#ff8a80"), ("changed", "#ffe57f"))


def _scopes(view: GraphView, layout: Layout) -> list[dict[str, Any]]:
    """Every module scope holding two or more nodes, with its members and bounding box,
    parents before children."""
    members: dict[str, list[int]] = {}
    for node in view.nodes:
        for path in node.scopes:
            members.setdefault(path, []).append(node.index)
    found = []
    for path in sorted(members, key=lambda p: (p.split("."), p)):
        nodes = members[path]
        if len(nodes) < 2:
            continue
        boxes = [layout.boxes[i] for i in nodes]
        box = [
            min(x - w / 2 for x, _, w, _ in boxes) - 6,
            min(y - h / 2 for _, y, _, h in boxes) - 22,
            max(x + w / 2 for x, _, w, _ in boxes) + 6,
            max(y + h / 2 for _, y, _, h in boxes) + 6,
        ]
        found.append({"path": path, "members": nodes, "box": [round(v, 1) for v in box]})
    return found


def _pane(pane_id: str, title: str, view: GraphView, status: list[str] | None) -> dict[str, Any]:
    layout = layout_view(view)
    spec: dict[str, Any] = {
        "id": pane_id,
        "title": title,
        "nodes": [n.as_json() for n in view.nodes],
        "boxes": [[round(v, 1) for v in b] for b in layout.boxes],
        "edgeCount": len(view.edges),
        "scopes": _scopes(view, layout),
    }
    if status is not None:
        spec["status"] = status
    spec["svg"] = render_svg(view, layout, id_prefix=f"{pane_id}-")
    return spec


def _legend(items: tuple[tuple[str, str], ...]) -> str:
    return "".join(f'<span style="background:{color}">{name}</span>' for name, color in items)


def _page(title: str, panes: list[dict[str, Any]], legend: str) -> str:
    svgs = [p.pop("svg") for p in panes]
    payload = json.dumps({"panes": panes}, separators=(",", ":")).translate(_SCRIPT_SAFE)
    pane_html = "".join(
        f'<section class="pane"><h2>{escape(p["title"])}</h2>'
        f'<div class="canvas" id="canvas-{p["id"]}">{svg}</div></section>'
        for p, svg in zip(panes, svgs)
    )
    sides = "".join(f'<div id="side-{p["id"]}"></div>' for p in panes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f"<style>{VIEWER_CSS}</style><script>{ERROR_TRAP_JS}</script></head><body>"
        f"<header><h1>{escape(title)}</h1>"
        '<input id="search" type="search" placeholder="Search node name or target (Enter: next)">'
        '<span class="count" id="count"></span><button id="fit">Fit</button></header>'
        f'<main><div class="panes">{pane_html}</div>'
        f'<aside><div class="legend">{legend}</div>{sides}</aside></main>'
        '<pre id="selftest"></pre>'
        f'<script type="application/json" id="fx-data">{payload}</script>'
        f"<script>{VIEWER_JS}</script></body></html>\n"
    )


def _write(text: str, path: str | Path | None) -> str:
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def to_html(gm_or_graph: Any, path: str | Path | None = None, *, title: str | None = None) -> str:
    """The viewer page for one GraphModule or Graph; also written to ``path`` when given."""
    with gc_paused():
        view = graph_view(gm_or_graph)
        title = title or f"{type(gm_or_graph).__name__} ({len(view.nodes)} nodes)"
        page = _page(title, [_pane("g", "graph", view, None)], _legend(_LEGEND))
    return _write(page, path)


def _fingerprint(node: Any) -> tuple[str, str, str, str]:
    return (node.op, node.target, node.args, node.kwargs)


def diff_status(before: GraphView, after: GraphView) -> tuple[list[str], list[str]]:
    """Per-node status on each side, matching nodes by name: ``removed``/``added`` when the
    name exists on one side only, ``changed`` when op, target or arguments differ, else
    ``same``."""
    old = before.by_name()
    new = after.by_name()

    def status(node: Any, others: dict[str, Any], missing: str) -> str:
        peer = others.get(node.name)
        if peer is None:
            return missing
        return "same" if _fingerprint(peer) == _fingerprint(node) else "changed"

    return (
        [status(n, new, "removed") for n in before.nodes],
        [status(n, old, "added") for n in after.nodes],
    )


def diff_html(
    before: Any, after: Any, path: str | Path | None = None, *, title: str | None = None
) -> str:
    """Side-by-side viewer of two graphs (e.g. before and after a pass) with the differences
    coloured and selection kept in sync; also written to ``path`` when given."""
    with gc_paused():
        old, new = graph_view(before), graph_view(after)
        left, right = diff_status(old, new)
        counts = {"added": right.count("added"), "removed": left.count("removed")}
        counts["changed"] = left.count("changed")
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        title = title or f"Graph diff: {len(old.nodes)} -> {len(new.nodes)} nodes ({summary})"
        panes = [_pane("a", "before", old, left), _pane("b", "after", new, right)]
        page = _page(title, panes, _legend(_DIFF_LEGEND) + _legend(_LEGEND))
    return _write(page, path)
