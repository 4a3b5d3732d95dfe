"""Interpreter per-node overhead: a long chain of tiny ops on a scalar-sized tensor, where
almost all of the time is the interpreter's own bookkeeping."""

from __future__ import annotations

import operator

import torch
import torch.fx as tfx

import fxkit
from benchmarks._harness import Row, compare
from fxkit.interpreter import Interpreter


def _chain(fx, n: int):
    g = fx.Graph()
    x = g.placeholder("x")
    cur = x
    for i in range(n):
        if i % 3 == 0:
            cur = g.call_function(operator.add, (cur, 1))
        elif i % 3 == 1:
            cur = g.call_function(operator.mul, (cur, x))
        else:
            cur = g.call_method("neg", (cur,))
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


def _floor(n: int, x: torch.Tensor):
    """The same ops called directly, with no interpreter: what neither side can beat."""

    def run() -> None:
        cur = x
        for i in range(n):
            if i % 3 == 0:
                cur = cur + 1
            elif i % 3 == 1:
                cur = cur * x
            else:
                cur = cur.neg()

    return run


def run(quick: bool) -> list[Row]:
    n = 2_000 if quick else 10_000
    reps = 5 if quick else 7
    x = torch.ones(1)
    ours = Interpreter(_chain(fxkit, n))
    theirs = tfx.Interpreter(_chain(tfx, n))
    floor = _floor(n, x)
    row = compare(
        f"interpreter run, {n}-node chain",
        lambda: ours.run(x),
        lambda: theirs.run(x),
        reps=reps,
        target=0.5,
        floor_fn=floor,
    )
    # The target is about the interpreter's own cost per node, so report it net of the ops.
    overhead = Row(
        f"interpreter per-node overhead (minus op floor), {n} nodes",
        max(row.fxkit_s - row.floor_s, 1e-9),
        max(row.torch_fx_s - row.floor_s, 1e-9),
        target=0.5,
    )
    return [row, overhead]
