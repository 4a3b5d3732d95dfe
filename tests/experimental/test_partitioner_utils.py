"""fxkit.experimental.partitioner_utils against torch.fx's: the types, Partition's node and
size bookkeeping under random edits, node sizes, and the latency model (same numbers)."""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.fx.experimental import accelerator_partitioner as t_ap
from torch.fx.experimental import partitioner_utils as t_pu
from torch.fx.passes.graph_manipulation import get_size_of_all_nodes as t_sizes

import fxkit
from fxkit.experimental import accelerator_partitioner as f_ap
from fxkit.experimental import partitioner_utils as f_pu
from fxkit.passes.graph_manipulation import get_size_of_all_nodes as f_sizes

TORCH = (tfx, t_ap, t_pu, t_sizes)
FXKIT = (fxkit, f_ap, f_pu, f_sizes)
LIBS = [FXKIT, TORCH]


class AddsAndLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.b = nn.Parameter(torch.rand(4))
        self.c = nn.Parameter(torch.rand(4))

    def forward(self, a):
        add_1 = a + self.b
        add_2 = add_1 + self.c
        linear_1 = self.linear(add_1)
        add_3 = add_2 + linear_1
        return add_2 + add_3


def sized(lib, model=None):
    """``model`` (default AddsAndLinear) traced by ``lib`` with node sizes; nodes by name."""
    torch.manual_seed(0)
    gm = lib[0].symbolic_trace(model if model is not None else AddsAndLinear())
    lib[3](gm, [torch.rand(4)])
    return gm, {n.name: n for n in gm.graph.nodes}


def names(partition) -> List[str]:
    return sorted(n.name for n in partition.nodes)


# --- types ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Device", "NodeLatency", "PartitionLatency", "PartitionerConfig"])
def test_named_tuples_match(name):
    ours, theirs = getattr(f_pu, name), getattr(t_pu, name)
    assert ours._fields == theirs._fields

    def plain(defaults):
        return {k: getattr(v, "name", v) for k, v in defaults.items()}

    assert plain(ours._field_defaults) == plain(theirs._field_defaults)


def test_partition_mode_members():
    assert [(m.name, m.value) for m in f_pu.PartitionMode] == [
        (m.name, m.value) for m in t_pu.PartitionMode
    ]


def test_config_defaults_and_fresh_partition():
    cfg = f_pu.PartitionerConfig([f_pu.Device("d", 10, 0)])
    assert cfg.mode is f_pu.PartitionMode.size_based
    assert (cfg.transfer_rate_bytes_per_sec, cfg.saturate_host) == (0.0, False)
    p = f_pu.Partition(3)
    state = (p.nodes, p.parents, p.children, p.bfs_level, p.used_mem_bytes, p.logical_device_ids)
    assert state == (set(), set(), set(), -1, 0, []) and str(p) == "3"


# --- Partition bookkeeping ------------------------------------------------------------------


def test_partition_node_manipulation():
    steps = []
    for lib in LIBS:
        _, by_name = sized(lib)
        p = lib[2].Partition(0)
        seen = []
        for op, name in [("add", "add"), ("add", "linear"), ("add", "add_1"), ("remove", "add")]:
            getattr(p, f"{op}_node")(by_name[name])
            seen.append((names(p), p.used_mem_bytes))
        p.remove_node(by_name["add"])  # no longer there: nothing happens
        seen.append((names(p), p.used_mem_bytes))
        steps.append(seen)
    assert steps[0] == steps[1]
    assert steps[0][0] == (["a", "add", "b"], 48)


