"""fxkit.experimental.normalize against torch.fx.experimental.normalize: the same code text,
node types and meta, warnings and outputs on the zoo models and a transformer block."""

from __future__ import annotations

import math
import operator
import warnings

import pytest
import torch
import torch.fx as tfx
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental import normalize as T

import fxkit
from fxkit.experimental import normalize as K
from zoo import CASES, example, graph_signature, tensors_of, trace


def same_code(theirs: str, ours: str) -> None:
    # Private helpers of the tracer (``_assert_is_none``, ``wrap``) live under each
    # library's own module path; everything else is the same text.
    assert theirs.replace("torch.fx._symbolic_trace.", "fxkit._symbolic_trace.") == ours


def transform(cls, gm, *args):
    """``cls(gm, *args).transform()`` and the warnings (category, text) it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cls(gm, *args).transform()
    return out, [(w.category, str(w.message)) for w in caught]


def assert_same_transform(t_cls, k_cls, t_gm, k_gm, *args, inputs=None):
    theirs, t_warns = transform(t_cls, t_gm, *args)
    ours, k_warns = transform(k_cls, k_gm, *args)
    same_code(theirs.code, ours.code)
    assert graph_signature(ours) == graph_signature(theirs)
    assert [repr(n.type) for n in ours.graph.nodes] == [repr(n.type) for n in theirs.graph.nodes]
    assert k_warns == t_warns
    if inputs is not None:
        args_, kwargs = inputs
        with torch.no_grad():
            want = tensors_of(theirs(*args_, **kwargs))
            got = tensors_of(ours(*args_, **kwargs))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
    return theirs, ours


# --- NormalizeArgs on the zoo ---------------------------------------------------------------


@pytest.mark.parametrize("only_kwargs", [True, False], ids=["kwargs", "positional"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_normalize_args_zoo(case, only_kwargs):
    assert_same_transform(
        T.NormalizeArgs,
        K.NormalizeArgs,
        trace(case, tfx),
        trace(case, fxkit),
        only_kwargs,
        inputs=example(case),
    )


def test_normalize_args_default_is_kwargs_only():
    gm = fxkit.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    code = K.NormalizeArgs(gm).transform().code
    assert code == K.NormalizeArgs(gm, True).transform().code
    assert '_0 = getattr(self, "0")(input = input_1)' in code


# --- a transformer block ----------------------------------------------------------------------


class Block(nn.Module):
    """A pre-norm transformer block written with torch.nn and torch functions, so that
    NormalizeArgs meets modules, functionals, methods and overloaded torch ops."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = torch.split(self.qkv(h), d, dim=-1)
        q = q.reshape(b, t, self.heads, -1).transpose(1, 2)
        k = k.reshape(b, t, self.heads, -1).transpose(1, 2)
        v = v.reshape(b, t, self.heads, -1).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        attn = F.dropout(F.softmax(scores, dim=-1), p=0.0, training=self.training)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        x = torch.add(x, self.proj(y), alpha=0.5)
        x = x + self.mha(x, x, x, need_weights=False)[0]
        x = F.layer_norm(x, (d,), self.scale)
        x = torch.cat([x, self.ff(x)], dim=-1)
        return torch.sum(x, dim=1) + torch.clamp(x.mean(1), min=-1.0, max=1.0)


@pytest.mark.parametrize("only_kwargs", [True, False], ids=["kwargs", "positional"])
def test_normalize_args_transformer_block(only_kwargs):
    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(2, 5, 16)
    _, ours = assert_same_transform(
        T.NormalizeArgs,
        K.NormalizeArgs,
        tfx.symbolic_trace(model),
        fxkit.symbolic_trace(model),
        only_kwargs,
        inputs=((x,), {}),
    )
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x))
    if only_kwargs:
        assert "torch.cat(tensors = [layer_norm, ff_2], dim = -1)" in ours.code
        # Ambiguous between add.Tensor and add.Scalar, and no node types: left as it was.
        assert "torch.add(x, proj, alpha = 0.5)" in ours.code


