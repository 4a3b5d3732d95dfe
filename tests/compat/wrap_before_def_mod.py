"""A module that wraps its functions before defining them, as torch.fx code often does.

``fxkit.wrap("scaled_sum")`` runs before ``def scaled_sum``: the name is resolved when a trace
starts. ``pad_to_even`` is registered with *torch.fx*'s wrap (as torchvision and timm register
their helpers) and does shape-dependent Python, so tracing through it would fail.
"""

import torch
import torch.fx

import fxkit

fxkit.wrap("scaled_sum")
torch.fx.wrap("pad_to_even")


def scaled_sum(x, y):
    return x * 2 + y


def pad_to_even(x):
    if x.shape[-1] % 2:  # a Proxy in `if`: not symbolically traceable
        x = torch.nn.functional.pad(x, (0, 1))
    return x


def model_fn(x, y):
    return pad_to_even(scaled_sum(x, y)).relu()


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return scaled_sum(self.lin(x), pad_to_even(x)[..., :3])