EDITS = st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(edits=EDITS, reset_at=st.integers(0, 30))
def test_random_edits_keep_size_exact(edits, reset_at):
    """Adds and removes in any order give torch.fx's node set and byte count, and the
    byte count always equals a full recount (also after nodes are replaced by hand)."""
    states = []
    for lib in LIBS:
        gm, _ = sized(lib)
        ops = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function")]
        p = lib[2].Partition(0)
        seen = []
        for i, (adding, k) in enumerate(edits):
            if i == reset_at:
                # Keep one computing node, dropping the inputs it pulled in.
                p.nodes = set(sorted(ops, key=lambda n: n.name)[k : k + 1]) & p.nodes
                p.recalculate_mem_size()
            try:
                (p.add_node if adding else p.remove_node)(ops[k])
            except KeyError:  # removing a node whose input was dropped above
                seen.append("KeyError")
                p.recalculate_mem_size()
            seen.append((names(p), p.used_mem_bytes))
            if lib is FXKIT:
                recount = sum(f_pu.get_extra_size_of(n, p.nodes) for n in p.nodes)
                assert p.used_mem_bytes == recount
        states.append(seen)
    assert states[0] == states[1]


def test_nodes_assigned_directly_are_counted_on_next_add():
    _, by_name = sized(FXKIT)
    p = f_pu.Partition(0)
    p.add_node(by_name["add"])
    p.nodes = {by_name["linear"]}  # bypasses add_node; the next edit must re-sum
    p.add_node(by_name["add_1"])
    assert p.used_mem_bytes == sum(f_pu.get_extra_size_of(n, p.nodes) for n in p.nodes)


def test_remove_keeps_inputs_still_read():
    for lib in LIBS:
        _, by_name = sized(lib)
        p = lib[2].Partition(0)
        p.add_node(by_name["add"])
        p.add_node(by_name["add_1"])
        p.remove_node(by_name["add"])
        assert names(p) == ["add_1", "c"]


# --- sizes ----------------------------------------------------------------------------------


def test_extra_size_matches():
    results = []
    for lib in LIBS:
        gm, by_name = sized(lib)
        held = {by_name["a"], by_name["add"]}
        results.append(
            [
                (n.name, lib[2].get_extra_size_of(n, held))
                for n in gm.graph.nodes
                if n.op != "output"
            ]
        )
    assert results[0] == results[1]
    assert dict(results[0])["add_1"] == 16 + 16  # reads c from outside, plus its own output


def test_missing_size_raises_runtime_error():
    messages = []
    for lib in LIBS:
        gm = lib[0].symbolic_trace(AddsAndLinear())
        node = next(n for n in gm.graph.nodes if n.op == "call_function")
        with pytest.raises(RuntimeError) as info:
            lib[2].get_extra_size_of(node, set())
        messages.append(str(info.value))
    ours, theirs = messages
    assert theirs == "node has no size_bytes attr"
    assert ours.startswith(theirs) and "get_size_of_all_nodes" in ours


# --- latency --------------------------------------------------------------------------------


def latencies(lib, gm) -> Dict:
    return {
        n: lib[2].NodeLatency(n.size_bytes.output_size * 1.5, n.size_bytes.total_size / 3.0)
        for n in gm.graph.nodes
        if n.op not in ("placeholder", "get_attr", "output")
    }


def partitioned(lib, groups: List[List[str]], devices: List[List[int]]):
    gm, by_name = sized(lib)
    parts = []
    for i, (group, ids) in enumerate(zip(groups, devices)):
        p = lib[2].Partition(i)
        for name in group:
            p.add_node(by_name[name])
        p.logical_device_ids = ids
        parts.append(p)
    lib[1].set_parents_and_children(parts)
    return gm, parts


