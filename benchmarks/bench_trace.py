"""Trace time, fxkit vs torch.fx: the test zoo, and models of N custom blocks that each read
a parameter (torch.fx scans ``named_parameters()`` on every such read: quadratic)."""

from __future__ import annotations

import pathlib
import sys

import torch
import torch.fx as tfx
from torch import nn

import fxkit
import fxkit._symbolic_trace as fxt
from benchmarks._harness import Row, compare

_TESTS = pathlib.Path(__file__).resolve().parent.parent / "tests"


class ParamBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w + 1


def param_blocks(n: int) -> nn.Module:
    return nn.Sequential(*[ParamBlock() for _ in range(n)])


def _zoo_rows(quick: bool) -> list:
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    import zoo  # the test zoo doubles as a benchmark workload

    cases = [zoo.BY_NAME[n] for n in ("mlp", "resnet", "encoder", "operators", "builtin_leaves")]
    roots = [zoo.make_root(c) for c in cases]

    def ours() -> None:
        for c, r in zip(cases, roots):
            zoo.trace(c, fxkit, r)

    def theirs() -> None:
        for c, r in zip(cases, roots):
            zoo.trace(c, tfx, r)

    return [compare("trace: zoo (5 models)", ours, theirs, reps=5 if quick else 15, target=0.5)]


def _blocks_row(n: int, reps: int) -> Row:
    root = param_blocks(n)
    return compare(
        f"trace: {n} param-reading blocks",
        lambda: fxt.symbolic_trace(root),
        lambda: tfx.symbolic_trace(root),
        reps=reps,
        target=0.1 if n >= 4000 else None,
    )


def run(quick: bool) -> list:
    """Rows for benchmarks.run; quick mode stops at 1000 blocks."""
    rows = _zoo_rows(quick)
    sizes = (500, 1000) if quick else (500, 1000, 2000, 4000)
    for n in sizes:
        rows.append(_blocks_row(n, reps=3 if n <= 1000 else 1))
    return rows
