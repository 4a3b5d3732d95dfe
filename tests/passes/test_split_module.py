"""split_module compared with torch.fx's: zoo models, a transformer block and a tiny HF BERT
split several ways and with every option (same submodules, code, qualname map, outputs);
autocast / grad-mode regions; the cases where torch.fx crashes (keep_original_order with
partitions out of order, attributes only the output reads, an affix with global-state
regions); cycles; bad callbacks; random DAGs with random partitions (hypothesis)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import split_module as tsm

import fxkit
from fxkit.interop import from_torch_fx
from fxkit.passes import split_module as fsm
from zoo import BY_NAME, CASES, example, tensors_of, trace

OPTIONS = {
    "default": {},
    "keep_order": {"keep_original_order": True},
    "keep_node_name": {"keep_original_node_name": True},
    "arg_names": {"keep_original_input_name": False},
    "affix": {"partition_affix": "pp"},
    "tuple_return": {"tuple_return": True},
}


def _norm(code: str) -> str:
    # Helpers that each library's tracer inserts live in its own module.
    return code.replace("torch.fx._symbolic_trace.", "fxkit._symbolic_trace.")


def _calls(gm):
    return [n for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]


def _policy(kind: str, gm):
    """A partition callback for ``gm``: thirds of the graph, or alternating nodes."""
    index = {n.name: i for i, n in enumerate(_calls(gm))}
    if kind == "thirds":
        return lambda n: index[n.name] * 3 // max(len(index), 1)
    return lambda n: index[n.name] % 2


def _snapshot(split, qualname_map):
    """Everything users see of a split module, comparable across the two libraries."""
    return {
        "code": _norm(split.code),
        "children": [
            (name, _norm(child.code) if hasattr(child, "graph") else type(child).__name__)
            for name, child in split.named_children()
        ],
        "qualname_map": sorted(qualname_map.items()),
        "parameters": [name for name, _ in split.named_parameters()],
        "buffers": [name for name, _ in split.named_buffers()],
        "placeholders": {
            name: [n.name for n in child.graph.nodes if n.op == "placeholder"]
            for name, child in split.named_children()
            if hasattr(child, "graph")
        },
    }


def _both(gm_fx, gm_ours, callback_of, **options):
    """Split both modules the same way; return (torch.fx result, fxkit result) or the
    exceptions they raised."""
    results = []
    for gm, lib in ((gm_fx, tsm), (gm_ours, fsm)):
        qualname_map: dict = {}
        try:
            split = lib.split_module(gm, None, callback_of(gm), qualname_map, **options)
            results.append((split, _snapshot(split, qualname_map)))
        except Exception as exc:  # compared below
            results.append((None, exc))
    return results


def _check_outputs(split, gm, case):
    args, kwargs = example(case)
    expected = tensors_of(gm(*args, **kwargs))
    got = tensors_of(split(*args, **kwargs))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def _compare_case(case, policy, options):
    gm_fx, gm_ours = trace(case, tfx), trace(case, fxkit)
    (fx_split, fx_seen), (our_split, our_seen) = _both(
        gm_fx, gm_ours, lambda gm: _policy(policy, gm), **options
    )
    if fx_split is None:
        if isinstance(fx_seen, RuntimeError):  # a cycle: fxkit refuses it too
            assert isinstance(our_seen, RuntimeError), our_seen
            assert str(our_seen).startswith(str(fx_seen))
            return
        # torch.fx crashed (keep_original_order with partitions out of order): fxkit must not
        assert options.get("keep_original_order"), fx_seen
        assert our_split is not None, our_seen
    else:
        assert our_split is not None, our_seen
        assert our_seen == fx_seen
        assert our_split.meta["partition_names"] == fx_split.meta["partition_names"]
    for _, child in our_split.named_children():
        if hasattr(child, "graph"):
            child.graph.lint()
    # The top graph uses the plain calling convention (in torch.fx too), so a model traced
    # with concrete_args (pytree or specialised inputs) takes its flattened placeholders.
    if case.concrete_args is None:
        _check_outputs(our_split, gm_ours, case)


@pytest.mark.parametrize("policy", ["thirds", "alternate"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zoo_matches_torch_fx(case, policy):
    _compare_case(case, policy, {})


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("case_name", ["mlp", "resnet", "encoder", "math_ops", "specialised"])
def test_options_match_torch_fx(case_name, option):
    for policy in ("thirds", "alternate"):
        _compare_case(BY_NAME[case_name], policy, OPTIONS[option])


class Block(torch.nn.Module):
    """A pre-norm transformer block with a parameter read directly (get_attr)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, 2, batch_first=True)
        self.ff = torch.nn.Sequential(
            torch.nn.Linear(d, 32), torch.nn.GELU(), torch.nn.Linear(32, d)
        )
        self.scale = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(x) * self.scale


