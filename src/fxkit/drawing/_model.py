"""A flat, drawing-friendly snapshot of a graph.

Every renderer (DOT, Mermaid, SVG, HTML) reads the same :class:`GraphView`, so the rules for
turning a node into text (target spelling, shapes, source line, module path) live in one place.
Works on anything with the documented ``Graph``/``GraphModule`` API, including torch.fx's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

__all__ = ["ViewNode", "GraphView", "graph_view", "target_text", "short_value"]

# The innermost "File ..., line N, in fn" frame of a recorded stack trace.
_FRAME = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+), in (?P<fn>.+)$')
_MAX_ARG_TEXT = 200


@dataclass(slots=True)
class ViewNode:
    """One node as the renderers see it; ``inputs`` are indices into ``GraphView.nodes``."""

    index: int
    name: str
    op: str
    target: str
    args: str
    kwargs: str
    shape: str = ""
    dtype: str = ""
    source: str = ""
    module_path: str = ""
    scopes: tuple[str, ...] = ()  # enclosing module paths, outermost first
    kind: str = ""  # class name of a called submodule
    inputs: list[int] = field(default_factory=list)
    num_users: int = 0

    def label(self) -> str:
        """Short one-line text drawn inside the node's box."""
        if self.op in ("placeholder", "output"):
            return f"{self.name} ({self.op})"
        return f"{self.name}: {self.kind or _tail(self.target)}"

    def as_json(self) -> dict[str, Any]:
        """The fields the HTML viewer shows when the node is clicked."""
        return {
            "name": self.name,
            "op": self.op,
            "target": self.target,
            "args": self.args,
            "kwargs": self.kwargs,
            "shape": self.shape,
            "dtype": self.dtype,
            "source": self.source,
            "module": self.module_path,
            "scopes": list(self.scopes),
            "kind": self.kind,
            "inputs": self.inputs,
        }


@dataclass(slots=True)
class GraphView:
    """Nodes in graph order plus the ``(source, destination)`` index pairs of their edges."""

    nodes: list[ViewNode]
    edges: list[tuple[int, int]]

    def by_name(self) -> dict[str, ViewNode]:
        """Nodes keyed by name."""
        return {n.name: n for n in self.nodes}


def _tail(target: str) -> str:
    """The last dotted component, except for ``torch.ops`` overloads (``aten.add.Tensor``)."""
    if target.startswith("torch.ops."):
        return target[len("torch.ops.") :]
    return target.rsplit(".", 1)[-1] if "." in target and "(" not in target else target


def _graph_of(obj: Any) -> Any:
    graph = getattr(obj, "graph", None)
    if graph is not None and hasattr(graph, "nodes"):
        return graph
    if hasattr(obj, "nodes") and hasattr(obj, "create_node"):
        return obj
    raise TypeError(
        f"expected a GraphModule or a Graph, got {type(obj).__name__}; "
        "trace a module first (fxkit.symbolic_trace(model))"
    )


def target_text(target: Any) -> str:
    """A readable dotted name for any node target; never raises."""
    if isinstance(target, str):
        return target
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return f"torch.ops.{target}"  # str() is "aten.mm.default" / "aten.mm"
    name = getattr(target, "__name__", None)
    module = getattr(target, "__module__", None)
    if name and module:
        module = "operator" if module == "_operator" else module
        return name if module == "builtins" else f"{module}.{name}"
    return name or type(target).__name__


