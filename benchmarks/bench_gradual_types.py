"""Gradual type checking and refinement, fxkit vs torch.fx: ``GraphTypeChecker.type_check()``
followed by ``Refine.refine()`` on a ResNet-like CNN (conv/bn/relu/pool/linear, input typed
``TensorType((Dyn, 3, 64, 64))``) and on a 12-layer transformer-like encoder made of the
operations the checker knows (linear, reshape, transpose, add, relu, flatten).

Both passes overwrite ``node.type``; the untimed setup restores the annotations first.
"""

from __future__ import annotations

import torch
import torch.fx as tfx
import torch.fx.experimental.graph_gradual_typechecker as torch_checker
import torch.fx.tensor_type as torch_types
from torch import nn

import fxkit
import fxkit.experimental.graph_gradual_typechecker as checker
import fxkit.tensor_type as types
from benchmarks._harness import Row, compare


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.down = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.down(x))


class ResNetLike(nn.Module):
    """Stem, 4 stages of ``blocks`` residual blocks, pooling and a classifier."""

    def __init__(self, blocks: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, c = [], width
        for stage in range(4):
            for i in range(blocks):
                c_out = width * 2**stage
                layers.append(_Block(c, c_out, 2 if i == 0 and stage else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, seq: int, batch: int) -> None:
        super().__init__()
        self.split = [batch, seq, heads, d // heads]
        self.merge = [batch, seq, d]
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.up, self.act, self.down = nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.transpose(torch.reshape(self.q(x), self.split), 1, 2)
        k = torch.transpose(torch.reshape(self.k(x), self.split), 1, 2)
        v = torch.transpose(torch.reshape(self.v(x), self.split), 1, 2)
        mixed = torch.reshape(torch.transpose(q + k + v, 1, 2), self.merge)
        x = x + self.proj(mixed)
        return x + self.down(self.act(self.up(x)))


class TransformerLike(nn.Module):
    """``layers`` encoder layers of linear/reshape/transpose/add/relu, then a head."""

    def __init__(self, layers: int = 12, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[_Layer(d, heads, 16, 2) for _ in range(layers)])
        self.head = nn.Linear(d * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.layers(x), 1))


def _prepared(lib, module: nn.Module, input_type):
    """Trace ``module`` with ``lib`` and return a setup function that resets every node's type
    to the initial annotation (input typed, everything else unknown)."""
    gm = lib.symbolic_trace(module)
    nodes = list(gm.graph.nodes)

    def setup():
        for n in nodes:
            n.type = input_type if n.op == "placeholder" else None
        return gm

    return setup


def _check_and_refine(mod):
    def run(gm) -> None:
        mod.GraphTypeChecker({}, gm).type_check()
        mod.Refine(gm).refine()

    return run


def run(quick: bool) -> list[Row]:
    reps = 15 if quick else 41
    cases = [
        (
            "type_check + refine, ResNet-like (16 blocks, %d nodes)",
            ResNetLike(),
            lambda t: t.TensorType((t.Dyn, 3, 64, 64)),
        ),
        (
            "type_check + refine, 12-layer transformer-like (%d nodes)",
            TransformerLike(),
            lambda t: t.TensorType((2, t.Dyn, 32)),
        ),
    ]
    rows = []
    for title, module, input_type in cases:
        ours = _prepared(fxkit, module, input_type(types))
        theirs = _prepared(tfx, module, input_type(torch_types))
        size = len(ours().graph.nodes)
        rows.append(
            compare(
                title % size,
                _check_and_refine(checker),
                _check_and_refine(torch_checker),
                reps=reps,
                setup_fxkit=ours,
                setup_torch_fx=theirs,
                target=0.5,
            )
        )
    return rows
