"""FakeTensorProp on the ResNet-like model and the 12-layer encoder from ``bench_models``.

Each timed run builds a fresh ``FakeTensorMode`` (as a caller propagating a new graph would),
so the parameter conversions and the mode's dispatch cache start cold for both libraries.
"""

from __future__ import annotations

from typing import List

import torch
import torch.fx as tfx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp as TorchFakeTensorProp

import fxkit
from benchmarks._harness import Row, compare
from benchmarks.bench_models import _models
from fxkit.passes.fake_tensor_prop import FakeTensorProp


def _mode() -> FakeTensorMode:
    # The models keep real parameters; the mode converts them as the nodes read them.
    return FakeTensorMode(allow_non_fake_inputs=True)


def run(quick: bool) -> List[Row]:
    reps = 5 if quick else 15
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the rows measure Python overhead, not kernel threads
    try:
        for name, m, args in _models():
            if name == "MLP":
                continue
            ours, theirs = fxkit.symbolic_trace(m), tfx.symbolic_trace(m)
            rows.append(
                compare(
                    f"FakeTensorProp: {name}",
                    lambda ours=ours, args=args: FakeTensorProp(ours, _mode()).propagate(*args),
                    lambda theirs=theirs, args=args: TorchFakeTensorProp(theirs, _mode()).propagate(
                        *args
                    ),
                    reps=reps,
                    target=0.7,
                )
            )
    finally:
        torch.set_num_threads(threads)
    return rows
