"""fxkit.experimental.accelerator_partitioner against torch.fx's: for every mode the same
partitions (node names, devices, sizes, parents/children), the same DAG, a split module that
computes what the original does; the helpers; and torch.fx's errors on bad configurations."""

from __future__ import annotations

import operator
from typing import Any, Callable, List, Tuple

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
from zoo import CASES, example, trace

# (tracing library, accelerator_partitioner module, partitioner_utils module, sizing fn)
TORCH = (tfx, t_ap, t_pu, t_sizes)
FXKIT = (fxkit, f_ap, f_pu, f_sizes)
CALL_OPS = {"call_module", "call_method", "call_function"}


class AddsAndLinear(nn.Module):
    """The classic partitioner test model: five computing nodes, two parameters."""

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


class TwoAdds(nn.Module):
    def forward(self, a, b):
        return (a + b) + a


class Sparse(nn.Module):
    """A DLRM-like model: dense bottom MLP, three embedding bags, dense top MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        self.bags = nn.ModuleList(nn.EmbeddingBag(200, 4, mode="sum") for _ in range(3))
        self.top = nn.Sequential(nn.Linear(16, 4), nn.ReLU())

    def forward(self, dense, idx, offsets):
        x = self.bottom(dense)
        pooled = [bag(idx, offsets) for bag in self.bags]
        return self.top(torch.cat([x] + pooled, dim=1))


def sparse_inputs():
    return (torch.rand(2, 4), torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([0, 3]))


def prepare(lib, model_fn: Callable[[], nn.Module], inputs: Tuple):
    """A fresh model, its trace under ``lib`` with node sizes, and the inputs."""
    fx, _, _, sizes = lib
    torch.manual_seed(0)
    model = model_fn().eval()
    gm = fx.symbolic_trace(model)
    sizes(gm, list(inputs))
    return model, gm


def summary(partitioner, result) -> Tuple:
    """Everything a partitioning decides, by name, comparable across libraries."""
    parts = [
        (
            p.partition_id,
            sorted(n.name for n in p.nodes),
            list(p.logical_device_ids),
            p.used_mem_bytes,
            sorted(q.partition_id for q in p.parents),
            sorted(q.partition_id for q in p.children),
        )
        for p in partitioner.partitions
    ]
    dag = [
        (
            str(d),
            [n.name for n in d.input_nodes],
            [n.name for n in d.output_nodes],
            list(d.logical_device_ids),
            d.size_bytes,
        )
        for d in result.dag.nodes
    ]
    mapping = sorted((n.name, i) for n, i in partitioner.node_to_partition.items())
    return parts, dag, mapping


def latency_map(lib, gm) -> dict:
    """The classic latency model: memory time from output bytes, compute from total bytes."""
    pu = lib[2]
    return {
        n: pu.NodeLatency(float(n.size_bytes.output_size), 2.0 * n.size_bytes.total_size)
        for n in gm.graph.nodes
        if n.op in CALL_OPS
    }


def partition(lib, model_fn, inputs, make_config: Callable[[Any, Any], Any]):
    """Partition under ``lib``; returns (summary, outputs of the split module, partitioner)."""
    model, gm = prepare(lib, model_fn, inputs)
    partitioner = lib[1].Partitioner()
    result = partitioner.partition_graph(gm, model, make_config(lib, gm))
    split = result.module_with_submodules
    torch.testing.assert_close(split(*inputs), model(*inputs))
    assert all(isinstance(m, lib[0].GraphModule) for m in split.children())
    return summary(partitioner, result), partitioner


def config(*devices, mode="size_based", rate=0.0, latencies=False, **kw):
    def make(lib, gm):
        pu = lib[2]
        return pu.PartitionerConfig(
            [pu.Device(*d) for d in devices],
            getattr(pu.PartitionMode, mode),
            rate,
            latency_map(lib, gm) if latencies else {},
            **kw,
        )

    return make


def same_both_ways(model_fn, inputs, make_config):
    ours, _ = partition(FXKIT, model_fn, inputs, make_config)
    theirs, _ = partition(TORCH, model_fn, inputs, make_config)
    assert ours == theirs
    return ours


def x4():
    return (torch.rand(4),)


# --- the modes ------------------------------------------------------------------------------


def test_single_partition_on_largest_device():
    cfg = config(("dev_0", 125, 0), ("dev_1", 150, 1), ("dev_2", 125, 2))
    parts, dag, _ = same_both_ways(TwoAdds, (torch.rand(4), torch.rand(4)), cfg)
    assert len(parts) == 1 and parts[0][2] == [1]
    assert dag[0][0] == "submod_0" and dag[0][3] == [1]


@pytest.mark.parametrize(
    "devices",
    [
        [("d0", 125, 0), ("d1", 125, 1), ("d2", 125, 2)],
        [("d0", 120, 0), ("d1", 160, 1)],
        [("d0", 200, 0), ("d1", 120, 1), ("d2", 125, 2), ("d3", 90, 3)],
        [("d0", 150, 0), ("d1", 150, 1), ("d2", 150, 2), ("d3", 150, 3)],
    ],
    ids=["3x125", "120-160", "mixed4", "4x150"],
)
def test_size_based(devices):
    parts, dag, _ = same_both_ways(AddsAndLinear, x4(), config(*devices))
    assert len(parts) > 1 and all(p[2] for p in parts)


def test_size_based_leftover_nodes_placed_on_devices_with_room():
    # Two devices: the greedy fill runs out of devices, the remaining nodes become single
    # partitions that get_device_to_partitions_mapping places into the leftover memory.
    parts, _, _ = same_both_ways(AddsAndLinear, x4(), config(("d0", 150, 0), ("d1", 130, 1)))
    assert len(parts) >= 3


# Cases whose every node is a tensor: node sizes (and so partitioning) need tensor metadata.
ZOO_CASES = [c for c in CASES if c.name in ("mlp", "resnet")]


@pytest.mark.parametrize("case", ZOO_CASES, ids=[c.name for c in ZOO_CASES])
def test_size_based_on_zoo(case):
    args, kwargs = example(case)
    assert not kwargs
    results = []
    for lib in (FXKIT, TORCH):
        gm = trace(case, lib[0])
        lib[3](gm, list(args))
        total = sum(n.size_bytes.total_size for n in gm.graph.nodes if n.op != "output")
        biggest = max(n.size_bytes.total_size for n in gm.graph.nodes if n.op != "output")
        per = max(total // 3, biggest * 2)
        pu = lib[2]
        devices = [pu.Device(f"d{i}", per, i) for i in range(8)]
        p = lib[1].Partitioner()
        res = p.partition_graph(gm, gm, pu.PartitionerConfig(devices))
        torch.testing.assert_close(res.module_with_submodules(*args), gm(*args))
        results.append(summary(p, res))
    assert results[0] == results[1]
    assert len(results[0][0]) > 1


def test_sparse_nn():
    dev = [(f"d{i}", 4500, i) for i in range(4)]
    parts, dag, _ = same_both_ways(Sparse, sparse_inputs(), config(*dev, mode="sparse_nn"))
    embedding = [p for p in parts if any(name.startswith("bags") for name in p[1])]
    assert embedding and all(len(p[2]) == 1 for p in embedding)
    dense = [p for p in parts if p not in embedding]
    assert all(p[2] == sorted(q[2][0] for q in embedding) for p in dense)


def test_cost_aware():
    dev = [("d0", 125, 0), ("d1", 125, 1), ("d2", 125, 2), ("d3", 125, 3)]
    cfg = config(*dev, mode="cost_aware", rate=5.0, latencies=True)
    parts, _, _ = same_both_ways(AddsAndLinear, x4(), cfg)
    assert len(parts) > 1


@pytest.mark.parametrize("rate", [1.0, 5.0, 1000.0], ids=["slow", "mid", "fast"])
def test_cost_aware_on_mlp(rate):
    dev = [("d0", 2000, 0), ("d1", 2000, 1), ("d2", 2000, 2)]
    cfg = config(*dev, mode="cost_aware", rate=rate, latencies=True)
    same_both_ways(lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)), x4(), cfg)


@pytest.mark.parametrize("rate", [5.0, 50.0], ids=["mid", "fast"])
def test_kl_based(rate):
    dev = [("d0", 125, 0), ("d1", 125, 1), ("d2", 125, 2), ("d3", 125, 3)]
    cfg = config(*dev, mode="kl_based", rate=rate, latencies=True)
    same_both_ways(AddsAndLinear, x4(), cfg)


def test_aot_based():
    def make(lib, gm):
        pu = lib[2]
        ops = [n for n in gm.graph.nodes if n.op in CALL_OPS]
        mapping = {n: (0 if i < 2 else 1) for i, n in enumerate(ops)}
        return pu.PartitionerConfig(
            [pu.Device("d0", 10, 0), pu.Device("d1", 10, 1)],
            pu.PartitionMode.aot_based,
            node_to_partition_mapping=mapping,
            partition_to_logical_device_mapping={0: [1], 1: [0]},
        )

    # aot_based ignores memory sizes entirely (10-byte devices).
    parts, dag, _ = same_both_ways(AddsAndLinear, x4(), make)
    assert [p[2] for p in parts] == [[1], [0]]


@pytest.mark.parametrize(
    "devices",
    [
        [(f"d{i}", 125, i) for i in range(6)],
        [(f"d{i}", 125, i) for i in range(9)],
        [("d0", 500, 0), ("d1", 120, 1), ("d2", 120, 2), ("d3", 400, 3)],
        [("d0", 1000, 0), ("d1", 90, 1), ("d2", 2000, 2)],
    ],
    ids=["six", "nine", "four", "single-replicated"],
)
def test_saturate_host(devices):
    parts, _, _ = same_both_ways(AddsAndLinear, x4(), config(*devices, saturate_host=True))
    assert any(len(p[2]) > 1 for p in parts)


def test_saturate_host_prints_nothing(capsys):
    devices = [("d0", 125, 0), ("d1", 125, 1), ("d2", 125, 2), ("d3", 200, 3)]
    devices += [("d4", 300, 4), ("d5", 300, 5)]
    partition(FXKIT, AddsAndLinear, x4(), config(*devices, saturate_host=True))
    assert capsys.readouterr().out == ""


# --- helpers --------------------------------------------------------------------------------


def single_node_partitions(lib, gm):
    """One partition per computing node, linked, as cost_aware starts."""
    ap, pu = lib[1], lib[2]
    parts = []
    for n in gm.graph.nodes:
        if n.op in CALL_OPS:
            p = pu.Partition(len(parts))
            p.add_node(n)
            parts.append(p)
    ap.set_parents_and_children(parts)
    return parts


def helper_state(parts):
    return [
        (
            p.partition_id,
            sorted(n.name for n in p.nodes),
            p.used_mem_bytes,
            p.bfs_level,
            list(p.logical_device_ids),
            sorted(q.partition_id for q in p.parents),
            sorted(q.partition_id for q in p.children),
        )
        for p in parts
    ]


def both_helpers(step: Callable[[Any, Any, List], Any]):
    out = []
    for lib in (FXKIT, TORCH):
        _, gm = prepare(lib, AddsAndLinear, x4())
        parts = single_node_partitions(lib, gm)
        ret = step(lib, gm, parts)
        out.append((ret, helper_state(parts)))
    assert out[0] == out[1]
    return out[0]


def test_bfs_levels_and_combining():
    def step(lib, gm, parts):
        ap = lib[1]
        ap.get_bfs_level_partition(parts)
        levels = [p.bfs_level for p in parts]
        ap.combine_two_partitions(parts[0], parts[1], parts)
        ap.get_bfs_level_partition(parts)
        return levels, [ap.check_dependency(p) for p in parts]

    (levels, cycles), state = both_helpers(step)
    assert levels == [0, 1, 1, 2, 3] and not any(cycles)


def test_combining_non_adjacent_partitions_makes_a_cycle():
    def step(lib, gm, parts):
        ap = lib[1]
        # add (first) with add_2 (needs linear, which needs add_1): a cycle via add_1.
        ap.combine_two_partitions(parts[0], parts[3], parts)
        return [ap.check_dependency(p) for p in parts]

    cycles, _ = both_helpers(step)
    assert any(cycles)


def test_device_mapping_helpers():
    def step(lib, gm, parts):
        ap, pu = lib[1], lib[2]
        devices = [pu.Device("a", 100, 0), pu.Device("b", 300, 1), pu.Device("c", 200, 2)]
        ok = ap.get_device_to_partitions_mapping(parts, devices)
        on_dev, left, unplaced = ap.get_device_partition_stats(parts, devices)
        stats = (
            {d.name: [p.partition_id for p in ps] for d, ps in on_dev.items()},
            {d.name: v for d, v in left.items()},
            len(unplaced),
        )
        mapping = sorted((n.name, i) for n, i in ap.get_node_to_partition_mapping(parts).items())
        by_id = {k: v.name for k, v in ap.get_logical_id_to_device(devices).items()}
        ap.reset_partition_device(parts[:2])
        return ok, stats, mapping, by_id

    (ok, stats, _, by_id), _ = both_helpers(step)
    assert ok and stats[2] == 0 and by_id == {0: "a", 1: "b", 2: "c"}


def test_device_mapping_reports_failure():
    def step(lib, gm, parts):
        ap, pu = lib[1], lib[2]
        return ap.get_device_to_partitions_mapping(parts, [pu.Device("tiny", 50, 0)])

    ok, _ = both_helpers(step)
    assert ok is False


def test_reorganize_renumbers():
    def step(lib, gm, parts):
        ap = lib[1]
        parts.reverse()
        ap.reorganize_partitions(parts)

    both_helpers(step)


def test_dag_classes():
    dag = f_ap.DAG()
    dag.create_node("submod_0", ["x"], ["submod_0"], [0], 12)
    node = dag.nodes[0]
    assert isinstance(node, f_ap.DAGNode) and str(node) == "submod_0"
    assert (node.input_nodes, node.output_nodes, node.logical_device_ids, node.size_bytes) == (
        ["x"],
        ["submod_0"],
        [0],
        12,
    )
    assert f_ap.PartitionResult._fields == t_ap.PartitionResult._fields


# --- random graphs --------------------------------------------------------------------------


def random_graph(lib, spec: List[Tuple[int, int, int]]):
    """A graph of 1-D tensor ops; ``spec[i] = (kind, a, b)`` reads earlier values a, b."""
    fx = lib[0]
    g = fx.Graph()
    values = [g.placeholder("x"), g.placeholder("y")]
    for kind, a, b in spec:
        lhs, rhs = values[a % len(values)], values[b % len(values)]
        if kind == 0:
            values.append(g.call_function(torch.add, (lhs, rhs)))
        elif kind == 1:
            values.append(g.call_function(operator.mul, (lhs, rhs)))
        else:
            values.append(g.call_method("relu", (lhs,)))
    g.output(values[-1])
    return fx.GraphModule(nn.Module(), g)


def outcome(lib, spec, mems, mode):
    gm = random_graph(lib, spec)
    inputs = [torch.rand(6), torch.rand(6)]
    lib[3](gm, inputs)
    pu = lib[2]
    devices = [pu.Device(f"d{i}", m, i) for i, m in enumerate(mems)]
    cfg = pu.PartitionerConfig(
        devices,
        getattr(pu.PartitionMode, mode),
        10.0,
        latency_map(lib, gm) if mode != "size_based" else {},
    )
    p = lib[1].Partitioner()
    try:
        res = p.partition_graph(gm, gm, cfg)
    except RuntimeError as e:
        return ("error", str(e).split(" (")[0])
    torch.testing.assert_close(res.module_with_submodules(*inputs), gm(*inputs))
    return summary(p, res)


STEP = st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(0, 30))
SPEC = st.lists(STEP, min_size=1, max_size=24)
# cost_aware tries every pair of partitions per merge: keep those graphs small.
SMALL_SPEC = st.lists(STEP, min_size=2, max_size=7)


@settings(max_examples=30, deadline=None)
@given(spec=SPEC, mems=st.lists(st.sampled_from([80, 120, 200, 300]), min_size=2, max_size=8))
def test_random_graphs_size_based(spec, mems):
    assert outcome(FXKIT, spec, mems, "size_based") == outcome(TORCH, spec, mems, "size_based")


@settings(max_examples=25, deadline=None)
@given(
    spec=SMALL_SPEC,
    mems=st.lists(st.sampled_from([50, 70, 100]), min_size=3, max_size=6),
    mode=st.sampled_from(["cost_aware", "kl_based"]),
)
def test_random_graphs_cost_modes(spec, mems, mode):
    assert outcome(FXKIT, spec, mems, mode) == outcome(TORCH, spec, mems, mode)


# --- bad input ------------------------------------------------------------------------------


def both_raise(model_fn, inputs, make_config, exc_type, text):
    """Both libraries raise ``exc_type``; fxkit's message starts with torch.fx's."""
    messages = []
    for lib in (TORCH, FXKIT):
        with pytest.raises(exc_type) as info:
            partition(lib, model_fn, inputs, make_config)
        messages.append(str(info.value))
    assert text in messages[0]
    assert messages[1].startswith(messages[0])
    return messages[1]


def test_no_devices():
    msg = both_raise(AddsAndLinear, x4(), config(), RuntimeError, "No devices")
    assert "PartitionerConfig.devices" in msg


def test_devices_too_small_for_the_module():
    cfg = config(("dev_0", 4, 0), ("dev_1", 4, 1))
    msg = both_raise(AddsAndLinear, x4(), cfg, RuntimeError, "Devices do not have enough memory")
    assert "bytes" in msg


def test_node_too_large_for_any_device():
    cfg = config(*[(f"d{i}", 100, i) for i in range(5)])
    msg = both_raise(
        AddsAndLinear, x4(), cfg, RuntimeError, "linear is too large to fit any device"
    )
    assert "needs 112 bytes" in msg


def test_no_valid_device_mapping():
    cfg = config(("d0", 60, 0), ("d1", 60, 1), ("d2", 120, 2))
    both_raise(AddsAndLinear, x4(), cfg, RuntimeError, "Cannot Get a Valid Partition")


def test_cost_mode_without_latencies_raises_keyerror():
    cfg = config(("d0", 125, 0), ("d1", 125, 1), ("d2", 125, 2), mode="cost_aware", rate=1.0)
    messages = []
    for lib in (TORCH, FXKIT):
        with pytest.raises(KeyError) as info:
            partition(lib, AddsAndLinear, x4(), cfg)
        messages.append((info.value.args[0].name, str(info.value)))
    assert messages[0][0] == messages[1][0] == "add"
    assert messages[1][1].startswith(messages[0][1]) and "node_to_latency_mapping" in messages[1][1]


def test_kl_mode_without_latencies_raises_keyerror():
    cfg = config(("d0", 125, 0), ("d1", 125, 1), ("d2", 125, 2), mode="kl_based", rate=1.0)
    for lib in (TORCH, FXKIT):
        with pytest.raises(KeyError):
            partition(lib, AddsAndLinear, x4(), cfg)


def test_sparse_nn_needs_equal_devices():
    cfg = config(("d0", 150, 0), ("d1", 200, 1), mode="sparse_nn")
    both_raise(AddsAndLinear, x4(), cfg, RuntimeError, "All devices must have same memory size!")


def test_sparse_nn_too_few_devices_for_embeddings():
    cfg = config(("d0", 6000, 0), ("d1", 6000, 1), mode="sparse_nn")
    both_raise(Sparse, sparse_inputs(), cfg, RuntimeError, "Need 3 devices, but only 2 provided")


def test_sparse_nn_dense_part_does_not_fit_with_embeddings():
    cfg = config(*[(f"d{i}", 3600, i) for i in range(4)], mode="sparse_nn")
    both_raise(Sparse, sparse_inputs(), cfg, RuntimeError, "(embedding partition) and non")


def test_no_operations():
    class Identity(nn.Module):
        def forward(self, x):
            return x

    both_raise(Identity, x4(), config(("d0", 10, 0)), RuntimeError, "No Partition since no")


def test_missing_shape_propagation():
    for lib in (TORCH, FXKIT):
        gm = lib[0].symbolic_trace(AddsAndLinear())
        cfg = lib[2].PartitionerConfig([lib[2].Device("d", 1000, 0)])
        with pytest.raises(RuntimeError, match="has no tensor metadata"):
            lib[1].Partitioner().partition_graph(gm, gm, cfg)


def test_not_a_config():
    for lib in (TORCH, FXKIT):
        _, gm = prepare(lib, AddsAndLinear, x4())
        with pytest.raises(AttributeError):
            lib[1].Partitioner().partition_graph(gm, gm, None)


def test_saturate_host_needs_every_partition_placed():
    for lib in (TORCH, FXKIT):
        _, gm = prepare(lib, AddsAndLinear, x4())
        p = lib[1].Partitioner()
        p.devices = [lib[2].Device("d", 1000, 0)]
        p.graph_module = gm
        p.create_single_node_partition(next(n for n in gm.graph.nodes if n.op in CALL_OPS))
        with pytest.raises(AssertionError, match="Expect no_device_partitions has 0 device"):
            p.saturate_host()


def test_sparse_nn_without_embeddings_does_not_crash():
    # torch.fx pops from the empty list of embedding partitions (IndexError); fxkit has
    # nothing to merge there and returns dense partitions without devices.
    cfg = config(("d0", 150, 0), ("d1", 150, 1), mode="sparse_nn")
    with pytest.raises(IndexError):
        partition(TORCH, AddsAndLinear, x4(), cfg)
    (parts, dag, _), _ = partition(FXKIT, AddsAndLinear, x4(), cfg)
    assert len(parts) >= 2 and all(p[2] == [] for p in parts)
    assert sorted(n for p in parts for n in p[1] if n in ("add", "linear", "add_3")) == [
        "add",
        "add_3",
        "linear",
    ]


def test_sparse_nn_node_too_large_for_a_device():
    cfg = config(*[(f"d{i}", 3000, i) for i in range(4)], mode="sparse_nn")
    msg = both_raise(
        Sparse, sparse_inputs(), cfg, RuntimeError, "is too large to fit into a device"
    )
    assert msg.startswith("bags.0 is too large") and "3000 available" in msg


def test_accepts_a_torch_fx_graph_module():
    model, gm = prepare(TORCH, AddsAndLinear, x4())
    cfg = f_pu.PartitionerConfig([f_pu.Device(f"d{i}", 125, i) for i in range(3)])
    ours = f_ap.Partitioner()
    result = ours.partition_graph(gm, model, cfg)
    x = torch.rand(4)
    torch.testing.assert_close(result.module_with_submodules(x), model(x))
    _, theirs = partition(
        TORCH, AddsAndLinear, x4(), config(*[(f"d{i}", 125, i) for i in range(3)])
    )
    assert [sorted(n.name for n in p.nodes) for p in ours.partitions] == [
        sorted(n.name for n in p.nodes) for p in theirs.partitions
    ]


def test_accepts_a_torch_fx_config():
    # The mode is matched by name, so torch.fx's PartitionerConfig and Device work as well.
    model, gm = prepare(FXKIT, AddsAndLinear, x4())
    ops = [n for n in gm.graph.nodes if n.op in CALL_OPS]
    cfg = t_pu.PartitionerConfig(
        [t_pu.Device("d0", 10, 0), t_pu.Device("d1", 10, 1)],
        t_pu.PartitionMode.aot_based,
        node_to_partition_mapping={n: int(i >= 3) for i, n in enumerate(ops)},
        partition_to_logical_device_mapping={0: [0], 1: [1]},
    )
    p = f_ap.Partitioner()
    result = p.partition_graph(gm, model, cfg)
    assert [d.logical_device_ids for d in result.dag.nodes] == [[0], [1]]
