"""Shape constraints of a small CNN (conv/bn/relu/maxpool x2, flatten, linear, residual add)
with a Dyn batch: generation + transformation to a fixed point + z3 encoding
(``transform_all_constraints``), and the same followed by a z3 ``check()``.

fxkit memoises z3 terms across calls; each fxkit run starts with that memo cleared, so the
rows measure a cold start. Skipped (no rows) when z3 is not installed.
"""

from __future__ import annotations

import torch
import torch.fx as tfx

import fxkit
from benchmarks._harness import Row, compare


class _SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        y = self.pool(self.relu(self.bn1(self.conv1(x))))
        y = self.pool(self.relu(self.bn2(self.conv2(y))))
        y = torch.flatten(y, 1)
        return self.fc(y) + self.fc(y)


def _traced(lib, tensor_type, dyn):
    gm = lib.symbolic_trace(_SmallCNN())
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            node.type = tensor_type((dyn, 3, 32, 32))
    return gm


def run(quick: bool) -> list[Row]:
    try:
        import z3
    except ImportError:
        return []
    from torch.fx.experimental.migrate_gradual_types import transform_to_z3 as theirs_z3
    from torch.fx.tensor_type import Dyn as TDyn
    from torch.fx.tensor_type import TensorType as TTensorType

    from fxkit.experimental.migrate_gradual_types import transform_to_z3 as ours_z3
    from fxkit.tensor_type import Dyn, TensorType

    ours_gm = _traced(fxkit, TensorType, Dyn)
    theirs_gm = _traced(tfx, TTensorType, TDyn)
    reps = 3 if quick else 7

    def cold() -> None:
        ours_z3._TERM_CACHE.clear()

    def solve(formula) -> object:
        solver = z3.Solver()
        solver.add(formula)
        return solver.check()

    return [
        compare(
            "gradual constraints: generate + fixed point + z3 encode, small CNN",
            lambda _: ours_z3.transform_all_constraints(ours_gm),
            lambda: theirs_z3.transform_all_constraints(theirs_gm),
            setup_fxkit=cold,
            reps=reps,
            target=0.5,
        ),
        compare(
            "gradual constraints: generate + z3 solve (sat), small CNN",
            lambda _: solve(ours_z3.transform_all_constraints(ours_gm)),
            lambda: solve(theirs_z3.transform_all_constraints(theirs_gm)),
            setup_fxkit=cold,
            reps=reps,
            target=0.5,
        ),
    ]
