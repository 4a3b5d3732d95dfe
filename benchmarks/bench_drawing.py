"""Drawing: FxGraphDrawer on a ResNet-18-like model against torch.fx's (needs pydot, which
torch.fx's drawer requires), and the HTML viewer on a 10k-node graph, which torch.fx has no
equivalent of: its row compares against torch.fx generating ``gm.code`` for the same graph,
as a yardstick of "work proportional to the graph"."""

from __future__ import annotations

import importlib.util
import operator

import torch
import torch.fx as tfx
from torch import nn

import fxkit
import fxkit.passes.graph_drawer as drawer_module
from benchmarks._harness import Row, compare
from fxkit.drawing import to_html
from fxkit.passes.graph_drawer import FxGraphDrawer


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class ResNet18Like(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        widths = [16, 32, 64, 128]
        blocks = []
        for i, w in enumerate(widths):
            c_in = widths[max(i - 1, 0)]
            blocks += [_Block(c_in, w, 1 if i == 0 else 2), _Block(w, w, 1)]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _big(fx, n: int):
    g = fx.Graph()
    cur = skip = g.placeholder("x")
    for i in range(n):
        if i % 7 == 6:
            cur = skip = g.call_function(operator.add, (cur, skip))
        elif i % 3 == 0:
            cur = g.call_function(torch.relu, (cur,))
        else:
            cur = g.call_method("mul", (cur, 2))
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


def _torch_code(gm) -> str:
    gm.recompile()
    return gm.code


def run(quick: bool) -> list[Row]:
    reps = 3 if quick else 7
    rows: list[Row] = []
    if importlib.util.find_spec("pydot") is not None:
        from torch.fx.passes.graph_drawer import FxGraphDrawer as TorchDrawer

        model = ResNet18Like()
        ours_gm, theirs_gm = fxkit.symbolic_trace(model), tfx.symbolic_trace(model)
        rows.append(
            compare(
                "FxGraphDrawer(...).get_dot_graph(), ResNet-18-like (pydot)",
                lambda: FxGraphDrawer(ours_gm, "resnet").get_dot_graph(),
                lambda: TorchDrawer(theirs_gm, "resnet").get_dot_graph(),
                reps=reps,
                target=1.0,
            )
        )
        # The same drawing on fxkit's own DOT objects, as users without pydot get it.
        drawer_module.HAS_PYDOT = False
        try:
            rows.append(
                compare(
                    "FxGraphDrawer, ResNet-18-like, fxkit's DotGraph (no pydot) vs torch.fx+pydot",
                    lambda: FxGraphDrawer(ours_gm, "resnet").get_dot_graph().to_string(),
                    lambda: TorchDrawer(theirs_gm, "resnet").get_dot_graph().to_string(),
                    reps=reps,
                    target=1.0,
                )
            )
        finally:
            drawer_module.HAS_PYDOT = True
    else:  # torch.fx's drawer refuses to run without pydot: nothing to compare against
        print("bench_drawing: pydot not installed, FxGraphDrawer row skipped")
    n = 10_000
    ours_big, theirs_big = _big(fxkit, n), _big(tfx, n)
    rows.append(
        compare(
            f"to_html viewer, {n}-node graph [torch.fx column: its gm.code codegen, same graph]",
            lambda: to_html(ours_big),
            lambda: _torch_code(theirs_big),
            reps=reps,
        )
    )
    return rows
