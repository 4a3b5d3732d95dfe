"""DOT (graphviz) text without graphviz or pydot.

:class:`DotGraph`, :class:`DotNode`, :class:`DotEdge` and :class:`DotCluster` offer the part of
``pydot``'s interface that graph drawers use (``add_node``, ``add_edge``, ``add_subgraph``,
``get_*``, ``set``, ``to_string``, ``create_svg``, ``write_svg``, ``write_raw``). Quoting follows
pydot's rules, so a label means the same thing whichever of the two produced the file.
``create_svg`` calls the ``dot`` program when it is installed and otherwise renders with fxkit's
own layered layout.

:func:`to_dot` draws any GraphModule or Graph with one cluster per module scope.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html import escape
from pathlib import Path
from typing import Any, Iterator

from fxkit.drawing._model import graph_view
from fxkit.drawing.layout import layered_layout
from fxkit.drawing.svg import node_fill

__all__ = [
    "DotGraph",
    "DotNode",
    "DotEdge",
    "DotCluster",
    "quote",
    "record_escape",
    "label_lines",
    "to_dot",
]

_BARE_ID = re.compile(r"^(?:[_a-zA-Z][a-zA-Z0-9_]*|-?(?:\d+\.?\d*|\.\d+))$")
_KEYWORDS = frozenset(("graph", "subgraph", "digraph", "node", "edge", "strict"))
_RECORD_SPECIALS = str.maketrans({c: "\\" + c for c in "\\{}|<>"})
_QUOTE_SPECIALS = str.maketrans({'"': '\\"', "\n": "\\n", "\r": "\\r"})


def quote(value: Any) -> str:
    """A DOT ID or attribute value: bare when it is a plain identifier or number, kept as is
    when already double-quoted, otherwise quoted with ``"`` and newlines escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE_ID.match(text) and text.lower() not in _KEYWORDS:
        return text
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text
    return '"' + text.translate(_QUOTE_SPECIALS) + '"'


def record_escape(text: str) -> str:
    """Escape text for a field of a ``record`` label: backslash, braces, ``|`` and ``<>``."""
    return text.translate(_RECORD_SPECIALS)


def label_lines(label: str) -> list[str]:
    """Plain text lines of a (record) label: fields and ``\\n``/``\\l``/``\\r`` breaks become
    lines, escapes are resolved, structural braces dropped."""
    lines: list[str] = []
    current: list[str] = []
    chars = iter(label)

    def flush() -> None:
        text = "".join(current).strip()
        if text:
            lines.append(text)
        current.clear()

    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt in ("n", "l", "r"):
                flush()
            else:
                current.append(nxt)
        elif ch in "|\n":
            flush()
        elif ch not in "{}":
            current.append(ch)
    flush()
    return lines


class _Element:
    """Shared attribute handling (``set``/``get``/``get_attributes``) of DOT elements."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.obj_dict: dict[str, Any] = {"attributes": dict(attrs)}

    def set(self, name: str, value: Any) -> None:
        """Set attribute ``name``."""
        self.obj_dict["attributes"][name] = value

    def get(self, name: str) -> Any:
        """The value of attribute ``name`` (``None`` when unset)."""
        return self.obj_dict["attributes"].get(name)

    def get_attributes(self) -> dict[str, Any]:
        """All attributes, in the order they were set."""
        return self.obj_dict["attributes"]

    def _attr_text(self) -> str:
        attrs = self.get_attributes()
        if not attrs:
            return ""
        return " [" + ", ".join(f"{k}={quote(v)}" for k, v in attrs.items()) + "]"


class DotNode(_Element):
    """A node statement ``name [attr=value, ...]``."""

    def __init__(self, name: str, **attrs: Any) -> None:
        super().__init__(attrs)
        self.obj_dict["name"] = name

    def get_name(self) -> str:
        """The node's name (its DOT ID, unquoted)."""
        return self.obj_dict["name"]

    def to_string(self) -> str:
        """The node statement."""
        return f"{quote(self.get_name())}{self._attr_text()};"


class DotEdge(_Element):
    """A directed edge ``src -> dst``."""

    def __init__(self, src: str, dst: str, **attrs: Any) -> None:
        super().__init__(attrs)
        self.obj_dict["points"] = (src, dst)

    def get_source(self) -> str:
        """Name of the node the edge leaves."""
        return self.obj_dict["points"][0]

    def get_destination(self) -> str:
        """Name of the node the edge enters."""
        return self.obj_dict["points"][1]

    def to_string(self) -> str:
        """The edge statement."""
        return f"{quote(self.get_source())} -> {quote(self.get_destination())}{self._attr_text()};"


