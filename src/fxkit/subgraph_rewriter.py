"""Find-and-replace on graphs: :func:`replace_pattern` swaps every occurrence of a pattern
subgraph for a copy of a replacement subgraph.

Matching is :class:`~fxkit.passes.utils.matcher_utils.SubgraphMatcher`'s (use-def structure,
not names; non-overlapping; matched internals must not be used outside the match). Every
input is checked before the graph is touched, and a call that fails midway (a raising
replacement_callback or node hook) is undone, so a failed call leaves ``gm`` as it was.
``gm``, the pattern and the replacement may be fxkit's or torch.fx's (torch.export, make_fx).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch

from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.interpreter import _node_class
from fxkit.node import Node, _map_nodes_of_class, map_arg

if TYPE_CHECKING:
    from fxkit.passes.utils.matcher_utils import InternalMatch

__all__ = ["Match", "replace_pattern", "replace_pattern_with_filters", "ReplacedPatterns"]

PatternLike = Union[Callable[..., Any], Graph, GraphModule, torch.nn.Module]
MatchFilter = Callable[["InternalMatch", Graph, Graph], bool]
ReplacementCallback = Callable[["InternalMatch", Graph, Graph], Graph]


class Match(NamedTuple):
    """Where a pattern matched: ``anchor`` is the pattern node the match grew from and
    ``nodes_map`` maps pattern nodes to the nodes of the larger graph."""

    anchor: Node
    nodes_map: Dict[Node, Node]


@dataclass
class ReplacedPatterns:
    """A :class:`Match` plus ``replacements``: the nodes inserted in its place."""

    anchor: Node
    nodes_map: Dict[Node, Node]
    replacements: List[Node]


def _is_graph(obj: Any) -> bool:
    # fxkit's Graph or torch.fx's: anything with the Graph API that is not a module.
    return isinstance(obj, Graph) or (
        hasattr(obj, "nodes") and hasattr(obj, "create_node") and not callable(obj)
    )


def _is_graph_module(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module) and _is_graph(getattr(obj, "graph", None))


def _as_graph(obj: Any, role: str) -> Tuple[Graph, Optional[torch.nn.Module]]:
    """The graph behind a pattern/replacement given as Graph, GraphModule, Module or callable,
    and the module holding the attributes its ``get_attr``/``call_module`` nodes name."""
    if _is_graph_module(obj):
        return obj.graph, obj
    if _is_graph(obj):
        return obj, None
    if callable(obj):
        from fxkit._symbolic_trace import symbolic_trace

        traced = symbolic_trace(obj)
        return traced.graph, obj if isinstance(obj, torch.nn.Module) else traced
    raise TypeError(
        f"{role} must be a function, nn.Module, GraphModule or Graph, got {type(obj).__name__}"
    )


def _returned_values(graph: Graph) -> tuple:
    out = graph.output_node()
    value = out.args[0] if out.args else None
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _check_replacement(
    replacement: Graph,
    n_inputs: int,
    n_outputs: int,
    gm: GraphModule,
    module: Optional[torch.nn.Module],
) -> None:
    """Reject a replacement that could not be spliced in, before anything is edited."""
    if not _is_graph(replacement):
        raise TypeError(
            f"the replacement must be a Graph, got {type(replacement).__name__} (from "
            "replacement_callback?)"
        )
    try:
        replacement.output_node()
    except (RuntimeError, AssertionError):
        # torch.fx fails with a TypeError further on (it reads the missing output's args)
        raise TypeError("the replacement graph has no output node") from None
    got_inputs = sum(1 for n in replacement.nodes if n.op == "placeholder")
    if got_inputs != n_inputs:
        raise ValueError(
            f"the replacement takes {got_inputs} input(s) but the pattern takes {n_inputs}; "
            "they need the same parameters, in the same order (unused ones are fine)"
        )
    got_outputs = len(_returned_values(replacement))
    if got_outputs != n_outputs:
        raise ValueError(
            f"the replacement returns {got_outputs} value(s) but the pattern returns "
            f"{n_outputs}; each returned pattern value needs one replacement value"
        )
    if module is None:
        return
    for n in replacement.nodes:
        if n.op in ("get_attr", "call_module") and not (
            _has_attr(gm, n.target) or _has_attr(module, n.target)
        ):
            raise ValueError(
                f"the replacement's {n.op} node {n.name!r} refers to {n.target!r}, which "
                "exists neither in the GraphModule nor in the replacement module"
            )


def _has_attr(root: Any, target: str) -> bool:
    if not isinstance(root, torch.nn.Module):
        return False
    obj: Any = root
    for atom in target.split("."):
        if not hasattr(obj, atom):
            return False
        obj = getattr(obj, atom)
    return True


def _copy_missing_attributes(gm: GraphModule, replacement: torch.nn.Module, prune: bool) -> None:
    """After splicing in a module's graph, give ``gm`` the submodules/attributes it now
    refers to (``gm``'s own ones win; the replacement's are deep-copied). ``prune`` then
    drops submodules nothing uses any more. (torch.fx prunes first, which fails when the
    replacement calls a submodule ``gm`` lacks; the outcome is otherwise the same.)"""
    for n in gm.graph.nodes:
        if n.op not in ("call_module", "get_attr") or _has_attr(gm, n.target):
            continue
        value = copy.deepcopy(operator.attrgetter(n.target)(replacement))
        if isinstance(value, torch.nn.Module):
            gm.add_submodule(n.target, value)
        else:
            owner_path, _, leaf = n.target.rpartition(".")
            owner = gm.get_submodule(owner_path) if owner_path else gm
            setattr(owner, leaf, value)
    if prune:
        gm.delete_all_unused_submodules()
    gm.graph.lint()


def replace_pattern(gm: GraphModule, pattern: PatternLike, replacement: PatternLike) -> List[Match]:
    """Replace every non-overlapping occurrence of ``pattern`` in ``gm`` with ``replacement``.

    ``pattern`` and ``replacement`` are functions or modules (symbolically traced) or
    GraphModules/Graphs. Matching follows use-def relationships, not names: the pattern
    ``torch.cat([a, b])`` matches ``torch.cat([w1, w2])``. The pattern's ``return`` only
    says which values the pattern produces; it need not be the end of ``gm``'s graph.
    Where matches overlap, the first one (in graph order) wins. Nodes inside a match other
    than the returned ones must not be used outside it, or that occurrence is skipped.

    Every pattern parameter must be used by the pattern, and the replacement must take the
    same parameters (it may ignore some) and return as many values::

        def pattern(w1, w2):
            return torch.cat([w1, w2])

        def replacement(w1, w2):
            return torch.stack([w1, w2])

        replace_pattern(traced, pattern, replacement)

    ``gm`` is edited in place and recompiled. Returns one :class:`Match` per replaced
    occurrence (empty if none).
    """
    done = _replace_pattern(gm, pattern, replacement)
    return [Match(anchor=r.anchor, nodes_map=r.nodes_map) for r in done]


# fmt: off
def replace_pattern_with_filters(
    gm: GraphModule, pattern: PatternLike, replacement: Optional[PatternLike] = None,
    match_filters: Optional[List[MatchFilter]] = None, ignore_literals: bool = False,
    replacement_callback: Optional[ReplacementCallback] = None, node_name_match: str = "",
) -> List[ReplacedPatterns]:
    # fmt: on
    """:func:`replace_pattern` with extra control.

    Args:
        match_filters: functions ``(match, original_graph, pattern_graph) -> bool``; an
            occurrence is replaced only if all accept it.
        ignore_literals: treat literal arguments in the pattern as wildcards.
        replacement_callback: ``(match, original_graph, pattern_graph) -> Graph`` building
            the replacement per occurrence (instead of a fixed ``replacement``).
        node_name_match: also accept an anchor node whose name contains this string.

    Returns one :class:`ReplacedPatterns` per replaced occurrence.
    """
    return _replace_pattern(
        gm,
        pattern,
        replacement,
        match_filters=match_filters,
        ignore_literals=ignore_literals,
        replacement_callback=replacement_callback,
        node_name_match=node_name_match,
    )


# fmt: off
def _replace_pattern(
    gm: GraphModule, pattern: PatternLike, replacement: Optional[PatternLike] = None, *,
    match_filters: Optional[List[MatchFilter]] = None, ignore_literals: bool = False,
    replacement_callback: Optional[ReplacementCallback] = None, node_name_match: str = "",
) -> List[ReplacedPatterns]:
    # fmt: on
    from fxkit.passes.utils.matcher_utils import SubgraphMatcher

    if not _is_graph_module(gm):
        raise TypeError(
            f"replace_pattern works on a GraphModule, got {type(gm).__name__}; trace it "
            "first (fxkit.symbolic_trace)"
        )
    if match_filters is not None and not all(callable(f) for f in match_filters):
        raise TypeError("match_filters must be a list of callables")
    if replacement_callback is not None and not callable(replacement_callback):
        raise TypeError("replacement_callback must be callable")
    graph = gm.graph
    pattern_graph, _ = _as_graph(pattern, "pattern")
    # The matcher's defaults are the rewriter's contract: placeholders are wildcards, the
    # output node is not matched, and overlapping occurrences are dropped.
    matcher = SubgraphMatcher(pattern_graph, ignore_literals=ignore_literals)
    n_inputs = len(matcher.pattern_placeholder_nodes)
    n_outputs = len(matcher.pattern_returning_nodes)
    fixed: Optional[Graph] = None
    holder: Optional[torch.nn.Module] = None
    if replacement_callback is None:
        if replacement is None:
            raise ValueError("give either a replacement or a replacement_callback")
        fixed, holder = _as_graph(replacement, "replacement")
        _check_replacement(fixed, n_inputs, n_outputs, gm, holder)
    elif isinstance(replacement, torch.nn.Module):
        holder = replacement

    matches = matcher.match(graph, node_name_match=node_name_match)
    if match_filters:
        matches = [m for m in matches if all(f(m, graph, pattern_graph) for f in match_filters)]

    # A returned node of an earlier occurrence may feed a later one; it has been replaced
    # by then, so later occurrences read the replacement instead.
    changed: Dict[Node, Node] = {}
    compute_pns = [pn for pn in pattern_graph.nodes if pn.op not in ("placeholder", "output")]
    templates: Dict[int, Tuple[Graph, _Template]] = {}
    done: List[ReplacedPatterns] = []
    site = _Site(graph)
    try:
        for m in matches:
            if replacement_callback is not None:
                rep = replacement_callback(m, graph, pattern_graph)
                _check_replacement(rep, n_inputs, n_outputs, gm, holder)
            else:
                rep = fixed  # type: ignore[assignment]
            entry = templates.get(id(rep))
            if entry is None or entry[0] is not rep:
                entry = templates[id(rep)] = (rep, _Template(rep))
            _refresh_inputs(m, changed, site.node_types)
            replaced, outs = _splice(site, m, entry[1], compute_pns)
            changed.update(zip(m.returning_nodes, outs))
            done.append(replaced)
        site.erase_doomed()
    except BaseException:
        site.rollback()
        raise

    gm.recompile()
    if holder is not None and (done or isinstance(replacement, torch.nn.Module)):
        # Modules get torch.fx's treatment (prune unused submodules, then copy); a traced
        # function only contributes the constants its graph reads.
        _copy_missing_attributes(gm, holder, prune=isinstance(replacement, torch.nn.Module))
    return done


def _refresh_inputs(m: "InternalMatch", changed: Dict[Node, Node], node_types: tuple) -> None:
    if not changed:
        return
    for i, gn in enumerate(m.placeholder_nodes):
        if isinstance(gn, node_types) and gn in changed:
            new = changed[gn]
            m.placeholder_nodes[i] = new
            for pn, mapped in m.nodes_map.items():
                if mapped is gn:
                    m.nodes_map[pn] = new
                    break


class _Template:
    """A replacement graph unpacked once, so each occurrence is stamped out with plain
    ``create_node`` calls (what ``graph_copy`` would do, without re-walking the graph)."""

    __slots__ = ("inputs", "steps", "out", "node_cls")

    def __init__(self, rep: Graph) -> None:
        self.node_cls = _node_class(rep)
        self.inputs = [n for n in rep.nodes if n.op == "placeholder"]
        self.steps = []
        self.out: Any = None
        for n in rep.nodes:
            if n.op == "placeholder":
                continue
            if n.op == "output":
                self.out = n.args[0]
                break
            self.steps.append((n, n.op, n.target, n.args, n.kwargs, n.name, n.type, n.meta))

    def stamp(self, graph: Graph, inputs: List[Any], log: List[Node]) -> Tuple[tuple, List[Node]]:
        """Insert one copy at the graph's insertion point; returns (outputs, new nodes).
        Each new node is also appended to ``log`` as soon as it exists."""
        vm: Dict[Node, Any] = dict(zip(self.inputs, inputs))
        lookup = vm.__getitem__
        node_cls = self.node_cls

        def sub(a: Any) -> Any:
            t = type(a)
            if t is node_cls:
                return vm[a]
            if t in _ATOMS:
                return a
            if node_cls is Node:
                return map_arg(a, lookup)
            return _map_nodes_of_class(a, lookup, node_cls)

        added = []
        for old, op, target, args, kwargs, name, type_expr, meta in self.steps:
            new_args = tuple([vm[a] if type(a) is node_cls else sub(a) for a in args])
            new_kwargs = {k: sub(v) for k, v in kwargs.items()} if kwargs else {}
            node = graph.create_node(op, target, new_args, new_kwargs, name, type_expr)
            log.append(node)
            if meta:
                node.meta = meta.copy()
            vm[old] = node
            added.append(node)
        out = sub(self.out)
        return (tuple(out) if isinstance(out, (tuple, list)) else (out,)), added


_ATOMS = frozenset((int, float, str, bool, type(None), torch.dtype, torch.device))


class _Site:
    """The graph being rewritten, with what it takes to undo the rewrite.

    Matched nodes are only erased once every occurrence has been spliced in, so until then
    an exception (from a replacement_callback, a node hook, a bad replacement) can put the
    graph back exactly: the readers of replaced values get their arguments back and the new
    nodes go. Erasing later changes nothing observable: names are never reused, and the
    insertion point of a later occurrence ignores nodes already due to be erased. The undo
    record grows with the edits made, not with the graph.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        native = isinstance(graph, Graph)
        self.pos = _position if native else _foreign_position
        self.node_types: tuple = (Node,) if native else (Node, _node_class(graph))
        self.doomed: Dict[Node, None] = {}
        self.added: List[Node] = []  # new nodes, in creation order
        self.inputs: List[Any] = []  # values the new nodes were built on
        # node -> (args, kwargs) it had before its first rewiring (immutable, so a reference
        # is a snapshot)
        self.rewired: Dict[Node, Tuple[Any, Any]] = {}

    def rewire(self, old: Node, new: Node) -> None:
        """``old.replace_all_uses_with(new)``, remembering the readers' arguments."""
        rewired = self.rewired
        for user in old.users:
            if user not in rewired:
                rewired[user] = (user.args, user.kwargs)
        old.replace_all_uses_with(new)

    def erase_doomed(self) -> None:
        # Readers before what they read: latest first in graph order.
        for gn in sorted(self.doomed, key=self.pos, reverse=True):
            self.graph.erase_node(gn)

    def rollback(self) -> None:
        for n, (args, kwargs) in self.rewired.items():
            n.args, n.kwargs = args, kwargs
        # A node whose creation raised (a create-node hook) was never inserted, but already
        # reads its inputs: drop those reads. Such a node is still linked only to itself.
        for value in (*self.inputs, *self.added):
            if isinstance(value, self.node_types):
                for user in list(value.users):
                    if user.next is user:
                        user.args, user.kwargs = (), {}
        # New nodes are read only by newer ones now: erase from the newest.
        for n in reversed(self.added):
            self.graph.erase_node(n)


