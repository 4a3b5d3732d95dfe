"""Merge independent ``torch.matmul`` calls that share a right-hand operand into one.

``A @ C`` and ``B @ C`` become ``torch.cat([A, B]) @ C`` followed by a split of the rows,
which is one larger (and usually faster) matrix multiply. :func:`merge_matmul` produces the
graph torch.fx's ``experimental.merge_matmul`` produces.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import torch

from fxkit._symbolic_trace import symbolic_trace
from fxkit.graph_module import GraphModule
from fxkit.node import Node

__all__ = ["split_result_tensors", "may_depend_on", "are_nodes_independent", "merge_matmul"]


def split_result_tensors(
    result: torch.Tensor, inputs: list[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Split the rows of a merged matmul ``result`` back into one chunk per left operand in
    ``inputs`` (each chunk as tall as its operand).

    While tracing, ``result`` is a proxy whose operands have no concrete sizes; the split is
    then recorded with zero-sized chunks, as torch.fx records it.
    """
    if isinstance(result, torch.Tensor):
        sizes = [operand.shape[0] for operand in inputs]
    else:
        sizes = [0] * len(inputs)
    return torch.split(result, sizes)


def may_depend_on(a: Node, b: Node, search_depth: int = 6) -> bool:
    """True if ``a`` may read ``b``'s value, directly or through other nodes; False only if
    it certainly does not. A node depends on itself. The search follows inputs at most
    ``search_depth`` steps up from ``a``; a path still open after that counts as a dependency.
    """
    # Walk up from ``a`` one level of inputs at a time; sets merge paths that meet, which
    # keeps the walk linear in the nodes visited instead of exponential in the depth.
    level: set[Any] = {a}
    for steps_left in range(search_depth, -1, -1):
        if b in level:
            return True
        above: set[Any] = set()
        for node in level:
            inputs = node.all_input_nodes
            if inputs and steps_left == 0:
                return True
            above.update(inputs)
        if not above:
            return False
        level = above
    return False


def are_nodes_independent(nodes: list[Node]) -> bool:
    """True if no two of ``nodes`` may depend on each other (see :func:`may_depend_on`)."""
    return not any(
        may_depend_on(x, y) or may_depend_on(y, x) for x, y in itertools.combinations(nodes, 2)
    )


def _operand_key(node: Node) -> Any:
    # Two get_attr nodes of one attribute are the same operand: key them by the attribute.
    return node.target if node.op == "get_attr" else node


def _matmuls_by_rhs(graph: Any) -> dict[Any, list[Node]]:
    groups: dict[Any, list[Node]] = {}
    for node in graph.nodes:
        if node.op != "call_function" or node.target is not torch.matmul:
            continue
        if len(node.args) != 2 or not all(isinstance(a, Node) for a in node.args):
            continue  # matmul with keyword or constant operands: leave it alone
        groups.setdefault(_operand_key(node.args[1]), []).append(node)
    return groups


def _as_node(graph: Any, operand: Any) -> Node:
    """A node for a (possibly get_attr-keyed) operand, re-reading attributes afresh."""
    if isinstance(operand, Node):
        return operand
    return graph.get_attr(operand)


def merge_matmul(in_mod: torch.nn.Module) -> GraphModule:
    """Trace ``in_mod`` and merge each group of mutually independent ``torch.matmul`` calls
    with the same right-hand side into one matmul of the concatenated left-hand sides::

        A (M x K) @ C (K x R)                 [A; B] ((M+T) x K) @ C  ->  split rows M, T
        B (T x K) @ C (K x R)       ==>

    Returns the traced GraphModule with the merged graph (topologically re-sorted).
    """
    from fxkit.passes.tools_common import legalize_graph

    gm = symbolic_trace(in_mod)
    graph = gm.graph
    merged_any = False
    for rhs_key, matmuls in _matmuls_by_rhs(graph).items():
        # Independence is judged on the graph as edited so far: an earlier merge can make
        # one matmul of this group read another's operand.
        if len(matmuls) < 2 or not are_nodes_independent(matmuls):
            continue
        _merge_group(graph, rhs_key, matmuls)
        merged_any = True
    # torch.fx re-sorts after each merge, leaving the next group's nodes in the old graph
    # (it raises "from wrong graph" when two groups merge); one sort at the end gives the
    # same graph for one group and a valid one for several.
    if merged_any:
        legalize_graph(gm)
    gm.recompile()
    gm.graph.lint()
    return gm


def _merge_group(graph: Any, rhs_key: Any, matmuls: list[Node]) -> None:
    """Replace ``matmuls`` (same right operand ``rhs_key``) by cat -> matmul -> split ->
    getitem nodes appended at the end of ``graph`` (out of order until re-sorted)."""
    lhs = [_as_node(graph, _operand_key(mm.args[0])) for mm in matmuls]
    rhs = _as_node(graph, rhs_key)
    stacked = graph.call_function(torch.cat, (lhs,), {})
    product = graph.call_function(torch.matmul, (stacked, rhs), {})
    pieces = graph.call_function(split_result_tensors, (product, lhs), {})
    # all the getitems first, then the replacements: the order torch.fx names them in
    chunks = [graph.call_function(operator.getitem, (pieces, i), {}) for i in range(len(lhs))]
    for old, chunk in zip(matmuls, chunks):
        old.replace_all_uses_with(chunk)
        graph.erase_node(old)