@pytest.mark.parametrize("option", ["default", "keep_order", "keep_node_name", "tuple_return"])
def test_transformer_block(option):
    torch.manual_seed(0)
    model = Block().eval()
    gm_fx, gm_ours = tfx.symbolic_trace(model), fxkit.symbolic_trace(model)
    (_, fx_seen), (split, our_seen) = _both(
        gm_fx, gm_ours, lambda gm: _policy("thirds", gm), **OPTIONS[option]
    )
    assert our_seen == fx_seen
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(split(x), model(x))


def test_hf_bert_tiny_split():
    transformers = pytest.importorskip("transformers", reason="HF transformers not installed")
    from transformers.utils.fx import symbolic_trace as hf_trace

    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    traced = hf_trace(model, input_names=["input_ids", "attention_mask"])
    gm_ours = from_torch_fx(traced)

    def by_position(parts):
        def policy(gm):
            index = {n.name: i for i, n in enumerate(_calls(gm))}
            return lambda n: index[n.name] * parts // len(index)

        return policy

    for parts in (4,):
        (_, fx_seen), (split, our_seen) = _both(traced, gm_ours, by_position(parts))
        assert our_seen == fx_seen
        ids = torch.randint(0, 100, (2, 7))
        mask = torch.ones(2, 7, dtype=torch.long)
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = split(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        torch.testing.assert_close(got, expected)


# --- where torch.fx crashes --------------------------------------------------------------------


def _out_of_order(x, y):
    a = x + 1
    b = y * 2
    return a - b


def test_keep_original_order_with_partitions_out_of_order():
    # Partition 1 appears first but reads partition 0: torch.fx raises KeyError.
    assign = {"add": 1, "mul": 0, "sub": 1}
    with pytest.raises(KeyError):
        tsm.split_module(
            tfx.symbolic_trace(_out_of_order),
            None,
            lambda n: assign[n.name],
            keep_original_order=True,
        )
    gm = fxkit.symbolic_trace(_out_of_order)
    split = fsm.split_module(gm, None, lambda n: assign[n.name], keep_original_order=True)
    assert [n.target for n in split.graph.nodes if n.op == "call_module"] == [
        "submod_0",
        "submod_1",
    ]
    x, y = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(split(x, y), gm(x, y))


class ReturnsParam(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3))

    def forward(self, x):
        return x.relu() + 1, self.w


def test_keep_original_order_output_reads_attribute_directly():
    model = ReturnsParam()
    with pytest.raises(KeyError):
        tsm.split_module(tfx.symbolic_trace(model), model, lambda n: 0, keep_original_order=True)
    gm = fxkit.symbolic_trace(model)
    split = fsm.split_module(gm, model, lambda n: 0, keep_original_order=True)
    x = torch.randn(3)
    for got, want in zip(split(x), gm(x)):
        torch.testing.assert_close(got, want)
    # Without keep_original_order both libraries agree.
    (_, fx_seen), (_, our_seen) = _both(tfx.symbolic_trace(model), gm, lambda gm: lambda n: 0)
    assert our_seen == fx_seen


