"""SVG rendering of a :class:`~fxkit.drawing._model.GraphView` laid out by
:func:`~fxkit.drawing.layout.layered_layout`; no graphviz needed."""

from __future__ import annotations

import zlib
from html import escape
from pathlib import Path
from typing import Any

from fxkit.drawing._model import GraphView, graph_view
from fxkit.drawing.layout import Layout, gc_paused, layered_layout

__all__ = ["to_svg", "render_svg", "layout_view", "node_fill"]

_CHAR_WIDTH = 6.6  # average glyph width of the 11px monospace font the SVG uses
_MAX_CHARS = 44
_ONE_LINE = 22.0
_TWO_LINES = 36.0

_OP_FILL = {
    "placeholder": "#f0f8ff",
    "output": "#b0e0e6",
    "call_module": "#fffacd",
    "get_attr": "#d3d3d3",
}
# Calls are tinted by target so that the same operation has the same colour everywhere.
_CALL_FILLS = (
    "#98f5ff", "#ff7f50", "#caff70", "#c1ffc1", "#f8f8ff", "#fff68f", "#fff0f5", "#87cefa",
    "#ffe4e1", "#eed5d2", "#aeeeee", "#ffdab9", "#fa8072", "#ffe1ff", "#d8bfd8", "#ffe7ba",
)  # fmt: skip


def node_fill(op: str, target: str) -> str:
    """The fill colour of a node box."""
    fill = _OP_FILL.get(op)
    if fill is not None:
        return fill
    return _CALL_FILLS[zlib.crc32(target.encode()) % len(_CALL_FILLS)]


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 1] + "\u2026"


def _second_line(node: Any) -> str:
    if node.shape:
        return _clip(f"{node.dtype} {node.shape}".strip())
    return ""


def layout_view(view: GraphView) -> Layout:
    """Size every node's box from its text and run the layered layout."""
    sizes = []
    for node in view.nodes:
        chars = max(len(_clip(node.label())), len(_second_line(node)))
        sizes.append((max(48.0, chars * _CHAR_WIDTH + 16), _TWO_LINES if node.shape else _ONE_LINE))
    return layered_layout(sizes, view.edges)


def _path(points: list[tuple[float, float]]) -> str:
    (x0, y0), (x1, y1) = points[0], points[-1]
    if len(points) == 2:
        bend = (y1 - y0) / 2
        return f"M{x0:.1f},{y0:.1f}C{x0:.1f},{y0 + bend:.1f} {x1:.1f},{y1 - bend:.1f} {x1:.1f},{y1:.1f}"
    # Round each bend: a quadratic curve through every inner point, ending halfway to the next.
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for (bx, by), (nx, ny) in zip(points[1:-1], points[2:]):
        parts.append(f"Q{bx:.1f},{by:.1f} {(bx + nx) / 2:.1f},{(by + ny) / 2:.1f}")
    parts.append(f"L{x1:.1f},{y1:.1f}")
    return "".join(parts)


def render_svg(view: GraphView, layout: Layout, id_prefix: str = "") -> str:
    """SVG text for ``view``; node groups get ids ``{id_prefix}n{index}`` and
    ``data-i``/``data-name`` attributes the HTML viewer uses."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fxgraph" '
        f'viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
        f'width="{layout.width:.0f}" height="{layout.height:.0f}" '
        'font-family="Menlo,Consolas,monospace" font-size="11">',
        f'<defs><marker id="{id_prefix}arrow" viewBox="0 0 8 8" refX="8" refY="4" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0L8,4L0,8z" fill="#666"/></marker></defs>',
        '<g class="edges" fill="none" stroke="#888" stroke-width="1.2">',
    ]
    for k, (src, dst) in enumerate(view.edges):
        out.append(
            f'<path class="edge" data-from="{src}" data-to="{dst}" '
            f'd="{_path(layout.routes[k])}" marker-end="url(#{id_prefix}arrow)"/>'
        )
    out.append('</g><g class="nodes">')
    for node, (cx, cy, w, h) in zip(view.nodes, layout.boxes):
        label = escape(_clip(node.label()))
        second = _second_line(node)
        fill = node_fill(node.op, node.target)
        out.append(
            f'<g class="node op-{node.op}" id="{id_prefix}n{node.index}" data-i="{node.index}" '
            f'data-name="{escape(node.name)}" transform="translate({cx - w / 2:.1f},{cy - h / 2:.1f})">'
            f"<title>{escape(node.name)}</title>"
            f'<rect width="{w:.1f}" height="{h:.1f}" rx="5" fill="{fill}" stroke="#555"/>'
            f'<text x="{w / 2:.1f}" y="15" text-anchor="middle">{label}</text>'
        )
        if second:
            out.append(
                f'<text x="{w / 2:.1f}" y="29" text-anchor="middle" fill="#444" '
                f'font-size="10">{escape(second)}</text>'
            )
        out.append("</g>")
    out.append("</g></svg>")
    return "".join(out)


def to_svg(gm_or_graph: Any, path: str | Path | None = None) -> str:
    """Draw a GraphModule or Graph as SVG with fxkit's own layout; write it to ``path`` too."""
    with gc_paused():
        view = graph_view(gm_or_graph)
        text = render_svg(view, layout_view(view))
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
