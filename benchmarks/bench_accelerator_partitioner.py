"""Partitioner.partition_graph in size_based mode on a ~2k-node graph spread over five
devices: node sizing, the greedy fill, device mapping, split_module and the DAG dump.

The graph is a chain of elementwise ops with skip connections and a parameter read every few
nodes, so partitions have several inputs and outputs. Shape propagation runs outside the
timed region (partition_graph expects it done).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as tfx
from torch.fx.experimental import accelerator_partitioner as t_ap
from torch.fx.experimental import partitioner_utils as t_pu
from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp

import fxkit
from benchmarks._harness import Row, compare
from fxkit.experimental import accelerator_partitioner as f_ap
from fxkit.experimental import partitioner_utils as f_pu
from fxkit.passes.shape_prop import ShapeProp

_OPS = (operator.add, operator.mul, torch.sub)


def _module(fx, n: int):
    root = torch.nn.Module()
    for i in range(n // 20):
        root.register_parameter(f"w{i}", torch.nn.Parameter(torch.rand(16)))
    g = fx.Graph()
    cur = g.placeholder("x")
    recent = [cur]
    for i in range(n):
        if i % 20 == 0 and i // 20 < n // 20:
            other = g.get_attr(f"w{i // 20}")
        else:
            other = recent[-7] if len(recent) >= 7 else recent[0]
        cur = g.call_function(_OPS[i % len(_OPS)], (cur, other))
        if i % 5 == 4:
            cur = g.call_function(torch.relu, (cur,))
        recent.append(cur)
    g.output(cur)
    return fx.GraphModule(root, g)


def _prepared(fx, shape_prop, n: int):
    gm = _module(fx, n)
    shape_prop(gm).propagate(torch.rand(16))
    return gm


def _config(pu, gm) -> object:
    body = [nd for nd in gm.graph.nodes if nd.op != "output"]
    # Sizes are not set yet; 16 floats per value, plus a margin, spread over five devices.
    per_device = len(body) * 64 * 2 // 9
    return pu.PartitionerConfig([pu.Device(f"dev_{i}", per_device, i) for i in range(5)])


def run(quick: bool) -> list[Row]:
    n = 1_600  # computing nodes; with the relus and inputs the graph has ~2k nodes
    reps = 3 if quick else 7
    ours_gm = _prepared(fxkit, ShapeProp, n)
    theirs_gm = _prepared(tfx, TorchShapeProp, n)
    ours_cfg, theirs_cfg = _config(f_pu, ours_gm), _config(t_pu, theirs_gm)

    def ours():
        f_ap.Partitioner().partition_graph(ours_gm, ours_gm, ours_cfg)

    def theirs():
        t_ap.Partitioner().partition_graph(theirs_gm, theirs_gm, theirs_cfg)

    nodes = len(ours_gm.graph.nodes)
    return [
        compare(
            f"Partitioner size_based, {nodes}-node graph, 5 devices",
            ours,
            theirs,
            reps=reps,
            target=0.5,
        )
    ]
