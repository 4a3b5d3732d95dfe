"""fxkit.experimental.proxy_tensor vs torch.fx.experimental.proxy_tensor: the same program
traced by both make_fx implementations must give the same aten graph (ops, overloads, args,
names, meta["val"] / meta["tensor_meta"]), the same code text and the same outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx as tfx
import torch.nn.functional as F
from torch import nn
from torch._decomp import core_aten_decompositions, get_decompositions
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.experimental import proxy_tensor as tpt

import fxkit
from fxkit.experimental import proxy_tensor as fpt

# --- models ---------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.body(x).log_softmax(-1)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.max_pool2d(y + self.conv2(y), 2)
        return self.fc(torch.flatten(self.pool(y), 1))


class Block(nn.Module):
    """A pre-norm transformer block with hand-written attention and a padding mask."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(out)
        return x + self.ff(self.norm2(x))


def pytree_fn(x, pair, d):
    """Pytree inputs and outputs, views, in-place ops and a tensor literal."""
    a, b = pair
    y = (x + a).clone()
    y.mul_(2)
    z = y.view(-1)[1:5]
    z.add_(d["bias"])
    return {"out": [y.t(), z], "n": torch.tensor(3.0) * b.sum()}


def _torch_case(name):
    torch.manual_seed(0)
    if name == "mlp":
        return MLP().eval(), (torch.randn(4, 8),)
    if name == "cnn":
        return SmallCNN().eval(), (torch.randn(2, 3, 8, 8),)
    if name == "block":
        mask = torch.ones(2, 5, dtype=torch.long)
        mask[1, 3:] = 0
        return Block().eval(), (torch.randn(2, 5, 16), mask)
    if name == "pytree":
        return pytree_fn, (torch.randn(2, 3), (torch.randn(2, 3), torch.randn(3)),
                           {"bias": torch.randn(4)})  # fmt: skip
    raise KeyError(name)


CASES = ["mlp", "cnn", "block", "pytree"]

# --- comparison -----------------------------------------------------------------------------


def _val_summary(v):
    if isinstance(v, torch.Tensor):
        return ("T", tuple(v.shape), v.dtype, tuple(v.stride()), v.device.type,
                type(v).__name__, v.requires_grad)  # fmt: skip
    if isinstance(v, (list, tuple)):
        return tuple(_val_summary(x) for x in v)
    if isinstance(v, torch.SymInt):
        return ("S", str(v))
    return v


def graph_summary(gm):
    rows = []
    for n in gm.graph.nodes:
        tm = n.meta.get("tensor_meta")
        rows.append((n.op, str(n.target), n.name, str(n.args), str(n.kwargs),
                     _val_summary(n.meta.get("val")), None if tm is None else tuple(tm),
                     str(n.meta.get("unbacked_bindings"))))  # fmt: skip
    return rows


def trace_both(f, args, **options):
    theirs = tpt.make_fx(f, **options)(*args)
    ours = fpt.make_fx(f, **options)(*args)
    return ours, theirs


def assert_same(ours, theirs):
    assert isinstance(ours, fxkit.GraphModule)
    assert type(ours).__name__ == type(theirs).__name__
    assert graph_summary(ours) == graph_summary(theirs)
    assert ours.code == theirs.code
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()
    assert dict(ours.named_buffers()).keys() == dict(theirs.named_buffers()).keys()


@pytest.mark.parametrize("mode", ["real", "fake"])
@pytest.mark.parametrize("name", CASES)
def test_same_graph_and_outputs(name, mode):
    f, args = _torch_case(name)
    ours, theirs = trace_both(f, args, tracing_mode=mode, _allow_non_fake_inputs=True)
    assert_same(ours, theirs)
    torch.testing.assert_close(ours(*args), theirs(*args))
    torch.testing.assert_close(ours(*args), f(*args))
    vals = [n.meta["val"] for n in ours.graph.nodes if n.op == "call_function"]
    assert vals and all(isinstance(v, FakeTensor) for v in vals if isinstance(v, torch.Tensor))


def _index_and_nonzero(x, i):
    return x[i], x.nonzero()


def _multi_output_views(x):
    return x.unbind(0), x.split(1), torch.max(x, 0)


def _item_scaling(x):
    return x * x.sum().item()


def _inplace_on_input(x):
    x.add_(1)
    x.unsqueeze_(0)
    return x


def _unbacked_size(x):
    y = x.nonzero()
    return y.new_zeros(y.shape[0] * 2), y.shape[0] + 1


def _factories(x):
    return torch.randn(3) + x.new_zeros(3), torch.arange(3)