@pytest.mark.filterwarnings("ignore:We were not able to successfully create type hint")
def test_normalize_args_keeps_meta_and_type_and_maps_nodes():
    gm = fxkit.symbolic_trace(Block().eval())
    for n in gm.graph.nodes:
        n.meta["mark"] = n.name
    relu_like = next(n for n in gm.graph.nodes if n.op == "call_module")
    relu_like.type = torch.Tensor
    pass_ = K.NormalizeArgs(gm)
    new = pass_.transform()
    old_by_name = {n.name: n for n in gm.graph.nodes}
    for n in new.graph.nodes:
        if n.op == "output":
            continue
        old = old_by_name[n.name]
        assert n.meta is old.meta  # the same dict, as torch.fx hands it over
        assert n.type == old.type
    assert sorted(old.name for old in pass_.node_map.values()) == sorted(
        n.name for n in gm.graph.nodes if n.op != "output"
    )
    assert all(isinstance(p, fxkit.Proxy) for p in pass_.node_map)


# --- overload choice through node types ------------------------------------------------------


class Adds(nn.Module):
    def forward(self, x):
        return torch.add(x, torch.sum(x, 1, keepdim=True))


@pytest.mark.parametrize("node_type", [None, torch.Tensor, int], ids=["none", "tensor", "int"])
def test_ambiguous_overloads_use_the_node_type(node_type):
    # ``torch.add(x, y)`` fits add.Tensor, add.Scalar and the schemas over numbers; torch.fx
    # disambiguates with the ``type`` meta of the node being normalized (which it uses for
    # every node argument), and leaves the call alone without one.
    def prepared(lib):
        gm = lib.symbolic_trace(Adds())
        for n in gm.graph.nodes:
            if n.op == "call_function" and node_type is not None:
                n.meta["type"] = node_type
        return gm

    # The int choice makes code that cannot run on tensors (in both libraries): compare
    # outputs only for the others.
    inputs = None if node_type is int else ((torch.randn(3, 4),), {})
    _, ours = assert_same_transform(
        T.NormalizeArgs, K.NormalizeArgs, prepared(tfx), prepared(fxkit), inputs=inputs
    )
    expected = {
        None: "add = torch.add(x, sum_1)",
        torch.Tensor: "add = torch.add(input = x, other = sum_1, alpha = 1)",
        int: "add = torch.add(a = x, b = sum_1)",  # aten::add.int(int a, int b)
    }
    assert expected[node_type] in ours.code


@pytest.mark.filterwarnings("ignore:We were not able to successfully create type hint")
def test_normalize_args_on_a_torch_fx_graph_module():
    torch.manual_seed(0)
    model = Block().eval()
    theirs = T.NormalizeArgs(tfx.symbolic_trace(model)).transform()
    ours = K.NormalizeArgs(tfx.symbolic_trace(model)).transform()
    assert isinstance(ours, fxkit.GraphModule)
    same_code(theirs.code, ours.code)


# --- NormalizeOperators ---------------------------------------------------------------------


class Spellings(nn.Module):
    def forward(self, x, y):
        a = torch.add(x, y) + torch.mul(x, 2)
        b = torch.sub(a, y) * torch.div(a, 3.0)
        c = torch.floor_divide(b, 2) + torch.remainder(b, 1.5)
        flags = [torch.eq(x, y), torch.ne(x, y), torch.lt(x, 0), torch.le(x, y)]
        flags += [torch.gt(x, y), torch.ge(x, 0)]
        return c, flags, torch.add(input=x, other=y), F.relu(c), torch.relu(x)


def test_normalize_operators_matches_torch_fx():
    # keyword-only ``torch.add(input=x, other=y)`` is left alone by both
    theirs, t_warns = transform(T.NormalizeOperators, tfx.symbolic_trace(Spellings()))
    ours, k_warns = transform(K.NormalizeOperators, fxkit.symbolic_trace(Spellings()))
    same_code(theirs.code, ours.code)
    assert [repr(n.type) for n in ours.graph.nodes] == [repr(n.type) for n in theirs.graph.nodes]
    assert k_warns == t_warns
    targets = [n.target for n in ours.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.add) == 1  # the keyword call
    for op in (operator.add, operator.truediv, operator.floordiv, operator.mod, operator.ge):
        assert op in targets


def test_normalize_operators_zoo_and_outputs():
    for case in CASES:
        assert_same_transform(
            T.NormalizeOperators,
            K.NormalizeOperators,
            trace(case, tfx),
            trace(case, fxkit),
            inputs=example(case),
        )


class ExtraArguments(nn.Module):
    def forward(self, x, y):
        return torch.add(x, y, alpha=3), torch.div(x, y, rounding_mode="floor")


