"""GPU check for ``fxkit.passes.backends.cudagraphs`` (not a benchmark module; needs CUDA).

Partitions a small model with :func:`partition_cudagraphs`, replaces every fused submodule by
a CUDA-graph replay of it, runs the result and compares with eager execution (and with
torch.fx's partitioning of the same model). Prints PASS or FAIL (exit status 0 / 1), or SKIP
without CUDA. Run: ``python -m benchmarks.gpu_check_cudagraphs``.
"""

from __future__ import annotations

import sys

import torch
import torch.fx as tfx
from torch.fx.passes.backends.cudagraphs import partition_cudagraphs as torch_partition

import fxkit
from fxkit.interpreter import Interpreter
from fxkit.passes.backends.cudagraphs import partition_cudagraphs


def model(x, w1, w2, scale):
    """Two CUDA segments joined by a multiply with a CPU scalar tensor (not capturable)."""
    h = torch.relu(x @ w1)
    h = h.sin() * 2 + x
    u = h * scale
    return torch.tanh(u @ w2) + 1, h.sum(dim=0)


class _Replay(torch.nn.Module):
    """Runs a module by replaying a CUDA graph captured on static copies of its inputs."""

    def __init__(self, module: torch.nn.Module, example: tuple) -> None:
        super().__init__()
        self.static_inputs = [t.clone() for t in example]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (allocations, lazy init) off the capture
            for _ in range(3):
                module(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = module(*self.static_inputs)

    def forward(self, *args):
        for static, value in zip(self.static_inputs, args):
            static.copy_(value)
        self.graph.replay()
        return self.static_outputs


class _RecordFusedInputs(Interpreter):
    def __init__(self, gm) -> None:
        super().__init__(gm)
        self.seen: dict[str, tuple] = {}

    def call_module(self, target, args, kwargs):
        if target.startswith("fused_"):
            self.seen[target] = tuple(args)
        return super().call_module(target, args, kwargs)


def main() -> int:
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 0
    torch.manual_seed(0)
    dev = "cuda"
    inputs = (
        torch.randn(8, 16, device=dev),
        torch.randn(16, 16, device=dev),
        torch.randn(16, 4, device=dev),
        torch.tensor(0.5),  # stays on the CPU
    )
    expected = model(*inputs)

    gm = partition_cudagraphs(fxkit.symbolic_trace(model), inputs)
    theirs = torch_partition(tfx.symbolic_trace(model), inputs)
    fused = sorted(n for n, _ in gm.named_children() if n.startswith("fused_"))
    same_code = gm.code == theirs.code
    print(f"fused submodules: {fused}; code equals torch.fx's: {same_code}")
    print(gm.code)

    recorder = _RecordFusedInputs(gm)
    recorder.run(*inputs)
    for name in fused:
        setattr(gm, name, _Replay(getattr(gm, name), recorder.seen[name]))
    gm.recompile()

    ok = len(fused) >= 2 and same_code
    for trial in range(3):
        fresh = tuple(t.clone() if t.dim() else t for t in inputs)
        if trial:
            fresh = (torch.randn_like(inputs[0]), *inputs[1:])
        got = gm(*fresh)
        want = model(*fresh) if trial else expected
        torch.cuda.synchronize()
        for g, w in zip(got, want):
            ok &= torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
