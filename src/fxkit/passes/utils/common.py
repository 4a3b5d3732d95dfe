"""Small building blocks shared by the splitting passes.

:class:`HolderModule` is an empty ``nn.Module`` used as a namespace; :func:`lift_subgraph_as_module`
turns a graph whose nodes were copied out of a bigger module into a GraphModule that owns just
the submodules and attributes it reads; :func:`compare_graphs` tells whether two graphs compute
the same thing with the same structure.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch.nn import Module

from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.passes.utils.matcher_utils import SubgraphMatcher

__all__ = ["HolderModule", "lift_subgraph_as_module", "compare_graphs"]


class HolderModule(Module):
    """A plain module whose children are the entries of ``d`` (name -> module), in order.

    Splitting passes use it as the root that a new GraphModule copies its attributes from.
    """

    def __init__(self, d: Dict[str, Optional[Module]]) -> None:
        super().__init__()
        for name, child in d.items():
            self.add_module(name, child)


def _holder_path(root: HolderModule, source: Any, parts: list) -> Tuple[Any, Any]:
    """Walk ``parts`` below ``root`` (making HolderModules where missing) and below ``source``
    in step; return the two objects reached."""
    for part in parts:
        if not hasattr(root, part):
            root.add_module(part, HolderModule({}))
        root = getattr(root, part)
        source = getattr(source, part)
    return root, source


def _hold(holder: Module, name: str, value: Any) -> None:
    # A tensor that is not a parameter ends up a buffer of the new module (torch.fx registers
    # it as one when it copies attributes), so hold it as a buffer already.
    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        holder.register_buffer(name, value)
    else:
        setattr(holder, name, value)


def lift_subgraph_as_module(
    gm: GraphModule, subgraph: Graph, comp_name: str = "", class_name: str = "GraphModule"
) -> Tuple[GraphModule, Dict[str, str]]:
    """Make a GraphModule running ``subgraph``, whose nodes were copied from ``gm``'s graph.

    Every ``call_module``/``get_attr`` target of ``subgraph`` is looked up in ``gm`` and placed
    at the same dotted path under a fresh :class:`HolderModule` (intermediate holders are made
    as needed), which becomes the new module's root.

    Returns the module and a map from each such original qualified name to
    ``"<comp_name>.<name>"``, its path once the module is installed as ``comp_name``.
    """
    holder = HolderModule({})
    fqn_map: Dict[str, str] = {}
    for node in subgraph.nodes:
        if node.op != "call_module" and node.op != "get_attr":
            continue
        target = node.target
        if not isinstance(target, str):
            raise AssertionError(f"Expected str target, got {type(target)}")
        *parents, leaf = target.split(".")
        parent, source = _holder_path(holder, gm, parents)
        if parent is not source:  # else a whole source module is already installed there
            _hold(parent, leaf, getattr(source, leaf))
        fqn_map[target] = f"{comp_name}.{target}"
    if isinstance(subgraph, Graph):
        return GraphModule(holder, subgraph, class_name), fqn_map
    # A torch.fx subgraph becomes a torch.fx GraphModule: the class is found on ``gm``'s own
    # class hierarchy, so fxkit never imports torch.fx for it.
    library_module = next(c for c in type(gm).__mro__ if c.__name__ == "GraphModule")
    return library_module(holder, subgraph, class_name), fqn_map


def compare_graphs(left: Graph, right: Graph) -> bool:
    """True when ``left`` and ``right`` are the same computation: the same inputs and outputs
    in the same order and the same nodes wired the same way (names may differ)."""
    matcher = SubgraphMatcher(left, match_output=True, match_placeholder=True)
    return len(matcher.match(right)) > 0