SMALL_CASES = [
    ("index-nonzero", _index_and_nonzero, lambda: (torch.randn(4), torch.tensor([0, 2])),
     ("real", "fake", "symbolic")),
    ("multi-output-views", _multi_output_views, lambda: (torch.randn(2, 3),), ("real", "fake")),
    ("item-unbacked", _item_scaling, lambda: (torch.randn(3),), ("fake", "symbolic")),
    ("inplace-on-input", _inplace_on_input, lambda: (torch.randn(3),), ("real", "fake")),
    ("factories", _factories, lambda: (torch.randn(3),), ("fake",)),
    ("unbacked-size", _unbacked_size, lambda: (torch.randn(5),), ("fake", "symbolic")),
]  # fmt: skip


@pytest.mark.parametrize(
    "fn,make_args,mode",
    [
        pytest.param(fn, make_args, mode, id=f"{name}-{mode}")
        for name, fn, make_args, modes in SMALL_CASES
        for mode in modes
    ],
)
def test_small_programs(fn, make_args, mode):
    torch.manual_seed(0)
    args = make_args()
    # Fresh copies per implementation: some programs mutate their inputs.
    theirs = tpt.make_fx(fn, tracing_mode=mode)(*[a.clone() for a in args])
    ours = fpt.make_fx(fn, tracing_mode=mode)(*[a.clone() for a in args])
    assert_same(ours, theirs)


@pytest.mark.parametrize("library", ["fxkit", "torch.fx"])
def test_graph_module_input(library):
    tracer = fxkit.symbolic_trace if library == "fxkit" else tfx.symbolic_trace
    gm = tracer(MLP().eval())
    x = torch.randn(2, 8)
    ours, theirs = trace_both(gm, (x,))
    assert_same(ours, theirs)
    torch.testing.assert_close(ours(x), gm(x))


def test_decomposition_table_core_aten():
    f, args = _torch_case("block")
    table = core_aten_decompositions()
    ours, theirs = trace_both(f, args, decomposition_table=table)
    assert_same(ours, theirs)
    targets = {n.target for n in ours.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.native_layer_norm.default in targets  # core aten keeps it
    assert torch.ops.aten.gelu.default in targets
    assert torch.ops.aten.addmm.default in targets
    torch.testing.assert_close(ours(*args), f(*args))


def test_custom_decomposition_and_decompose_context():
    def my_relu(x):
        return torch.clamp_min(x, 0)

    def f(x):
        return torch.relu(x) + 1

    table = {torch.ops.aten.relu.default: my_relu}
    ours, theirs = trace_both(f, (torch.randn(3),), decomposition_table=table)
    assert_same(ours, theirs)
    assert "clamp_min" in ours.code and "relu" not in ours.code


def test_symbolic_dynamic_batch():
    f, args = _torch_case("block")
    options = {"tracing_mode": "symbolic", "_allow_non_fake_inputs": True}
    ours, theirs = trace_both(f, args, **options)
    assert_same(ours, theirs)
    sizes = [n for n in ours.graph.nodes if n.target == torch.ops.aten.sym_size.int]
    assert sizes and isinstance(sizes[0].meta["val"], torch.SymInt)
    assert ours.shape_env is not None and len(ours.shape_env.backed_var_to_val) == 3
    x, mask = torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.long)  # other batch/length
    torch.testing.assert_close(ours(x, mask), f(x, mask))


def test_symbolic_int_input_and_sym_output():
    def f(x, n):
        return x * n, x.shape[0] * n + 1

    ours, theirs = trace_both(f, (torch.randn(5), 3), tracing_mode="symbolic")
    assert_same(ours, theirs)
    out, k = ours(torch.randn(4), 2)
    assert k == 9 and out.shape == (4,)


def test_constants_and_item_on_literal():
    def f(x):
        c = torch.tensor([2.0])
        return x * c.item(), x + torch.ones(2)

    ours, theirs = trace_both(f, (torch.randn(2),))
    assert_same(ours, theirs)
    assert hasattr(ours, "_tensor_constant0")


@pytest.mark.parametrize("mode", ["real", "fake"])
def test_module_state_lifted_as_attrs(mode):
    m = SmallCNN().eval()
    ours, _ = trace_both(m, (torch.randn(1, 3, 8, 8),), tracing_mode=mode,
                         _allow_non_fake_inputs=True)  # fmt: skip
    gets = [n for n in ours.graph.nodes if n.op == "get_attr"]
    assert gets[0].target == "_param_constant0"
    assert ours._param_constant0 is m.conv1.weight
    assert isinstance(gets[0].meta["val"], FakeTensor) and "tensor_meta" not in gets[0].meta


