"""HuggingFace's tracer (transformers 4.57's ``transformers/utils/fx.py``) retargeted onto fxkit,
as a user migrating a custom torch.fx tracer would: its source with the ``torch.fx`` imports
replaced by ``fxkit``, run as a new module. Each model is traced by HF's own tracer (on
torch.fx) and by the retargeted one; graphs (op, target, name) and outputs must agree.

Model code in transformers also asks ``isinstance(x, torch.fx.Proxy)`` (mask helpers, SDPA,
``warn_if_padding_and_no_attention_mask``) to skip data-dependent shortcuts; a migrated project
points those checks at fxkit, which is done here by rebinding ``torch.fx.Proxy`` for the
length of the fxkit trace.
"""

from __future__ import annotations

import copy
import pathlib
import sys
import types
import warnings
from typing import Any, Callable, Dict

import pytest
import torch
import torch.fx
import torch.utils._pytree as pytree

import fxkit

transformers = pytest.importorskip("transformers")
hf_fx = pytest.importorskip("transformers.utils.fx")
warnings.filterwarnings("ignore", module="transformers")

T = transformers


def _load_retargeted() -> types.ModuleType:
    src = pathlib.Path(hf_fx.__file__).read_text()
    for old, new in [
        ("from torch.fx import", "from fxkit import"),
        ("from torch.fx._symbolic_trace import", "from fxkit._symbolic_trace import"),
        ("from torch.fx.proxy import", "from fxkit.proxy import"),
        ("torch.fx.node.", "fxkit.node."),
        ("torch.fx.Proxy", "fxkit.Proxy"),
        ("torch.fx.GraphModule", "fxkit.GraphModule"),
    ]:
        assert old in src, old
        src = src.replace(old, new)
    name = "transformers.utils._fxkit_retargeted_fx"
    mod = types.ModuleType(name)
    mod.__package__ = "transformers.utils"
    mod.__file__ = hf_fx.__file__
    sys.modules[name] = mod
    exec(compile("import fxkit\n" + src, hf_fx.__file__, "exec"), mod.__dict__)
    return mod


@pytest.fixture(scope="module")
def fk_fx() -> types.ModuleType:
    return _load_retargeted()


@pytest.fixture(autouse=True)
def _undo_hf_patches(fk_fx: types.ModuleType) -> Any:
    # HFTracer.patch_for_tracing restores torch.arange & co. and the Cache classes only when
    # the trace succeeds (no try/finally around its yield): undo what a failed trace leaves.
    names = hf_fx.HFTracer._TORCH_METHODS_TO_PATCH
    saved = {name: getattr(torch, name) for name in names}
    yield
    for name, fn in saved.items():
        setattr(torch, name, fn)
    swapped = {}
    for tracer in (hf_fx.HFTracer, fk_fx.HFTracer):
        swapped.update({id(new): orig for orig, new in tracer._CLASSES_TO_PATCH.items()})
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("transformers") and mod is not None:
            for attr, value in list(vars(mod).items()):
                if id(value) in swapped:
                    setattr(mod, attr, swapped[id(value)])


_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=37, max_position_embeddings=64)  # fmt: skip
_SEQ2SEQ = dict(vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1,
                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
                decoder_ffn_dim=37, max_position_embeddings=64)  # fmt: skip
_T5 = dict(vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)

