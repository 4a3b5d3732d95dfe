"""NormalizeArgs on the 12-layer transformer encoder of ``bench_models`` (~500 nodes: modules,
functionals, methods and operators), fxkit vs torch.fx, each on its own traced module."""

from __future__ import annotations

import warnings

import torch.fx as tfx
from torch.fx.experimental.normalize import NormalizeArgs as TorchNormalizeArgs

import fxkit
from benchmarks._harness import Row, compare
from benchmarks.bench_models import Encoder
from fxkit.experimental.normalize import NormalizeArgs


def run(quick: bool) -> list[Row]:
    model = Encoder(layers=12).eval()
    ours_gm, theirs_gm = fxkit.symbolic_trace(model), tfx.symbolic_trace(model)
    reps = 5 if quick else 15
    rows = []
    # Both libraries warn about argument lists they cannot type; the warnings machinery is
    # not what is measured.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for only_kwargs in (True, False):
            rows.append(
                compare(
                    f"NormalizeArgs(only_kwargs={only_kwargs}), 12-layer encoder",
                    lambda flag=only_kwargs: NormalizeArgs(ours_gm, flag).transform(),
                    lambda flag=only_kwargs: TorchNormalizeArgs(theirs_gm, flag).transform(),
                    reps=reps,
                    target=0.5,
                )
            )
    return rows
