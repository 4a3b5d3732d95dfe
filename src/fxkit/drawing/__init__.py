"""Look at graphs without extra packages: DOT text, Mermaid, SVG and a self-contained HTML
viewer, all from fxkit's own layered layout.

- :func:`to_dot` – a :class:`~fxkit.drawing.dot.DotGraph` (``to_string()``, ``write_svg()``)
- :func:`to_mermaid` – Mermaid flowchart text for Markdown
- :func:`to_svg` – SVG text
- :func:`to_html` – one HTML file: pan/zoom, search, node details, collapsible module scopes
- :func:`diff_html` – two graphs side by side with their differences coloured

Each accepts a GraphModule or a Graph, fxkit's or torch.fx's.
"""

from fxkit.drawing.dot import DotGraph, to_dot
from fxkit.drawing.html import diff_html, to_html
from fxkit.drawing.layout import Layout, layered_layout
from fxkit.drawing.mermaid import to_mermaid
from fxkit.drawing.svg import to_svg

__all__ = [
    "DotGraph",
    "Layout",
    "diff_html",
    "layered_layout",
    "to_dot",
    "to_html",
    "to_mermaid",
    "to_svg",
]
