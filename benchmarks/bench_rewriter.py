"""replace_pattern on large graphs: many matches of a small pattern in a long graph.

The graph repeats a 3-node block ``relu(add(cur, x))`` then ``neg`` so every block holds one
match of ``relu(add(a, b))``; the replacement feeds each block's result into the next match,
so back-to-back replacements are exercised as well.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as tfx
from torch.fx import subgraph_rewriter as tfx_rewriter

import fxkit
from benchmarks._harness import Row, compare
from fxkit import subgraph_rewriter as fxkit_rewriter


def _graph_module(fx, blocks: int):
    g = fx.Graph()
    x = g.placeholder("x")
    # add(x, x) would not match: two pattern inputs cannot bind the same node.
    cur = g.call_method("neg", (x,))
    for _ in range(blocks):
        a = g.call_function(operator.add, (cur, x))
        r = g.call_function(torch.relu, (a,))
        cur = g.call_method("neg", (r,))
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


def _pattern(fx):
    g = fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")
    g.output(g.call_function(torch.relu, (g.call_function(operator.add, (a, b)),)))
    return g


def _replacement(fx):
    g = fx.Graph()
    a, b = g.placeholder("a"), g.placeholder("b")
    s = g.call_function(operator.add, (a, b))
    g.output(g.call_function(torch.clamp, (s,), {"min": 0}))
    return g


def _case(blocks: int, reps: int) -> Row:
    ours_pat, ours_rep = _pattern(fxkit), _replacement(fxkit)
    their_pat, their_rep = _pattern(tfx), _replacement(tfx)

    def ours(gm) -> None:
        found = fxkit_rewriter.replace_pattern(gm, ours_pat, ours_rep)
        assert len(found) == blocks

    def theirs(gm) -> None:
        found = tfx_rewriter.replace_pattern(gm, their_pat, their_rep)
        assert len(found) == blocks

    return compare(
        f"replace_pattern, {blocks} matches in {3 * blocks} nodes",
        ours,
        theirs,
        reps=reps,
        setup_fxkit=lambda: _graph_module(fxkit, blocks),
        setup_torch_fx=lambda: _graph_module(tfx, blocks),
        target=0.05,
    )


def run(quick: bool) -> list[Row]:
    rows = [_case(1_000, 3 if quick else 5)]
    if not quick:
        rows.append(_case(4_000, 3))
    return rows
