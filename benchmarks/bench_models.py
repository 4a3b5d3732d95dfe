"""Whole models, fxkit vs torch.fx: trace time, forward overhead of the traced module against
eager, and ShapeProp.

The models are written with ``torch.nn`` only: an MLP, a ResNet-50-shaped CNN (bottleneck
blocks in stages of 3/4/6/3, BatchNorm, downsampling shortcuts) and a 12-layer transformer
encoder with hand-written multi-head attention. Widths are small so that a forward pass on
a small input costs microseconds per op, which is where Python overhead shows.
"""

from __future__ import annotations

import math
from typing import Callable, List, Tuple

import torch
import torch.fx as tfx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp

import fxkit
from benchmarks._harness import Row, compare
from fxkit.passes.shape_prop import ShapeProp

# --- models -------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, width: int = 64, depth: int = 8) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).log_softmax(dim=-1)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet50Like(nn.Module):
    """ResNet-50's layout (stem, 3/4/6/3 bottlenecks, pooling head) at a reduced width."""

    def __init__(self, base: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(base),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: List[nn.Module] = []
        c_in = base
        for i, blocks in enumerate((3, 4, 6, 3)):
            width = base * 2**i
            layer = []
            for j in range(blocks):
                layer.append(Bottleneck(c_in, width, stride=2 if (j == 0 and i > 0) else 1))
                c_in = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        weights = self.drop(F.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = Attention(d, heads)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.ff(self.norm2(x)))


class Encoder(nn.Module):
    def __init__(self, vocab: int = 100, d: int = 32, heads: int = 4, layers: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, 64, d))
        self.layers = nn.ModuleList([EncoderLayer(d, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


def _models() -> List[Tuple[str, nn.Module, tuple]]:
    """(name, model in eval mode, small example inputs)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, 8))
    cases = [
        ("MLP", MLP(), (torch.randn(1, 64),)),
        ("ResNet-50-like", ResNet50Like(), (torch.randn(1, 3, 32, 32),)),
        ("12-layer encoder", Encoder(), (ids, torch.ones(1, 8, dtype=torch.long))),
    ]
    for _, m, _ in cases:
        m.eval()
    return cases


# --- rows ---------------------------------------------------------------------------------------


def _repeat(fn: Callable[[], object], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn()

    return run


def _trace_rows(cases: list, reps: int) -> List[Row]:
    return [
        compare(
            f"trace: {name}",
            lambda m=m: fxkit.symbolic_trace(m),
            lambda m=m: tfx.symbolic_trace(m),
            reps=reps,
            target=0.5,
        )
        for name, m, _ in cases
    ]


def _forward_rows(cases: list, reps: int, calls: int) -> List[Row]:
    """Traced forward against eager. Two rows per model: fxkit vs torch.fx GraphModule (eager
    as the floor), and fxkit GraphModule vs eager itself (the torch.fx column holds eager)."""
    rows = []
    with torch.no_grad():
        for name, m, args in cases:
            ours, theirs = fxkit.symbolic_trace(m), tfx.symbolic_trace(m)
            ours(*args), theirs(*args)  # compile and warm up
            row = compare(
                f"forward: {name}, fxkit vs torch.fx GraphModule (floor: eager)",
                _repeat(lambda: ours(*args), calls),
                _repeat(lambda: theirs(*args), calls),
                reps=reps,
                floor_fn=_repeat(lambda m=m: m(*args), calls),
            )
            eager = compare(
                f"forward: {name}, fxkit GraphModule vs eager (torch.fx column: eager)",
                _repeat(lambda: ours(*args), calls),
                _repeat(lambda m=m: m(*args), calls),
                reps=reps,
                target=1.02,
            )
            rows += [row, eager]
    return rows


def _shape_prop_rows(cases: list, reps: int) -> List[Row]:
    rows = []
    for name, m, args in cases:
        if name == "MLP":
            continue
        ours, theirs = fxkit.symbolic_trace(m), tfx.symbolic_trace(m)
        with torch.no_grad():
            rows.append(
                compare(
                    f"ShapeProp: {name} (floor: eager forward)",
                    lambda: ShapeProp(ours).propagate(*args),
                    lambda: TorchShapeProp(theirs).propagate(*args),
                    reps=reps,
                    target=0.7,
                    floor_fn=lambda m=m: m(*args),
                )
            )
    return rows


def _shape_prop_vs_eager_rows(reps: int) -> List[Row]:
    """ShapeProp against an eager forward of the same model at working input sizes, where
    the kernels do real work: the torch.fx column of these rows holds the eager time."""
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (4, 64))
    cases = [
        ("ResNet-50-like, 1x3x128x128", ResNet50Like().eval(), (torch.randn(1, 3, 128, 128),)),
        ("12-layer encoder, 4x64 tokens", Encoder().eval(), (ids, torch.ones_like(ids))),
    ]
    rows = []
    for name, m, args in cases:
        ours = fxkit.symbolic_trace(m)
        with torch.no_grad():
            rows.append(
                compare(
                    f"ShapeProp / eager forward: {name} (torch.fx column: eager)",
                    lambda ours=ours, args=args: ShapeProp(ours).propagate(*args),
                    lambda m=m, args=args: m(*args),
                    reps=reps,
                    target=1.15,
                )
            )
    return rows


def run(quick: bool) -> List[Row]:
    cases = _models()
    reps = 5 if quick else 15
    # One intra-op thread: the rows measure Python overhead, and thread hand-offs on a busy
    # machine would swamp it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (
            _trace_rows(cases, reps)
            + _forward_rows(cases, reps=11 if quick else 21, calls=20 if quick else 50)
            + _shape_prop_rows(cases, reps)
            + _shape_prop_vs_eager_rows(reps)
        )
    finally:
        torch.set_num_threads(threads)
