"""CSEPass on a 10k-node graph in which 30% of the nodes repeat an earlier computation, so
the pass both hashes every node and rebuilds a GraphModule of ~7k nodes."""

from __future__ import annotations

import operator

import torch
import torch.fx as tfx
from torch.fx.passes.dialect.common.cse_pass import CSEPass as TorchCSEPass

import fxkit
from benchmarks._harness import Row, compare
from fxkit.passes.dialect.common.cse_pass import CSEPass

_OPS = (operator.add, operator.mul, torch.sin, torch.neg)


def _graph(fx, n: int):
    g = fx.Graph()
    x = g.placeholder("x")
    cur = x
    previous = None
    for i in range(n):
        if previous is not None and i % 10 < 3:
            # The same op on the same inputs as the node before: CSE folds it away.
            node = g.call_function(previous.target, previous.args)
        else:
            fn = _OPS[i % len(_OPS)]
            args = (cur, i % 7) if fn in (operator.add, operator.mul) else (cur,)
            node = cur = g.call_function(fn, args)
        previous = node
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


def run(quick: bool) -> list[Row]:
    n = 10_000
    reps = 3 if quick else 7
    ours_gm, theirs_gm = _graph(fxkit, n), _graph(tfx, n)
    ours, theirs = CSEPass(), TorchCSEPass()
    # The pass leaves its input alone, so the same module serves every repetition.
    return [
        compare(
            f"CSEPass, {n}-node graph, 30% duplicates",
            lambda: ours(ours_gm),
            lambda: theirs(theirs_gm),
            reps=reps,
            target=0.3,
        )
    ]
