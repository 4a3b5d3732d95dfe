"""Core IR benchmarks: Graph API build, GraphModule construction, recompile, copy, pickle,
memory per node. Each row builds the same chain graph with fxkit and torch.fx."""

from __future__ import annotations

import copy
import operator
import pickle
import tracemalloc

import torch
import torch.fx as tfx

import fxkit
from benchmarks._harness import Row, compare


def build_chain(G, n: int):
    """A chain of ``n`` call_function nodes alternating add / relu."""
    g = G.Graph()
    x = g.placeholder("x")
    cur = x
    for i in range(n):
        if i % 2:
            cur = g.call_function(torch.relu, (cur,))
        else:
            cur = g.call_function(operator.add, (cur, x))
    g.output(cur)
    return g


def _memory_per_node(G, n: int) -> float:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    g = build_chain(G, n)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del g
    return (after - before) / n


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    big = 10_000 if quick else 50_000
    reps = 3 if quick else 5
    rows.append(
        compare(
            f"Graph API build, {big // 1000}k-node chain",
            lambda: build_chain(fxkit, big),
            lambda: build_chain(tfx, big),
            reps=reps,
            target=0.5,
        )
    )
    x = torch.ones(2)
    for n in (1_000, 10_000) if quick else (1_000, 10_000, 50_000):
        root = torch.nn.Module()
        rows.append(
            compare(
                f"GraphModule construction only, {n // 1000}k nodes",
                lambda g: fxkit.GraphModule(root, g),
                lambda g: tfx.GraphModule(root, g),
                setup_fxkit=lambda n=n: build_chain(fxkit, n),
                setup_torch_fx=lambda n=n: build_chain(tfx, n),
                reps=reps,
                target=0.2,
            )
        )

        def fresh_chain_fxkit(n=n):
            # a distinct constant per call keeps the compile cache cold
            g = build_chain(fxkit, n)
            g.output_node().args = ((g.output_node().args[0], _counter()),)
            return g

        def fresh_chain_tfx(n=n):
            g = build_chain(tfx, n)
            g.output_node().args = ((g.output_node().args[0], _counter()),)
            return g

        floor_src = build_chain(fxkit, n).python_code("self").src
        rows.append(
            compare(
                f"GraphModule construction + first forward, {n // 1000}k nodes (cold cache)",
                lambda g: fxkit.GraphModule(root, g)(x),
                lambda g: tfx.GraphModule(root, g)(x),
                setup_fxkit=fresh_chain_fxkit,
                setup_torch_fx=fresh_chain_tfx,
                reps=reps,
                target=0.3,
                floor_fn=lambda src=floor_src: compile(src, "<floor>", "exec"),
            )
        )
    n = 10_000
    gm_ours = fxkit.GraphModule(torch.nn.Module(), build_chain(fxkit, n))
    gm_theirs = tfx.GraphModule(torch.nn.Module(), build_chain(tfx, n))
    gm_ours(x)

    def recompile_and_call_ours():
        gm_ours.recompile()
        gm_ours(x)

    def recompile_and_call_theirs():
        gm_theirs.recompile()
        gm_theirs(x)

    rows.append(
        compare(
            "recompile() + call, identical 10k graph (cached compile)",
            recompile_and_call_ours,
            recompile_and_call_theirs,
            reps=reps,
        )
    )
    for n in (10_000,) if quick else (10_000, 50_000):
        gm_ours = fxkit.GraphModule(torch.nn.Module(), build_chain(fxkit, n))
        gm_theirs = tfx.GraphModule(torch.nn.Module(), build_chain(tfx, n))
        rows.append(
            compare(
                f"deepcopy, {n // 1000}k nodes",
                lambda: copy.deepcopy(gm_ours),
                lambda: copy.deepcopy(gm_theirs),
                reps=reps,
                target=0.3,
            )
        )
        rows.append(
            compare(
                f"pickle round trip, {n // 1000}k nodes",
                lambda: pickle.loads(pickle.dumps(gm_ours)),
                lambda: pickle.loads(pickle.dumps(gm_theirs)),
                reps=reps,
                target=0.3,
            )
        )
    ours = _memory_per_node(fxkit, big)
    theirs = _memory_per_node(tfx, big)
    # Bytes are reported in the seconds columns' place; the ratio is what matters.
    rows.append(Row(f"memory per node (bytes/1000), {big // 1000}k chain", ours / 1e3 / 1e3,
                    theirs / 1e3 / 1e3, 0.5))  # fmt: skip
    rows.extend(insert_at_one_point_rows(quick))
    return rows


_COUNT = [0]


def _counter() -> int:
    _COUNT[0] += 1
    return _COUNT[0]


def _insert_after_one_node(G, n: int):
    """``n`` nodes created inside one ``inserting_after(x)`` block: each lands right after
    ``x``, so the order keys around one spot are exhausted again and again."""
    g = G.Graph()
    x = g.placeholder("x")
    g.output(x)
    with g.inserting_after(x):
        for _ in range(n):
            g.call_function(torch.neg, (x,))
    return g


def insert_at_one_point_rows(quick: bool) -> list[Row]:
    """Long runs of inserts at one insertion point (amortized O(1) ordering)."""
    n = 40_000 if quick else 160_000
    return [
        compare(
            f"inserting_after(x) {n // 1000}k times",
            lambda: _insert_after_one_node(fxkit, n),
            lambda: _insert_after_one_node(tfx, n),
            reps=3,
            target=1.0,
        )
    ]