class DotGraph(_Element):
    """A ``digraph``: graph attributes, then nodes, edges and subgraphs in insertion order."""

    _keyword = "digraph"

    def __init__(self, graph_name: str = "G", **attrs: Any) -> None:
        super().__init__(attrs)
        self.obj_dict["name"] = graph_name
        self._items: list[Any] = []

    def get_name(self) -> str:
        """The graph's name."""
        return self.obj_dict["name"]

    def add_node(self, node: DotNode) -> None:
        """Append a node statement."""
        self._items.append(node)

    def add_edge(self, edge: DotEdge) -> None:
        """Append an edge statement."""
        self._items.append(edge)

    def add_subgraph(self, subgraph: DotGraph) -> None:
        """Append a subgraph (e.g. a :class:`DotCluster`)."""
        self._items.append(subgraph)

    def get_nodes(self) -> list[DotNode]:
        """Nodes declared directly in this graph (not in its subgraphs)."""
        return [i for i in self._items if isinstance(i, DotNode)]

    def get_node(self, name: str) -> list[DotNode]:
        """Every node called ``name``, subgraphs included (a list, as in pydot)."""
        return [n for n in self._all(DotNode) if n.get_name() == name]

    def get_edges(self) -> list[DotEdge]:
        """Edges declared directly in this graph."""
        return [i for i in self._items if isinstance(i, DotEdge)]

    def get_subgraphs(self) -> list[DotGraph]:
        """Direct subgraphs, in insertion order."""
        return [i for i in self._items if isinstance(i, DotGraph)]

    def _all(self, kind: type) -> Iterator[Any]:
        for item in self._items:
            if isinstance(item, kind):
                yield item
            if isinstance(item, DotGraph):
                yield from item._all(kind)

    def to_string(self) -> str:
        """The DOT source text."""
        out = [f"{self._keyword} {quote(self.get_name())} {{"]
        out.extend(f"{k}={quote(v)};" for k, v in self.get_attributes().items())
        out.extend(item.to_string() for item in self._items)
        out.append("}")
        return "\n".join(out) + "\n"

    __str__ = to_string

    def create_svg(self) -> bytes:
        """SVG bytes: from graphviz's ``dot`` when installed, else from fxkit's layout."""
        program = shutil.which("dot")
        if program is not None:
            done = subprocess.run(
                [program, "-Tsvg"], input=self.to_string().encode(), capture_output=True
            )
            if done.returncode == 0:
                return done.stdout
        return self._own_svg().encode()

    def write_svg(self, path: str | Path) -> None:
        """Write :meth:`create_svg`'s output to ``path``."""
        Path(path).write_bytes(self.create_svg())

    def write_raw(self, path: str | Path) -> None:
        """Write the DOT source to ``path``."""
        Path(path).write_text(self.to_string(), encoding="utf-8")

    def write(self, path: str | Path, format: str = "raw") -> None:
        """pydot-style ``write``: ``format`` is ``"raw"``/``"dot"`` or ``"svg"``."""
        if format in ("raw", "dot"):
            self.write_raw(path)
        elif format == "svg":
            self.write_svg(path)
        else:
            raise ValueError(f"unsupported format {format!r}; use 'raw' or 'svg' (or pydot)")

    def _own_svg(self) -> str:
        nodes = list(self._all(DotNode))
        index = {n.get_name(): i for i, n in enumerate(nodes)}
        texts = [label_lines(str(n.get("label") or n.get_name())) or [n.get_name()] for n in nodes]
        sizes = [(max(len(t) for t in lines) * 6.6 + 16, 14.0 * len(lines) + 8) for lines in texts]
        pairs = [
            (index[e.get_source()], index[e.get_destination()])
            for e in self._all(DotEdge)
            if e.get_source() in index and e.get_destination() in index
        ]
        layout = layered_layout(sizes, pairs)
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{layout.width:.0f}" '
            f'height="{layout.height:.0f}" viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
            'font-family="Menlo,Consolas,monospace" font-size="11">',
            f"<title>{escape(self.get_name())}</title>",
            '<g fill="none" stroke="#888">',
        ]
        for route in layout.routes:
            out.append(
                '<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in route) + '"/>'
            )
        out.append("</g>")
        for node, lines, (cx, cy, w, h) in zip(nodes, texts, layout.boxes):
            fill = str(node.get("fillcolor") or "white").strip('"')
            out.append(
                f'<g class="node"><title>{escape(node.get_name())}</title>'
                f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" '
                f'height="{h:.1f}" rx="4" fill="{escape(fill)}" stroke="#555"/>'
            )
            for k, line in enumerate(lines):
                y = cy - h / 2 + 15 + 14 * k
                out.append(
                    f'<text x="{cx:.1f}" y="{y:.1f}" text-anchor="middle">{escape(line)}</text>'
                )
            out.append("</g>")
        out.append("</svg>")
        return "".join(out)


class DotCluster(DotGraph):
    """A ``subgraph cluster_<name>``, drawn as a box around its nodes."""

    _keyword = "subgraph"

    def __init__(self, graph_name: str = "subG", **attrs: Any) -> None:
        super().__init__("cluster_" + graph_name, **attrs)

    def to_string(self) -> str:
        """The subgraph block (no trailing newline: it sits inside its parent)."""
        return super().to_string().rstrip("\n")


def to_dot(gm_or_graph: Any, name: str = "fxgraph") -> DotGraph:
    """A :class:`DotGraph` of any GraphModule or Graph: one box per node (name, op, target,
    dtype and shape when known), nested clusters for module scopes (``nn_module_stack``)."""
    view = graph_view(gm_or_graph)
    dot = DotGraph(name, rankdir="TB")
    clusters: dict[str, DotGraph] = {}

    def cluster_for(scopes: tuple[str, ...]) -> DotGraph:
        parent: DotGraph = dot
        for scope in scopes:
            found = clusters.get(scope)
            if found is None:
                found = DotCluster(scope, label=scope, style="rounded", color="#9aa7b8")
                clusters[scope] = found
                parent.add_subgraph(found)
            parent = found
        return parent

    for node in view.nodes:
        lines = [f"{node.name}", f"{node.op} {node.target}"]
        if node.shape:
            lines.append(f"{node.dtype} {node.shape}")
        # Backslashes start escapes (\n, \N ...) in DOT labels; user text must not.
        lines = [line.replace("\\", "\\\\") for line in lines]
        owner = cluster_for(node.scopes)
        owner.add_node(
            DotNode(
                node.name,
                label="\n".join(lines),
                shape="box",
                style="filled,rounded",
                fillcolor=node_fill(node.op, node.target),
            )
        )
    for src, dst in view.edges:
        dot.add_edge(DotEdge(view.nodes[src].name, view.nodes[dst].name))
    return dot
