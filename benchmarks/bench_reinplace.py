"""reinplace on a ~10k-node ATen graph from torch's make_fx: a long chain of out-of-place
elementwise ops on a clone of the input, with a slice written back by ``slice_scatter`` every
50 steps. Every op becomes in-place, so the alias sets the pass consults grow with the chain
(torch's pass is quadratic here; scatters make it much slower still, hence only a few)."""

from __future__ import annotations

import copy

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.passes.reinplace import reinplace as torch_reinplace

from benchmarks._harness import Row, compare
from fxkit.interop import from_torch_fx
from fxkit.passes.reinplace import reinplace


def _chain(steps: int):
    def f(x):
        y = x.clone()
        for i in range(steps):
            kind = i % 4
            if i % 50 == 49:
                y = torch.slice_scatter(y, y[:2] * 0.5, 0, 0, 2)
            elif kind == 0:
                y = y + 1
            elif kind == 1:
                y = y * 2
            elif kind == 2:
                y = torch.relu(y)
            else:
                y = y - x
        return y

    return f


def run(quick: bool) -> list[Row]:
    # One node per step, two more per scatter step. torch's pass takes ~45 s on the full
    # 10k-node graph, so the quick run uses a 3k-node one.
    steps = 3_000 if quick else 10_000
    x = torch.randn(8, 8)
    torch_gm = make_fx(_chain(steps))(x)
    nodes = len(torch_gm.graph.nodes)
    reps = 3
    # The pass edits its module: every repetition gets a fresh copy, made outside the timing.
    return [
        compare(
            f"reinplace, {nodes}-node aten graph (make_fx chain with slice_scatter)",
            lambda gm: reinplace(gm, x),
            lambda gm: torch_reinplace(gm, x),
            reps=reps,
            setup_fxkit=lambda: from_torch_fx(copy.deepcopy(torch_gm)),
            setup_torch_fx=lambda: copy.deepcopy(torch_gm),
            target=0.5,
        )
    ]
