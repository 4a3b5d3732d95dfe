"""A zoo of small models (torch.nn only) that exercise the symbolic tracer.

Every entry of :data:`CASES` is a :class:`Case`: ``case.build()`` makes a fresh module (or
function), ``case.inputs()`` its example inputs, and ``trace(case, lib)`` traces it with
``fxkit`` or ``torch.fx`` (``lib`` is the module: ``fxkit`` or ``torch.fx``), applying the
case's ``concrete_args`` and leaf overrides the same way for both. Other test files use it as::

    from zoo import CASES, trace      # tests/ is on sys.path under pytest

All modules are put in ``eval()`` mode so outputs are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.fx as tfx
import torch.nn.functional as F
from torch import nn

import fxkit._symbolic_trace as fxt

# --- wrapped free functions (registered with both tracers) ----------------------------------


def pair_energy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Data-dependent control flow: must be recorded as one call, not traced through."""
    if x.sum() > y.sum():
        return x * x + y
    return y * y + x


fxt.wrap("pair_energy")
tfx.wrap("pair_energy")


@fxt.wrap
@tfx.wrap
def clamp_rows(x: torch.Tensor, limit: int) -> torch.Tensor:
    return torch.stack([row.clamp(-limit, limit) for row in x])


fxt.wrap("len")
tfx.wrap("len")


class Pair(NamedTuple):
    first: Any
    second: Any


# --- models ---------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self, d_in: int = 8, d_hidden: int = 16, d_out: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(d_hidden, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).log_softmax(dim=-1)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.ModuleList([BasicBlock(8, 8), BasicBlock(8, 16, 2)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        attn = F.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.ff(self.norm2(x))


