"""Saving and loading a 50k-node graph: ``fxkit.save`` + ``fxkit.load`` (JSON graph plus
safetensors weights, nothing executed on load) against torch.fx's pickle round trip of the
same graph (``pickle.dumps`` + ``pickle.loads``, which re-traces the generated code)."""

from __future__ import annotations

import io
import operator
import pickle

import torch
import torch.fx as tfx

import fxkit
from benchmarks._harness import Row, compare


def _graph(fx, n: int):
    root = torch.nn.Module()
    root.register_buffer("bias", torch.randn(4))
    g = fx.Graph()
    cur = g.placeholder("x")
    bias = g.get_attr("bias")
    for i in range(n):
        if i % 3 == 0:
            cur = g.call_function(operator.add, (cur, bias))
        elif i % 3 == 1:
            cur = g.call_function(torch.relu, (cur,))
        else:
            cur = g.call_method("mul", (cur, 0.5))
    g.output(cur)
    return fx.GraphModule(root, g)


def _fxkit_round_trip(gm) -> None:
    buf = io.BytesIO()
    fxkit.save(gm, buf)
    buf.seek(0)
    fxkit.load(buf)


def _torch_fx_round_trip(gm) -> None:
    pickle.loads(pickle.dumps(gm))


def run(quick: bool) -> list[Row]:
    n = 10_000 if quick else 50_000
    ours, theirs = _graph(fxkit, n), _graph(tfx, n)
    return [
        compare(
            f"save+load, {n}-node graph (torch.fx: pickle round trip)",
            lambda: _fxkit_round_trip(ours),
            lambda: _torch_fx_round_trip(theirs),
            reps=3 if quick else 5,
            target=0.3,
        )
    ]
