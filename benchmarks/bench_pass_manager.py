"""Infra PassManager overhead: 20 passes that change nothing, run on a 10k-node graph.

torch.fx's manager recompiles the GraphModule after every pass; fxkit's does too (recompile
is lazy there) and also records each pass's wall time and node diff in ``pm.history``."""

from __future__ import annotations

import operator

import torch
import torch.fx as tfx
from torch.fx.passes.infra import pass_base as tbase
from torch.fx.passes.infra import pass_manager as tpm

import fxkit
from benchmarks._harness import Row, compare
from fxkit.passes.infra import pass_base as obase
from fxkit.passes.infra import pass_manager as opm


def _chain(fx, n: int):
    g = fx.Graph()
    cur = x = g.placeholder("x")
    for i in range(n):
        cur = g.call_function(operator.add if i % 2 else operator.mul, (cur, x))
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


def _noops(base, k: int):
    def make(i):
        def noop(gm):
            return base.PassResult(gm, False)

        noop.__name__ = f"noop_{i}"
        return noop

    return [make(i) for i in range(k)]


def run(quick: bool) -> list[Row]:
    n, k = 10_000, 20
    reps = 3 if quick else 7
    ours_gm, theirs_gm = _chain(fxkit, n), _chain(tfx, n)
    ours = opm.PassManager(_noops(obase, k))
    theirs = tpm.PassManager(_noops(tbase, k))
    return [
        compare(
            f"infra PassManager, {k} no-op passes on a {n}-node graph",
            lambda: ours(ours_gm),
            lambda: theirs(theirs_gm),
            reps=reps,
            target=0.3,
        )
    ]