LAYOUTS = {
    "three": ([["add", "add_1"], ["linear"], ["add_2", "add_3"]], [[0], [1], [2]]),
    "shared_device": ([["add", "add_1"], ["linear"], ["add_2", "add_3"]], [[0], [0], [1]]),
    "singles": ([["add"], ["add_1"], ["linear"], ["add_2"], ["add_3"]], [[]] * 5),
    "one": ([["add", "add_1", "linear", "add_2", "add_3"]], [[0]]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("rate", [0.5, 7.0], ids=["slow", "fast"])
def test_latencies_equal(layout, rate):
    groups, devices = LAYOUTS[layout]
    results = []
    for lib in LIBS:
        gm, parts = partitioned(lib, groups, devices)
        lat = latencies(lib, gm)
        per = lib[2].get_partition_to_latency_mapping(parts, lat)
        comm = [
            lib[2].get_comm_latency_between(p, q, rate) for p in parts for q in parts if p is not q
        ]
        whole = lib[2].get_latency_of_partitioned_graph(parts, per, rate)
        results.append(([tuple(per[p]) for p in parts], comm, whole))
    assert results[0] == results[1]


def test_critical_path_of_one_partition():
    gm, parts = partitioned(FXKIT, [["add", "add_1", "linear", "add_2", "add_3"]], [[0]])
    lat = {n: f_pu.NodeLatency(1.0, 2.0) for n in latencies(FXKIT, gm)}
    lat[next(n for n in gm.graph.nodes if n.name == "linear")] = f_pu.NodeLatency(10.0, 1.0)
    # add -> linear -> add_2 -> add_3 is the slowest chain: 2 + 10 + 2 + 2.
    assert f_pu.get_latency_of_one_partition(parts[0], lat) == (13.0, 7.0, 16.0)


def test_long_chain_has_no_recursion_limit():
    g = fxkit.Graph()
    x = g.placeholder("x")
    for _ in range(3000):
        x = g.call_function(torch.relu, (x,))
    g.output(x)
    gm = fxkit.GraphModule(nn.Module(), g)
    f_sizes(gm, [torch.rand(2)])
    p = f_pu.Partition(0)
    p.nodes = {n for n in gm.graph.nodes if n.op != "output"}
    lat = {n: f_pu.NodeLatency(0.5, 0.25) for n in gm.graph.nodes if n.op == "call_function"}
    assert f_pu.get_latency_of_one_partition(p, lat) == (1500.0, 750.0, 1500.0)


def test_missing_latency_is_a_key_error():
    messages = []
    for lib in LIBS:
        _, parts = partitioned(lib, [["add", "add_1"]], [[0]])
        with pytest.raises(KeyError) as info:
            lib[2].get_latency_of_one_partition(parts[0], {})
        assert info.value.args[0].name == "add"
        messages.append(str(info.value))
    ours, theirs = messages
    assert theirs == "add" and ours.startswith(theirs) and "node_to_latency_mapping" in ours


def test_zero_transfer_rate_divides_by_zero():
    for lib in LIBS:
        _, parts = partitioned(lib, [["add"], ["add_1"]], [[0], [1]])
        with pytest.raises(ZeroDivisionError):
            lib[2].get_comm_latency_between(parts[0], parts[1], 0.0)
        assert lib[2].get_comm_latency_between(parts[1], parts[0], 2.0) == 0.0


def test_same_device_costs_nothing_to_cross():
    _, parts = partitioned(FXKIT, [["add"], ["add_1"]], [[3], [3]])
    assert f_pu.get_comm_latency_between(parts[0], parts[1], 0.0) == 0.0


def test_cyclic_partitions_raise_recursion_error():
    for lib in LIBS:
        gm, parts = partitioned(lib, [["add"], ["add_1"], ["linear"]], [[0], [1], [2]])
        parts[1].children.add(parts[0])  # add_1 -> add: a cycle below a root
        parts[0].parents.add(parts[1])
        parts[2].parents = set()  # linear becomes the root, feeding into the cycle
        parts[2].children = {parts[0]}
        per = {p: lib[2].PartitionLatency(1.0, 1.0, 1.0) for p in parts}
        with pytest.raises(RecursionError):
            lib[2].get_latency_of_partitioned_graph([parts[2], *parts[:2]], per, 1.0)


def test_works_on_torch_fx_nodes():
    gm, parts = partitioned(TORCH, [["add", "add_1"], ["linear"]], [[0], [1]])
    ours = f_pu.Partition(0)
    for n in parts[0].nodes:
        if n.op == "call_function":
            ours.add_node(n)
    assert ours.used_mem_bytes == parts[0].used_mem_bytes
    lat = latencies(TORCH, gm)
    assert f_pu.get_latency_of_one_partition(parts[0], lat) == t_pu.get_latency_of_one_partition(
        parts[0], lat
    )
    comm = [pu.get_comm_latency_between(parts[0], parts[1], 3.0) for pu in (f_pu, t_pu)]
    assert comm[0] == comm[1] > 0
