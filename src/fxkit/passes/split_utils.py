"""Split a GraphModule into one submodule per tag (:func:`split_by_tags`), plus helpers.

Every call node of the input graph carries a ``tag`` attribute (``node.tag = "acc"``). All
nodes sharing a tag go into one submodule, in the order of the ``tags`` list, and a new top
graph calls those submodules one after the other. Placeholders stay in the top graph,
``get_attr`` nodes are copied into each submodule that reads them.

The input may be a fxkit or a torch.fx GraphModule (nodes are read through the documented
API only); the result is a fxkit module.
"""

from __future__ import annotations

import copy
import operator
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple, Union

import torch

from fxkit.codegen import CodeGen
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node, _map_nodes_of_class, map_arg
from fxkit.passes.utils.common import HolderModule, lift_subgraph_as_module

if TYPE_CHECKING:
    from fxkit.passes.splitter_base import Subgraph

__all__ = [
    "getattr_recursive", "setattr_recursive", "Component", "split_by_tags",
    "move_non_tensor_nodes_on_boundary",
]  # fmt: skip

_CALLABLE_OPS = frozenset(("call_module", "call_function", "call_method"))


def getattr_recursive(obj: object, name: str) -> Any:
    """Follow the dotted path ``name`` from ``obj``; ``None`` when any step is missing.

    Inside an ``nn.ModuleList`` a step is looked up among its children only.
    """
    current: Any = obj
    for part in name.split("."):
        if isinstance(current, torch.nn.ModuleList):
            children = getattr(current, "_modules", None)
            current = children.get(part) if children is not None else None
            if current is None:
                return None
        elif hasattr(current, part):
            current = getattr(current, part)
        else:
            return None
    return current


def setattr_recursive(obj: object, attr: str, value: object) -> None:
    """Set the attribute at dotted path ``attr`` below ``obj`` (every parent must exist)."""
    *parents, leaf = attr.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, leaf, value)


@dataclass
class Component:
    """The subgraph being collected for one tag, and what links it to the rest."""

    graph: Graph
    order: int
    name: str

    input_placeholders: List[Node] = field(default_factory=list)
    """Placeholders of ``graph``, one per entry of ``orig_inputs``."""
    orig_inputs: List[Node] = field(default_factory=list)
    """Nodes of the original graph that this component receives as inputs."""
    orig_outputs: List[Node] = field(default_factory=list)
    """Nodes of the original graph whose values this component returns."""
    getattr_maps: Dict[Node, Node] = field(default_factory=dict)
    """``get_attr`` node of the original graph -> its copy in ``graph``."""
    constructor_args: List[str] = field(default_factory=list)
    gm: Optional[GraphModule] = None


def _arg_mapper(graph: Any) -> Callable[[Any, Callable], Any]:
    """``map_arg`` for the nodes of ``graph``, which may come from torch.fx (duck typed)."""
    node_cls = Node
    for node in graph.nodes:
        node_cls = type(node)
        break
    if issubclass(node_cls, Node):
        return map_arg
    return lambda a, fn: _map_nodes_of_class(a, fn, node_cls)


