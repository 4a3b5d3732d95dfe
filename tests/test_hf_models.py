"""HuggingFace models (transformers 4.57, random init from small configs, nothing downloaded)
traced by fxkit alone, compared with eager outputs.

What needs which mode:

* Plain ``symbolic_trace`` (torch.fx's mode) cannot trace the top-level models: BERT stops at
  ``warn_if_padding_and_no_attention_mask`` (a data-dependent ``in`` on ``input_ids``) and at
  ``batch_size, seq_length = input_shape`` style size unpacking; GPT-2 at the mask
  preparation (``_preprocess_mask_arguments``: ``if`` on a traced value). Their blocks do
  trace plainly with ``concrete_args`` for the optional inputs: ``BertLayer`` and
  ``GPT2MLP`` (tested below); ``GPT2Attention`` does not (``(*k.shape[:-1], -1, d)``
  iterates a traced shape).
* Shape-aware tracing (``symbolic_trace(m, example_inputs=...)``) traces BERT, GPT-2, T5,
  ViT and Llama whole: sizes resolve from fake tensors (recorded as guards), unnamed optional
  inputs are specialised to their defaults, ``torch.jit.is_tracing()`` answers True to the
  model code (HF then skips its data-dependent shortcuts), tensor factories called with traced
  sizes are recorded, and HF's vmap-based causal-mask builders are recorded as one call.
  ``use_cache`` is turned off in most configs here; with it on (the default, tested below) the
  returned ``DynamicCache`` is a tuple of tensors in the graph, rebuilt around the result.
* HF's own ``transformers.utils.fx.symbolic_trace`` (the torch.fx-side reference) traces BERT
  and T5 in 4.57 but fails on GPT-2 and Llama (its proxies reach ``torch.vmap``).
"""

from __future__ import annotations

import inspect
import os
import warnings

import pytest
import torch

import fxkit

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", module="transformers")

SLOW = os.environ.get("FXKIT_SLOW") == "1"


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.BertModel(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    return transformers.GPT2Model(cfg)


def _t5():
    cfg = transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4
    )
    return transformers.T5Model(cfg)


def _vit():
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37,
    )  # fmt: skip
    return transformers.ViTModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.LlamaModel(cfg)


def _ids(b: int = 2, n: int = 7) -> torch.Tensor:
    return torch.randint(0, 100, (b, n), generator=torch.Generator().manual_seed(b * 31 + n))


def _inputs(kind: str, b: int = 2, n: int = 7) -> dict:
    if kind == "t5":
        return {"input_ids": _ids(b, n), "decoder_input_ids": _ids(b, n)[:, :5]}
    if kind == "pixels":
        g = torch.Generator().manual_seed(b)
        return {"pixel_values": torch.randn(b, 3, 32, 32, generator=g)}
    return {"input_ids": _ids(b, n)}


MODELS = {
    "bert": (_bert, "ids"),
    "gpt2": (_gpt2, "ids"),
    "t5": (_t5, "t5"),
    "vit": (_vit, "pixels"),
    "llama": (_llama, "ids"),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = MODELS[name][0]().eval()
    m.config.use_cache = False
    return m


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shape_aware_trace_matches_eager(name: str) -> None:
    m = _model(name)
    inputs = _inputs(MODELS[name][1])
    gm = fxkit.symbolic_trace(m, example_inputs=inputs)
    assert isinstance(gm, fxkit.GraphModule)
    with torch.no_grad():
        got, want = gm(**inputs), m(**inputs)
    torch.testing.assert_close(got["last_hidden_state"], want["last_hidden_state"])
    # Every tensor-valued node got a fake value; the shape answers were recorded as guards.
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op not in ("output", "get_attr")]
    assert sum(isinstance(v, torch.Tensor) for v in vals) > 20
    assert any("guards" in n.meta for n in gm.graph.nodes)
    # Provenance: nodes point into the model's source.
    traced_here = [n for n in gm.graph.nodes if "modeling_" in n.meta.get("fxkit_source", "")]
    assert len(traced_here) > len(gm.graph.nodes) // 2


def test_bert_graph_is_not_specialised_to_the_traced_size() -> None:
    m = _model("bert")
    gm = fxkit.symbolic_trace(m, example_inputs=_inputs("ids", 2, 7))
    other = _inputs("ids", 3, 11)
    with torch.no_grad():
        torch.testing.assert_close(
            gm(**other)["last_hidden_state"], m(**other)["last_hidden_state"]
        )