def short_value(value: Any, limit: int = _MAX_ARG_TEXT) -> str:
    """``str`` of an argument with nodes as ``%name``, cut to ``limit`` characters."""
    text = _render_arg(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render_arg(value: Any) -> str:
    if hasattr(value, "op") and hasattr(value, "users") and hasattr(value, "name"):
        return f"%{value.name}"
    if isinstance(value, tuple):
        inner = ", ".join(_render_arg(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_render_arg(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_render_arg(v)}" for k, v in value.items()) + "}"
    if callable(value) and not isinstance(value, torch.nn.Module):
        return target_text(value)
    try:
        return str(value)
    except Exception:  # a broken __str__ must not stop the drawing
        return f"<{type(value).__name__}>"


def _tensor_facts(value: Any, shapes: list[str], dtypes: list[str]) -> None:
    """Collect shape/dtype strings from a tensor, TensorMetadata or a container of them."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        shapes.append("[" + ", ".join(str(d) for d in shape) + "]")
        dtypes.append(str(dtype).replace("torch.", ""))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensor_facts(item, shapes, dtypes)
    elif isinstance(value, dict):
        for item in value.values():
            _tensor_facts(item, shapes, dtypes)
    elif isinstance(value, (int, float, bool, torch.SymInt, torch.SymFloat)):
        shapes.append(str(value))
        dtypes.append(type(value).__name__)


def source_line(stack_trace: Any) -> str:
    """``file:line code`` of the innermost frame in a ``meta["stack_trace"]`` text."""
    if not isinstance(stack_trace, str):
        return ""
    lines = stack_trace.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        found = _FRAME.match(lines[i])
        if found:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{found['file']}:{found['line']} {code}".rstrip()
    return ""


def _module_paths(node: Any) -> list[str]:
    """Module paths a node was created in, outermost first (``nn_module_stack``, or the
    prefixes of a ``call_module``/``get_attr`` target when the stack was not recorded)."""
    stack = node.meta.get("nn_module_stack") if node.meta else None
    paths: list[str] = []
    if stack:
        for value in stack.values():
            path = value[0] if isinstance(value, tuple) else value
            if isinstance(path, str) and path and path not in paths:
                paths.append(path)
        return paths
    if node.op in ("call_module", "get_attr") and isinstance(node.target, str):
        parts = node.target.split(".")
        depth = len(parts) if node.op == "call_module" else len(parts) - 1
        paths = [".".join(parts[: i + 1]) for i in range(depth)]
    return paths


def _submodule_kind(owner: Any, node: Any) -> str:
    if node.op != "call_module" or owner is None or not isinstance(node.target, str):
        return ""
    try:
        return type(owner.get_submodule(node.target)).__name__
    except Exception:  # the graph may name a module its owner no longer has
        return ""


def _input_nodes(node: Any) -> Iterable[Any]:
    found = getattr(node, "all_input_nodes", None)
    return found if found is not None else ()


def graph_view(obj: Any) -> GraphView:
    """Snapshot ``obj`` (a GraphModule or Graph, fxkit's or torch.fx's) for drawing."""
    graph = _graph_of(obj)
    owner = obj if isinstance(obj, torch.nn.Module) else getattr(graph, "owning_module", None)
    nodes: list[ViewNode] = []
    index: dict[Any, int] = {}
    edges: list[tuple[int, int]] = []
    for node in graph.nodes:
        meta = node.meta or {}
        shapes: list[str] = []
        dtypes: list[str] = []
        for key in ("tensor_meta", "val", "example_value"):
            if meta.get(key) is not None:
                _tensor_facts(meta[key], shapes, dtypes)
                break
        paths = _module_paths(node)
        # A call_module node is the module itself: it sits in the scopes around it.
        scopes = paths[:-1] if paths and paths[-1] == node.target else paths
        i = len(nodes)
        view = ViewNode(
            index=i,
            name=node.name,
            op=node.op,
            target=target_text(node.target),
            args=short_value(tuple(node.args)),
            kwargs=short_value(dict(node.kwargs)),
            shape=", ".join(shapes),
            dtype=", ".join(dict.fromkeys(dtypes)),
            source=source_line(meta.get("stack_trace") or meta.get("fxkit_source")),
            module_path=paths[-1] if paths else "",
            scopes=tuple(scopes),
            kind=_submodule_kind(owner, node),
            num_users=len(node.users),
        )
        for source in _input_nodes(node):
            j = index.get(source)
            if j is not None:
                view.inputs.append(j)
                edges.append((j, i))
        index[node] = i
        nodes.append(view)
    return GraphView(nodes, edges)
