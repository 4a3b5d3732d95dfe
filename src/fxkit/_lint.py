"""Graph verification behind :meth:`fxkit.graph.Graph.lint`.

Every failure names the node and prints a few nodes around it, so a broken pass can be
found without dumping the whole graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List

import torch

from fxkit.node import OPCODES, Node

if TYPE_CHECKING:
    from fxkit.graph import Graph

__all__ = ["GraphLintError", "lint_graph"]


# lint() raises torch.fx's builtin types themselves (RuntimeError, ValueError for a target of
# the wrong kind), so code comparing exception types by name sees the same thing; this name
# stays for code that imported it.
GraphLintError = RuntimeError


def _context(nodes: List[Node], index: int, radius: int = 2) -> str:
    lines = []
    for i in range(max(0, index - radius), min(len(nodes), index + radius + 1)):
        mark = ">>" if i == index else "  "
        lines.append(f"  {mark} {nodes[i].format_node() or nodes[i].name}")
    return "\n".join(lines)


def _fail(nodes: List[Node], index: int, message: str, kind: type = RuntimeError) -> None:
    # torch.fx's sentence first (code may match on it), then where it happened.
    raise kind(f"{message}\nlint: the problem is at the node marked >>:\n{_context(nodes, index)}")


def lint_graph(graph: "Graph") -> None:
    """Raise on the first structural problem, with torch.fx's exception type and text.

    The checks and their order follow torch.fx: opcodes, ownership, inputs defined before use
    (which also catches erased inputs and cycles), unique names; then, with an owning module,
    target kinds and that get_attr/call_module targets exist. fxkit also checks that the
    users/inputs bookkeeping agrees.
    """
    nodes = list(graph.nodes)
    if len(nodes) != graph._len:
        raise RuntimeError(f"graph says it has {graph._len} nodes but {len(nodes)} are linked")
    defined: set = set()
    names: set = set()
    for i, node in enumerate(nodes):
        if node.op not in OPCODES or node.op == "root":
            _fail(nodes, i, f"Node {node} had unknown opcode {node.op}!")
        if node.graph is not graph:
            _fail(nodes, i, f"Node '{node}' does not belong to this Graph!")
        for inp in node._input_nodes:
            if inp.graph is not graph:
                _fail(
                    nodes, i,
                    f"Argument '{inp}' of Node '{node}' does not belong to this Graph, but was "
                    "used as an argument! If you are copying nodes from another graph, make "
                    "sure to use ``arg_transform`` on node_copy() to remap values",
                )  # fmt: skip
            if inp not in defined:
                state = " (it was erased)" if inp._erased else ""
                _fail(
                    nodes, i,
                    f"Argument '{inp}' of Node '{node}' was used before it has been defined! "
                    f"Please check that Nodes in the graph are topologically ordered{state}",
                )  # fmt: skip
            if node not in inp.users:
                _fail(nodes, i, f"lint: {node.name!r} reads {inp.name!r} but is not its user")
        defined.add(node)
        if node.name in names:
            _fail(nodes, i, f"Node redefined name {node.name}!")
        names.add(node.name)
        for user in node.users:
            if node not in user._input_nodes:
                _fail(nodes, i, f"lint: {node.name!r} lists {user.name!r} as a user; it isn't")
    root = graph.owning_module
    if root is None:
        return
    for i, node in enumerate(nodes):
        target = node.target
        if node.op == "call_function":
            if not callable(target):
                _fail(nodes, i, _kind_text(node, "a Callable"), ValueError)
        elif not isinstance(target, str):
            _fail(nodes, i, _kind_text(node, "a str"), ValueError)
        if node.op in ("get_attr", "call_module"):
            _check_target(nodes, i, root)


def _kind_text(node: Node, expected: str) -> str:
    return (
        f"Node {node} target {node.target} has type {torch.typename(node.target)} but "
        f"{expected} is expected"
    )


def _check_target(nodes: List[Node], index: int, root: torch.nn.Module) -> None:
    node = nodes[index]
    obj: object = root
    atoms = node.target.split(".")
    for i, atom in enumerate(atoms):
        found = getattr(obj, atom, None)
        seen = ".".join(atoms[:i])
        if found is None:
            _fail(
                nodes, index,
                f"Node {node} target {node.target} references nonexistent attribute {atom} "
                f"of {seen}",
            )  # fmt: skip
        if node.op == "call_module" and not isinstance(found, torch.nn.Module):
            _fail(
                nodes, index,
                f"Node {node} target {node.target} {atom} of {seen} does not reference an "
                "nn.Module",
            )  # fmt: skip
        obj = found