def _global_state_graph(lib):
    g = lib.Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.sin, (x,))
    g.call_function(torch._C._set_grad_enabled, (False,))
    b = g.call_function(torch.cos, (a,))
    enter = g.call_function(torch.amp._enter_autocast, ("cpu", torch.bfloat16, True, None))
    c = g.call_function(torch.mm, (b, b))
    d = g.call_function(torch.relu, (c,))
    g.call_function(torch.amp._exit_autocast, (enter,))
    e = g.call_function(operator.add, (d, 1))
    g.call_function(torch._C._set_grad_enabled, (True,))
    g.output(e)
    return lib.GraphModule(torch.nn.Module(), g)


_REGIONS = {
    "sin": 0,
    "_set_grad_enabled": 0,
    "cos": 1,
    "_enter_autocast": 1,
    "mm": 1,
    "relu": 2,
    "_exit_autocast": 2,
    "add": 3,
    "_set_grad_enabled_1": 3,
}


@pytest.mark.parametrize("option", ["default", "keep_order", "keep_node_name", "tuple_return"])
def test_autocast_and_grad_regions(option):
    (_, fx_seen), (split, our_seen) = _both(
        _global_state_graph(tfx),
        _global_state_graph(fxkit),
        lambda gm: lambda n: _REGIONS[n.name],
        **OPTIONS[option],
    )
    assert our_seen == fx_seen
    assert "_enter_autocast" in our_seen["children"][2][1]  # re-entered in the middle partition
    x = torch.randn(3, 3)
    out = split(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _global_state_graph(fxkit)(x).float())


def _region_of(node):
    return _REGIONS[node.name]


def test_regions_need_increasing_partitions():
    bad = dict(_REGIONS, relu=0)
    for lib in (tsm, fsm):
        with pytest.raises(AssertionError, match="monotonically increasing"):
            lib.split_module(
                _global_state_graph(tfx if lib is tsm else fxkit), None, lambda n: bad[n.name]
            )


def test_regions_with_affix():
    # torch.fx looks the regions up without the affix and fails with KeyError.
    with pytest.raises(KeyError):
        tsm.split_module(_global_state_graph(tfx), None, _region_of, partition_affix="pp")
    gm = _global_state_graph(fxkit)
    split = fsm.split_module(gm, None, _region_of, partition_affix="pp")
    assert [name for name, _ in split.named_children()] == [f"submod_pp_{i}" for i in range(4)]
    x = torch.randn(3, 3)
    torch.testing.assert_close(split(x), gm(x))


def test_autocast_must_exit():
    for lib in (tfx, fxkit):
        g = lib.Graph()
        x = g.placeholder("x")
        g.call_function(torch.amp._enter_autocast, ("cpu", torch.bfloat16, True, None))
        g.output(g.call_function(torch.relu, (x,)))
        gm = lib.GraphModule(torch.nn.Module(), g)
        split_module = tsm.split_module if lib is tfx else fsm.split_module
        with pytest.raises(AssertionError, match="autocast must exit"):
            split_module(gm, None, lambda n: 0)


# --- cycles and bad callbacks ------------------------------------------------------------------


def _chain(x):
    a = x + 1
    b = a * 2
    return b - 1


def test_cycle_is_refused_with_names():
    assign = {"add": 0, "mul": 1, "sub": 0}
    with pytest.raises(RuntimeError, match="cycle exists between partitions!"):
        tsm.split_module(tfx.symbolic_trace(_chain), None, lambda n: assign[n.name])
    with pytest.raises(RuntimeError, match="cycle exists between partitions!") as info:
        fsm.split_module(fxkit.symbolic_trace(_chain), None, lambda n: assign[n.name])
    message = str(info.value)
    assert "submod_0" in message and "submod_1" in message
    assert "'add'" in message and "'mul'" in message  # the values crossing each way


@pytest.mark.parametrize(
    "answer",
    [None, "left", 7, True, 1.5, [1], "a b"],
    ids=["none", "str", "int", "bool", "float", "list", "space"],
)
def test_callback_results_are_named_by_str(answer):
    # torch.fx names partitions str(answer), whatever it is; a dot nests the submodule.
    (_, fx_seen), (split, our_seen) = _both(
        tfx.symbolic_trace(_chain), fxkit.symbolic_trace(_chain), lambda gm: lambda n: answer
    )
    assert our_seen == fx_seen
    assert split.meta["partition_names"] == {f"submod_{answer}"}
    x = torch.randn(3)
    torch.testing.assert_close(split(x), _chain(x))


