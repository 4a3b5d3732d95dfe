"""Graph verification behind :meth:`fxkit.graph.Graph.lint`.

Every failure names the node and prints a few nodes around it, so a broken pass can be
found without dumping the whole graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

import torch

from fxkit.node import _STRING_TARGET_OPS, OPCODES, Node

if TYPE_CHECKING:
    from fxkit.graph import Graph

__all__ = ["GraphLintError", "lint_graph"]


class GraphLintError(RuntimeError):
    """Raised by ``Graph.lint()``; the message names the bad node and shows its neighbours."""


def _context(nodes: List[Node], index: int, radius: int = 2) -> str:
    lines = []
    for i in range(max(0, index - radius), min(len(nodes), index + radius + 1)):
        mark = ">>" if i == index else "  "
        lines.append(f"  {mark} {nodes[i].format_node() or nodes[i].name}")
    return "\n".join(lines)


def _fail(nodes: List[Node], index: int, message: str) -> None:
    raise GraphLintError(f"{message}\n{_context(nodes, index)}")


def lint_graph(graph: "Graph") -> None:
    """Raise :class:`GraphLintError` on the first structural problem found."""
    nodes = list(graph.nodes)
    if len(nodes) != graph._len:
        raise GraphLintError(f"graph says it has {graph._len} nodes but {len(nodes)} are linked")
    defined: set = set()
    names: dict = {}
    outputs = 0
    root = graph.owning_module
    for i, node in enumerate(nodes):
        where = f"node {node.name!r} ({node.op})"
        if node.graph is not graph:
            _fail(nodes, i, f"lint: {where} belongs to another graph")
        if node.op not in OPCODES or node.op == "root":
            _fail(nodes, i, f"lint: {where} has an unknown opcode")
        if node.op in _STRING_TARGET_OPS and not isinstance(node.target, str):
            _fail(nodes, i, f"lint: {where} needs a string target, has {node.target!r}")
        if node.op == "call_function" and not callable(node.target):
            _fail(nodes, i, f"lint: {where} has a non-callable target {node.target!r}")
        if node.name in names:
            _fail(nodes, i, f"lint: {where} reuses the name of an earlier node")
        names[node.name] = node
        for inp in node._input_nodes:
            if inp.graph is not graph:
                _fail(nodes, i, f"lint: {where} uses {inp.name!r} from another graph")
            if inp._erased:
                _fail(nodes, i, f"lint: {where} uses erased node {inp.name!r}")
            if inp not in defined:
                _fail(nodes, i, f"lint: {where} uses {inp.name!r} before it is defined")
            if node not in inp.users:
                _fail(nodes, i, f"lint: {where} reads {inp.name!r} but is not among its users")
        for user in node.users:
            if node not in user._input_nodes:
                _fail(nodes, i, f"lint: {where} lists {user.name!r} as a user that doesn't use it")
            if user._erased or user.graph is not graph:
                _fail(nodes, i, f"lint: {where} has a stale user {user.name!r}")
        if node.op == "output":
            outputs += 1
            if outputs > 1:
                _fail(nodes, i, "lint: the graph has more than one output node")
        if root is not None and node.op in ("get_attr", "call_module"):
            _check_target(nodes, i, root)
        defined.add(node)


def _check_target(nodes: List[Node], index: int, root: torch.nn.Module) -> None:
    node = nodes[index]
    obj = root
    walked = []
    for part in node.target.split("."):
        walked.append(part)
        if not hasattr(obj, part):
            _fail(
                nodes, index,
                f"lint: {node.op} node {node.name!r} targets {node.target!r}, but the owning "
                f"module has no attribute {'.'.join(walked)!r}",
            )  # fmt: skip
        obj = getattr(obj, part)
    if node.op == "call_module" and not isinstance(obj, torch.nn.Module):
        _fail(nodes, index, f"lint: call_module target {node.target!r} is not a Module")
