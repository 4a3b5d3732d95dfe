"""split_module on large graphs with 100+ partitions, and how its cost grows with size.

The graph is a chain of elementwise ops where every node also reads a node a few steps back
(so values cross partition boundaries), plus a parameter read through ``get_attr``. Nodes are
split into contiguous partitions of ~80 nodes: 128 partitions at 10k nodes, 640 at 50k.
"""

from __future__ import annotations

import operator
import statistics

import torch
import torch.fx as tfx
from torch.fx.passes.split_module import split_module as torch_split_module

import fxkit
from benchmarks._harness import Row, _time_once, compare
from fxkit.passes.split_module import split_module

_NODES_PER_PARTITION = 78


def _graph(fx, n: int):
    root = torch.nn.Module()
    root.w = torch.nn.Parameter(torch.ones(4))
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.placeholder("y")
    w = g.get_attr("w")
    recent = [x, y, w]
    for i in range(n):
        back = recent[-1 - (i % 5) % len(recent)]
        if i % 3 == 0:
            node = g.call_function(operator.add, (recent[-1], back))
        elif i % 3 == 1:
            node = g.call_function(torch.mul, (recent[-1], back))
        else:
            node = g.call_method("relu", (recent[-1],))
        recent.append(node)
        del recent[:-8]
    g.output(recent[-1])
    return fx.GraphModule(root, g)


def _callback(gm):
    index = {}
    for node in gm.graph.nodes:
        if node.op not in ("placeholder", "get_attr", "output"):
            index[node] = len(index) // _NODES_PER_PARTITION
    return index.__getitem__


def _row(n: int, reps: int) -> Row:
    ours, theirs = _graph(fxkit, n), _graph(tfx, n)
    ours_cb, theirs_cb = _callback(ours), _callback(theirs)
    parts = n // _NODES_PER_PARTITION + 1
    return compare(
        f"split_module, {n}-node graph, {parts} partitions",
        lambda: split_module(ours, None, ours_cb),
        lambda: torch_split_module(theirs, None, theirs_cb),
        reps=reps,
        target=0.3,
    )


def _fxkit_times(sizes: tuple, reps: int) -> list:
    """Median fxkit time per size, alternating the sizes so load changes hit all alike."""
    cases = []
    for n in sizes:
        gm = _graph(fxkit, n)
        cases.append((gm, _callback(gm)))
    samples: list = [[] for _ in sizes]
    for _ in range(reps):
        for sink, (gm, cb) in zip(samples, cases):
            sink.append(_time_once(lambda gm=gm, cb=cb: split_module(gm, None, cb), None))
    return [statistics.median(ts) for ts in samples]


def run(quick: bool) -> list[Row]:
    reps = 3 if quick else 5
    rows = [_row(10_000, reps), _row(50_000, 1 if quick else 3)]
    t10k, t50k = _fxkit_times((10_000, 50_000), 5 if quick else 9)
    rows.append(
        Row(
            "split_module slope 10k->50k (fxkit t50k/5 over fxkit t10k)",
            t50k / 5,
            t10k,
            target=1.2,
        )
    )
    return rows