def test_proxy_mode_visible_during_trace_only():
    seen = []

    def f(x):
        seen.append(fpt.get_proxy_mode())
        return x + 1

    assert fpt.get_proxy_mode() is None and fpt.get_innermost_proxy_mode() is None
    gm = fpt.make_fx(f)(torch.randn(2))
    assert isinstance(seen[0], fpt.ProxyTorchDispatchMode)
    assert fpt.get_proxy_mode() is None
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_function", "output"]


def test_get_isolated_graphmodule_inside_trace():
    inner = []

    def f(x):
        inner.append(fpt.get_isolated_graphmodule(lambda a: a.sin(), (x,), {}))
        return x.cos()

    gm = fpt.make_fx(f)(torch.randn(3))
    assert "cos" in gm.code and "sin" not in gm.code
    assert "sin" in inner[0].code


def test_decomposition_interpreter_matches_torch():
    def f(x):
        return F.gelu(x).sum(-1)

    x = torch.randn(2, 3)
    table = core_aten_decompositions()
    ours_graph, theirs_graph = fxkit.Graph(), tfx.Graph()
    fpt.DecompositionInterpreter(fxkit.symbolic_trace(f), ours_graph, table).run(x)
    tpt.DecompositionInterpreter(tfx.symbolic_trace(f), theirs_graph, table).run(x)
    ours = [(n.op, str(n.target), n.name) for n in ours_graph.nodes]
    assert ours == [(n.op, str(n.target), n.name) for n in theirs_graph.nodes]


def test_selective_decompose():
    def f(x):
        return F.gelu(x) + F.silu(x)

    x = torch.randn(4)
    table = get_decompositions([torch.ops.aten.gelu.default, torch.ops.aten.silu.default])
    results = []
    for impl in (fpt, tpt):
        gm = impl.make_fx(f)(x)
        results.append(
            impl.selective_decompose(gm, x, decomposition=table, trace_joint_graph=False,
                                     should_decompose=lambda n: "gelu" in str(n.target))
        )  # fmt: skip
    ours, theirs = results
    assert_same(ours, theirs)
    targets = [str(n.target) for n in ours.graph.nodes if n.op == "call_function"]
    assert "aten.gelu.default" not in targets and "aten.silu.default" in targets
    torch.testing.assert_close(ours(x), f(x))


# --- bad input ------------------------------------------------------------------------------


def _both_raise(exc, call):
    for impl in (tpt, fpt):
        with pytest.raises(exc):
            call(impl)


def test_bad_tracing_mode():
    _both_raise(AssertionError, lambda impl: impl.make_fx(torch.sin, tracing_mode="nope"))


def test_real_parameters_in_fake_mode_need_opt_in():
    m, args = _torch_case("mlp")
    _both_raise(AssertionError, lambda impl: impl.make_fx(m, tracing_mode="fake")(*args))


def test_data_dependent_control_flow_in_real_mode():
    def f(x):
        return x * 2 if x.sum() > 0 else x

    _both_raise(RuntimeError, lambda impl: impl.make_fx(f)(torch.ones(3)))


def test_proxy_mode_helpers_outside_a_trace():
    _both_raise(AssertionError, lambda impl: impl.handle_sym_dispatch(torch.add, (1, 2), {}))


def test_pre_dispatch_traces_through_torch_and_returns_an_fxkit_module():
    # torch admits only its own proxy-mode class on the pre-dispatch mode stack, so fxkit
    # hands this mode to torch's make_fx (through interop) and converts the result.
    def f(x, w):
        with torch.no_grad():
            y = x * 2
        return torch.nn.functional.linear(y, w).relu()

    x, w = torch.randn(2, 3), torch.randn(4, 3)
    ours = fpt.make_fx(f, pre_dispatch=True)(x, w)
    theirs = tpt.make_fx(f, pre_dispatch=True)(x, w)
    assert isinstance(ours, fxkit.GraphModule)
    assert ours.code == theirs.code
    assert [(n.op, n.name, n.target) for n in ours.graph.nodes] == [
        (n.op, n.name, n.target) for n in theirs.graph.nodes
    ]
    torch.testing.assert_close(ours(x, w), f(x, w))


def test_public_names():
    assert set(tpt.__all__) <= set(dir(fpt))
    assert fpt.py_sym_types == (torch.SymInt, torch.SymFloat, torch.SymBool)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x).sin()


def test_record_stack_traces_forward_frames_only():
    ours, theirs = trace_both(_Tiny(), (torch.randn(3),), record_stack_traces=True)
    assert_same(ours, theirs)
    traces = [(n.name, n.meta.get("stack_trace")) for n in ours.graph.nodes]
    assert traces == [(n.name, n.meta.get("stack_trace")) for n in theirs.graph.nodes]
    assert "in forward" in dict(traces)["sin"] and dict(traces)["arg0_1"] is None


