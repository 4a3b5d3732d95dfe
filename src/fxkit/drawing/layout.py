"""A layered (Sugiyama-style) layout for directed graphs, in pure Python.

Steps, each close to linear in nodes plus edges:

1. *Layering*: longest path from the sources, then sources without inputs of their own
   (placeholders, ``get_attr``) are moved down next to their first user.
2. *Long edges* get one virtual node per layer they cross, so they can bend around real nodes.
   Edges spanning very many layers (a weight read once at the top and used at the bottom of a
   10k-node graph) are drawn straight instead: their virtual chains would dominate the cost.
3. *Crossing reduction*: alternate downward/upward barycenter sweeps, a capped number of times
   that shrinks as the graph grows.
4. *Coordinates*: layers stack top to bottom; inside a layer nodes keep their order and are
   pulled towards the mean position of their neighbours, then spread so none overlap.

Edges that point backwards in a cyclic input are laid out reversed and drawn upwards.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Iterator, Sequence

__all__ = ["Layout", "layered_layout", "gc_paused"]

Point = tuple[float, float]

_LONG_EDGE_SPAN = 24  # longest edge that gets virtual nodes
_VIRTUAL_PER_NODE = 4  # at most this many virtual nodes per real node, in total
_MARGIN = 16.0


@dataclass(slots=True)
class Layout:
    """Result of :func:`layered_layout`.

    ``boxes[i]`` is ``(center_x, center_y, width, height)`` of node ``i``; ``layers[i]`` its
    layer (0 at the top); ``routes[k]`` the polyline of the ``k``-th input edge, from the
    bottom of its source to the top of its destination.
    """

    boxes: list[tuple[float, float, float, float]]
    layers: list[int]
    routes: list[list[Point]]
    width: float
    height: float


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector. Drawing allocates many small acyclic objects; in a
    process that holds torch's large heap, the collections they trigger cost more than the
    drawing itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _topological_order(n: int, succs: list[list[int]], preds: list[list[int]]) -> list[int]:
    """Kahn's order, smallest index first among ready nodes; cycle members in index order."""
    waiting = [len(p) for p in preds]
    ready = [v for v in range(n) if waiting[v] == 0]
    order: list[int] = []
    seen = [False] * n
    head = 0
    while True:
        while head < len(ready):
            v = ready[head]
            head += 1
            seen[v] = True
            order.append(v)
            for w in succs[v]:
                waiting[w] -= 1
                if waiting[w] == 0:
                    ready.append(w)
        if len(order) == n:
            return order
        # A cycle blocks the queue: release its lowest-index member and carry on.
        stuck = next(v for v in range(n) if not seen[v] and waiting[v] > 0)
        waiting[stuck] = 0
        ready.append(stuck)


