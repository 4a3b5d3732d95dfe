"""Interpreter per-node overhead: a long chain of tiny ops on a scalar-sized tensor, where
almost all of the time is the interpreter's own bookkeeping. The floor is the same graph's
compiled forward: the ops alone, called from generated code."""

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


def run(quick: bool) -> list[Row]:
    n = 10_000
    reps = 5 if quick else 9
    x = torch.ones(1)
    ours_gm = _chain(fxkit, n)
    ours = Interpreter(ours_gm)
    theirs = tfx.Interpreter(_chain(tfx, n))
    ours_gm(x)  # compile outside the timed region
    row = compare(
        f"interpreter run, {n}-node chain (floor: compiled forward)",
        lambda: ours.run(x),
        lambda: theirs.run(x),
        reps=reps,
        target=0.5,
        floor_fn=lambda: ours_gm(x),
    )
    # The target is about the interpreter's own cost per node: what it adds on top of
    # running the same ops from generated code.
    overhead = Row(
        f"interpreter per-node overhead (minus compiled forward), {n} nodes",
        max(row.fxkit_s - row.floor_s, 1e-9),
        max(row.torch_fx_s - row.floor_s, 1e-9),
        target=0.5,
    )
    return [row, overhead]