# name -> (model factory, input names or None for the model's dummy_inputs)
MODELS: Dict[str, Any] = {
    "bert": (lambda: T.BertModel(T.BertConfig(**_TEXT)), None),
    "roberta": (lambda: T.RobertaModel(T.RobertaConfig(**_TEXT)), None),
    "electra": (lambda: T.ElectraModel(T.ElectraConfig(embedding_size=16, **_TEXT)), None),
    "albert": (lambda: T.AlbertModel(T.AlbertConfig(embedding_size=16, **_TEXT)), None),
    "distilbert": (
        lambda: T.DistilBertModel(
            T.DistilBertConfig(
                vocab_size=100,
                dim=32,
                n_layers=2,
                n_heads=2,
                hidden_dim=37,
                max_position_embeddings=64,
            )  # fmt: skip
        ),
        None,
    ),
    "mobilebert": (
        lambda: T.MobileBertModel(
            T.MobileBertConfig(
                vocab_size=100,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=37,
                embedding_size=16,
                intra_bottleneck_size=16,
                true_hidden_size=16,
                num_feedforward_networks=1,
                max_position_embeddings=64,
            )
        ),  # fmt: skip
        None,
    ),
    "gpt_neo": (
        lambda: T.GPTNeoModel(
            T.GPTNeoConfig(
                vocab_size=100,
                hidden_size=32,
                num_layers=2,
                num_heads=2,
                attention_types=[[["global", "local"], 1]],
                max_position_embeddings=64,
            )  # fmt: skip
        ),
        None,
    ),
    "t5": (lambda: T.T5Model(T.T5Config(**_T5)), None),
    "t5_conditional_generation": (lambda: T.T5ForConditionalGeneration(T.T5Config(**_T5)), None),
    "bart": (lambda: T.BartModel(T.BartConfig(**_SEQ2SEQ)), None),
    "marian": (lambda: T.MarianModel(T.MarianConfig(pad_token_id=1, **_SEQ2SEQ)), None),
    "swin": (
        lambda: T.SwinModel(
            T.SwinConfig(
                image_size=32,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                num_heads=[2, 2],
                window_size=4,
            )  # fmt: skip
        ),
        ["pixel_values"],
    ),
    "convnext": (
        lambda: T.ConvNextModel(
            T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
        ),  # fmt: skip
        ["pixel_values"],
    ),
    "resnet": (
        lambda: T.ResNetModel(
            T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
        ),  # fmt: skip
        ["pixel_values"],
    ),
}


def _graph(gm: Any) -> list:
    def target(t: Any) -> Any:
        return t if isinstance(t, str) else getattr(t, "__name__", repr(t))

    return [(n.op, target(n.target), n.name) for n in gm.graph.nodes]


def _inputs(gm: Any) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        name = node.target
        if name == "pixel_values":
            out[name] = torch.randn(2, 3, 32, 32, generator=g)
        elif name.endswith("input_ids"):
            out[name] = torch.randint(2, 100, (2, 7), generator=g)
        elif name.endswith("attention_mask"):
            out[name] = torch.ones(2, 7, dtype=torch.long)
        elif name == "token_type_ids":
            out[name] = torch.zeros(2, 7, dtype=torch.long)
        else:
            raise AssertionError(f"no test input for {name}")
    return out


def _trace(lib: types.ModuleType, model: torch.nn.Module, names: Any) -> Any:
    return lib.symbolic_trace(copy.deepcopy(model), input_names=names)


@pytest.mark.parametrize("name", list(MODELS))
def test_retargeted_hf_tracer_matches_torch_fx(
    name: str, fk_fx: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    make: Callable[[], torch.nn.Module]
    make, names = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    ref = _trace(hf_fx, model, names)
    with monkeypatch.context() as patch:
        patch.setattr(torch.fx, "Proxy", fxkit.Proxy)
        got = _trace(fk_fx, model, names)
    assert isinstance(got, fxkit.GraphModule)
    assert _graph(got) == _graph(ref)
    inputs = _inputs(ref)
    with torch.no_grad():
        expected, actual = ref(**inputs), got(**inputs)
    exp_leaves, exp_spec = pytree.tree_flatten(expected)
    act_leaves, act_spec = pytree.tree_flatten(actual)
    assert act_spec == exp_spec
    for a, e in zip(act_leaves, exp_leaves):
        torch.testing.assert_close(a, e)


def test_same_failure_where_hf_tracer_fails(
    fk_fx: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GPT-2's mask builders hand proxies to torch.vmap on both.
    cfg = T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    model = T.GPT2Model(cfg).eval()
    with pytest.raises(ValueError, match="vmap"):
        _trace(hf_fx, model, None)
    monkeypatch.setattr(torch.fx, "Proxy", fxkit.Proxy)
    with pytest.raises(ValueError, match="vmap"):
        _trace(fk_fx, model, None)


def test_map_aggregate_of_a_tuple_subclass_as_torch_fx() -> None:
    # HF's create_wrapper walks a call's args with map_aggregate and a function returning
    # None: a torch.Size (not a named tuple) comes back as a plain tuple, as in torch.fx.
    def visit(x: Any) -> None:
        return None

    for value in [torch.Size([2, 3]), (torch.Size([4]), [torch.Size([])])]:
        ref = torch.fx.node.map_aggregate(value, visit)
        got = fxkit.node.map_aggregate(value, visit)
        assert got == ref and type(got) is type(ref)
