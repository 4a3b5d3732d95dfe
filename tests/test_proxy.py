"""Proxy, Attribute, TracerBase/GraphAppendingTracer, create_arg and traceback meta."""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import operator
import threading

import pytest
import torch
import torch.fx as tfx
from hypothesis import given, settings
from hypothesis import strategies as hst

import fxkit
from fxkit import traceback as fx_traceback
from fxkit._symbolic_trace import Tracer
from fxkit.proxy import (
    _COPY_META_FIELDS,
    Attribute,
    GraphAppendingTracer,
    Proxy,
    Scope,
    ScopeContextManager,
    TraceError,
    TracerBase,
)


def fresh() -> tuple:
    g = fxkit.Graph()
    t = GraphAppendingTracer(g)
    return g, Proxy(g.placeholder("x"), t), Proxy(g.placeholder("y"), t)


def torch_fresh() -> tuple:
    g = tfx.Graph()
    t = tfx.proxy.GraphAppendingTracer(g)
    return g, tfx.Proxy(g.placeholder("x"), t), tfx.Proxy(g.placeholder("y"), t)


BINARY = [
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.mod, operator.pow, operator.lshift, operator.rshift, operator.and_,
    operator.or_, operator.xor, operator.matmul, operator.eq, operator.ne, operator.lt,
    operator.gt, operator.le, operator.ge, operator.getitem,
]  # fmt: skip
UNARY = [operator.neg, operator.pos, operator.invert, operator.abs]


def _rows(g: object) -> list:
    return [(n.op, n.target, n.name, tuple(getattr(a, "name", a) for a in n.args)) for n in g.nodes]  # type: ignore[attr-defined]


@pytest.mark.parametrize("op", BINARY, ids=lambda f: f.__name__)
def test_binary_and_reflected_operators_match_torch_fx(op: object) -> None:
    rows = []
    for make in (fresh, torch_fresh):
        g, x, y = make()
        op(x, y)  # type: ignore[operator]
        op(x, 2)  # type: ignore[operator]
        if op not in (operator.getitem, operator.eq, operator.ne, operator.lt, operator.gt,
                      operator.le, operator.ge):  # fmt: skip
            op(3, y)  # type: ignore[operator]  # reflected
        rows.append(_rows(g))
    assert rows[0] == rows[1]
    assert rows[0][2][1] is op


@pytest.mark.parametrize("op", UNARY, ids=lambda f: f.__name__)
def test_unary_operators(op: object) -> None:
    g, x, _ = fresh()
    out = op(x)  # type: ignore[operator]
    assert out.node.target is op and out.node.args == (x.node,)


def test_in_place_operator_falls_back_like_torch_fx() -> None:
    g, x, y = fresh()
    x += y
    assert x.node.target is operator.add  # no __iadd__: Python rebinds to x + y


def test_proxy_is_hashable_despite_eq() -> None:
    g, x, y = fresh()
    assert len({x, y, x}) == 2


def test_attribute_becomes_call_method_or_getattr() -> None:
    g, x, _ = fresh()
    r = x.relu()
    assert (r.node.op, r.node.target) == ("call_method", "relu")
    a = x.shape
    assert isinstance(a, Attribute) and len(g.nodes) == 3  # nothing recorded yet
    s = a[0]
    assert [n.target for n in g.nodes][-2:] == [getattr, operator.getitem]
    assert s.node.args[0] is a.node and a.node is a.node  # created once
    k = x.keys()
    assert (k.node.op, k.node.target) == ("call_method", "keys")


def test_torch_function_records_call_function_and_methods() -> None:
    g, x, y = fresh()
    a = torch.add(x, y, alpha=2)
    b = torch.nn.functional.relu(a)
    c = Proxy.__torch_function__(torch.Tensor.add, (), (b, 1))
    d = torch.cat([a, b], dim=0)
    nodes = list(g.nodes)[2:]
    assert [(n.op, n.target, n.name) for n in nodes] == [
        ("call_function", torch.add, "add"),
        ("call_function", torch.nn.functional.relu, "relu"),
        ("call_method", "add", "add_1"),
        ("call_function", torch.cat, "cat"),
    ]
    assert a.node.kwargs == {"alpha": 2} and d.node.args[0] == [a.node, b.node]
    assert c.node.args == (b.node, 1)


def test_torch_function_refuses_two_tracers() -> None:
    _, x, _ = fresh()
    _, z, _ = fresh()
    assert x.tracer is not z.tracer
    with pytest.raises(RuntimeError, match="multiple different tracers"):
        torch.add(x, z)


def test_unpacking_uses_bytecode_arity() -> None:
    g, x, _ = fresh()
    a, b, c = x
    assert [n.args[1] for n in list(g.nodes)[2:]] == [0, 1, 2]
    with pytest.raises(TraceError, match="cannot be iterated"):
        list(x)