def test_preserved_node_meta_original_aten_and_seq_nr():
    import torch.fx.traceback as torch_traceback

    import fxkit.traceback as fxkit_traceback

    with torch_traceback.preserve_node_meta():
        theirs = tpt.make_fx(_Tiny())(torch.randn(3))
    with fxkit_traceback.preserve_node_meta():
        ours = fpt.make_fx(_Tiny())(torch.randn(3))
    assert_same(ours, theirs)
    for a, b in zip(ours.graph.nodes, theirs.graph.nodes):
        assert sorted(a.meta) == sorted(b.meta)
        # Both libraries store a copy.copy of the overload (a distinct object): compare names.
        assert str(a.meta.get("original_aten")) == str(b.meta.get("original_aten"))
    # seq_nr follows autograd's global counter: compare the steps, not the values.
    ours_nr = [n.meta["seq_nr"] for n in ours.graph.nodes]
    theirs_nr = [n.meta["seq_nr"] for n in theirs.graph.nodes]
    assert [x - ours_nr[1] for x in ours_nr[1:]] == [x - theirs_nr[1] for x in theirs_nr[1:]]


@pytest.mark.parametrize("mode", ["real", "fake"])
def test_hf_bert_fails_like_torch(mode):
    # BERT's padding-mask check reads a tensor value: both make_fx refuse it the same way.
    transformers = pytest.importorskip("transformers", reason="optional: HF transformers")
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        vocab_size=100,
    )  # fmt: skip
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 100, (2, 7))

    def run(impl):
        impl.make_fx(lambda i: model(input_ids=i).last_hidden_state, tracing_mode=mode,
                     _allow_non_fake_inputs=True)(ids)  # fmt: skip

    errors = []
    for impl in (tpt, fpt):
        with pytest.raises(Exception) as info:
            run(impl)
        errors.append(type(info.value))
    assert errors[0] is errors[1]


@pytest.mark.parametrize("mode", ["real", "fake", "symbolic"])
def test_train_mode_batchnorm_buffers(mode):
    # Train-mode BatchNorm updates buffers in place: the same graph, and the module's real
    # buffers end up exactly as torch's make_fx leaves them.
    models = []
    for impl in (tpt, fpt):
        torch.manual_seed(0)
        model = SmallCNN().train()
        gm = impl.make_fx(model, tracing_mode=mode, _allow_non_fake_inputs=True)(
            torch.randn(2, 3, 8, 8)
        )
        models.append((model, gm))
    (theirs_model, theirs), (ours_model, ours) = models
    assert_same(ours, theirs)
    for a, b in zip(ours_model.buffers(), theirs_model.buffers()):
        assert torch.equal(a, b)


def test_proxy_slots_during_trace():
    seen = {}
    outside = torch.zeros(1)  # made before the trace: nothing records it

    def f(x):
        tracer = fpt.get_proxy_mode().tracer
        y = x + 1
        z = torch.ones(2)  # a factory call: recorded too
        seen["y"] = fpt.get_proxy_slot(y, tracer).proxy.node.name
        seen["x"] = fpt.get_proxy_slot(x, tracer, None, lambda r: r.proxy.node.name)
        seen["untracked"] = fpt.get_proxy_slot(outside, tracer, "none")
        seen["has"] = fpt.has_proxy_slot(z, tracer)
        return y * z

    gm = fpt.make_fx(f)(torch.randn(2))
    assert seen == {"y": "add", "x": "x_1", "untracked": "none", "has": True}
    assert [n.name for n in gm.graph.nodes][:3] == ["x_1", "add", "ones"]
    with pytest.raises(RuntimeError, match="is not tracked with proxy"):
        fpt.get_proxy_slot(torch.zeros(1), fpt.PythonKeyTracer())


def test_symint_computed_with_tracing_off_is_rebuilt():
    # A size computed while the proxy mode is off is untracked: both rebuild it from the
    # symbols its expression uses.
    def program(impl):
        def f(x):
            with impl.disable_proxy_modes_tracing():
                n = x.shape[0] * 2 + x.shape[1]
            return x.new_zeros(n), x.new_ones(max(x.shape[0], 2))

        return f

    theirs = tpt.make_fx(program(tpt), tracing_mode="symbolic")(torch.randn(3, 4))
    ours = fpt.make_fx(program(fpt), tracing_mode="symbolic")(torch.randn(3, 4))
    assert_same(ours, theirs)
    assert "torch.sym_sum" in ours.code