def test_normalize_operators_keeps_calls_with_extra_arguments():
    # torch.fx rewrites these to operator.add / operator.truediv and drops alpha and
    # rounding_mode, which changes the result; fxkit leaves them as they are.
    x, y = torch.randn(4), torch.rand(4) + 0.5
    ours = K.NormalizeOperators(fxkit.symbolic_trace(ExtraArguments())).transform()
    assert [n.target for n in ours.graph.nodes if n.op == "call_function"] == [
        torch.add,
        torch.div,
    ]
    for got, want in zip(ours(x, y), ExtraArguments()(x, y)):
        torch.testing.assert_close(got, want)
    theirs = T.NormalizeOperators(tfx.symbolic_trace(ExtraArguments())).transform()
    assert not torch.allclose(theirs(x, y)[0], ExtraArguments()(x, y)[0])


def test_remap_table_is_torch_fx_table():
    assert K.NormalizeOperators.binary_magic_method_remap == (
        T.NormalizeOperators.binary_magic_method_remap
    )


# --- bad input ------------------------------------------------------------------------------


def outcome(fn):
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the exception is the result under test
        return "raise", e


@pytest.mark.parametrize("which", ["NormalizeArgs", "NormalizeOperators"])
def test_not_a_module(which):
    kind_t, err_t = outcome(lambda: getattr(T, which)(object()))
    kind_k, err_k = outcome(lambda: getattr(K, which)(object()))
    assert kind_t == kind_k == "raise"
    assert isinstance(err_k, type(err_t))


def _with_missing_submodule(lib):
    gm = lib.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    del gm._modules["0"]
    return gm


def _with_unbindable_call(lib):
    g = lib.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(F.relu, (x,), {"nope": 1}))
    return lib.GraphModule(nn.Module(), g)


@pytest.mark.parametrize("build", [_with_missing_submodule, _with_unbindable_call])
def test_bad_graph_raises_like_torch_fx(build):
    kind_t, err_t = outcome(lambda: T.NormalizeArgs(build(tfx)).transform())
    kind_k, err_k = outcome(lambda: K.NormalizeArgs(build(fxkit)).transform())
    assert kind_t == kind_k == "raise"
    assert isinstance(err_k, type(err_t))
    first_line = str(err_t).splitlines()[0]
    assert first_line in str(err_k)


def test_public_names():
    assert set(K.__all__) == {"NormalizeArgs", "NormalizeOperators"}
    assert issubclass(K.NormalizeOperators, fxkit.Transformer)


# --- calls without a signature, and a HuggingFace model ----------------------------------------


class _TorchFxSkippingUnsigned(T.NormalizeArgs):
    """torch.fx's NormalizeArgs, except that a call whose target has no signature is left as
    it is instead of failing the pass (fxkit's documented difference)."""

    def call_function(self, target, args, kwargs, arg_types=None, kwarg_types=None):
        try:
            return super().call_function(target, args, kwargs, arg_types, kwarg_types)
        except ValueError:
            return tfx.Transformer.call_function(self, target, args, kwargs)


def _finfo_graph(lib):
    g = lib.Graph()
    x = g.placeholder("x")
    dtype = g.call_function(getattr, (x, "dtype"))
    info = g.call_function(torch.finfo, (dtype,))
    g.output(g.call_function(torch.clamp, (x, g.call_function(getattr, (info, "min")))))
    return lib.GraphModule(nn.Module(), g)


def test_call_without_signature_is_left_alone():
    with pytest.raises(ValueError):
        T.NormalizeArgs(_finfo_graph(tfx)).transform()  # torch.fx gives up on the whole pass
    x = torch.randn(3)
    assert_same_transform(
        _TorchFxSkippingUnsigned,
        K.NormalizeArgs,
        _finfo_graph(tfx),
        _finfo_graph(fxkit),
        inputs=((x,), {}),
    )


@pytest.mark.filterwarnings("ignore")
def test_hf_bert():
    transformers = pytest.importorskip("transformers")
    from transformers.utils.fx import symbolic_trace as hf_trace

    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
    )
    torch.manual_seed(0)
    gm = hf_trace(transformers.BertModel(cfg).eval(), input_names=["input_ids"])
    ids = torch.randint(0, 100, (2, 7))
    for only_kwargs in (True, False):
        theirs = _TorchFxSkippingUnsigned(gm, only_kwargs).transform()
        ours = K.NormalizeArgs(gm, only_kwargs).transform()
        same_code(theirs.code, ours.code)
        torch.testing.assert_close(ours(ids)["last_hidden_state"], gm(ids)["last_hidden_state"])
    same_code(T.NormalizeOperators(gm).transform().code, K.NormalizeOperators(gm).transform().code)
