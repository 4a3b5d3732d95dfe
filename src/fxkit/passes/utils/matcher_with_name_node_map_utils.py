"""A subgraph matcher whose pattern also names the nodes a caller wants back.

The pattern returns its usual outputs plus, as the last element, a ``{name: node}`` dict::

    def pattern(x, weight):
        conv = F.conv2d(x, weight)
        relu = F.relu(conv)
        return relu, {"conv": conv, "relu": relu}

Each match then carries ``name_node_map`` (``{"conv": <graph node>, "relu": <graph node>}``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from torch.utils import _pytree as pytree

from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.interpreter import _node_class
from fxkit.node import Node

from .matcher_utils import InternalMatch, SubgraphMatcher

__all__ = ["SubgraphMatcherWithNameNodeMap"]


def _split_to_graph_and_name_node_map(gm: GraphModule) -> Tuple[GraphModule, Dict[str, Node]]:
    """Strip the trailing name dict from ``gm``'s output (in place) and return it."""
    output = gm.graph.output_node()
    codegen = gm.graph._codegen
    info = getattr(codegen, "pytree_info", None)
    out_spec = getattr(info, "out_spec", None) if info is not None else None
    if out_spec is not None:
        value: Any = pytree.tree_unflatten(list(output.args[0]), out_spec)
    else:
        value = output.args[0]
    if not isinstance(value, tuple) or len(value) < 2:
        raise ValueError(
            "the pattern must return a tuple of its outputs followed by a {name: node} dict, "
            f"got {type(value).__name__}"
        )
    *outs, name_node_map = value
    node_cls = _node_class(gm.graph)
    if not isinstance(name_node_map, dict) or not all(
        isinstance(k, str) and isinstance(v, (Node, node_cls)) for k, v in name_node_map.items()
    ):
        raise ValueError("the last value the pattern returns must be a dict of str -> node")
    if out_spec is not None:
        flat, new_spec = pytree.tree_flatten(outs)
        output.args = (flat,)
        codegen.pytree_info = info._replace(out_spec=new_spec)  # type: ignore[union-attr]
    else:
        output.args = (outs[0] if len(outs) == 1 else tuple(outs),)
    gm.recompile()
    return gm, dict(name_node_map)


class SubgraphMatcherWithNameNodeMap(SubgraphMatcher):
    """:class:`SubgraphMatcher` over a pattern GraphModule that returns a name -> node dict.

    The dict is removed from the pattern (so it does not take part in matching) and every
    match gets ``name_node_map`` mapping those names to the matched graph nodes. The pattern
    GraphModule is edited in place.
    """

    # fmt: off
    def __init__(self, pattern_gm: GraphModule, match_output: bool = False,
                 match_placeholder: bool = False, remove_overlapping_matches: bool = True,
                 ignore_literals: bool = False) -> None:
        # fmt: on
        # torch.fx GraphModules (torch.export, make_fx) are fine too: only the API is used.
        if not hasattr(pattern_gm, "graph") or not hasattr(pattern_gm, "recompile"):
            raise TypeError(
                f"SubgraphMatcherWithNameNodeMap expects a GraphModule pattern, got "
                f"{type(pattern_gm).__name__}"
            )
        pattern_gm, name_node_map = _split_to_graph_and_name_node_map(pattern_gm)
        self.name_node_map = name_node_map
        options = dict(
            match_output=match_output,
            match_placeholder=match_placeholder,
            remove_overlapping_matches=remove_overlapping_matches,
            ignore_literals=ignore_literals,
        )
        super().__init__(pattern_gm.graph, **options)

    def match(self, graph: Graph, node_name_match: str = "") -> List[InternalMatch]:
        """Matches as :meth:`SubgraphMatcher.match`, each with ``name_node_map`` filled."""
        found = super().match(graph, node_name_match)
        for m in found:
            for name, pn in self.name_node_map.items():
                m.name_node_map[name] = m.nodes_map[pn]
        return found