def test_bool_len_errors_are_trace_errors_with_location() -> None:
    g, x, _ = fresh()
    with pytest.raises(TraceError, match="control flow") as info:
        if x > 0:
            pass
    assert __file__ in str(info.value) and "if x > 0:" in str(info.value)
    with pytest.raises(RuntimeError, match="'len' is not supported"):
        len(x)


def test_trace_asserts_records_assert_fn() -> None:
    class T(Tracer):
        trace_asserts = True

    # exec'd: pytest rewrites the asserts of test modules into other bytecode
    ns: dict = {}
    exec("def f(x):\n    assert x.sum() > 0, 'positive'\n    return x\n", ns)
    f = ns["f"]
    g = T().trace(f)
    assert fxkit.proxy.assert_fn in [n.target for n in g.nodes]
    with pytest.raises(TraceError):
        Tracer().trace(f)


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Box:
    value: object
    scale: float = 1.0


Pt = collections.namedtuple("Pt", "a b")


def test_create_arg_containers_and_constants() -> None:
    g, x, _ = fresh()
    t = x.tracer
    arg = t.create_arg(
        (
            [x, 1],
            {"k": x, 2: "v"},
            slice(x, None, 2),
            range(3),
            torch.float32,
            Color.RED,
            ...,
            Pt(x, 3),
        )
    )
    assert arg[0] == [x.node, 1] and arg[1] == {"k": x.node, 2: "v"}
    assert arg[2] == slice(x.node, None, 2) and arg[3] == range(3)
    assert arg[4:7] == (torch.float32, Color.RED, ...)
    assert isinstance(arg[7], Pt) and arg[7].a is x.node
    box = t.create_arg(Box(x, 2.0))
    assert (box.op, box.target, box.kwargs) == (
        "call_function",
        Box,
        {"value": x.node, "scale": 2.0},
    )

    class Custom:
        def __fx_create_arg__(self, tracer: TracerBase) -> object:
            return ("custom", tracer is t)

    assert t.create_arg(Custom()) == ("custom", True)
    with pytest.raises(NotImplementedError, match="argument of type"):
        t.create_arg(object())
    with pytest.raises(RuntimeError, match="Keys for dictionaries .* cannot contain a Node"):
        t.create_arg({(x, 1): 2})


def test_tracer_create_arg_module_state() -> None:
    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("buf", torch.ones(2))
            self.plain = torch.zeros(2)

    tracer = Tracer()
    m = M()
    tracer.root = m
    tracer.graph = fxkit.Graph()
    assert tracer.create_arg(m.lin.weight).target == "lin.weight"
    assert tracer.create_arg(m.buf).target == "buf"
    assert tracer.create_arg(m.lin).target == "lin"
    tracer.tensor_attrs = {m.plain: "plain"}
    assert tracer.create_arg(m.plain).target == "plain"
    const = tracer.create_arg(torch.arange(3))
    assert const.target == "_tensor_constant0" and torch.equal(m._tensor_constant0, torch.arange(3))
    nt = tracer.create_arg(Pt(1, 2))
    assert (nt.op, nt.target, nt.args) == ("call_function", Pt, (1, 2))


def test_create_proxy_checks_hook_results() -> None:
    class Broken(Tracer):
        def create_arg(self, a: object) -> object:
            return list(a) if isinstance(a, tuple) else a  # type: ignore[call-overload]

    t = Broken()
    t.graph = fxkit.Graph()
    with pytest.raises(AssertionError, match="must return a tuple"):  # torch.fx's type
        t.create_proxy("call_function", torch.relu, (1,), {})
    assert len(t.graph.nodes) == 0

    class TorchBroken(tfx.Tracer):
        def create_arg(self, a: object) -> object:
            return list(a) if isinstance(a, tuple) else a  # type: ignore[call-overload]

    ref = TorchBroken()
    ref.graph = tfx.Graph()
    with pytest.raises(AssertionError, match="Expected args_ to be tuple"):
        ref.create_proxy("call_function", torch.relu, (1,), {})


def test_scope_context_manager_restores() -> None:
    scope = Scope("", None)
    with ScopeContextManager(scope, Scope("a.b", torch.nn.Linear)) as s:
        assert (s.module_path, s.module_type) == ("a.b", torch.nn.Linear)
    assert (scope.module_path, scope.module_type) == ("", None)


def test_graph_appending_tracer_has_no_stack_traces_and_module_stack() -> None:
    g, x, _ = fresh()
    tracer = x.tracer
    assert isinstance(tracer, GraphAppendingTracer) and tracer.module_stack == {}
    y = x + 1
    assert "stack_trace" not in y.node.meta and "nn_module_stack" not in y.node.meta
    tracer.module_stack["sub"] = ("sub", torch.nn.Linear)
    z = y * 2
    assert z.node.meta["nn_module_stack"] == {"sub": ("sub", torch.nn.Linear)}
    assert z.node.meta["nn_module_stack"] is not tracer.module_stack


def test_deepcopy_and_repr() -> None:
    g, x, _ = fresh()
    c = copy.deepcopy(x)
    assert isinstance(c, Proxy) and c.node.name == "x" and repr(x) == "Proxy(x)"