def test_callback_exception_propagates():
    def boom(node):
        raise ZeroDivisionError("no partition")

    for lib, gm in ((tsm, tfx.symbolic_trace(_chain)), (fsm, fxkit.symbolic_trace(_chain))):
        with pytest.raises(ZeroDivisionError):
            lib.split_module(gm, None, boom)


def test_missing_attribute():
    gm = fxkit.symbolic_trace(ReturnsParam())
    del gm.w
    with pytest.raises(AttributeError, match="Node target w not found!"):
        fsm.split_module(gm, None, lambda n: 0)


def test_accepts_torch_fx_graph_module():
    case = BY_NAME["resnet"]
    gm_fx = trace(case, tfx)
    theirs = tsm.split_module(gm_fx, None, _policy("thirds", gm_fx))
    ours = fsm.split_module(gm_fx, None, _policy("thirds", gm_fx))
    assert isinstance(ours, fxkit.GraphModule)
    assert _snapshot(ours, {}) == _snapshot(theirs, {})
    _check_outputs(ours, gm_fx, case)


def test_partition_repr_and_fields():
    for lib in (tsm, fsm):
        p = lib.Partition("3")
        p.node_names.append("add")
        p.inputs.setdefault("x")
        assert p.submod_name == "submod_3"
        assert repr(p).startswith("name: 3,\n nodes: ['add'],\n inputs: {'x': None}")
    assert repr(fsm.Partition("3")) == repr(tsm.Partition("3"))