class _TagSplit:
    """The state of one :func:`split_by_tags` run: components, and the new top graph."""

    def __init__(self, gm: Any, tags: List[str]) -> None:
        self.gm = gm
        self.map_nodes = _arg_mapper(gm.graph)
        self.components = [Component(Graph(), i, f"{tag}") for i, tag in enumerate(tags)]
        self.by_tag = dict(zip(tags, self.components))
        self.main = Graph()
        self.in_main: Dict[Any, Any] = {}  # original node -> node of the top graph
        self.copied: Dict[Any, Node] = {}  # original call node -> its copy in a component
        self.owner: Dict[Any, Component] = {}  # original call node -> its component
        # Nodes whose value the top graph handles (inputs of some component or outputs of
        # the whole graph), in the order they were first seen.
        self.needed_in_main: Dict[Any, None] = {}
        # Per component: original input node -> index in orig_inputs (O(1) membership).
        self.input_index: Dict[int, Dict[Any, int]] = {c.order: {} for c in self.components}

    def nodes_in(self, arg: Any) -> List[Any]:
        found: List[Any] = []
        self.map_nodes(arg, found.append)
        return found

    def add_placeholder(self, node: Any) -> None:
        ph = self.main.placeholder(node.name, type_expr=node.type)
        ph.meta = copy.copy(node.meta)
        self.in_main[node] = ph

    def component_of(self, node: Any) -> Component:
        if not hasattr(node, "tag"):
            raise AssertionError(f"Node does not have tag: {node.format_node()}")
        try:
            comp = self.by_tag[node.tag]
        except KeyError:
            raise KeyError(
                f"{node.tag!r} (node {node.name!r} is tagged {node.tag!r}, which is not in "
                f"the tags passed to split_by_tags: {list(self.by_tag)})"
            ) from None
        upstream = 0
        for inp in self.nodes_in(node.args) + self.nodes_in(node.kwargs):
            if inp.op != "placeholder" and inp.op != "get_attr":
                upstream = max(upstream, self.owner[inp].order)
        if comp.order < upstream:
            raise AssertionError(
                f"Component {comp.name} order must be >= max of its upstream components, "
                f"order={comp.order} and max={upstream}"
            )
        return comp

    def input_for(self, comp: Component, value: Any) -> Node:
        """The node of ``comp``'s graph standing for ``value`` (an original node)."""
        if value.op == "get_attr":
            if not isinstance(value.target, str):
                raise RuntimeError(
                    f"Expected get_attr node target to be a str, got {type(value.target)}"
                )
            local = comp.getattr_maps.get(value)
            if local is None:
                local = comp.graph.get_attr(value.target, type_expr=value.type)
                local.meta = copy.copy(value.meta)
                comp.getattr_maps[value] = local
            return local
        if value.op != "placeholder" and self.owner[value] is comp:
            return self.copied[value]
        index = self.input_index[comp.order]
        at = index.get(value)
        if at is None:
            at = index[value] = len(comp.orig_inputs)
            comp.orig_inputs.append(value)
            ph = comp.graph.placeholder(value.name, type_expr=value.type)
            ph.meta = copy.copy(value.meta)
            comp.input_placeholders.append(ph)
            self.needed_in_main[value] = None
        return comp.input_placeholders[at]

    def copy_into(self, comp: Component, node: Any) -> None:
        def local(value: Any) -> Node:
            return self.input_for(comp, value)

        args = self.map_nodes(node.args, local)
        kwargs = self.map_nodes(node.kwargs, local)
        new = comp.graph.create_node(node.op, node.target, args, kwargs, node.name, node.type)
        new.meta = copy.copy(node.meta)
        new.tag = node.tag  # type: ignore[attr-defined]
        self.copied[node] = new
        self.owner[node] = comp

    def build_component(self, comp: Component, return_tuple: bool) -> Dict[str, str]:
        """Finish ``comp``'s graph, make its module, and call it from the top graph."""
        results = tuple(self.copied[n] for n in comp.orig_outputs)
        if return_tuple or len(results) != 1:
            comp.graph.output(results)
        else:
            comp.graph.output(results[0])
        comp.gm, fqn_map = lift_subgraph_as_module(
            self.gm, subgraph=comp.graph, comp_name=comp.name
        )
        call = self.main.call_module(
            comp.name, args=tuple(self.in_main[n] for n in comp.orig_inputs), kwargs=None
        )
        if len(results) == 1 and not return_tuple:
            self.in_main[comp.orig_outputs[0]] = call
        else:
            for i, produced in enumerate(comp.orig_outputs):
                self.in_main[produced] = self.main.call_function(operator.getitem, (call, i))
        return fqn_map


def split_by_tags(
    gm: GraphModule,
    tags: List[str],
    return_fqn_mapping: bool = False,
    return_tuple: bool = False,
    GraphModuleCls: type = GraphModule,
) -> Union[GraphModule, Tuple[GraphModule, Dict[str, str]]]:
    """Split ``gm`` into one submodule per entry of ``tags``, named after the tag.

    Every call node must have a ``tag`` attribute naming one of ``tags``, and a node's tag may
    not come before the tags of the nodes it reads (``tags`` is the execution order).
    Placeholders stay in the top graph; a ``get_attr`` node is copied into every submodule
    that reads it. Each submodule returns the values that later submodules or the output
    need: one value as itself, several as a tuple (always a tuple with ``return_tuple``).

    Returns the top module, an instance of ``GraphModuleCls`` whose children are the
    submodules; with ``return_fqn_mapping`` also a map from each original qualified name of a
    submodule or attribute to its new path (``"<tag>.<name>"``).

    Raises ``AssertionError`` for an untagged call node or a tag order violation, and
    ``KeyError`` for a tag that is not in ``tags``.
    """
    state = _TagSplit(gm, tags)
    output_node = None
    for node in gm.graph.nodes:
        op = node.op
        if op == "output":
            if output_node is not None:
                raise RuntimeError("Multiple output nodes in graph!")
            output_node = node
        elif op == "placeholder":
            state.add_placeholder(node)
        elif op != "get_attr":  # get_attr nodes are copied into the components that read them
            state.copy_into(state.component_of(node), node)
    if output_node is None:
        raise RuntimeError("Graph had no output node!")

    returned = state.nodes_in(output_node.args[0])
    for value in returned:
        if value.op == "get_attr":
            # Named after the node: the attribute is stored on the top module under that name.
            state.in_main[value] = state.main.get_attr(value.name, type_expr=value.type)
        else:
            state.needed_in_main[value] = None
    for value in state.needed_in_main:
        if value.op != "placeholder":
            state.owner[value].orig_outputs.append(value)

    fqn_mapping: Dict[str, str] = {}
    for comp in state.components:
        fqn_mapping.update(state.build_component(comp, return_tuple))

    main = state.main
    main.output(state.map_nodes(output_node.args[0], state.in_main.__getitem__))
    root = HolderModule({comp.name: comp.gm for comp in state.components})
    codegen = getattr(gm.graph, "_codegen", None)
    if isinstance(codegen, CodeGen):  # a torch.fx code generator cannot run on a fxkit graph
        main._codegen = codegen
    for value in returned:
        if value.op == "get_attr":
            setattr(root, value.name, getattr_recursive(gm, value.target))
    result = GraphModuleCls(root, main)
    return (result, fqn_mapping) if return_fqn_mapping else result


