"""Order keys for the node list of a :class:`~fxkit.graph.Graph`.

Every linked node carries an integer label that increases along the list, so
"does a come before b" is O(1). Appends take the last label plus _GAP; inserts take the
midpoint of their neighbours. When two neighbours have no label left between them, the
smallest aligned label range around the spot whose node count is below a density bound
that loosens as ranges grow is relabelled evenly (the order-maintenance scheme of Bender et
al.), which costs O(log n) amortized relabels per insert whatever the insertion pattern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fxkit.node import Node

_GAP = 1 << 32
_DENSITY = 0.6  # a range of 2**i labels may hold at most (2 * _DENSITY) ** i nodes


def _relabel_around(node: "Node", root: "Node") -> None:
    """Make room at ``node`` (just linked, its label equal to its predecessor's)."""
    label = node._order
    first = last = node
    count = 1
    bits = 1
    limit = 2 * _DENSITY
    while True:
        size = 1 << bits
        lo = label & -size
        hi = lo + size
        prev = first._prev
        while prev is not root and prev._order >= lo:
            first = prev
            count += 1
            prev = prev._prev
        nxt = last._next
        while nxt is not root and nxt._order < hi:
            last = nxt
            count += 1
            nxt = nxt._next
        if nxt is root and count <= 8:
            # A few nodes at the end of the list, where labels are unbounded: spread them at
            # the append spacing (keeps "insert before the output" as cheap as appending).
            step = _GAP
            break
        if count <= limit and count < size:
            step = size // (count + 1)
            break
        bits += 1
        limit *= 2 * _DENSITY
    cur = first
    value = lo
    while True:
        value += step
        cur._order = value
        if cur is last:
            return
        cur = cur._next