def test_meta_args_need_no_real_tensors() -> None:
    m = _model("gpt2")
    meta = {"input_ids": torch.empty(2, 7, dtype=torch.long, device="meta")}
    gm = fxkit.symbolic_trace(m, meta_args=meta)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(
            gm(input_ids=ids)["last_hidden_state"], m(input_ids=ids)["last_hidden_state"]
        )
    vals = [n.meta["val"] for n in gm.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    assert all(v.device.type == "cpu" for v in vals)  # meta inputs are given the model's device


def test_bert_with_attention_mask_input() -> None:
    m = _model("bert")
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    gm = fxkit.symbolic_trace(m, example_inputs={"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        torch.testing.assert_close(
            gm(input_ids=ids, attention_mask=mask)["last_hidden_state"],
            m(input_ids=ids, attention_mask=mask)["last_hidden_state"],
        )


def _defaults_except(mod: torch.nn.Module, keep: set) -> dict:
    sig = inspect.signature(mod.forward)
    return {
        n: p.default
        for n, p in sig.parameters.items()
        if n not in keep and p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize(
    ("name", "path"),
    [("bert", "encoder.layer.0"), ("gpt2", "h.0.mlp")],
    ids=["BertLayer", "GPT2MLP"],
)
def test_plain_trace_of_blocks_with_concrete_args(name: str, path: str) -> None:
    block = _model(name).get_submodule(path)
    gm = fxkit.symbolic_trace(block, concrete_args=_defaults_except(block, {"hidden_states"}))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        got, want = gm(x), block(x)
    got = got[0] if isinstance(got, tuple) else got
    want = want[0] if isinstance(want, tuple) else want
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_plain_trace_of_whole_model_fails_with_location(name: str) -> None:
    m = _model(name)
    with pytest.raises(fxkit.proxy.TraceError) as info:
        fxkit.symbolic_trace(m, concrete_args=_defaults_except(m, {"input_ids"}))
    assert "transformers" in str(info.value) and ", line " in str(info.value)


def test_explain_names_every_site_of_plain_bert() -> None:
    from fxkit._explain import explain

    m = _model("bert")
    report = explain(m, _ids())
    assert not report.plain_ok and len(report) >= 2
    assert all(f.where.rpartition(":")[2].isdigit() for f in report)
    kinds = {f.kind for f in report}
    assert {"shape-dependent", "data-dependent"} <= kinds  # sizes, and warn_if_padding's `in`
    assert report.shape_aware_ok is True
    assert "BertModel" in str(report) and "example_inputs=..." in str(report)


def test_hf_reference_tracer_agrees_on_bert() -> None:
    from transformers.utils.fx import symbolic_trace as hf_trace

    m = _model("bert")
    ids = _ids()
    ref = hf_trace(m, input_names=["input_ids"])
    gm = fxkit.symbolic_trace(m, example_inputs={"input_ids": ids})
    with torch.no_grad():
        torch.testing.assert_close(
            gm(input_ids=ids)["last_hidden_state"], ref(input_ids=ids)["last_hidden_state"]
        )


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="bigger configs: set FXKIT_SLOW=1")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_deeper_models_slow(name: str) -> None:
    # Same check with 6 layers and a longer sequence (~10 s more); opt-in to keep CI lean.
    torch.manual_seed(0)
    m = MODELS[name][0]()
    cfg = m.config
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, 6)
    m = type(m)(cfg).eval()
    m.config.use_cache = False
    inputs = _inputs(MODELS[name][1], 2, 31)
    gm = fxkit.symbolic_trace(m, example_inputs=inputs)
    with torch.no_grad():
        torch.testing.assert_close(
            gm(**inputs)["last_hidden_state"], m(**inputs)["last_hidden_state"]
        )


@pytest.mark.parametrize(
    ("name", "path"),
    [("bert", "encoder.layer.0"), ("gpt2", "h.0.mlp")],
    ids=["BertLayer", "GPT2MLP"],
)
def test_plain_trace_of_blocks_matches_torch_fx(name: str, path: str) -> None:
    import torch.fx as tfx

    block = _model(name).get_submodule(path)
    concrete = _defaults_except(block, {"hidden_states"})
    ours = fxkit.symbolic_trace(block, concrete_args=concrete)
    theirs = tfx.symbolic_trace(block, concrete_args=concrete)

    def ops(gm):
        # each library's guard helper (_assert_is_none) is its own function: compare by name
        return [(n.op, n.name, getattr(n.target, "__name__", n.target)) for n in gm.graph.nodes]

    assert ops(ours) == ops(theirs)


# --- default configs (use_cache=True) and the models' own output types -------------------------
# ``shape_trace`` is what ``symbolic_trace(m, example_inputs=...)`` runs; it returns a module that
# checks its guards and hands back the model's output type.


def _legacy(cache) -> list:
    return [t for layer in cache.to_legacy_cache() for t in layer]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_default_config_with_cache_traces_and_returns_the_output_type(name: str) -> None:
    from fxkit._shape_trace import GuardError

    torch.manual_seed(0)
    m = MODELS[name][0]().eval()
    assert m.config.use_cache  # the default
    inputs = _inputs("ids")
    gm = fxkit.symbolic_trace(m, example_inputs=inputs)
    for b, n in ((2, 7), (3, 11)):  # the traced size and another one
        ids = _ids(b, n)
        with torch.no_grad():
            got, want = gm(input_ids=ids), m(input_ids=ids)
        assert type(got) is type(want)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state)
        torch.testing.assert_close(got[0], want[0])
        assert type(got.past_key_values) is type(want.past_key_values)
        for a, e in zip(_legacy(got.past_key_values), _legacy(want.past_key_values)):
            torch.testing.assert_close(a, e)
    assert gm.meta["fxkit_guards"].checks
    ids = _ids()[0]  # one dimension fewer: the same answer as eager, or refused
    with torch.no_grad():
        try:
            got = gm(input_ids=ids)
        except GuardError:
            return
        want = m(input_ids=ids)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state)


def test_causal_lm_returns_its_output_type() -> None:

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    m = transformers.LlamaForCausalLM(cfg).eval()
    ids = _ids()
    gm = fxkit.symbolic_trace(m, example_inputs={"input_ids": ids})
    with torch.no_grad():
        got, want = gm(input_ids=ids), m(input_ids=ids)
    assert type(got).__name__ == "CausalLMOutputWithPast" and type(got) is type(want)
    torch.testing.assert_close(got.logits, want.logits)
    torch.testing.assert_close(got[0], want[0])
