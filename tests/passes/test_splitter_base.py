"""fxkit.passes.splitter_base, differentially against torch.fx: the same model, the same
operator support and the same settings must give the same split (submodule names, the nodes
in each submodule, the top graph) and the same outputs."""

from __future__ import annotations

import contextlib
import io
import operator
import zlib

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.passes import operator_support as t_ops
from torch.fx.passes import splitter_base as t_sb

import fxkit
from fxkit.passes import operator_support as f_ops
from fxkit.passes import splitter_base as f_sb
from zoo import BY_NAME, example, trace

LIBS = {"torch.fx": (tfx, t_sb, t_ops), "fxkit": (fxkit, f_sb, f_ops)}


def _support(lib_ops, predicate):
    class Support(lib_ops.OperatorSupportBase):
        def is_node_supported(self, submodules, node):
            return predicate(node)

    return Support()


def _splitter(lib: str, gm, inputs, predicate, nodes_finder=None, **kw):
    _, sb, ops = LIBS[lib]
    extra = {k: kw.pop(k) for k in ("non_acc_submodule_name", "return_tuple") if k in kw}
    return sb._SplitterBase(
        gm, inputs, _support(ops, predicate), sb._SplitterSettingBase(**kw), **extra
    )


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fn(*args)
    return result, out.getvalue()


def _layout(split_gm) -> list:
    """Submodule name -> op/target/name of its call nodes, plus the top graph's nodes."""
    rows = [("top", [(n.op, str(n.target), n.name) for n in split_gm.graph.nodes])]
    for name, child in split_gm.named_children():
        if hasattr(child, "graph"):
            nodes = [(n.op, n.name) for n in child.graph.nodes]
            rows.append((name, nodes))
    return rows


def _tags(gm) -> dict:
    return {n.name: getattr(n, "tag", None) for n in gm.graph.nodes}


