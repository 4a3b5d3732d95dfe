"""Inference-time folding on a ResNet-50-like CNN, fxkit vs torch.fx: constant folding
(``experimental.const_fold.split_const_subgraphs``) and Conv/BatchNorm fusion
(``experimental.optimization.fuse``).

Constant folding needs constant work to fold: the CNN's convolutions standardise their
weights in ``forward`` (weight standardisation, as in BiT/NFNet-style ResNets), so each one
contributes a small attribute-only subgraph. Both rows time the whole call a user makes,
tracing included.
"""

from __future__ import annotations

import warnings

import torch
import torch.fx.experimental.const_fold as torch_const_fold
import torch.fx.experimental.optimization as torch_optimization
import torch.nn.functional as F
from torch import nn

import fxkit.experimental.const_fold as const_fold
import fxkit.experimental.optimization as optimization
from benchmarks._harness import Row, compare
from benchmarks.bench_models import ResNet50Like


class WSConv2d(nn.Conv2d):
    """A Conv2d whose weight is standardised (zero mean, unit variance per output channel)
    on every call: work that depends on parameters only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        std = w.std(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, (w - mean) / (std + 1e-5), self.bias, self.stride, self.padding)


def _standardised(model: nn.Module) -> nn.Module:
    """``model`` with every Conv2d replaced by a WSConv2d holding the same parameters."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                ws = WSConv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    bias=child.bias is not None,
                )
                ws.load_state_dict(child.state_dict())
                setattr(parent, name, ws)
    return model


def _quiet(fn):
    """``fn`` with the get_attr warning that both libraries' const folding emits silenced."""

    def run() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return fn()

    return run


def run(quick: bool) -> list[Row]:
    reps = 5 if quick else 11
    torch.manual_seed(0)
    ws_resnet = _standardised(ResNet50Like()).eval()
    resnet = ResNet50Like().eval()
    return [
        compare(
            "split_const_subgraphs: ResNet-50-like, weight-standardised convs (53 folds)",
            _quiet(lambda: const_fold.split_const_subgraphs(ws_resnet)),
            _quiet(lambda: torch_const_fold.split_const_subgraphs(ws_resnet)),
            reps=reps,
            target=0.5,
        ),
        compare(
            "fuse (Conv/BN folding): ResNet-50-like",
            lambda: optimization.fuse(resnet),
            lambda: torch_optimization.fuse(resnet),
            reps=reps,
            target=0.5,
        ),
    ]
