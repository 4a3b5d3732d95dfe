"""experimental.meta_tracer against torch.fx's: the same graph and code for models with
shape-dependent control flow, proxies carrying meta tensors of the right shapes, the
documented overrides and helpers, and torch.fx's exception types on bad input."""

from __future__ import annotations

import inspect
import threading
import warnings

import pytest
import torch
import torch.fx as tfx
import torch.utils._pytree as pytree
from torch import nn
from torch.fx.experimental import meta_tracer as tmt

import fxkit
from fxkit.experimental import meta_tracer as fmt
from fxkit.proxy import TraceError
from zoo import CASES, make_root

# --- models ---------------------------------------------------------------------------------


class ShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 6)

    def forward(self, x):
        if x.shape[0] > 2:
            x = x * 2
        else:
            x = x - 1
        y = self.lin(x)
        return y.view(x.size(1) - 2, -1).sum(-1)


class SizeArithmetic(nn.Module):
    def forward(self, x):
        b, t, c = x.shape
        heads = 2
        y = x.reshape(b, t, heads, x.size(-1) // heads).transpose(1, 2)
        scale = 1.0 / (y.size(-1) ** 0.5)
        z = torch.zeros(t, device=x.device) + x.dim()
        return y * scale, z.to(x.dtype)


class EmbedNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.act = nn.ReLU()

    def forward(self, ids, x):
        e = self.norm(self.emb(ids))
        h = self.act(e) + torch.relu(x) + nn.functional.relu(x)
        return torch.where(h > 0, h, torch.abs(h)).mean(dim=e.dim() - 1)


class StatelessInline(nn.Module):
    def forward(self, x):
        a = nn.ReLU()(x)
        b = nn.Tanh()(a)
        return nn.ReLU()(b)


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class Factories(nn.Module):
    def forward(self, x):
        n = x.size(1)
        return x + torch.arange(n, device=x.device) + torch.ones(n, device=x.device)


MODELS = {
    "shape_branch": (ShapeBranch, {"x": (4, 8)}),
    "size_arithmetic": (SizeArithmetic, {"x": (2, 5, 4)}),
    "embed_norm": (EmbedNorm, {"ids": (3, 8), "x": (3, 8, 8)}),
    "stateless_inline": (StatelessInline, {"x": (2, 3)}),
    "factories": (Factories, {"x": (2, 6)}),
}


def _meta_args(shapes, device="meta"):
    out = {}
    for name, shape in shapes.items():
        if name == "ids":
            out[name] = torch.randint(0, 20, shape, device="cpu").to(device)
        else:
            out[name] = torch.randn(shape).to(device)
    return out


def _shape(gm):
    return [(n.op, n.name, str(n.target), str(n.args), str(n.kwargs)) for n in gm.graph.nodes]


def _both(factory, shapes, device="meta"):
    out = []
    for lib in (fmt, tmt):
        torch.manual_seed(0)
        model = factory().to(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gm = lib.symbolic_trace(model, meta_args=_meta_args(shapes))
        out.append((gm, [str(w.message) for w in caught]))
    return out


# --- differential ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(MODELS))
def test_same_graph_and_code_as_torch_fx(key):
    factory, shapes = MODELS[key]
    (ours, our_warnings), (theirs, their_warnings) = _both(factory, shapes)
    assert _shape(ours) == _shape(theirs)
    assert ours.code == theirs.code
    assert not our_warnings and not their_warnings


@pytest.mark.parametrize("key", sorted(MODELS))
def test_traced_module_matches_eager(key):
    factory, shapes = MODELS[key]
    torch.manual_seed(0)
    model = factory()
    gm = fmt.symbolic_trace(model, meta_args=_meta_args(shapes))
    torch.manual_seed(1)
    inputs = _meta_args(shapes, device="cpu")
    torch.testing.assert_close(gm(**inputs), model(**inputs))


def test_shape_branch_specialises_to_meta_shapes():
    small = fmt.symbolic_trace(ShapeBranch(), meta_args=_meta_args({"x": (2, 8)}))
    big = fmt.symbolic_trace(ShapeBranch(), meta_args=_meta_args({"x": (4, 8)}))
    assert "sub" in [n.name for n in small.graph.nodes]
    assert "mul" in [n.name for n in big.graph.nodes]


def test_graph_keeps_meta_args_as_tracer_extras():
    meta = _meta_args({"x": (4, 8)})
    gm = fmt.symbolic_trace(ShapeBranch().to("meta"), meta_args=meta)
    theirs = tmt.symbolic_trace(ShapeBranch().to("meta"), meta_args=meta)
    assert gm.graph._tracer_extras == theirs.graph._tracer_extras == {"meta_args": meta}


def test_stateless_modules_are_inserted_like_torch_fx():
    (ours, _), (theirs, _) = _both(StatelessInline, {"x": (2, 3)})
    names = [n.target for n in ours.graph.nodes if n.op == "call_module"]
    assert names == [n.target for n in theirs.graph.nodes if n.op == "call_module"]
    assert names == ["relu_0", "tanh_0", "relu_1"]
    assert isinstance(ours.relu_1, nn.ReLU)


# --- proxies carry meta tensors -------------------------------------------------------------


def _recording(base):
    class Recording(base):
        def create_proxy(self, *args, **kwargs):
            rv = super().create_proxy(*args, **kwargs)
            meta = getattr(rv, "_tensor_meta", None)
            self.seen[rv.node.name] = meta
            return rv

    tracer = Recording()
    tracer.seen = {}
    return tracer


def _described(meta):
    if isinstance(meta, torch.Tensor):
        return (tuple(meta.shape), meta.dtype, meta.device.type, meta.requires_grad)
    return meta if meta is None or isinstance(meta, (int, float)) else type(meta).__name__


@pytest.mark.parametrize("key", sorted(MODELS))
def test_proxies_carry_the_same_meta_as_torch_fx(key):
    factory, shapes = MODELS[key]
    found = []
    for base in (fmt.MetaTracer, tmt.MetaTracer):
        tracer = _recording(base)
        tracer.trace(factory().to("meta"), _meta_args(shapes))
        found.append({k: _described(v) for k, v in tracer.seen.items()})
    assert found[0] == found[1]


def test_meta_shapes_are_right():
    tracer = _recording(fmt.MetaTracer)
    tracer.trace(EmbedNorm(), _meta_args({"ids": (3, 8), "x": (3, 8, 8)}))
    assert tracer.seen["emb"].shape == (3, 8, 8)
    assert tracer.seen["emb"].device.type == "meta"
    assert tracer.seen["mean"].shape == (3, 8)
    assert tracer.seen["gt"].dtype == torch.bool


def test_size_dim_zero_is_answered():
    # torch.fx answers x.size(0) with the whole size (it tests `if dim`); fxkit gives dim 0.
    class SizeZero(nn.Module):
        def forward(self, x):
            return x.new_zeros(x.size(0))

    gm = fmt.symbolic_trace(SizeZero(), meta_args=_meta_args({"x": (3, 5)}))
    assert gm(torch.ones(3, 5)).shape == (3,)


def test_cpu_model_gets_meta_where_torch_fx_warns():
    # torch.fx runs leaf modules with their real (CPU) weights on meta inputs, which fails
    # with a warning; fxkit runs them on meta copies of their parameters.
    (ours, our_warnings), (theirs, their_warnings) = _both(ShapeBranch, {"x": (4, 8)}, "cpu")
    assert any("Could not compute metadata" in w for w in their_warnings)
    assert not our_warnings
    assert _shape(ours)[:4] == _shape(theirs)[:4]


def test_cpu_meta_args_are_installed_as_given():
    x = torch.randn(4, 8)
    tracer = _recording(fmt.MetaTracer)
    tracer.trace(ShapeBranch(), {"x": x})
    assert tracer.seen["x"] is x
    assert tracer.seen["lin"].device.type == "meta"


def test_missing_meta_warns_like_torch_fx():
    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    messages = []
    for lib in (fmt, tmt):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lib.symbolic_trace(TwoInputs(), meta_args={"x": torch.empty(2, device="meta")})
        messages.append([str(w.message) for w in caught])
    assert messages[0] == messages[1]
    assert messages[0] == [
        "Could not compute metadata for call_function target <built-in function add>: "
        "MetaProxy does not have an associated meta"
    ]


# --- the model zoo -------------------------------------------------------------------------

_ZOO = [c for c in CASES if not (c.concrete_args or c.leaf_types or c.kwargs)]


def _zoo_meta_args(case, root):
    fn = root.forward if isinstance(root, nn.Module) else root
    names = list(inspect.signature(fn).parameters)
    torch.manual_seed(1)
    return {n: v.to("meta") for n, v in zip(names, case.inputs()) if isinstance(v, torch.Tensor)}


# Zoo models where fxkit deliberately differs from torch.fx's MetaTracer, and why.
_ZOO_DIFFERS = {
    # torch.fx answers x.size(0) with the whole torch.Size, so `math.log(x.size(0))` and
    # `x[x.size(0) - 1]` fail there with a TypeError.
    "math_ops": "size0",
    "indexing": "size0",
    # CPU tensor constants mixed with meta values: torch.fx warns and loses the metadata,
    # fxkit moves the constant to the meta device.
    "torch_calls": "cpu_constants",
    # A leaf whose forward calls submodules (TransformerEncoderLayer) is run for metadata by
    # torch.fx with tracing still on, leaving dead nodes of its internals in the graph.
    "builtin_leaves": "leaf_internals",
}


def _zoo_trace(lib, case):
    root = make_root(case)
    if isinstance(root, nn.Module):
        root = root.to("meta")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gm = lib.symbolic_trace(root, meta_args=_zoo_meta_args(case, root))
        except Exception as e:  # noqa: BLE001  (compared by the caller)
            gm = e
    return gm, sorted(str(w.message).split(" at 0x")[0] for w in caught)


def _ops(gm):
    return [(n.op, str(n.target)) for n in gm.graph.nodes]


@pytest.mark.parametrize("case", _ZOO, ids=[c.name for c in _ZOO])
def test_zoo_same_graph_or_same_error_as_torch_fx(case):
    (ours, our_warnings), (theirs, their_warnings) = _zoo_trace(fmt, case), _zoo_trace(tmt, case)
    why = _ZOO_DIFFERS.get(case.name)
    if why == "size0":
        assert isinstance(theirs, TypeError) and isinstance(ours, fxkit.GraphModule)
        return
    if isinstance(theirs, Exception):
        assert type(ours).__name__ == type(theirs).__name__
        return
    if why == "cpu_constants":
        assert their_warnings and not our_warnings
    else:
        assert our_warnings == their_warnings
    if why == "leaf_internals":
        ours.graph.eliminate_dead_code()
        theirs.graph.eliminate_dead_code()
        assert _ops(ours) == _ops(theirs)
        return
    assert _shape(ours) == _shape(theirs)
    assert ours.code == theirs.code.replace("torch.fx.", "fxkit.")


@pytest.mark.filterwarnings("ignore:Could not compute metadata")  # as torch.fx warns
@pytest.mark.parametrize("case", _ZOO, ids=[c.name for c in _ZOO])
def test_zoo_outputs_match_eager(case):
    root = make_root(case)
    gm = fmt.symbolic_trace(root, meta_args=_zoo_meta_args(case, root))
    torch.manual_seed(1)
    inputs = case.inputs()
    got, want = pytree.tree_flatten(gm(*inputs))[0], pytree.tree_flatten(root(*inputs))[0]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if isinstance(b, torch.Tensor):
            torch.testing.assert_close(a, b)
        else:
            assert a == b


# --- metadata reuse (memoised per operation and operand shapes) ----------------------------


class StridedConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.one = nn.Conv2d(3, 4, 3, stride=1)
        self.two = nn.Conv2d(3, 4, 3, stride=2)  # same weight shape, other output shape

    def forward(self, x):
        return self.one(x).flatten(1).size(1) + self.two(x).flatten(1).size(1)


class HookedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.Linear(4, 4)
        self.hooked = nn.Linear(4, 4)
        self.hooked.register_forward_hook(lambda mod, args, out: out.sum(-1))

    def forward(self, x):
        return self.plain(x).dim() + self.hooked(x).dim()


class GradModes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        with torch.no_grad():
            a = self.lin(x)
        return a, self.lin(x), torch.zeros(x.size(-1), device=x.device)


@pytest.mark.parametrize(
    "factory, shape",
    [(StridedConvs, (1, 3, 9, 9)), (HookedLinear, (2, 4)), (GradModes, (2, 4))],
    ids=["strided_convs", "hooked_linear", "grad_modes"],
)
def test_reused_metadata_is_right(factory, shape):
    found = []
    for base in (fmt.MetaTracer, tmt.MetaTracer, fmt.MetaTracer):  # fxkit twice: memo warm
        tracer = _recording(base)
        torch.manual_seed(0)
        graph = tracer.trace(factory().to("meta"), {"x": torch.empty(shape, device="meta")})
        found.append(({k: _described(v) for k, v in tracer.seen.items()}, str(graph)))
    assert found[0] == found[1] == found[2]


def test_default_dtype_is_part_of_the_reuse_key():
    dtypes = []
    for default in (torch.float32, torch.float64, torch.float32):
        old = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            tracer = _recording(fmt.MetaTracer)
            tracer.trace(Factories(), {"x": torch.empty(2, 3, device="meta", dtype=default)})
        finally:
            torch.set_default_dtype(old)
        dtypes.append(tracer.seen["ones"].dtype)
    assert dtypes == [torch.float32, torch.float64, torch.float32]


def test_in_place_operations_still_get_metadata():
    class InPlace(nn.Module):
        def forward(self, x):
            y = x.clone()
            y.add_(1)
            return y.relu_().size(1)

    (ours, w1), (theirs, w2) = _both(InPlace, {"x": (3, 2)})
    assert ours.code == theirs.code
    assert w1 == w2


def test_traces_in_threads_do_not_interfere():
    expected = {
        k: fmt.symbolic_trace(f(), meta_args=_meta_args(sh)).code for k, (f, sh) in MODELS.items()
    }
    found: dict = {}

    def work(keys):
        for key in keys * 3:
            factory, shapes = MODELS[key]
            found[key] = fmt.symbolic_trace(factory(), meta_args=_meta_args(shapes)).code

    keys = sorted(MODELS)
    threads = [threading.Thread(target=work, args=(keys[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == expected
    assert torch.zeros is _ORIGINAL_ZEROS  # nothing left patched


_ORIGINAL_ZEROS = torch.zeros


# --- documented helpers ---------------------------------------------------------------------


def test_public_names_match_torch_fx():
    assert set(fmt.__all__) == set(tmt.__all__)
    assert set(fmt.manual_meta_overrides) == set(tmt.manual_meta_overrides)
    assert fmt.MetaTracer.allow_insert_stateless_mods is True
    assert fmt.MetaTracer._TORCH_METHODS_TO_PATCH == tmt.MetaTracer._TORCH_METHODS_TO_PATCH
    assert issubclass(fmt.MetaDeviceAttribute, fmt.MetaAttribute)
    assert issubclass(fmt.MetaAttribute, fmt.MetaProxy)
    assert issubclass(fmt.MetaProxy, fxkit.Proxy)
    ours = inspect.signature(fmt.symbolic_trace).parameters
    assert list(ours) == list(inspect.signature(tmt.symbolic_trace).parameters)


def test_overrides_give_torch_fx_results():
    emb = nn.Embedding(5, 7)
    ids = torch.zeros(2, 3, dtype=torch.long, device="meta")
    x = torch.empty(2, 3, device="meta")
    for lib in (fmt, tmt):
        assert lib.embedding_override(emb, ids).shape == (2, 3, 7)
        assert lib.nn_layernorm_override(nn.LayerNorm(3), x) is x
        assert lib.torch_relu_override(x) is x
        assert lib.torch_nn_relu_override(nn.ReLU(), x) is x
        assert lib.functional_relu_override(x) is x
        assert lib.torch_abs_override(x) is x
        where = lib.torch_where_override(x > 0, x, torch.empty(3, device="meta"))
        assert (where.shape, where.dtype) == ((2, 3), torch.float32)
        with pytest.raises(AssertionError):
            lib.functional_relu_override(x, inplace=True)
        with pytest.raises(AssertionError):
            lib.torch_abs_override(x, out=x)


def opaque_op(x):
    raise RuntimeError("cannot run on meta")


class UsesOpaque(nn.Module):
    def forward(self, x):
        return opaque_op(x).view(x.size(0) * 2)


def test_user_override_is_used():
    calls = []

    def opaque_meta(x):
        calls.append(x.shape)
        return torch.empty(x.shape[0], 2, device="meta")

    fmt.manual_meta_overrides[opaque_op] = opaque_meta
    try:
        tracer = fmt.MetaTracer(autowrap_functions=(opaque_op,))
        graph = tracer.trace(UsesOpaque(), {"x": torch.empty(4, 3, device="meta")})
    finally:
        del fmt.manual_meta_overrides[opaque_op]
    assert calls == [(4, 3)]
    view = next(n for n in graph.nodes if n.name == "view")
    assert view.args[1] == 8


def test_gen_constructor_wrapper():
    wrapper, orig = fmt.gen_constructor_wrapper(torch.zeros)
    assert orig is torch.zeros
    assert wrapper.__name__ == "zeros"
    assert wrapper(3).shape == (3,)  # no proxy: the real call
    graph = fxkit.Graph()
    proxy = fxkit.Proxy(graph.placeholder("n"))
    out = wrapper(proxy, device="cpu")
    assert out.node.target is torch.zeros
    assert out.node.args == (proxy.node,)


def test_proxys_to_metas():
    tracer = fmt.MetaTracer()
    tracer.graph = fxkit.Graph()
    proxy = fmt.MetaProxy(tracer.graph.placeholder("x"), tracer)
    with pytest.raises(AssertionError, match="does not have an associated meta"):
        fmt.proxys_to_metas(proxy)
    meta = torch.empty(2, device="meta")
    proxy.install_tensor_meta(meta)
    assert fmt.proxys_to_metas(proxy) is meta
    assert fmt.proxys_to_metas(fmt.MetaDeviceAttribute(proxy, "device")) == "meta"
    assert fmt.proxys_to_metas(5) == 5
    with pytest.raises(AssertionError, match="Expected MetaProxy"):
        fmt.proxys_to_metas(fxkit.Proxy(tracer.graph.placeholder("y")))


def test_meta_proxy_without_meta_records_nodes():
    graph = fxkit.Graph()
    tracer = fmt.MetaTracer()
    tracer.graph = graph
    tracer.orig_fns, tracer.meta_args = set(), {}
    tracer._reset_trace_state()
    proxy = fmt.MetaProxy(graph.placeholder("x"), tracer)
    assert not hasattr(proxy, "_tensor_meta")
    with pytest.warns(UserWarning, match="MetaProxy does not have an associated meta"):
        assert proxy.size(1).node.args == (proxy.node, 1)
        assert proxy.dim().node.target == "dim"
        assert proxy.shape.node.args == (proxy.node, "shape")
    assert isinstance(proxy.device, fmt.MetaDeviceAttribute)
    assert isinstance(proxy.foo, fmt.MetaAttribute)


def test_hf_bert_same_code_as_torch_fx():
    transformers = pytest.importorskip("transformers", reason="HF BERT needs transformers")
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
    )
    params = inspect.signature(transformers.BertModel.forward).parameters.items()
    fixed = {
        k: p.default
        for k, p in params
        if k not in ("self", "input_ids") and p.kind is p.POSITIONAL_OR_KEYWORD
    }
    fixed.update(return_dict=False, use_cache=False)
    ids = torch.zeros(2, 8, dtype=torch.long, device="meta")
    codes = []
    for lib in (fmt, tmt):
        torch.manual_seed(0)
        model = transformers.BertModel(config).to("meta")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = lib.symbolic_trace(model, meta_args={"input_ids": ids}, concrete_args=fixed)
        codes.append(gm.code.replace("torch.fx._symbolic_trace.", "fxkit._symbolic_trace."))
    assert codes[0] == codes[1]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("meta_args", [None, [torch.empty(1)], "x"], ids=["none", "list", "str"])
def test_meta_args_must_be_a_dict(meta_args):
    for lib in (fmt, tmt):
        with pytest.raises(AssertionError, match="Expected dict for meta_args"):
            lib.symbolic_trace(ShapeBranch(), meta_args=meta_args)


def test_data_dependent_control_flow_is_a_trace_error():
    meta = _meta_args({"x": (2, 3)})
    with pytest.raises(tfx.proxy.TraceError):
        tmt.symbolic_trace(DataDependent(), meta_args=meta)
    with pytest.raises(TraceError):
        fmt.symbolic_trace(DataDependent(), meta_args=meta)


@pytest.mark.parametrize("root", [3, "model"], ids=["int", "str"])
def test_bad_root_same_exception_type(root):
    with pytest.raises(Exception) as theirs:
        tmt.symbolic_trace(root, meta_args={})
    with pytest.raises(Exception) as ours:
        fmt.symbolic_trace(root, meta_args={})
    assert isinstance(ours.value, type(theirs.value))


def test_module_with_state_outside_root_is_a_name_error():
    class Outside(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.__dict__["hidden"] = nn.Linear(2, 2)  # not registered

        def forward(self, x):
            return self.hidden(x)

    for lib in (fmt, tmt):
        with pytest.raises(NameError):
            lib.symbolic_trace(Outside(), meta_args={"x": torch.empty(1, 2, device="meta")})