def is_node_output_tensor(node: Node) -> bool:
    """Whether shape propagation recorded a tensor type for ``node`` (see ``tools_common``)."""
    from fxkit.passes.tools_common import is_node_output_tensor as check

    return check(node)


def move_non_tensor_nodes_on_boundary(subgraphs: List["Subgraph"]) -> None:
    """Move non-tensor nodes at the edge of an accelerated subgraph into the subgraph that
    consumes them, so no non-tensor value crosses from an ``is_acc`` subgraph to another.

    A non-tensor node whose call-node users all live in one other subgraph is moved there,
    together with the nodes of its own subgraph downstream of it, provided none of those
    reaches a third subgraph; then its non-tensor parents are considered the same way.
    ``subgraphs`` (each with ``nodes`` and ``is_acc``) is edited in place; each move and each
    node that cannot move is printed.
    """
    where: Dict[Any, int] = {}
    for index, sub in enumerate(subgraphs):
        for node in sub.nodes:
            where[node] = index

    def children(node: Any) -> List[Any]:
        return [u for u in node.users if u.op in _CALLABLE_OPS and u in where]

    def crosses_out(node: Any, home: int) -> bool:
        return any(where[c] != home for c in children(node))

    def closure(start: Any, home: int, dest: int) -> Optional[Set[Any]]:
        """``start`` and its descendants inside ``home`` (stopping at ``dest``), or None when
        one of them feeds a third subgraph."""
        moving: Set[Any] = set()
        seen: Set[Any] = set()
        stack = [start]
        while stack:
            node = stack.pop()
            if node in seen or node not in where:
                continue
            seen.add(node)
            if where[node] == dest:
                continue
            if where[node] != home:
                return None
            moving.add(node)
            stack.extend(reversed(children(node)))
        return moving

    for home, sub in enumerate(subgraphs):
        if not sub.is_acc:  # nodes never move out of a non-accelerated subgraph
            continue
        queue = deque(n for n in sub.nodes if not is_node_output_tensor(n) and crosses_out(n, home))
        done: Set[Any] = set()
        while queue:
            node = queue.popleft()
            if node in done:
                continue
            done.add(node)
            if where.get(node) != home:
                continue
            users = children(node)
            if not users:
                raise AssertionError("Only node that has children in other subgraph can be moved")
            targets = {where[u] for u in users if where[u] != home}
            if len(targets) != 1:
                print(
                    f"Cannot move non-tensor node {node.name} on boundary because it has "
                    "children in multiple subgraphs"
                )
                continue
            dest = targets.pop()
            moving = closure(node, home, dest)
            if moving is None:
                continue
            _move_nodes(subgraphs, moving, home, dest, where, node)
            for parent in node.all_input_nodes:
                if (
                    parent.op in _CALLABLE_OPS
                    and where.get(parent) == home
                    and parent not in done
                    and not is_node_output_tensor(parent)
                ):
                    if not crosses_out(parent, home):
                        raise AssertionError(
                            f"Parent {parent.name} should have children in another subgraph"
                        )
                    queue.append(parent)


def _move_nodes(
    subgraphs: List[Any], moving: Set[Any], home: int, dest: int, where: Dict[Any, int], why: Any
) -> None:
    def label(index: int) -> str:
        return f"{'acc' if subgraphs[index].is_acc else 'gpu'}_{index}"

    for node in moving:
        subgraphs[home].nodes.remove(node)
        subgraphs[dest].nodes.append(node)
        where[node] = dest
        print(
            f"In order move the non-tensor node {why.name} on boundary, moved node "
            f"{node.name} from {label(home)} to {label(dest)}"
        )
