"""Tracing state is per thread: concurrent traces agree with serial ones, and code running
in other threads meanwhile sees the original functions and modules."""

from __future__ import annotations

import math
import threading
from typing import Any

import torch
from torch import nn

import fxkit
import fxkit._symbolic_trace as st
import zoo
from fxkit._symbolic_trace import is_fx_tracing, symbolic_trace

TIMEOUT = 10
ORIG_PAIR_ENERGY = zoo.pair_energy


class Rendezvous(nn.Module):
    """Wraps a two-input model; its forward waits on a barrier so two traces surely overlap."""

    def __init__(self, inner: nn.Module, barrier: threading.Barrier) -> None:
        super().__init__()
        self.inner = inner
        self._barrier = barrier

    def forward(self, a: Any, b: Any) -> Any:
        self._barrier.wait(TIMEOUT)  # both traces are now active, patches installed
        out = self.inner(a, b)
        self._barrier.wait(TIMEOUT)  # ... and both have recorded their model
        return out


def _in_threads(*jobs: Any) -> list:
    results: list = [None] * len(jobs)
    errors: list = []

    def run(i: int, job: Any) -> None:
        try:
            results[i] = job()
        except BaseException as e:  # re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "a tracing thread hung"
    return results


def test_two_threads_trace_different_models_like_serially() -> None:
    names = ("encoder", "wrapped")
    serial = [
        zoo.graph_signature(symbolic_trace(Rendezvous(zoo.make_root(zoo.BY_NAME[n]), _NoWait())))
        for n in names
    ]
    barrier = threading.Barrier(2)
    # Built here: make_root seeds the global RNG, which threads would interleave.
    roots = [Rendezvous(zoo.make_root(zoo.BY_NAME[n]), barrier) for n in names]
    gms = _in_threads(*[lambda r=r: symbolic_trace(r) for r in roots])
    assert [zoo.graph_signature(gm) for gm in gms] == serial
    for name, gm, root in zip(names, gms, roots):
        args, _ = zoo.example(zoo.BY_NAME[name])
        root._barrier = _NoWait()
        torch.testing.assert_close(gm(*args), root(*args))
    assert st._slots == {} and torch.nn.Module.__call__ is st._ORIG_MODULE_CALL


class _NoWait:
    def wait(self, timeout: float) -> None:
        return None


def test_other_threads_see_originals_during_a_trace() -> None:
    started, done = threading.Event(), threading.Event()
    seen: dict = {}

    class Holder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            started.set()
            assert done.wait(TIMEOUT)
            return zoo.pair_energy(x, x) + math.sqrt(x.size(0))

    def observer() -> None:
        assert started.wait(TIMEOUT)
        try:
            # the trace has patched zoo's globals, math and nn.Module; none of it shows here
            seen["tracing"] = is_fx_tracing()
            x = torch.ones(2)
            seen["wrapped"] = zoo.UsesWrapped()(x, x)
            seen["sqrt"] = math.sqrt(16)
            seen["module"] = zoo.make_root(zoo.BY_NAME["mlp"])(torch.ones(1, 8))
            seen["patched"] = zoo.__dict__["pair_energy"] is not ORIG_PAIR_ENERGY
        finally:
            done.set()

    gm, _ = _in_threads(lambda: symbolic_trace(Holder()), observer)
    assert seen["tracing"] is False
    assert seen["patched"] is True  # the trampoline really was installed at that moment
    torch.testing.assert_close(seen["wrapped"], zoo.UsesWrapped()(torch.ones(2), torch.ones(2)))
    assert seen["sqrt"] == 4.0 and isinstance(seen["module"], torch.Tensor)
    assert zoo.pair_energy in [n.target for n in gm.graph.nodes]
    assert math.sqrt in [n.target for n in gm.graph.nodes]


def test_failure_in_one_thread_does_not_disturb_the_other() -> None:
    barrier = threading.Barrier(2)

    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            barrier.wait(TIMEOUT)
            raise RuntimeError("boom")

    def bad() -> str:
        try:
            symbolic_trace(Bad())
        except RuntimeError as e:
            return str(e)
        return "no error"

    good_case = zoo.BY_NAME["operators"]
    serial = zoo.graph_signature(symbolic_trace(Rendezvous(zoo.make_root(good_case), _NoWait())))

    def good() -> Any:
        return symbolic_trace(Rendezvous(zoo.make_root(good_case), _OneWait(barrier)))

    msg, gm = _in_threads(bad, good)
    assert msg == "boom"
    assert zoo.graph_signature(gm) == serial
    assert st._slots == {} and torch.nn.Module.__getattr__ is st._ORIG_MODULE_GETATTR


class _OneWait:
    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier, self.used = barrier, False

    def wait(self, timeout: float) -> None:
        if not self.used:
            self.used = True
            self.barrier.wait(timeout)


def test_many_concurrent_traces_agree() -> None:
    names = ("mlp", "resnet", "operators", "indexing", "shared_module", "torch_calls", "wrapped")
    cases = [zoo.BY_NAME[n] for n in names]
    serial = [zoo.graph_signature(zoo.trace(c, fxkit)) for c in cases]
    roots = [zoo.make_root(c) for c in cases]
    barrier = threading.Barrier(len(cases))

    def job(c: zoo.Case, root: Any) -> Any:
        barrier.wait(TIMEOUT)
        return zoo.graph_signature(zoo.trace(c, fxkit, root))

    assert _in_threads(*[lambda c=c, r=r: job(c, r) for c, r in zip(cases, roots)]) == serial