def _assign_layers(order: list[int], preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    layer = [0] * len(order)
    for v in order:
        if preds[v]:
            layer[v] = max(layer[u] for u in preds[v]) + 1
    for v in reversed(order):
        if not preds[v] and succs[v]:
            layer[v] = min(layer[w] for w in succs[v]) - 1
    return layer


def _sweep(rows: list[list[int]], neighbours: list[list[int]], position: list[float]) -> None:
    """Reorder each row by the mean position of each node's neighbours in the previous row."""
    for row in rows:
        keyed = []
        for slot, v in enumerate(row):
            near = neighbours[v]
            key = sum(position[u] for u in near) / len(near) if near else float(slot)
            keyed.append((key, slot, v))
        keyed.sort()
        for slot, (_, _, v) in enumerate(keyed):
            row[slot] = v
            position[v] = float(slot)


def _spread(row: list[int], want: list[float], width: list[float], gap: float) -> None:
    """Move ``row``'s nodes to their wanted x, keeping order and ``gap`` between boxes.

    Packs once from the left and once from the right and averages the two; both packings
    respect the spacing, so their average does too.
    """
    if not row:
        return
    left = [0.0] * len(row)
    right = [0.0] * len(row)
    for k, v in enumerate(row):
        x = want[v]
        if k:
            u = row[k - 1]
            x = max(x, left[k - 1] + (width[u] + width[v]) / 2 + gap)
        left[k] = x
    for k in range(len(row) - 1, -1, -1):
        v = row[k]
        x = want[v]
        if k + 1 < len(row):
            w = row[k + 1]
            x = min(x, right[k + 1] - (width[v] + width[w]) / 2 - gap)
        right[k] = x
    for k, v in enumerate(row):
        want[v] = (left[k] + right[k]) / 2


def _sweep_budget(total: int) -> int:
    if total <= 2_000:
        return 8
    if total <= 20_000:
        return 4
    return 2


def layered_layout(
    sizes: Sequence[tuple[float, float]],
    edges: Sequence[tuple[int, int]],
    *,
    node_gap: float = 20.0,
    layer_gap: float = 40.0,
    sweeps: int | None = None,
) -> Layout:
    """Lay out nodes ``0..len(sizes)-1`` (``sizes[i] = (width, height)``) and ``edges``.

    ``sweeps`` caps the crossing-reduction passes (default: fewer for larger graphs).
    """
    with gc_paused():
        return _layout(sizes, edges, node_gap, layer_gap, sweeps)


def _layout(
    sizes: Sequence[tuple[float, float]],
    edges: Sequence[tuple[int, int]],
    node_gap: float,
    layer_gap: float,
    sweeps: int | None,
) -> Layout:
    n = len(sizes)
    succs: list[list[int]] = [[] for _ in range(n)]
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        if u != v:
            succs[u].append(v)
            preds[v].append(u)
    order = _topological_order(n, succs, preds)
    rank = [0] * n
    for i, v in enumerate(order):
        rank[v] = i
    # Orient every edge along the order; edges closing a cycle are remembered as flipped.
    flipped = [rank[u] > rank[v] for u, v in edges]
    down_succ: list[list[int]] = [[] for _ in range(n)]
    down_pred: list[list[int]] = [[] for _ in range(n)]
    for (u, v), flip in zip(edges, flipped):
        if u == v:
            continue
        a, b = (v, u) if flip else (u, v)
        down_succ[a].append(b)
        down_pred[b].append(a)
    layer = _assign_layers(order, down_pred, down_succ)

    # Virtual nodes: ids n.. ; each long edge becomes a chain through them.
    width = [float(w) for w, _ in sizes]
    v_succ: list[list[int]] = [list(s) for s in down_succ]
    v_pred: list[list[int]] = [[] for _ in range(n)]
    chains: list[list[int]] = []
    # Cap the virtual nodes so that graphs full of medium-length edges stay near-linear.
    budget = max(_VIRTUAL_PER_NODE * n, 1_000)
    for (u, v), flip in zip(edges, flipped):
        a, b = (v, u) if flip else (u, v)
        span = layer[b] - layer[a]
        chain: list[int] = []
        if 1 < span <= _LONG_EDGE_SPAN and span - 1 <= budget and u != v:
            budget -= span - 1
            v_succ[a].remove(b)
            prev = a
            for depth in range(layer[a] + 1, layer[b]):
                d = len(width)
                width.append(0.0)
                layer.append(depth)
                v_succ.append([])
                v_pred.append([])
                v_succ[prev].append(d)
                chain.append(d)
                prev = d
            v_succ[prev].append(b)
        chains.append(chain)
    total = len(width)
    for a in range(total):
        for b in v_succ[a]:
            v_pred[b].append(a)

    rows: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    # Start from graph order (virtual nodes after their real neighbours) so that
    # untouched graphs such as chains need no work.
    for v in order:
        rows[layer[v]].append(v)
    for v in range(n, total):
        rows[layer[v]].append(v)
    position = [0.0] * total
    for row in rows:
        for slot, v in enumerate(row):
            position[v] = float(slot)
    budget = _sweep_budget(total) if sweeps is None else sweeps
    if any(len(row) > 1 for row in rows):
        for i in range(budget):
            if i % 2 == 0:
                _sweep(rows[1:], v_pred, position)
            else:
                _sweep(rows[-2::-1], v_succ, position)

    # x: pack each row, then pull towards neighbours a few rounds.
    x = [0.0] * total
    for row in rows:
        cursor = 0.0
        for v in row:
            x[v] = cursor + width[v] / 2
            cursor += width[v] + node_gap
    rounds = 4 if total <= 20_000 else 2
    for i in range(rounds):
        pull = v_pred if i % 2 == 0 else v_succ
        for row in rows if i % 2 == 0 else rows[::-1]:
            for v in row:
                near = pull[v]
                if near:
                    x[v] = sum(x[u] for u in near) / len(near)
            _spread(row, x, width, node_gap)

    # y: stack rows, each as tall as its tallest node.
    heights = [float(h) for _, h in sizes]
    row_top: list[float] = []
    row_height: list[float] = []
    cursor = _MARGIN
    for row in rows:
        tallest = max((heights[v] for v in row if v < n), default=0.0)
        row_top.append(cursor)
        row_height.append(tallest)
        cursor += tallest + layer_gap
    height = cursor - layer_gap + _MARGIN if rows else 2 * _MARGIN

    left = min((x[v] - width[v] / 2 for v in range(total)), default=0.0)
    shift = _MARGIN - left
    right = max((x[v] + width[v] / 2 for v in range(total)), default=0.0) + shift
    boxes = []
    for v in range(n):
        top = row_top[layer[v]] + (row_height[layer[v]] - heights[v]) / 2
        boxes.append((x[v] + shift, top + heights[v] / 2, width[v], heights[v]))

    def middle(d: int) -> Point:
        return (x[d] + shift, row_top[layer[d]] + row_height[layer[d]] / 2)

    routes: list[list[Point]] = []
    for (u, v), flip, chain in zip(edges, flipped, chains):
        a, b = (v, u) if flip else (u, v)
        ax, ay, _, ah = boxes[a]
        bx, by, _, bh = boxes[b]
        points = [(ax, ay + ah / 2)] + [middle(d) for d in chain] + [(bx, by - bh / 2)]
        routes.append(points[::-1] if flip else points)
    return Layout(boxes, layer[:n], routes, right + _MARGIN, height)
