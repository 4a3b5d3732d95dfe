"""Trace time, fxkit vs torch.fx: the test zoo, and models of N custom blocks that each read
a parameter (torch.fx scans ``named_parameters()`` on every such read: quadratic)."""

from __future__ import annotations

import pathlib
import sys

import torch
import torch.fx as tfx
from torch import nn

import fxkit
import fxkit._symbolic_trace as fxt
from benchmarks._harness import Row, compare

_TESTS = pathlib.Path(__file__).resolve().parent.parent / "tests"


class ParamBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w + 1


def param_blocks(n: int) -> nn.Module:
    return nn.Sequential(*[ParamBlock() for _ in range(n)])


def _zoo_rows(quick: bool) -> list:
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    import zoo  # the test zoo doubles as a benchmark workload

    cases = [zoo.BY_NAME[n] for n in ("mlp", "resnet", "encoder", "operators", "builtin_leaves")]
    roots = [zoo.make_root(c) for c in cases]

    def ours() -> None:
        for c, r in zip(cases, roots):
            zoo.trace(c, fxkit, r)

    def theirs() -> None:
        for c, r in zip(cases, roots):
            zoo.trace(c, tfx, r)

    return [compare("trace: zoo (5 models)", ours, theirs, reps=5 if quick else 15, target=0.5)]


def _blocks_row(n: int, reps: int) -> Row:
    root = param_blocks(n)
    return compare(
        f"trace: {n} param-reading blocks",
        lambda: fxt.symbolic_trace(root),
        lambda: tfx.symbolic_trace(root),
        reps=reps,
        target=0.1 if n >= 4000 else None,
    )


def _hf_model(kind: str) -> nn.Module:
    import transformers as hf

    if kind == "bert":
        cfg = hf.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=128)  # fmt: skip
        model = hf.BertModel(cfg)
    else:
        cfg = hf.GPT2Config(vocab_size=1000, n_embd=64, n_layer=4, n_head=4, use_cache=False)
        model = hf.GPT2Model(cfg)
    model.config.use_cache = False
    return model.eval()


def _hf_rows() -> list:
    """HF BERT / GPT-2: fxkit's shape-aware trace vs transformers.utils.fx.symbolic_trace
    (HF's torch.fx-based tracer). A model HF's tracer cannot trace gets no row."""
    try:
        import warnings

        import transformers  # noqa: F401
        from transformers.utils.fx import symbolic_trace as hf_trace
    except ImportError:
        return []
    warnings.filterwarnings("ignore", module="transformers")
    rows = []
    for kind in ("bert", "gpt2"):
        model = _hf_model(kind)
        ids = torch.randint(0, 1000, (2, 16))
        try:
            hf_trace(model, input_names=["input_ids"])
        except Exception as e:  # noqa: BLE001  (HF 4.57 cannot trace GPT-2: vmap'd masks)
            print(f"  (no row for HF {kind}: its tracer fails: {type(e).__name__})")
            continue
        rows.append(
            compare(
                f"trace: HF {kind} 4 layers (shape-aware vs HF tracer)",
                lambda m=model, i=ids: fxt.symbolic_trace(m, example_inputs={"input_ids": i}),
                lambda m=model: hf_trace(m, input_names=["input_ids"]),
                reps=5,
            )
        )
    return rows


def _hf_block_rows() -> list:
    """HF blocks that plain symbolic tracing handles (with concrete_args for the optional
    inputs): fxkit.symbolic_trace vs torch.fx.symbolic_trace on the very same block."""
    try:
        import inspect

        import transformers  # noqa: F401
    except ImportError:
        return []
    rows = []
    for kind, path in (("bert", "encoder.layer.0"), ("gpt2", "h.0.mlp")):
        block = _hf_model(kind).get_submodule(path)
        params = inspect.signature(block.forward).parameters.items()
        concrete = {
            n: p.default
            for n, p in params
            if n != "hidden_states" and p.default is not inspect.Parameter.empty
        }
        rows.append(
            compare(
                f"trace: HF {kind} block {path} (plain, concrete_args)",
                lambda b=block, c=concrete: fxt.symbolic_trace(b, concrete_args=c),
                lambda b=block, c=concrete: tfx.symbolic_trace(b, concrete_args=c),
                reps=5,
                target=0.5,
            )
        )
    return rows


def run(quick: bool) -> list:
    """Rows for benchmarks.run; quick mode stops at 1000 blocks and skips the HF models."""
    rows = _zoo_rows(quick)
    rows += _hf_block_rows()
    if not quick:
        rows += _hf_rows()
    sizes = (500, 1000) if quick else (500, 1000, 2000, 4000)
    for n in sizes:
        rows.append(_blocks_row(n, reps=3 if n <= 1000 else 1))
    return rows
