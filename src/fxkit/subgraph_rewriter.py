"""Find-and-replace on graphs: :func:`replace_pattern` swaps every occurrence of a pattern
subgraph for a copy of a replacement subgraph.

Matching is :class:`~fxkit.passes.utils.matcher_utils.SubgraphMatcher`'s (use-def structure,
not names; non-overlapping; matched internals must not be used outside the match). Every
input is checked before the graph is touched, so a rejected call leaves ``gm`` as it was.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch

from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node, map_arg

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


def _as_graph(obj: Any, role: str) -> Tuple[Graph, Optional[torch.nn.Module]]:
    """The graph behind a pattern/replacement given as Graph, GraphModule, Module or callable,
    and the module holding the attributes its ``get_attr``/``call_module`` nodes name."""
    if isinstance(obj, GraphModule):
        return obj.graph, obj
    if isinstance(obj, Graph):
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
    if not isinstance(replacement, Graph):
        raise TypeError(
            f"the replacement must be a Graph, got {type(replacement).__name__} (from "
            "replacement_callback?)"
        )
    try:
        replacement.output_node()
    except RuntimeError:
        raise ValueError("the replacement graph has no output node") from None
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


def _get_attr(root: torch.nn.Module, target: str) -> Any:
    obj: Any = root
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


def _copy_missing_attributes(gm: GraphModule, replacement: torch.nn.Module, prune: bool) -> None:
    """After splicing in a module's graph, give ``gm`` the submodules/attributes it now
    refers to (``gm``'s own ones win; the replacement's are deep-copied). ``prune`` then
    drops submodules nothing uses any more. (torch.fx prunes first, which fails when the
    replacement calls a submodule ``gm`` lacks; the outcome is otherwise the same.)"""
    for n in gm.graph.nodes:
        if n.op not in ("call_module", "get_attr") or _has_attr(gm, n.target):
            continue
        value = copy.deepcopy(_get_attr(replacement, n.target))
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

    if not isinstance(gm, GraphModule):
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
    for m in matches:
        if replacement_callback is not None:
            rep = replacement_callback(m, graph, pattern_graph)
            _check_replacement(rep, n_inputs, n_outputs, gm, holder)
        else:
            rep = fixed  # type: ignore[assignment]
        entry = templates.get(id(rep))
        if entry is None or entry[0] is not rep:
            entry = templates[id(rep)] = (rep, _Template(rep))
        _refresh_inputs(m, changed)
        replaced, outs = _splice(graph, m, entry[1], compute_pns)
        changed.update(zip(m.returning_nodes, outs))
        done.append(replaced)

    gm.recompile()
    if holder is not None and (done or isinstance(replacement, torch.nn.Module)):
        # Modules get torch.fx's treatment (prune unused submodules, then copy); a traced
        # function only contributes the constants its graph reads.
        _copy_missing_attributes(gm, holder, prune=isinstance(replacement, torch.nn.Module))
    return done


def _refresh_inputs(m: "InternalMatch", changed: Dict[Node, Node]) -> None:
    if not changed:
        return
    for i, gn in enumerate(m.placeholder_nodes):
        if isinstance(gn, Node) and gn in changed:
            new = changed[gn]
            m.placeholder_nodes[i] = new
            for pn, mapped in m.nodes_map.items():
                if mapped is gn:
                    m.nodes_map[pn] = new
                    break


class _Template:
    """A replacement graph unpacked once, so each occurrence is stamped out with plain
    ``create_node`` calls (what ``graph_copy`` would do, without re-walking the graph)."""

    __slots__ = ("inputs", "steps", "out")

    def __init__(self, rep: Graph) -> None:
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

    def stamp(self, graph: Graph, inputs: List[Any]) -> Tuple[tuple, List[Node]]:
        """Insert one copy at the graph's insertion point; returns (outputs, new nodes)."""
        vm: Dict[Node, Any] = dict(zip(self.inputs, inputs))
        lookup = vm.__getitem__

        def sub(a: Any) -> Any:
            t = type(a)
            if t is Node:
                return vm[a]
            if t in _ATOMS:
                return a
            return map_arg(a, lookup)

        added = []
        for old, op, target, args, kwargs, name, type_expr, meta in self.steps:
            new_args = tuple([vm[a] if type(a) is Node else sub(a) for a in args])
            new_kwargs = {k: sub(v) for k, v in kwargs.items()} if kwargs else {}
            node = graph.create_node(op, target, new_args, new_kwargs, name, type_expr)
            if meta:
                node.meta = meta.copy()
            vm[old] = node
            added.append(node)
        out = vm[self.out] if type(self.out) is Node else map_arg(self.out, lookup)
        return (tuple(out) if isinstance(out, (tuple, list)) else (out,)), added


_ATOMS = frozenset((int, float, str, bool, type(None), torch.dtype, torch.device))


def _splice(
    graph: Graph, m: "InternalMatch", rep: _Template, compute_pns: List[Node]
) -> Tuple[ReplacedPatterns, tuple]:
    """Insert a copy of ``rep`` for occurrence ``m`` and erase the matched nodes."""
    # The copy goes right before the first reader of a returned value (so everything the
    # copy needs is defined and every reader sees it), or right after the last returned
    # node when nothing reads them.
    returning = m.returning_nodes
    if len(returning) == 1:
        readers: Any = returning[0].users
    else:
        readers = {}
        for r in returning:
            readers.update(r.users)
    if readers:
        insert_at = min(readers, key=_position) if len(readers) > 1 else next(iter(readers))
    else:
        insert_at = max(returning, key=_position).next
    with graph.inserting_before(insert_at):
        outs, added = rep.stamp(graph, m.placeholder_nodes)
    for old, new in zip(returning, outs):
        if not isinstance(new, Node):
            raise TypeError(
                f"the replacement returns {new!r} where the pattern returns node "
                f"{old.name!r}; a returned value must be a node"
            )
        old.replace_all_uses_with(new)
    doomed = [m.nodes_map[pn] for pn in compute_pns]
    # Erase readers before what they read: latest first in graph order.
    doomed.sort(key=_position, reverse=True)
    for gn in doomed:
        graph.erase_node(gn)
    replaced = ReplacedPatterns(anchor=m.anchors[0], nodes_map=m.nodes_map, replacements=added)
    return replaced, outs


def _position(n: Node) -> int:
    return n._order  # type: ignore[return-value]
