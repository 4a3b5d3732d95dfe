"""Find every occurrence of a pattern graph inside a larger graph.

:class:`SubgraphMatcher` matches torch.fx's matcher result for result: the same anchors, the
same candidate order, the same containment, cycle and overlap rules. It gets there without
graph-wide scans per match: anchor candidates come from the graph's ``(op, target)`` index,
later anchors of a multi-output pattern are reached by walking users from nodes already
matched, the cycle check only looks at the window of the graph a cycle could pass through, and
overlapping partial matches are dropped before they are extended.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from fxkit.graph import Graph
from fxkit.interpreter import _node_class
from fxkit.node import Node

__all__ = ["SubgraphMatcher", "InternalMatch"]

_WILDCARD_OPS = ("placeholder", "output")


class _UnusedPatternInput(KeyError):
    """A match found for a pattern with an input it never uses: it cannot be bound. torch.fx
    fails the same way (a KeyError naming the input) at the same point."""

    def __str__(self) -> str:
        return (
            f"{self.args[0]!r}: pattern input never used by the pattern, so a match cannot "
            "bind it; every pattern parameter must be used"
        )


def _starts_empty(kind: type) -> Any:
    """A dataclass field that gets a fresh empty ``kind`` per instance."""
    return field(default_factory=kind)


@dataclass
class InternalMatch:
    """One occurrence of the pattern: which pattern node landed on which graph node."""

    anchors: List[Node]
    """Pattern nodes the search started from (the pattern's sinks, or its output node)."""
    nodes_map: Dict[Node, Node] = _starts_empty(dict)
    """Pattern node -> graph node (or the literal a pattern placeholder stood for)."""
    placeholder_nodes: List[Node] = _starts_empty(list)
    """Graph values bound to the pattern's placeholders, in placeholder order."""
    returning_nodes: List[Node] = _starts_empty(list)
    """Graph nodes standing for the values the pattern returns, in output order."""
    name_node_map: Dict[str, Node] = _starts_empty(dict)
    """Name -> graph node; filled by SubgraphMatcherWithNameNodeMap only."""

    def __copy__(self) -> "InternalMatch":
        # The containers are per-match state a caller may edit; anchors belong to the
        # matcher and stay shared.
        dup = replace(self)
        for name in _PER_MATCH_FIELDS:
            setattr(dup, name, getattr(self, name).copy())
        return dup


_PER_MATCH_FIELDS = ("nodes_map", "placeholder_nodes", "returning_nodes", "name_node_map")


def _truthy_eq(a: Any, b: Any) -> bool:
    """``a == b`` as a plain bool; values whose ``==`` is not a bool (tensors) fall back to
    identity instead of raising."""
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _attr_value(module: Optional[torch.nn.Module], target: str) -> Any:
    obj: Any = module
    for atom in target.split("."):
        obj = getattr(obj, atom, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


_MISSING = object()


def _schema_arguments(target: Any, args: tuple, kwargs: dict) -> List[Any]:
    """Every argument of an aten op in schema order, filling defaults: lets ``add(x, y)``
    match ``add(x, y, alpha=1)``."""
    values: List[Any] = []
    for i, arg in enumerate(target._schema.arguments):
        positional = i < len(args) and not arg.kwarg_only
        values.append(kwargs.get(arg.name, args[i] if positional else arg.default_value))
    return values


def _plan(pn: Node) -> Optional[tuple]:
    """What matching ``pn`` needs, precomputed: None for placeholders, else (op, target,
    flattened args+kwargs, number of args, kwarg names, whether args may be normalised by
    the op's schema)."""
    if pn.op == "placeholder":
        return None
    flat = (*pn.args, *pn.kwargs.values())
    overload = pn.op == "call_function" and isinstance(pn.target, torch._ops.OpOverload)
    return (pn.op, pn.target, flat, len(pn.args), tuple(pn.kwargs), overload)


class SubgraphMatcher:
    """Match a pattern :class:`~fxkit.graph.Graph` against other graphs.

    Args:
        pattern: the pattern graph; every node except placeholders/output must be used.
        match_output: also match the pattern's ``output`` node against the graph's output.
        match_placeholder: match pattern placeholders only against graph placeholders
            (otherwise a placeholder is a wildcard for any value).
        remove_overlapping_matches: keep only the first of matches sharing graph nodes.
        ignore_literals: treat literal arguments as wildcards.

    Matching follows use-def edges backwards from the pattern's sinks; node names are
    irrelevant. Returned matches are self-contained (only nodes the pattern returns are used
    outside the match) and can be fused without creating a cycle.
    """

    # fmt: off
    def __init__(self, pattern: Graph, match_output: bool = False,
                 match_placeholder: bool = False, remove_overlapping_matches: bool = True,
                 ignore_literals: bool = False) -> None:
        # fmt: on
        # Any graph with the Graph API will do: fxkit's, or torch.fx's (make_fx, torch.export).
        if not hasattr(pattern, "nodes"):
            raise TypeError(
                f"SubgraphMatcher expects a pattern Graph, got {type(pattern).__name__}"
            )
        nodes = list(pattern.nodes)
        if not nodes:
            raise ValueError("SubgraphMatcher cannot be initialized with an empty pattern")
        output_node = nodes[-1]
        if output_node.op != "output":
            raise ValueError(
                "the pattern graph has no output node; end it with graph.output(...) so the "
                "matcher knows which values the pattern produces"
            )
        for n in nodes:
            # Placeholders are impure: an unused one is accepted here (as torch.fx does) and
            # only fails once a match would have to bind it.
            if n.op != "output" and not n.users and not n.is_impure():
                raise AssertionError(
                    "SubgraphMatcher cannot be initialized with an pattern with dead code: "
                    f"node {n.name!r} ({n.op} {n.target}) is never used; remove it or return it"
                )
        self.pattern = pattern
        self.match_output = match_output
        self.match_placeholder = match_placeholder
        self.remove_overlapping_matches = remove_overlapping_matches
        self.ignore_literals = ignore_literals

        self.pattern_placeholder_nodes: List[Node] = [n for n in nodes if n.op == "placeholder"]
        self.pattern_returning_nodes: List[Node] = output_node.all_input_nodes
        if match_output:
            self.pattern_anchors: List[Node] = [output_node]
        else:
            # A returned node used only by the output is a sink: matching starts there.
            self.pattern_anchors = [n for n in self.pattern_returning_nodes if len(n.users) == 1]
        returning = set(self.pattern_returning_nodes)
        self._bodies = [n for n in nodes if n.op != "placeholder"]
        # Matched values that must not escape the match (the output node has no readers).
        self._internal = [n for n in self._bodies if n not in returning and n.op != "output"]
        self._compute = [n for n in nodes if n.op not in _WILDCARD_OPS]
        self._plans = {n: _plan(n) for n in nodes}
        self._anchor_paths = self._plan_anchor_paths()

    # --- node comparison ------------------------------------------------------------------------

    def _match_attributes(self, pn: Node, gn: Node) -> bool:
        """get_attr nodes match when they read values of the same type (tensors: any tensor)."""
        p_root, g_root = pn.graph.owning_module, gn.graph.owning_module
        if p_root is None or g_root is None:
            # Hand-built graphs without a module: nothing to compare but the names.
            return pn.target == gn.target
        pv = _attr_value(p_root, pn.target)  # type: ignore[arg-type]
        gv = _attr_value(g_root, gn.target)  # type: ignore[arg-type]
        if pv is _MISSING or gv is _MISSING or type(pv) is not type(gv):
            return False
        if isinstance(pv, torch.Tensor):
            return True
        return pv is gv or _truthy_eq(pv, gv)

    def _nodes_are_equal(self, pn: Node, gn: Node, node_name_match: str = "") -> bool:
        if pn.op == "placeholder" and not self.match_placeholder:
            return True
        if node_name_match and node_name_match in gn.name:
            return True
        if pn.op != gn.op:
            return False
        if pn.op in _WILDCARD_OPS:
            return True
        if pn.op == "get_attr":
            return self._match_attributes(pn, gn)
        return _truthy_eq(pn.target, gn.target)

    # --- planning for multi-anchor patterns --------------------------------------------------

    def _plan_anchor_paths(self) -> List[Optional[List[Node]]]:
        """For each anchor after the first, a shortest pattern path ``q0 -> ... -> anchor``
        from a node that earlier anchors already cover. At match time the anchor's graph
        candidates are exactly the nodes reached by walking users from q0's image along that
        path, which keeps multi-output patterns from trying every candidate combination."""
        covered: set = set()
        paths: List[Optional[List[Node]]] = []
        for anchor in self.pattern_anchors:
            parent: Dict[Node, Optional[Node]] = {anchor: None}
            queue = [anchor]
            hit: Optional[Node] = None
            i = 0
            while i < len(queue) and hit is None:
                cur = queue[i]
                i += 1
                for inp in cur.all_input_nodes:
                    if inp in parent:
                        continue
                    parent[inp] = cur
                    if inp in covered:
                        hit = inp
                        break
                    queue.append(inp)
            if hit is None:
                paths.append(None)
            else:
                path = [hit]
                step = parent[hit]
                while step is not None:
                    path.append(step)
                    step = parent[step]
                paths.append(path)
            covered.update(_upstream(anchor))
        return paths

    # --- the search ----------------------------------------------------------------------------

    def _candidates(self, anchor: Node, graph: Graph, node_name_match: str) -> List[Node]:
        """Graph nodes the anchor could match, in graph order, from the (op, target) index."""
        if node_name_match or (anchor.op == "placeholder" and not self.match_placeholder):
            return [n for n in graph.nodes if self._nodes_are_equal(anchor, n, node_name_match)]
        if anchor.op in _WILDCARD_OPS or anchor.op == "get_attr":
            pool = graph.find_nodes(op=anchor.op)
        else:
            try:
                pool = graph.find_nodes(op=anchor.op, target=anchor.target)
            except TypeError:  # unhashable target: compare one by one
                pool = [n for n in graph.nodes if n.op == anchor.op]
        return [n for n in pool if self._nodes_are_equal(anchor, n)]

    def match(self, graph: Graph, node_name_match: str = "") -> List[InternalMatch]:
        """Return the pattern's occurrences in ``graph``, in the order torch.fx finds them.

        Each match is self-contained: apart from placeholders and returned nodes, no matched
        node is used outside the match, and fusing the match would not create a cycle.
        ``node_name_match``, if given, also lets an anchor match any node whose name
        contains it.
        """
        if not hasattr(graph, "nodes"):
            raise TypeError(f"match expects a Graph, got {type(graph).__name__}")
        anchors = self.pattern_anchors
        cand_lists = [self._candidates(a, graph, node_name_match) for a in anchors]
        if not anchors or any(not c for c in cand_lists):
            return []
        return _Search(self, graph, cand_lists, node_name_match).run()


class _Search:
    """One :meth:`SubgraphMatcher.match` call: the partial match and the backtracking over
    anchor candidates. The walk is written as closures over local state because it is the
    hot loop of every rewrite."""

    def __init__(
        self,
        matcher: SubgraphMatcher,
        graph: Graph,
        cand_lists: List[List[Node]],
        node_name_match: str,
    ) -> None:
        self.m = matcher
        self.cand_lists = cand_lists
        self.name_match = node_name_match
        # Pattern and graph may come from different libraries (fxkit, torch.fx).
        kinds = dict.fromkeys((Node, _node_class(matcher.pattern), _node_class(graph)))
        self.node_types: tuple = tuple(kinds)
        self.pos = _position if isinstance(graph, Graph) else _foreign_position
        # Core graphs flag any edit that may break topological order; only then check.
        unordered = getattr(graph, "_maybe_unordered", True)
        self.topo = not unordered or _is_topological(graph, self.pos)

    def run(self) -> List[InternalMatch]:
        m = self.m
        anchors = m.pattern_anchors
        cand_lists = self.cand_lists
        name_match = self.name_match
        match_ph = m.match_placeholder
        ignore_lit = m.ignore_literals
        dedupe = m.remove_overlapping_matches
        plans = m._plans
        topo = self.topo
        nodes_are_equal = m._nodes_are_equal
        NT = self.node_types
        pos = self.pos
        nm: Dict[Node, Any] = {}
        taken: set = set()
        trail: List[Node] = []
        claimed: set = set()  # graph nodes inside accepted matches
        results: List[InternalMatch] = []

        def undo(mark: int) -> None:
            if mark == 0:
                nm.clear()
                taken.clear()
                trail.clear()
                return
            while len(trail) > mark:
                v = nm.pop(trail.pop())
                if isinstance(v, NT):
                    taken.discard(v)

        def match_node(pn: Node, gn: Node, loose: bool = False) -> bool:
            # Extend the match by pn -> gn and everything upstream of pn. On failure some
            # bindings may remain; the caller undoes to its mark.
            if pn in nm:
                return nm[pn] is gn
            if gn in taken:
                return False
            plan = plans[pn]
            if plan is None:  # a placeholder: a wildcard unless placeholders must match
                if match_ph and gn.op != "placeholder" and not loose:
                    return False
                nm[pn] = gn
                taken.add(gn)
                trail.append(pn)
                return True
            op, target, p_flat, n_args, kw_keys, overload = plan
            if not loose:
                if gn.op != op:
                    return False
                if op == "get_attr":
                    if not m._match_attributes(pn, gn):
                        return False
                elif op != "output":
                    g_target = gn.target
                    if g_target is not target and not _truthy_eq(target, g_target):
                        return False
            nm[pn] = gn
            taken.add(gn)
            trail.append(pn)
            g_args = gn.args
            g_kwargs = gn.kwargs
            if len(g_args) == n_args and (tuple(g_kwargs) == kw_keys if g_kwargs else not kw_keys):
                g_flat = (*g_args, *g_kwargs.values()) if g_kwargs else g_args
            elif overload:
                p_flat = _schema_arguments(target, pn.args, pn.kwargs)
                g_flat = _schema_arguments(target, g_args, g_kwargs)
            else:
                return False
            return match_args(p_flat, g_flat)

        def match_args(p_flat: Sequence[Any], g_flat: Sequence[Any]) -> bool:
            if len(p_flat) != len(g_flat):
                return False
            for pa, ga in zip(p_flat, g_flat):
                if isinstance(pa, NT):
                    if isinstance(ga, NT):
                        if not match_node(pa, ga):
                            return False
                        continue
                    # A pattern input may stand for a literal (or a list) in the graph.
                    if pa.op == "placeholder":
                        if pa in nm:
                            bound = nm[pa]
                            ok = not isinstance(bound, NT) and _truthy_eq(bound, ga)
                        else:
                            nm[pa] = ga
                            trail.append(pa)
                            ok = True
                    else:
                        ok = False
                elif isinstance(pa, (list, tuple)) and isinstance(ga, (list, tuple)):
                    if not match_args(pa, ga):
                        return False
                    continue
                else:
                    ok = not isinstance(ga, NT) and type(pa) is type(ga) and _truthy_eq(pa, ga)
                if not ok and not ignore_lit:
                    return False
            return True

        def overlaps(mark: int) -> bool:
            for pn in trail[mark:]:
                if pn.op not in _WILDCARD_OPS and nm[pn] in claimed:
                    return True
            return False

        compute_pns = m._compute

        def finish() -> None:
            compute = [nm[pn] for pn in compute_pns if pn in nm]
            # The overlap test is the cheapest rejection, so it goes first.
            if dedupe and not claimed.isdisjoint(compute):
                return
            found = self._finish(nm, topo, compute, pos)
            if found is None:
                return
            if dedupe:
                claimed.update(compute)
            results.append(found)

        def loose_for(gn: Node) -> bool:
            return bool(name_match) and name_match in gn.name

        # A later anchor's candidate that cannot match even on its own can never be part of
        # a match: drop those once, instead of retrying them under every earlier choice.
        for i in range(1, len(anchors)):
            keep = []
            for gn in cand_lists[i]:
                if match_node(anchors[i], gn, loose_for(gn)):
                    keep.append(gn)
                undo(0)
            if not keep:
                return []
            cand_lists[i] = keep

        use_paths = not name_match and not ignore_lit
        cand_sets = [set(c) for c in cand_lists] if len(anchors) > 1 else []
        compute_anchor = [a.op not in _WILDCARD_OPS for a in anchors]

        last = len(anchors) - 1

        def extend(i: int) -> None:
            if i > last:
                finish()
                return
            anchor = anchors[i]
            cands: Optional[List[Node]] = None
            path = m._anchor_paths[i]
            if use_paths and path is not None:
                cands = _reachable(path, nm, cand_sets[i], nodes_are_equal, NT, pos)
            if cands is None:
                cands = cand_lists[i]
            mark = len(trail)
            skip_claimed = dedupe and compute_anchor[i]
            # After the last anchor, finish() tests overlap itself.
            prune = dedupe and i < last
            for gn in cands:
                if skip_claimed and gn in claimed:
                    continue  # would overlap an accepted match
                loose = bool(name_match) and name_match in gn.name
                if match_node(anchor, gn, loose) and not (prune and claimed and overlaps(mark)):
                    before = len(results)
                    extend(i + 1)
                    if dedupe and len(results) > before and i and prefix_claimed(mark):
                        # Every other completion of this prefix overlaps what was just
                        # accepted.
                        undo(mark)
                        return
                undo(mark)

        def prefix_claimed(mark: int) -> bool:
            for pn in trail[:mark]:
                if pn.op not in _WILDCARD_OPS and nm[pn] in claimed:
                    return True
            return False

        extend(0)
        return results

    def _finish(
        self, nm: Dict[Node, Any], topo: bool, compute: List[Node], pos: Callable
    ) -> Optional[InternalMatch]:
        m = self.m
        try:
            placeholders = [nm[pn] for pn in m.pattern_placeholder_nodes]
            returning = [nm[pn] for pn in m.pattern_returning_nodes]
        except KeyError as missing:
            unbound = missing.args[0]
            if unbound.op == "placeholder" and not unbound.users:
                raise _UnusedPatternInput(unbound) from None
            # Only with ignore_literals: a literal stood in for a pattern node, so the inputs
            # above it were never bound. Not a usable match.
            return None
        if m._internal:
            inside = {nm[pn] for pn in m._bodies if pn in nm}
            for pn in m._internal:
                gn = nm.get(pn)
                if gn is not None and not inside.issuperset(gn.users):
                    return None  # an internal value escapes the match
        if _fusion_would_cycle(compute, topo, pos):
            return None
        return InternalMatch(
            anchors=m.pattern_anchors,
            nodes_map=dict(nm),
            placeholder_nodes=placeholders,
            returning_nodes=returning,
        )


# fmt: off
def _reachable(path: List[Node], nm: Dict[Node, Any], allowed: set, nodes_are_equal: Callable,
               node_types: tuple, pos: Callable) -> Optional[List[Node]]:
    # fmt: on
    """Anchor candidates reachable from the image of ``path[0]`` by walking users along the
    pattern path, in graph order; ``None`` when there is nothing to start from."""
    start = nm.get(path[0])
    if not isinstance(start, node_types):
        return None  # bound to a literal or not bound: no constraint to exploit
    frontier = {start}
    for q in path[1:-1]:
        frontier = {u for f in frontier for u in f.users if nodes_are_equal(q, u)}
        if not frontier:
            return []
    found = {u for f in frontier for u in f.users if u in allowed}
    return sorted(found, key=pos)


def _position(n: Node) -> int:
    return n._order  # type: ignore[return-value]


def _foreign_position(n: Any) -> Any:
    """Graph-order key of a torch.fx node (torch.fx keeps one per node, like ``_order``)."""
    return n._sort_key


def _upstream(node: Node) -> set:
    """``node`` and every pattern node it (transitively) reads."""
    seen = {node}
    stack = [node]
    while stack:
        for inp in stack.pop().all_input_nodes:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return seen


def _is_topological(graph: Graph, pos: Callable = _position) -> bool:
    for n in graph.nodes:
        here = pos(n)
        for inp in n.all_input_nodes:
            if pos(inp) >= here:
                return False
    return True


def _fusion_would_cycle(part: List[Node], topo: bool, pos: Callable = _position) -> bool:
    """True if some path leaves ``part`` and comes back into it (fusing it would cycle).

    In a topologically ordered graph such a path starts and ends before the last node of
    ``part``, so the search never looks past it (usually it has nothing to look at).
    """
    if not part:
        return False
    members = set(part)
    limit = max(pos(n) for n in part) if topo else None
    stack: List[Node] = []
    for n in part:
        for user in n.users:
            if user not in members and (limit is None or pos(user) < limit):
                stack.append(user)
    if not stack:
        return False
    seen = set(stack)
    while stack:
        cur = stack.pop()
        for user in cur.users:
            if user in members:
                return True
            if user in seen or (limit is not None and pos(user) > limit):
                continue
            seen.add(user)
            stack.append(user)
    return False