def test_split_module_simple_matches():
    def f(x, y):
        a = x.sin()
        b = y.cos()
        c = a + b
        return c.relu() * a, c

    seen = []
    for lib, mod in ((tfx, tsm), (fxkit, fsm)):
        gm = lib.symbolic_trace(f)
        nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
        split = mod.split_module_simple(
            gm, {n: i * 3 // len(nodes) for i, n in enumerate(nodes)}, partition_affix="p"
        )
        seen.append([split.code] + [c.code for _, c in split.named_children()])
        x, y = torch.randn(3), torch.randn(3)
        for got, want in zip(split(x, y), gm(x, y)):
            torch.testing.assert_close(got, want)
    assert seen[0] == seen[1]


# --- random DAGs -------------------------------------------------------------------------------

_BINARY = (operator.add, operator.mul, torch.maximum)
_UNARY = (torch.sin, torch.tanh, torch.relu)


@st.composite
def dags(draw):
    n = draw(st.integers(3, 14))
    parts = draw(st.integers(1, 4))
    spec = []
    for i in range(n):
        unary = draw(st.booleans())
        a = draw(st.integers(-2, i - 1))  # negative: a graph input
        b = draw(st.integers(-2, i - 1))
        spec.append((unary, draw(st.integers(0, 2)), a, b, draw(st.integers(0, parts - 1))))
    outputs = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
    return spec, outputs


def _build_dag(lib, spec, outputs):
    g = lib.Graph()
    inputs = [g.placeholder("x"), g.placeholder("y")]
    made = []

    def pick(i):
        return inputs[i + 2] if i < 0 else made[i]

    for unary, op, a, b, _ in spec:
        if unary:
            made.append(g.call_function(_UNARY[op], (pick(a),)))
        else:
            made.append(g.call_function(_BINARY[op], (pick(a), pick(b))))
    g.output(tuple(made[i] for i in outputs))
    return lib.GraphModule(torch.nn.Module(), g)


@settings(max_examples=30, deadline=None)
@given(dags(), st.booleans())
def test_random_dags(dag, keep_order):
    spec, outputs = dag
    assignment = {i: part for i, (*_, part) in enumerate(spec)}

    def callback_of(gm):
        index = {n: i for i, n in enumerate(_calls(gm))}
        return lambda n: assignment[index[n]]

    gm_fx, gm_ours = _build_dag(tfx, spec, outputs), _build_dag(fxkit, spec, outputs)
    (fx_split, fx_seen), (split, our_seen) = _both(
        gm_fx, gm_ours, callback_of, keep_original_order=keep_order
    )
    if isinstance(fx_seen, RuntimeError):
        # torch.fx found a cycle: fxkit refuses too, naming the partitions
        assert isinstance(our_seen, RuntimeError)
        assert "submod_" in str(our_seen)
        return
    assert split is not None, our_seen
    if fx_split is not None:
        assert our_seen == fx_seen
    else:  # torch.fx crashed keeping the original order; fxkit still builds a valid module
        assert keep_order and isinstance(fx_seen, KeyError)
    split.graph.lint()
    for _, child in split.named_children():
        child.graph.lint()
    # every submodule only reads values computed before it is called (no cycle)
    defined = {n for n in split.graph.nodes if n.op == "placeholder"}
    for node in split.graph.nodes:
        assert all(i in defined for i in node.all_input_nodes)
        defined.add(node)
    x, y = torch.randn(4), torch.randn(4)
    for got, want in zip(split(x, y), gm_ours(x, y)):
        torch.testing.assert_close(got, want)


def _interleaved(lib):
    """get_attr nodes between placeholders (as export produces), a submodule read through
    get_attr and a parameter the output returns directly."""
    torch.manual_seed(0)
    root = torch.nn.Module()
    root.w = torch.nn.Parameter(torch.ones(3))
    root.lin = torch.nn.Linear(3, 3)
    g = lib.Graph()
    x = g.placeholder("x")
    w = g.get_attr("w")
    y = g.placeholder("y")
    g.get_attr("lin")
    a = g.call_function(operator.add, (x, w))
    b = g.call_function(operator.mul, (a, y))
    c = g.call_module("lin", (b,))
    g.output((g.call_function(operator.add, (c, w)), w))
    return lib.GraphModule(root, g)


@pytest.mark.parametrize("option", ["default", "keep_order", "keep_node_name", "arg_names"])
def test_attributes_interleaved_with_placeholders(option):
    parts = {"add": 0, "mul": 1, "lin_1": 1, "add_1": 2}
    (_, fx_seen), (split, our_seen) = _both(
        _interleaved(tfx),
        _interleaved(fxkit),
        lambda gm: lambda n: parts[n.name],
        **OPTIONS[option],
    )
    assert our_seen == fx_seen
    assert our_seen["qualname_map"] == [("submod_1.lin", "lin")]
    x, y = torch.randn(3), torch.randn(3)
    for got, want in zip(split(x, y), _interleaved(fxkit)(x, y)):
        torch.testing.assert_close(got, want)


def _symbolic_graph(lib, bind: bool):
    """``relu`` has a fake value of unbacked size u0, bound by ``size`` when ``bind``."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    shape_env = ShapeEnv()
    u0 = shape_env.create_unbacked_symint()
    with FakeTensorMode(shape_env=shape_env):
        fake = torch.empty(u0)
    g = lib.Graph()
    x = g.placeholder("x")
    size = g.call_method("size", (x, 0))
    if bind:
        size.meta["example_value"] = u0
    a = g.call_function(torch.relu, (x,))
    a.meta["example_value"] = fake
    g.output(g.call_function(torch.neg, (a,)))
    return lib.GraphModule(torch.nn.Module(), g)


def test_symbolic_sizes_thread_their_binding_node():
    parts = {"size": 0, "relu": 0, "neg": 1}
    (_, fx_seen), (split, our_seen) = _both(
        _symbolic_graph(tfx, True),
        _symbolic_graph(fxkit, True),
        lambda gm: lambda n: parts[n.name],
    )
    assert our_seen == fx_seen
    assert our_seen["placeholders"]["submod_1"] == ["relu", "size"]
    x = torch.randn(4)
    torch.testing.assert_close(split(x), -x.relu())
    # A symbol nothing binds: torch.fx fails with KeyError; fxkit leaves it to the caller.
    with pytest.raises(KeyError):
        tsm.split_module(_symbolic_graph(tfx, False), None, lambda n: parts[n.name])
    split = fsm.split_module(_symbolic_graph(fxkit, False), None, lambda n: parts[n.name])
    torch.testing.assert_close(split(x), -x.relu())