def _splice(
    site: _Site, m: "InternalMatch", rep: _Template, compute_pns: List[Node]
) -> Tuple[ReplacedPatterns, tuple]:
    """Insert a copy of ``rep`` for occurrence ``m``; its matched nodes become doomed."""
    graph, pos, doomed = site.graph, site.pos, site.doomed
    # The copy goes right before the first reader of a returned value (so everything the
    # copy needs is defined and every reader sees it), or right after the last returned
    # node when nothing reads them. Nodes of earlier occurrences (still in the graph until
    # the end) do not count.
    returning = m.returning_nodes
    readers: Dict[Node, None] = {}
    for r in returning:
        readers.update(r.users)
    if doomed:
        readers = {u: None for u in readers if u not in doomed}
    if readers:
        insert_at = min(readers, key=pos) if len(readers) > 1 else next(iter(readers))
    else:
        insert_at = max(returning, key=pos).next
    site.inputs.extend(m.placeholder_nodes)
    with graph.inserting_before(insert_at):
        outs, added = rep.stamp(graph, m.placeholder_nodes, site.added)
    for old, new in zip(returning, outs):
        if not isinstance(new, site.node_types):
            raise TypeError(
                f"the replacement returns {new!r} where the pattern returns node "
                f"{old.name!r}; a returned value must be a node"
            )
        site.rewire(old, new)
    for pn in compute_pns:
        doomed[m.nodes_map[pn]] = None
    replaced = ReplacedPatterns(anchor=m.anchors[0], nodes_map=m.nodes_map, replacements=added)
    return replaced, outs


def _position(n: Node) -> int:
    return n._order  # type: ignore[return-value]


def _foreign_position(n: Any) -> Any:
    return n._sort_key  # torch.fx's graph-order key
