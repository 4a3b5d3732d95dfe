"""CapabilityBasedPartitioner.partition_and_fuse on large graphs with 100+ partitions.

The graph: ``lanes`` parallel branches of one input, each a run of ``sin`` stages with an
unsupported ``cos`` after every three, so horizontal fusion joins the same stage of every
branch and the unsupported nodes separate the stages: 10k nodes give 100 partitions, 50k
nodes 500. torch.fx takes about 100 s at 10k nodes (its proposal loop retries every
partition at every node), so the quick run compares at 2k nodes; the slope row times fxkit
alone at 10k and 50k.
"""

from __future__ import annotations

import time

import torch
import torch.fx as tfx
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner as TorchPartitioner
from torch.fx.passes.operator_support import create_op_support as torch_support

import fxkit
from benchmarks._harness import Row, compare
from fxkit.passes.infra.partitioner import CapabilityBasedPartitioner
from fxkit.passes.operator_support import create_op_support


def _graph(fx, nodes: int, lanes: int = 25):
    g = fx.Graph()
    x = g.placeholder("x")
    outputs = []
    for _ in range(lanes):
        h, made = x, 0
        while made < nodes // lanes:
            for _ in range(3):
                h = g.call_function(torch.sin, (h,))
            h = g.call_function(torch.cos, (h,))
            made += 4
        outputs.append(h)
    g.output(tuple(outputs))
    return fx.GraphModule(torch.nn.Module(), g)


def _supported(submodules, node) -> bool:
    return node.op == "call_function" and node.target is not torch.cos


def _ours(gm):
    return CapabilityBasedPartitioner(gm, create_op_support(_supported)).partition_and_fuse()


def _theirs(gm):
    return TorchPartitioner(gm, torch_support(_supported)).partition_and_fuse()


def _fxkit_time(nodes: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        gm = _graph(fxkit, nodes, lanes=25)
        start = time.perf_counter()
        _ours(gm)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(quick: bool) -> list[Row]:
    size = 2_000 if quick else 10_000
    partitions = size // 100
    rows = [
        compare(
            f"CapabilityBasedPartitioner.partition_and_fuse, {size}-node graph, "
            f"{partitions} partitions",
            _ours,
            _theirs,
            reps=1 if not quick else 3,
            setup_fxkit=lambda: _graph(fxkit, size),
            setup_torch_fx=lambda: _graph(tfx, size),
            target=0.3,
        )
    ]
    reps = 3 if quick else 5
    small, large = _fxkit_time(10_000, reps), _fxkit_time(50_000, reps)
    rows.append(
        Row(
            "CapabilityBasedPartitioner.partition_and_fuse slope 10k->50k "
            "(fxkit t50k/5 over fxkit t10k)",
            large / 5,
            small,
            target=1.2,
        )
    )
    return rows