def _outputs(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return []


def _both(make_gm_pair, inputs, predicate, **kw):
    """Split the torch.fx and fxkit modules; return {lib: (splitter, split module)}."""
    result = {}
    for lib, gm in zip(LIBS, make_gm_pair()):
        splitter = _splitter(lib, gm, inputs, predicate, **dict(kw))
        split, _ = _quiet(splitter)
        result[lib] = (splitter, split, gm)
    return result


def _by_name(node_map) -> dict:
    return {k.name: sorted(v.name for v in vs) for k, vs in node_map.items() if vs}


def _with_defaults(gm, inputs) -> tuple:
    """``inputs`` plus the default values of the remaining placeholders (concrete args),
    which the split module takes as ordinary inputs."""
    rest = [n for n in gm.graph.nodes if n.op == "placeholder"][len(inputs) :]
    return tuple(inputs) + tuple(n.args[0] if n.args else None for n in rest)


def _assert_same_split(result, inputs) -> None:
    (t_s, t_split, t_gm), (f_s, f_split, f_gm) = result["torch.fx"], result["fxkit"]
    assert _tags(f_gm) == _tags(t_gm)
    assert _layout(f_split) == _layout(t_split)
    assert f_s.tags == t_s.tags
    assert _by_name(f_s.deps) == _by_name(t_s.deps)
    assert _by_name(f_s.fusions) == _by_name(t_s.fusions)
    assert f_s.get_node_submodule_map() == t_s.get_node_submodule_map()
    with torch.no_grad():
        expected = _outputs(t_gm(*inputs))
        got = _outputs(f_split(*_with_defaults(f_gm, inputs)))
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def _hashed(node) -> bool:
    # Same answer for a node of either library: depends on the node name only.
    return zlib.crc32(node.name.encode()) % 3 != 0


ZOO = ["mlp", "resnet", "encoder", "math_ops", "operators", "torch_calls", "builtin_leaves"]


@pytest.mark.parametrize("case_name", ZOO)
@pytest.mark.parametrize("min_size", [1, 3])
def test_zoo_split_matches_torch_fx(case_name: str, min_size: int) -> None:
    case = BY_NAME[case_name]
    inputs, _ = example(case)
    result = _both(
        lambda: (trace(case, tfx), trace(case, fxkit)),
        inputs,
        _hashed,
        min_acc_module_size=min_size,
    )
    _assert_same_split(result, inputs)
    if min_size == 1:
        children = [name for name, _ in result["fxkit"][1].named_children()]
        assert any(name.startswith("_run_on_acc_") for name in children)


class Block(torch.nn.Module):
    """sin/cos supported, the rest not: acc and cpu runs of a few nodes each."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        a = torch.sin(x)
        b = torch.cos(x)
        c = a + b
        d = torch.sin(self.lin(c))
        e = torch.cos(d) * 2
        f = torch.sin(e)
        g = torch.cos(f)
        return torch.relu(g) + c


def _trig(node) -> bool:
    return node.op == "call_function" and node.target in (torch.sin, torch.cos)


def _pair(module_factory):
    def make():
        torch.manual_seed(0)
        m = module_factory()
        return tfx.symbolic_trace(m), fxkit.symbolic_trace(m)

    return make


def test_docstring_example_names_and_code() -> None:
    class Simple(torch.nn.Module):
        def forward(self, a):
            return torch.sin(a) + torch.cos(a)

    inputs = (torch.randn(3),)
    result = _both(_pair(Simple), inputs, _trig)
    _assert_same_split(result, inputs)
    split = result["fxkit"][1]
    assert [n for n, _ in split.named_children()] == ["_run_on_acc_0", "_run_on_cpu_1"]
    assert split.code == result["torch.fx"][1].code


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"min_acc_module_size": 2},
        {"min_acc_module_size": 3},
        {"min_acc_module_size": 10},
        {"skip_fusion": True},
        {"non_acc_submodule_name": "_cpu_part_"},
        {"return_tuple": True},
    ],
    ids=["default", "min2", "min3", "min10", "skip_fusion", "cpu_name", "return_tuple"],
)
def test_settings_match_torch_fx(kw: dict) -> None:
    inputs = (torch.randn(2, 4),)
    _assert_same_split(_both(_pair(Block), inputs, _trig, **kw), inputs)


class PassThrough(torch.nn.Module):
    def forward(self, x):
        return x, torch.sin(x)  # the output reads a placeholder directly


class ParamOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.w, torch.cos(torch.sin(x) + self.w)


class NoInputCall(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x) * 2


def _no_input_call_pair():
    pair = []
    for fx in (tfx, fxkit):
        gm = fx.symbolic_trace(NoInputCall())
        mul = next(n for n in gm.graph.nodes if n.op == "call_function" and n.name == "mul")
        with gm.graph.inserting_before(mul):
            ones = gm.graph.call_function(torch.ones, (3,))  # a call node without inputs
        mul.args = (mul.args[0], ones)
        gm.recompile()
        pair.append(gm)
    return tuple(pair)


@pytest.mark.parametrize("edge", ["pass_through", "param_out", "no_input_call"])
@pytest.mark.parametrize("support", ["trig", "ones"])
def test_edge_cases_match_torch_fx(edge: str, support: str) -> None:
    makers = {
        "pass_through": _pair(PassThrough),
        "param_out": _pair(ParamOut),
        "no_input_call": _no_input_call_pair,
    }
    predicate = _trig if support == "trig" else lambda n: n.target in (torch.ones, torch.sin)
    inputs = (torch.randn(3),)
    _assert_same_split(_both(makers[edge], inputs, predicate), inputs)


def test_min_acc_module_size_merges_small_acc_subgraphs() -> None:
    inputs = (torch.randn(2, 4),)
    gm = fxkit.symbolic_trace(Block())
    splitter = _splitter("fxkit", gm, inputs, _trig, min_acc_module_size=3)
    raw = splitter.put_nodes_into_subgraphs()
    assert [(sg.is_acc, len(sg.nodes)) for sg in raw] == [
        (True, 2),
        (False, 2),
        (True, 2),
        (False, 1),
        (True, 2),
        (False, 2),
    ]
    merged, printed = _quiet(splitter.remove_small_acc_subgraphs, raw)
    assert printed.count("Eliminating acc subgraph because it's smaller than the threshold") == 3
    assert [(sg.is_acc, len(sg.nodes)) for sg in merged] == [(False, 11)]


def test_hf_bert_layer_split_matches_torch_fx() -> None:
    from test_hf_models import _defaults_except, _model

    block = _model("bert").get_submodule("encoder.layer.0").eval()
    concrete = _defaults_except(block, {"hidden_states"})
    inputs = (torch.randn(2, 5, 32),)

    def make():
        return (
            tfx.symbolic_trace(block, concrete_args=concrete),
            fxkit.symbolic_trace(block, concrete_args=concrete),
        )

    def linear_and_pointwise(node) -> bool:
        return node.op == "call_module" or node.target in (operator.add, torch.tanh)

    result = _both(make, inputs, linear_and_pointwise, min_acc_module_size=2)
    _assert_same_split(result, inputs)


class NonTensorFlow(torch.nn.Module):
    def forward(self, x):
        n = x.size(0)  # non-tensor output
        y = torch.relu(x)
        z = y.reshape(n, -1)
        k = x.shape[1]
        return torch.sin(z) * k


@pytest.mark.parametrize("allow_non_tensor", [False, True], ids=["strict", "allow"])
@pytest.mark.parametrize("supported", ["size", "all_but_size", "all_but_mul"])
def test_non_tensor_rules_match_torch_fx(allow_non_tensor: bool, supported: str) -> None:
    predicates = {
        "size": lambda n: n.target in ("size", "reshape", operator.getitem, torch.sin),
        "all_but_size": lambda n: n.target != "size",
        "all_but_mul": lambda n: n.target is not operator.mul,
    }
    inputs = (torch.randn(3, 4),)
    result = _both(
        _pair(NonTensorFlow),
        inputs,
        predicates[supported],
        allow_non_tensor=allow_non_tensor,
    )
    t_acc = sorted(n.name for n in result["torch.fx"][0].acc_nodes)
    f_acc = sorted(n.name for n in result["fxkit"][0].acc_nodes)
    assert f_acc == t_acc
    _assert_same_split(result, inputs)
    if supported == "all_but_mul":  # size -> getitem -> reshape pass ints: one fusion group
        assert {n.name for n in result["fxkit"][0].fusions} >= {"size", "reshape"}


def test_node_events_match_torch_fx() -> None:
    inputs = (torch.randn(3, 4),)
    result = _both(_pair(NonTensorFlow), inputs, lambda n: n.target != "size")
    events = {}
    for lib, (splitter, _, gm) in result.items():
        finder = LIBS[lib][1].FxNetAccNodesFinder(gm, splitter.operator_support, False)
        finder()
        events[lib] = {k: sorted(v) for k, v in finder.tracker.to_dict().items()}
    assert events["fxkit"] == events["torch.fx"]
    assert any("acc_del|user_of_new_cpu_node" in e for v in events["fxkit"].values() for e in v)


def test_node_support_preview_matches_torch_fx() -> None:
    inputs = (torch.randn(2, 4),)
    reports = {}
    for lib, gm in zip(LIBS, _pair(Block)()):
        splitter = _splitter(lib, gm, inputs, _trig)
        reports[lib], printed = _quiet(splitter.node_support_preview)
        assert printed.strip() == reports[lib].strip()
    t_lines, f_lines = reports["torch.fx"].split("\n"), reports["fxkit"].split("\n")
    assert sorted(f_lines) == sorted(t_lines)
    assert f_lines.index("Unsupported node types in the model:") == t_lines.index(
        "Unsupported node types in the model:"
    )
    assert "torch.sin: ((torch.float32,), {})" in f_lines


def test_split_preview_matches_torch_fx() -> None:
    inputs = (torch.randn(2, 4),)
    reports = {}
    for lib, gm in zip(LIBS, _pair(Block)()):
        splitter = _splitter(lib, gm, inputs, _trig, min_acc_module_size=2)
        reports[lib], _ = _quiet(splitter.split_preview)
        assert not any(hasattr(n, "tag") for n in gm.graph.nodes)
    assert reports["fxkit"] == reports["torch.fx"]
    assert "Lowering and running succeed!" in reports["fxkit"]


def test_split_preview_reports_lowering_failure() -> None:
    class Failing(f_sb._SplitterBase):
        def _lower_model_to_backend(self, mod, inputs):
            raise RuntimeError("no kernel")

    gm = fxkit.symbolic_trace(Block())
    splitter = Failing(
        gm, (torch.randn(2, 4),), _support(f_ops, _trig), f_sb._SplitterSettingBase()
    )
    report, _ = _quiet(splitter.split_preview)
    assert "Run into an error during lowering!" in report
    assert "_find_culprit() function is not implemented" in report


def test_extend_acc_subgraph_matches_torch_fx() -> None:
    inputs = (torch.randn(2, 4),)
    on_cpu = {"sin", "cos", "add", "lin", "sin_1", "cos_1", "mul"}
    tags = {}
    for lib, gm in zip(LIBS, _pair(Block)()):
        splitter = _splitter(lib, gm, inputs, lambda n: n.op == "call_function")
        calls = [n for n in gm.graph.nodes if n.op in ("call_function", "call_module")]
        sb = LIBS[lib][1]
        splitter.tag(
            [
                sb.Subgraph(is_acc=False, nodes=[n for n in calls if n.name in on_cpu]),
                sb.Subgraph(is_acc=True, nodes=[n for n in calls if n.name not in on_cpu]),
            ]
        )
        assert splitter.find_parent_nodes_of_subgraph("_run_on_acc_1") == {
            n for n in calls if n.name in ("mul", "add")
        }
        splitter.extend_acc_subgraph("_run_on_acc_1")
        tags[lib] = _tags(gm)
    assert tags["fxkit"] == tags["torch.fx"]
    # mul, cos_1 and sin_1 move up into the acc subgraph; add waits for lin, which can't.
    moved = {k for k, v in tags["fxkit"].items() if v == "_run_on_acc_1"} & on_cpu
    assert moved == {"mul", "cos_1", "sin_1"}


def test_move_non_tensor_nodes_on_boundary_matches_torch_fx() -> None:
    inputs = (torch.randn(3, 4),)
    result = _both(
        _pair(NonTensorFlow),
        inputs,
        lambda n: n.target in ("size", torch.relu, torch.sin),
        allow_non_tensor=True,
        move_non_tensor_nodes_on_boundary=True,
    )
    _assert_same_split(result, inputs)


def test_generate_split_results_and_inputs() -> None:
    inputs = (torch.randn(2, 4),)
    results = {}
    for lib, gm in zip(LIBS, _pair(Block)()):
        splitter = _splitter(lib, gm, inputs, _trig)
        results[lib], _ = _quiet(splitter.generate_split_results)
    t_res, f_res = results["torch.fx"], results["fxkit"]
    assert isinstance(f_res, f_sb.SplitResult)
    assert f_res.non_acc_submodule_prefix == "_run_on_cpu_"
    assert list(f_res.submodule_inputs) == list(t_res.submodule_inputs)
    for name, args in f_res.submodule_inputs.items():
        for a, b in zip(_outputs(args), _outputs(t_res.submodule_inputs[name])):
            torch.testing.assert_close(a, b)


def test_max_acc_splits_raises_value_error() -> None:
    inputs = (torch.randn(2, 4),)
    for lib, gm in zip(LIBS, _pair(Block)()):
        splitter = _splitter(lib, gm, inputs, _trig, max_acc_splits=2)
        with pytest.raises(ValueError, match="Cannot fulfill max_acc_splits limit"):
            _quiet(splitter.generate_split_results)


def test_generate_inputs_for_submodules_deepcopy() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
    x = torch.randn(2, 3)
    ours = f_sb.generate_inputs_for_submodules(model, (x,), ["0", "1"], deepcopy=True)
    theirs = t_sb.generate_inputs_for_submodules(model, (x,), ["0", "1"], deepcopy=True)
    assert list(ours) == list(theirs) == ["0", "1"]
    torch.testing.assert_close(ours["1"][0], theirs["1"][0])
    assert ours["0"][0] is not x
    assert not model[0]._forward_pre_hooks


def test_generate_inputs_removes_hooks_on_error() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(RuntimeError):
        f_sb.generate_inputs_for_submodules(model, (torch.randn(2, 4),), ["0"])
    assert not model[0]._forward_pre_hooks


def test_accepts_torch_fx_graph_module() -> None:
    inputs = (torch.randn(2, 4),)
    theirs_gm, ours_from_torch = _pair(Block)()[0], _pair(Block)()[0]
    t_split, _ = _quiet(_splitter("torch.fx", theirs_gm, inputs, _trig))
    f_split, _ = _quiet(_splitter("fxkit", ours_from_torch, inputs, _trig))
    assert _tags(ours_from_torch) == _tags(theirs_gm)
    assert [n for n, _ in f_split.named_children()] == [n for n, _ in t_split.named_children()]
    torch.testing.assert_close(f_split(*inputs), theirs_gm(*inputs))


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", list(LIBS))
def test_rejects_plain_module(lib: str) -> None:
    with pytest.raises(AssertionError, match="Expected GraphModule"):
        _splitter(lib, Block(), (torch.randn(2, 4),), _trig)


@pytest.mark.parametrize("lib", list(LIBS))
def test_dependency_cycle_is_internal_error(lib: str) -> None:
    gm = _pair(Block)()[0 if lib == "torch.fx" else 1]
    splitter = _splitter(lib, gm, (torch.randn(2, 4),), _trig)
    nodes = {n.name: n for n in gm.graph.nodes}
    splitter.deps[nodes["sin"]].add(nodes["add"])  # add reads sin: now they wait on each other
    with pytest.raises(LIBS[lib][1].FxNetSplitterInternalError, match="Subgraph can't be empty"):
        splitter.put_nodes_into_subgraphs()


@pytest.mark.parametrize("lib", list(LIBS))
def test_tagging_twice_is_internal_error(lib: str) -> None:
    gm = _pair(Block)()[0 if lib == "torch.fx" else 1]
    splitter = _splitter(lib, gm, (torch.randn(2, 4),), _trig)
    subgraphs = splitter.put_nodes_into_subgraphs()
    splitter.tag(subgraphs)
    with pytest.raises(LIBS[lib][1].FxNetSplitterInternalError, match="was already tagged"):
        splitter.tag(subgraphs)


@pytest.mark.parametrize("lib", list(LIBS))
def test_wrong_sample_input_fails_in_shape_prop(lib: str) -> None:
    gm = _pair(Block)()[0 if lib == "torch.fx" else 1]
    with pytest.raises(RuntimeError):
        _splitter(lib, gm, (torch.randn(2, 5),), _trig)


# -- random DAGs ----------------------------------------------------------------------------

_UNARY = (torch.sin, torch.cos, torch.neg)
_BINARY = (operator.add, operator.mul, torch.maximum)


def _random_dag(fx, spec):
    g = fx.Graph()
    values = [g.placeholder("x"), g.placeholder("y")]
    for kind, i, j in spec:
        a, b = values[i % len(values)], values[j % len(values)]
        if kind < len(_UNARY):
            values.append(g.call_function(_UNARY[kind], (a,)))
        else:
            values.append(g.call_function(_BINARY[kind - len(_UNARY)], (a, b)))
    used = {n for v in values for n in v.all_input_nodes}
    g.output(tuple(v for v in values[2:] if v not in used) or values[-1])
    return fx.GraphModule(torch.nn.Module(), g)


_spec = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 1000), st.integers(0, 1000)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=30, deadline=None)
@given(spec=_spec, support_mask=st.integers(0, 2**6 - 1), min_size=st.integers(1, 3))
def test_random_dags_split_like_torch_fx(spec, support_mask: int, min_size: int) -> None:
    ops = _UNARY + _BINARY

    def supported(node) -> bool:
        return node.target in ops and bool(support_mask >> ops.index(node.target) & 1)

    inputs = (torch.randn(3), torch.randn(3))
    result = _both(
        lambda: (_random_dag(tfx, spec), _random_dag(fxkit, spec)),
        inputs,
        supported,
        min_acc_module_size=min_size,
    )
    _assert_same_split(result, inputs)
    split = result["fxkit"][1]
    split.graph.lint()
    for _, child in split.named_children():
        child.graph.lint()