class TinyEncoder(nn.Module):
    def __init__(self, vocab: int = 20, d_model: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(1, 32, d_model) * 0.02)
        self.layers = nn.ModuleList([EncoderLayer(d_model) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[:, : ids.size(1)]
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)[:, 0]


class MathOps(nn.Module):
    """math functions on traced sizes are autowrapped; on constants they just run."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = math.sqrt(16.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        return x * self.scale / math.sqrt(n) + math.log(x.size(0)) - math.floor(2.5)


class UsesWrapped(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = pair_energy(x, y)
        return clamp_rows(z, 1) / len(x)


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4))
        self.register_buffer("offset", torch.arange(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent: only traceable as a leaf
            return x @ self.weight + self.offset
        return x - self.offset


class LeafOverride(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.lin(x)).relu()


class Specialised(nn.Module):
    def forward(self, x: torch.Tensor, flag: bool = False, extra: Optional[torch.Tensor] = None):
        if flag:
            x = x * 2
        if extra is None:
            return x + 1
        return x + extra


def dict_inputs(x: dict, scale: float) -> torch.Tensor:
    out = 0
    for key in sorted(x):
        out = out + x[key] * scale
    return out


class KwOnly(nn.Module):
    def forward(self, x: torch.Tensor, *, bias: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return x * scale + bias


class VarArgs(nn.Module):
    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return args[0] + args[1] * kwargs["w"]


class NamedTupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> Pair:
        p = Pair(x + 1, x * 2)
        return Pair(p.first.sum(), p[1].mean())


class InPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.add_(1)
        y += 2
        y.mul_(torch.ones_like(y))
        F.relu(y, inplace=True)
        torch.sigmoid_(y)
        return y


class Indexing(nn.Module):
    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = x[:, 1:3]
        b = x[..., None][0, :, ::2]
        c = x[idx]
        d = x[x.size(0) - 1]
        e = x[:, -1].unsqueeze(-1)
        return a.sum() + b.sum() + c.sum() + d.sum() + e.sum() + x.shape[1]


class Operators(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        a = (1 - x) * 2 + 3 / (y.abs() + 1) - (x**2) // 1 % 5
        b = (-x) + (+y) + abs(x) + (x @ y.t()).sum()
        c = (~(x > 0)) | (y >= 0) & (x != y) ^ (x == 1)
        d = (x < y) + (x <= 2) + 1
        return a, b, c.float().sum(), d, x.T, x.dtype, x.ndim


class TorchCalls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.const = torch.tensor([1.0, 2.0, 3.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x, torch.zeros_like(x)], dim=0)
        z = torch.stack((y, y), dim=1).flatten(1)
        w = torch.add(z, 1.0)
        v = F.pad(w, (1, 1)) + torch.ones(1)
        s = torch.arange(x.size(1), dtype=torch.float32)
        return v.sum(dim=1, keepdim=True) + self.const.sum() + s.mean() + x.new_ones(1)


class BuiltinLeaves(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x.transpose(1, 2)).transpose(1, 2)
        out, (h, c) = self.lstm(y)
        att, _ = self.mha(out, out, out, need_weights=False)
        return self.enc(att).sum(1) + h[0] + c[0]


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.sub = nn.Sequential(nn.ReLU(), nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.sub(self.block(x)))


class DropoutFunctional(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, p=0.5, training=self.training) + F.gelu(x)


def plain_function(x: torch.Tensor, y: torch.Tensor = None) -> torch.Tensor:  # type: ignore[assignment]
    return torch.relu(x).sum(dim=0) + torch.sin(y) * x.size(1)


# --- the case table -------------------------------------------------------------------------


@dataclass
class Case:
    """A zoo entry. ``concrete_args`` gets the library's ``PH`` object and returns a dict."""

    name: str
    build: Callable[[], Any]
    inputs: Callable[[], tuple]
    concrete_args: Optional[Callable[[Any], dict]] = None
    leaf_types: tuple = ()
    kwargs: Optional[Callable[[], dict]] = None

    def __repr__(self) -> str:
        return f"Case({self.name})"


def _ids() -> torch.Tensor:
    return torch.randint(0, 20, (2, 6))


CASES = [
    Case("mlp", MLP, lambda: (torch.randn(3, 8),)),
    Case("resnet", TinyResNet, lambda: (torch.randn(2, 3, 8, 8),)),
    Case("encoder", TinyEncoder, lambda: (_ids(), torch.ones(2, 6, dtype=torch.long))),
    Case("math_ops", MathOps, lambda: (torch.randn(3, 4),)),
    Case("wrapped", UsesWrapped, lambda: (torch.randn(3, 4), torch.randn(3, 4))),
    Case("leaf_override", LeafOverride, lambda: (torch.randn(2, 4),), leaf_types=(Inner,)),
    Case(
        "specialised",
        Specialised,
        lambda: (torch.randn(2, 3), True, None),
        concrete_args=lambda ph: {"flag": True, "extra": None},
    ),
    Case(
        "pytree_inputs",
        lambda: dict_inputs,
        lambda: ({"a": torch.randn(2), "b": torch.randn(2)}, 0.5),
        concrete_args=lambda ph: {"x": {"a": ph, "b": ph}, "scale": 0.5},
    ),
    Case(
        "kw_only",
        KwOnly,
        lambda: (torch.randn(2, 2),),
        kwargs=lambda: {"scale": 3.0, "bias": torch.randn(2)},
    ),
    Case(
        "var_args",
        VarArgs,
        lambda: (torch.randn(2), torch.randn(2)),
        kwargs=lambda: {"w": torch.randn(2)},
    ),
    Case("named_tuple", NamedTupleOut, lambda: (torch.randn(3, 3),)),
    Case("in_place", InPlace, lambda: (torch.randn(3, 3),)),
    Case("indexing", Indexing, lambda: (torch.randn(4, 5), torch.tensor([0, 2]))),
    Case("operators", Operators, lambda: (torch.randn(3, 3), torch.randn(3, 3))),
    Case("torch_calls", TorchCalls, lambda: (torch.randn(2, 3),)),
    Case("builtin_leaves", BuiltinLeaves, lambda: (torch.randn(2, 5, 8),)),
    Case("shared_module", Shared, lambda: (torch.randn(2, 4),)),
    Case("dropout_functional", DropoutFunctional, lambda: (torch.randn(2, 4),)),
    Case("plain_function", lambda: plain_function, lambda: (torch.randn(3, 4), torch.randn(4))),
]

BY_NAME = {c.name: c for c in CASES}


def make_root(case: Case) -> Any:
    """A fresh, seeded instance of the case's model (eval mode), or its function."""
    torch.manual_seed(0)
    root = case.build()
    if isinstance(root, nn.Module):
        root.eval()
    return root


def tracer_for(case: Case, lib: Any) -> Any:
    """A Tracer of ``lib`` (``fxkit`` or ``torch.fx``) honouring the case's leaf overrides."""
    base = fxt.Tracer if lib is not tfx else tfx.Tracer
    if not case.leaf_types:
        return base()
    leaves = case.leaf_types

    class LeafTracer(base):  # type: ignore[misc,valid-type]
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    return LeafTracer()


def trace(case: Case, lib: Any, root: Any = None) -> Any:
    """Trace ``case`` with ``lib`` and return the GraphModule (of that library)."""
    from fxkit.graph_module import GraphModule

    root = make_root(case) if root is None else root
    ph = fxt.PH if lib is not tfx else tfx._symbolic_trace.PH
    concrete = case.concrete_args(ph) if case.concrete_args else None
    tracer = tracer_for(case, lib)
    graph = tracer.trace(root, concrete)
    name = type(root).__name__ if isinstance(root, nn.Module) else root.__name__
    if lib is tfx:
        return tfx.GraphModule(tracer.root, graph, name)
    return GraphModule(tracer.root, graph, name)


def example(case: Case, seed: int = 1) -> tuple:
    """``(args, kwargs)`` for calling the case's model, reproducible for a given seed."""
    torch.manual_seed(seed)
    return case.inputs(), (case.kwargs() if case.kwargs else {})


__all__ = [
    "CASES", "BY_NAME", "Case", "make_root", "trace", "tracer_for", "example",
    "graph_signature", "tensors_of",
]  # fmt: skip


def _norm_arg(a: Any) -> Any:
    if hasattr(a, "op") and hasattr(a, "graph") and hasattr(a, "users"):  # a Node of either lib
        return ("node", a.name)
    if isinstance(a, tuple):
        items = tuple(_norm_arg(x) for x in a)
        return (type(a).__name__, *items) if hasattr(a, "_fields") else items
    if isinstance(a, list):
        return [_norm_arg(x) for x in a]
    if isinstance(a, dict):
        return {k: _norm_arg(v) for k, v in a.items()}
    if isinstance(a, slice):
        return ("slice", _norm_arg(a.start), _norm_arg(a.stop), _norm_arg(a.step))
    return a


def _norm_target(t: Any) -> Any:
    # Helpers private to each library (e.g. _assert_is_none) are different objects with
    # the same meaning; compare those by name.
    if not isinstance(t, str) and getattr(t, "__module__", "").startswith(("fxkit", "torch.fx")):
        return getattr(t, "__name__", repr(t))
    return t


def graph_signature(gm: Any, meta: bool = True) -> list:
    """``(op, target, name, args, kwargs[, nn_module_stack])`` per node, comparable across
    fxkit and torch.fx graphs (nodes become their names)."""
    out = []
    for n in gm.graph.nodes:
        row = (n.op, _norm_target(n.target), n.name, _norm_arg(n.args), _norm_arg(n.kwargs))
        if meta:
            row += (dict(n.meta.get("nn_module_stack", {})),)
        out.append(row)
    return out


def tensors_of(out: Any) -> list:
    """The tensors in a (possibly nested) output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for x in out for t in tensors_of(x)]
    if isinstance(out, dict):
        return [t for x in out.values() for t in tensors_of(x)]
    return []
