"""make_fx, fxkit vs torch.fx, on the ResNet-50-like CNN and the 12-layer encoder of
``bench_models``: real mode (real kernels) and fake mode (fake tensors, static shapes; the
models' parameters are real tensors, hence ``_allow_non_fake_inputs=True`` on both sides)."""

from __future__ import annotations

from typing import List

import torch
from torch.fx.experimental.proxy_tensor import make_fx as torch_make_fx

from benchmarks._harness import Row, compare
from benchmarks.bench_models import _models
from fxkit.experimental.proxy_tensor import make_fx


def run(quick: bool) -> List[Row]:
    reps = 3 if quick else 7
    cases = [c for c in _models() if c[0] in ("ResNet-50-like", "12-layer encoder")]
    threads = torch.get_num_threads()
    # One intra-op thread: the rows measure tracing overhead, not kernel parallelism.
    torch.set_num_threads(1)
    rows = []
    try:
        for name, model, args in cases:
            for mode in ("real", "fake"):
                options = {"tracing_mode": mode, "_allow_non_fake_inputs": mode != "real"}
                ours = make_fx(model, **options)
                theirs = torch_make_fx(model, **options)
                ours(*args), theirs(*args)  # warm caches (fake-tensor op cache, imports)
                rows.append(
                    compare(
                        f"make_fx {mode}: {name}",
                        lambda ours=ours, args=args: ours(*args),
                        lambda theirs=theirs, args=args: theirs(*args),
                        reps=reps,
                        target=0.5,
                    )
                )
    finally:
        torch.set_num_threads(threads)
    return rows
