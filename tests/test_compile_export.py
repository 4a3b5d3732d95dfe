"""torch.compile and torch.export accept fxkit GraphModules and give the eager outputs."""

from __future__ import annotations

import torch
from torch import nn

import fxkit


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3))), y.shape[0]


def test_torch_compile_runs_an_fxkit_graph_module():
    torch.manual_seed(0)
    model = Net().eval()
    gm = fxkit.symbolic_trace(model)
    x = torch.randn(2, 3, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(gm, backend="aot_eager", fullgraph=True)
    out, n = compiled(x)
    expected, m = model(x)
    torch.testing.assert_close(out, expected)
    assert n == m == 2


def test_torch_export_exports_an_fxkit_graph_module():
    torch.manual_seed(0)
    model = Net().eval()
    gm = fxkit.symbolic_trace(model)
    x = torch.randn(2, 3, 8, 8)
    exported = torch.export.export(gm, (x,))
    out, n = exported.module()(x)
    expected, m = model(x)
    torch.testing.assert_close(out, expected)
    assert n == m
    # and the exported (torch.fx) graph comes back into fxkit
    from fxkit.interop import from_torch_fx

    back = from_torch_fx(exported.module())
    torch.testing.assert_close(back(x)[0], expected)