def test_check_mutable_operations() -> None:
    g, x, _ = fresh()
    x.tracer.check_mutable_operations = True
    torch.relu(x)
    with pytest.raises(RuntimeError):
        torch.relu_(x)


# --- traceback meta -------------------------------------------------------------------------


def test_preserve_node_meta_copies_fields() -> None:
    g, x, _ = fresh()
    assert not fx_traceback.has_preserved_node_meta()
    with fx_traceback.preserve_node_meta():
        fx_traceback.set_stack_trace(["line one\n", "line two"])
        meta = fx_traceback.get_current_meta()
        meta["custom"] = {"tag": 1}
        meta["not_copied"] = True
        y = x + 1
        assert fx_traceback.format_stack() == ["line one\nline two"]
    assert y.node.meta["stack_trace"] == "line one\nline two"
    assert y.node.meta["custom"] == {"tag": 1} and "not_copied" not in y.node.meta
    assert "stack_trace" not in fx_traceback.get_current_meta()  # restored on exit
    assert "custom" in _COPY_META_FIELDS


def test_set_current_meta_records_node_source() -> None:
    g, x, _ = fresh()
    src = (x * 2).node
    src.meta["nn_module_stack"] = {"m": ("m", torch.nn.Module)}
    with fx_traceback.preserve_node_meta(), fx_traceback.set_current_meta(src, "my_pass"):
        made = (x + 3).node
    (origin,) = made.meta["from_node"]
    assert (origin.name, origin.pass_name, origin.graph_id) == ("mul", "my_pass", id(g))
    assert made.meta["nn_module_stack"] == src.meta["nn_module_stack"]
    again = fx_traceback.NodeSource._from_dict(origin.to_dict())
    assert again == origin and hash(again) == hash(origin)
    assert "name=mul, pass_name=my_pass, action=create" in origin.print_readable()
    with pytest.raises(AssertionError, match="Expected NodeSourceAction"):  # torch.fx's type
        fx_traceback.NodeSource(src, action=["create"])
    with pytest.raises(AssertionError, match="Expected a dict"):
        fx_traceback.NodeSource._from_dict([1])  # type: ignore[arg-type]


def test_preserve_flag_is_per_thread() -> None:
    seen = []
    with fx_traceback.preserve_node_meta():
        t = threading.Thread(target=lambda: seen.append(fx_traceback.has_preserved_node_meta()))
        t.start()
        t.join()
        assert fx_traceback.has_preserved_node_meta()
    assert seen == [False]


# --- property: random expressions record the same graphs as torch.fx ------------------------

_OPS = [operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.relu, "exp"]


@settings(max_examples=40, deadline=None)
@given(
    hst.lists(
        hst.tuples(hst.integers(0, len(_OPS) - 1), hst.integers(0, 5), hst.integers(-3, 3)),
        max_size=12,
    )
)
def test_random_expressions_match_torch_fx(program: list) -> None:
    def run(x: object, y: object) -> list:
        vals = [x, y]
        for op_i, pick, const in program:
            op = _OPS[op_i]
            a = vals[pick % len(vals)]
            if op is operator.neg or op is torch.relu:
                vals.append(op(a))
            elif op == "exp":
                vals.append(a.exp())  # type: ignore[attr-defined]
            elif const >= 0:
                vals.append(op(a, vals[(pick + 1) % len(vals)]))
            else:
                vals.append(op(const, a))
        return vals

    ours, theirs = fresh(), torch_fresh()
    run(ours[1], ours[2])
    run(theirs[1], theirs[2])
    assert _rows(ours[0]) == _rows(theirs[0])


def test_annotate_fn_and_provenance_json_like_torch_fx():
    import torch.fx.traceback as tfb

    from fxkit import traceback as fb

    @fb.annotate_fn({"pp_stage": 1})
    def stage(x):
        assert fb.get_current_meta()["custom"] == {"pp_stage": 1}
        return x + 1

    with fb.preserve_node_meta():
        assert stage(1) == 2
        assert "custom" not in fb.get_current_meta()

    gm = fxkit.symbolic_trace(lambda x: torch.relu(x) + 1)
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    relu.meta["from_node"] = [fb.NodeSource(relu, "p", fb.NodeSourceAction.CREATE)]
    got = fb.get_graph_provenance_json(gm.graph)
    assert set(got) == {"relu", "add"} and got["add"] == []
    assert got["relu"][0]["pass_name"] == "p"
    theirs = tfb.get_graph_provenance_json(
        torch.fx.symbolic_trace(lambda x: torch.relu(x) + 1).graph
    )
    assert set(theirs) == set(got)


def test_cse_pass_exposes_torch_fx_op_sets():
    from torch.fx.passes.dialect.common import cse_pass as theirs

    from fxkit.passes.dialect.common import cse_pass as ours

    assert ours.rand_ops == theirs.rand_ops and ours.inplace_ops == theirs.inplace_ops
    assert ours.get_CSE_banned_ops() == theirs.get_CSE_banned_ops()
