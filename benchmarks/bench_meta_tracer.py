"""experimental.meta_tracer.symbolic_trace(model, meta_args=...) on a tiny random-init HF BERT
(hidden 64, 4 layers) and on a GPT-2-style decoder of the same size, vs torch.fx's MetaTracer.

torch.fx's MetaTracer cannot trace HF's GPT2Model in transformers 4.57 (its causal mask is
built with ``vmap`` over traced values, which fails on both tracers), so the GPT-2 row uses a
nanoGPT-style decoder written with torch.nn: shape-driven ``view``/``transpose``, a causal
mask buffer sliced by the traced length, ``torch.arange(T, device=idx.device)``.
Each repetition traces a fresh model on the meta device (the tracers add constants to it).
"""

from __future__ import annotations

import inspect
import math
import warnings

import torch
from torch import nn
from torch.fx.experimental import meta_tracer as torch_meta_tracer

from benchmarks._harness import Row, compare
from fxkit.experimental import meta_tracer as fxkit_meta_tracer


class _CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.heads = heads
        mask = torch.tril(torch.ones(context, context)).view(1, 1, context, context)
        self.register_buffer("bias", mask)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _CausalSelfAttention(width, heads, context)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """GPT-2 layout: token + position embeddings, pre-norm blocks, tied LM head."""

    def __init__(self, vocab: int = 100, width: int = 64, layers: int = 4, heads: int = 2) -> None:
        super().__init__()
        context = 64
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(_Block(width, heads, context) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        b, t = idx.size()
        if t > self.wpe.num_embeddings:
            raise ValueError("sequence longer than the context")
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
    )
    return BertModel(config).to("meta")


def _hf_concrete_args(model) -> dict:
    # Every input but input_ids is fixed to its default; no dict output, no cache.
    params = inspect.signature(model.forward).parameters.items()
    fixed = {
        k: p.default for k, p in params if k != "input_ids" and p.kind is p.POSITIONAL_OR_KEYWORD
    }
    fixed.update(return_dict=False, use_cache=False)
    return fixed


def _row(name: str, build, meta_args: dict, concrete, reps: int) -> Row:
    def tracing(lib):
        def trace(model):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # both warn for the specialised None inputs
                return lib.symbolic_trace(model, meta_args=meta_args, concrete_args=concrete)

        return trace

    return compare(
        name,
        tracing(fxkit_meta_tracer),
        tracing(torch_meta_tracer),
        reps=reps,
        setup_fxkit=build,
        setup_torch_fx=build,
        target=0.5,
    )


def run(quick: bool) -> list[Row]:
    reps = 5 if quick else 11
    ids = torch.zeros(2, 16, dtype=torch.long, device="meta")
    bert_fixed = _hf_concrete_args(_bert())
    return [
        _row(
            "MetaTracer, HF BERT (hidden 64, 4 layers)", _bert, {"input_ids": ids}, bert_fixed, reps
        ),
        _row(
            "MetaTracer, GPT-2-style decoder (hidden 64, 4 layers)",
            lambda: TinyGPT().to("meta"),
            {"idx": ids},
            None,
            reps,
        ),
    ]
