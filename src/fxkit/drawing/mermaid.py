"""Mermaid flowchart text, for graphs pasted into Markdown (GitHub, GitLab, docs sites)."""

from __future__ import annotations

from typing import Any

from fxkit.drawing._model import graph_view

__all__ = ["to_mermaid"]

# Mermaid reads ``#code;`` entities inside quoted labels; these characters would otherwise end
# the label, open markup or start a comment.
_ESCAPES = str.maketrans(
    dict(zip('"#<>&`\n\r', ("#quot;", "#35;", "#lt;", "#gt;", "#amp;", "#96;", " ", " ")))
)
_SHAPES = {
    "placeholder": ('(["', '"])'),
    "output": ('(["', '"])'),
    "get_attr": ('[("', '")]'),
}
# classDef styles, in the order they are emitted: fill colour per op, one shared stroke.
_CLASSES = {
    op: f"fill:{fill},stroke:#555"
    for op, fill in (
        ("placeholder", "#f0f8ff"),
        ("output", "#b0e0e6"),
        ("call_module", "#fffacd"),
        ("get_attr", "#d3d3d3"),
        ("call_function", "#e8f4ea"),
        ("call_method", "#f3e8f4"),
    )
}


def _label(text: str) -> str:
    return text.translate(_ESCAPES)


def to_mermaid(gm_or_graph: Any, *, direction: str = "TD", scopes: bool = True) -> str:
    """A Mermaid ``flowchart`` of a GraphModule or Graph.

    Node ids are ``n0``, ``n1``, ... (always valid Mermaid ids); labels show the node name,
    target and, when known, dtype and shape. With ``scopes=True`` nodes are grouped in one
    ``subgraph`` per innermost module scope (``nn_module_stack``).
    """
    if direction not in ("TD", "TB", "BT", "LR", "RL"):
        raise ValueError(f"direction must be one of TD, TB, BT, LR, RL, got {direction!r}")
    view = graph_view(gm_or_graph)
    lines = [f"flowchart {direction}"]
    # Scope tree: statements per scope path, and each scope's child scopes in first-seen order.
    statements: dict[tuple[str, ...], list[str]] = {(): []}
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {(): []}
    for node in view.nodes:
        text = _label(node.label())
        if node.shape:
            text += "<br/>" + _label(f"{node.dtype} {node.shape}")
        opening, closing = _SHAPES.get(node.op, ('["', '"]'))
        key = node.scopes if scopes else ()
        for depth in range(len(key)):
            scope = key[: depth + 1]
            if scope not in statements:
                statements[scope] = []
                children[scope] = []
                children[key[:depth]].append(scope)
        statements[key].append(f"n{node.index}{opening}{text}{closing}:::{node.op}")
    counter = iter(range(len(statements)))

    def emit(scope: tuple[str, ...], indent: str) -> None:
        lines.extend(indent + s for s in statements[scope])
        for child in children[scope]:
            lines.append(f'{indent}subgraph s{next(counter)}["{_label(child[-1])}"]')
            emit(child, indent + "    ")
            lines.append(indent + "end")

    emit((), "    ")
    lines.extend(f"    n{src} --> n{dst}" for src, dst in view.edges)
    lines.extend(f"    classDef {op} {style}" for op, style in _CLASSES.items())
    return "\n".join(lines) + "\n"
