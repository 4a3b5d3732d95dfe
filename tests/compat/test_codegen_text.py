"""gm.code is torch.fx's text: the same graph, built through each library's Graph API (or
traced by each), generates byte-identical source, and both generated modules compute the
same values. The one listed difference: fxkit's own helpers are spelled ``fxkit...`` where
torch.fx's are ``torch.fx...`` (``wrap`` lines, ``_assert_is_none`` guards)."""

from __future__ import annotations

import operator
import typing
from typing import Dict, List, Optional, Tuple

import pytest
import torch
import torch.fx as tfx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxkit as fx


def package_swapped(code: str) -> str:
    return code.replace("fxkit._symbolic_trace.", "torch.fx._symbolic_trace.")


def both(build, root_fn=None):
    """``build(G)`` with each library; returns (fxkit GraphModule, torch.fx GraphModule)."""
    ours = fx.GraphModule(root_fn() if root_fn else torch.nn.Module(), build(fx))
    theirs = tfx.GraphModule(root_fn() if root_fn else torch.nn.Module(), build(tfx))
    return ours, theirs


def assert_same_code(ours, theirs):
    assert ours.code == theirs.code
    a = ours.graph.python_code("self")
    b = theirs.graph.python_code("self")
    assert a.src == b.src
    assert a._lineno_map == b._lineno_map and a._prologue_start == b._prologue_start
    assert sorted(a.globals) == sorted(b.globals)


# --- 1. frees ----------------------------------------------------------------------------------


def build_frees(G):
    g = G.Graph()
    x, y = g.placeholder("x"), g.placeholder("y")
    a = g.call_function(torch.relu, (x,))
    g.call_function(torch.tanh, (a,))  # never read: freed on its own line
    b = g.call_function(operator.add, (a, y))  # last use of a and y: `a = y = None`
    c = g.call_method("neg", (b,))
    g.output((c, x))  # x is returned, so never freed
    return g


def test_frees_are_none_assignments_after_the_last_use():
    ours, theirs = both(build_frees)
    assert_same_code(ours, theirs)
    assert "tanh = torch.tanh(relu);  tanh = None" in ours.code
    assert "add = relu + y;  relu = y = None" in ours.code
    assert ours.code.startswith("\n\n\ndef forward(self, x, y):\n") and ours.code.endswith("\n    ")
    x, y = torch.randn(3), torch.randn(3)
    for o, t in zip(ours(x, y), theirs(x, y)):
        assert torch.equal(o, t)


# --- 2. submodules and attributes ---------------------------------------------------------------


def make_root():
    torch.manual_seed(0)
    root = torch.nn.Module()
    root.layer1 = torch.nn.Module()
    root.layer1.conv = torch.nn.Linear(3, 3)
    root.sub = torch.nn.Sequential(torch.nn.Linear(3, 3))
    root.sub[0].register_buffer("scale", torch.full((3,), 2.0))
    root.w = torch.nn.Parameter(torch.ones(3))
    return root


def build_paths(G):
    g = G.Graph()
    x = g.placeholder("x")
    a = g.call_module("layer1.conv", (x,))
    b = g.call_module("sub.0", (a,))
    s = g.get_attr("sub.0.scale")
    w = g.get_attr("w")
    g.output(g.call_function(torch.addcmul, (b, s, w)))
    return g


def test_submodules_and_attributes_are_attribute_paths():
    ours, theirs = both(build_paths, make_root)
    assert_same_code(ours, theirs)
    assert "layer1_conv = self.layer1.conv(x)" in ours.code
    assert 'sub_0 = getattr(self.sub, "0")(layer1_conv)' in ours.code
    assert 'sub_0_scale = getattr(self.sub, "0").scale' in ours.code
    x = torch.randn(2, 3)
    assert torch.equal(ours(x), theirs(x))


def test_a_keyword_path_atom_is_reached_with_getattr():
    # torch.fx writes `self.sub.class`, a SyntaxError; fxkit writes code that runs.
    root = torch.nn.Module()
    root.sub = torch.nn.Module()
    root.sub.add_module("class", torch.nn.ReLU())
    g = fx.Graph()
    g.output(g.call_module("sub.class", (g.placeholder("x"),)))
    gm = fx.GraphModule(root, g)
    assert 'getattr(self.sub, "class")(x)' in gm.code
    assert gm(torch.tensor([-1.0])).item() == 0.0


# --- 3. in-place operators ----------------------------------------------------------------------

IN_PLACE = [
    (operator.iadd, 7, 3), (operator.isub, 7, 3), (operator.imul, 7, 3),
    (operator.itruediv, 7, 2), (operator.ifloordiv, 7, 2), (operator.imod, 7, 3),
    (operator.ipow, 7, 2), (operator.ilshift, 7, 2), (operator.irshift, 7, 1),
    (operator.iand, 6, 3), (operator.ior, 6, 3), (operator.ixor, 6, 3),
]  # fmt: skip


@pytest.mark.parametrize("op,a,b", IN_PLACE, ids=[o.__name__ for o, _, _ in IN_PLACE])
def test_in_place_operators_rebind_their_operand(op, a, b):
    def build(G):
        g = G.Graph()
        x, y = g.placeholder("a"), g.placeholder("b")
        g.call_function(op, (x, y))
        g.output(x)  # an immutable int: only rebinding `a` makes this the result
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    assert ours(a, b) == theirs(a, b) == op(a, b)


def test_imatmul_and_setitem_statements():
    def build(G):
        g = G.Graph()
        x, y = g.placeholder("x"), g.placeholder("y")
        m = g.call_function(operator.imatmul, (x, y))
        g.call_function(operator.setitem, (m, 0, 5.0))
        g.output(m)
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    assert (
        "x @= y;  imatmul = x" in ours.code and "imatmul[0] = 5.0;  setitem = imatmul" in ours.code
    )
    x, y = torch.eye(2), torch.full((2, 2), 2.0)
    assert torch.equal(ours(x.clone(), y), theirs(x.clone(), y))


# --- 4. operator overloads ----------------------------------------------------------------------


def test_op_overloads_keep_their_overload_and_packets_print_as_packets():
    def build(G):
        g = G.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.ops.aten.relu.default, (x,))
        b = g.call_function(torch.ops.aten.add.Tensor, (a, x), {"alpha": 2})
        c = g.call_function(torch.ops.aten.neg, (b,))
        g.output(g.call_function(torch.ops.aten.sum.dim_IntList, (c, [0])))
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    assert "relu_default = torch.ops.aten.relu.default(x)" in ours.code
    assert "neg = torch.ops.aten.neg(add_tensor)" in ours.code
    x = torch.randn(2, 3)
    assert torch.equal(ours(x), theirs(x))


# --- 5. annotations -----------------------------------------------------------------------------

ANNOTATIONS = [
    List[float], "Foo", list[str], Optional[int], int | None, Tuple[()], Dict[str, int],
    dict[str, list[int]], torch.Tensor, typing.Any, Tuple[int, ...], float,
]  # fmt: skip


@pytest.mark.parametrize("ann", ANNOTATIONS, ids=repr)
def test_annotations_as_torch_fx_writes_them(ann):
    def build(G):
        g = G.Graph()
        x = g.placeholder("x", type_expr=ann)
        y = g.call_function(operator.getitem, (x, 0), type_expr=ann)
        g.output(y, type_expr=ann)
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    compile(ours.code, "<check>", "exec")


def test_annotation_spellings():
    def build(G):
        g = G.Graph()
        a = g.placeholder("a", type_expr=List[float])
        b = g.placeholder("b", type_expr=list[str])
        c = g.placeholder("c", type_expr="Foo", default_value=None)
        g.output((a, b, c), type_expr=list[str])
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    header = (
        "def forward(self, a : typing_List[float], b : list[str], c : _Foo_ = None) -> list[str]:"
    )
    assert header in ours.code
    assert ours([1.0], ["s"]) == ([1.0], ["s"], None)


# --- 6. wrap lines ------------------------------------------------------------------------------


def scaled_shift(x, k):
    return x * k + 1


fx.wrap("scaled_shift")
tfx.wrap("scaled_shift")


def uses_wrapped(x):
    return scaled_shift(x, 2) - 1


def test_wrapped_calls_emit_wrap_lines_and_run():
    ours, theirs = fx.symbolic_trace(uses_wrapped), tfx.symbolic_trace(uses_wrapped)
    assert package_swapped(ours.code) == theirs.code
    assert ours.code.startswith('\nfxkit._symbolic_trace.wrap("')
    assert '")\n\ndef forward(self, x):\n' in ours.code
    x = torch.randn(3)
    assert torch.equal(ours(x), theirs(x))
    # The generated module registers the wrap, so tracing the traced module keeps the call.
    again = fx.symbolic_trace(ours)
    assert [n.op for n in again.graph.nodes] == [n.op for n in ours.graph.nodes]
    assert package_swapped(again.code) == theirs.code


def test_a_node_marked_wrapped_by_hand_gets_a_wrap_line():
    def build(G):
        g = G.Graph()
        n = g.call_function(scaled_shift, (g.placeholder("x"), 3))
        n.meta["is_wrapped"] = True
        g.output(n)
        return g

    ours, theirs = both(build)
    assert package_swapped(ours.code) == theirs.code
    assert ours(1) == theirs(1) == 4


# --- 7. _custom_fx_repr_fn ----------------------------------------------------------------------


class Tagged:
    """A constant whose repr is valid code; torch.fx's codegen writes repr(), not the
    ``_custom_fx_repr_fn`` text (that one is for print(graph))."""

    def __repr__(self) -> str:
        return "'tagged'"

    def _custom_fx_repr_fn(self) -> str:
        return "TAGGED"


def test_custom_fx_repr_fn_is_not_used_in_code():
    def build(G):
        g = G.Graph()
        g.output(g.call_function(operator.add, (g.placeholder("x"), Tagged())))
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    assert "add = x + 'tagged'" in ours.code and "TAGGED" not in ours.code
    assert ours("a-") == theirs("a-") == "a-tagged"


# --- 8. everything else: names, constants, verbose and expanded signatures -----------------------


def helper_fn(x, *, k=1):
    return x + k


def build_misc(G):
    g = G.Graph()
    x = g.placeholder("x")
    getattr_1 = g.placeholder("getattr")  # a builtin's name: renamed, parameter kept
    rest = g.placeholder("*args")
    a = g.call_function(helper_fn, (x,), {"k": 2})
    b = g.call_function(getattr, (a, "shape"))
    c = g.call_function(operator.not_, (b,))
    d = g.call_function(torch.cat, ([a, a],), {"dim": 0})
    e = g.call_function(
        torch.full, ((2,), float("inf")), {"dtype": torch.float16, "device": torch.device("cpu")}
    )
    f = g.call_function(operator.getitem, (d, (slice(None, 2), Ellipsis)))
    g.output({"c": c, "e": e, "f": f, "rest": rest, "g": getattr_1, "none": None})
    return g


def test_names_constants_and_globals():
    ours, theirs = both(build_misc)
    assert_same_code(ours, theirs)
    x = torch.randn(3)
    a, b = ours(x, 1, 2, 3), theirs(x, 1, 2, 3)  # getattr=1, args=(2, 3)
    assert a.keys() == b.keys() and a["rest"] == b["rest"] and torch.equal(a["f"], b["f"])


def test_verbose_and_expanded_signatures():
    def build(G):
        g = G.Graph()
        x = g.placeholder("x")
        x.meta["desc"] = "the input"
        a = g.call_function(torch.relu, (x,))
        a.meta["val"] = torch.empty(2, 3)
        a.meta["stack_trace"] = 'File "m.py", line 3, in forward\n    return relu(x)'
        out = g.output((a, x))
        out.meta["desc"] = ["relu", "input"]
        return g

    ours, theirs = build(fx), build(tfx)
    for options in (
        {"verbose": True},
        {"expanded_def": True},
        {"verbose": True, "include_stride": True, "include_device": True},
        {"verbose": True, "additional_meta": ["desc"]},
        {"record_func": True},
    ):
        a, b = ours.python_code("self", **options), theirs.python_code("self", **options)
        assert a.src == b.src and a._lineno_map == b._lineno_map


def test_body_transformer_sees_torch_fx_pieces():
    seen = {}

    def build(G, tag):
        g = build_frees(G)

        def transformer(body):
            seen[tag] = list(body)
            return ["x = x * 2\n", *body]

        g._codegen._body_transformer = transformer
        return g

    a, b = build(fx, "ours").python_code("self"), build(tfx, "theirs").python_code("self")
    assert "".join(seen["ours"]) == "".join(seen["theirs"])
    assert a.src == b.src and a._lineno_map == b._lineno_map


# --- property: random graphs ---------------------------------------------------------------------

UNARY = [torch.relu, torch.neg, operator.neg, torch.ops.aten.sin.default, torch.ops.aten.cos]
BINARY = [operator.add, operator.mul, operator.sub, torch.add, torch.ops.aten.mul.Tensor]
IN_PLACE_T = [operator.iadd, operator.imul]
TYPES = [None, torch.Tensor, List[int], "T", Optional[torch.Tensor]]


def random_program(data):
    """A recipe (list of steps) that both libraries turn into the same graph."""
    n_in = data.draw(st.integers(1, 3))
    steps = []
    for i in range(data.draw(st.integers(1, 12))):
        avail = n_in + i
        kind = data.draw(st.sampled_from(["u", "b", "i", "m", "mod", "attr", "kw", "c", "ix"]))
        pick = st.integers(0, avail - 1)
        ann = data.draw(st.sampled_from(range(len(TYPES))))
        if kind == "u":
            steps.append(
                (kind, data.draw(st.sampled_from(range(len(UNARY)))), data.draw(pick), ann)
            )
        elif kind in ("b", "i"):
            table = BINARY if kind == "b" else IN_PLACE_T
            op = data.draw(st.sampled_from(range(len(table))))
            steps.append((kind, op, (data.draw(pick), data.draw(pick)), ann))
        elif kind == "c":
            const = data.draw(st.one_of(st.floats(allow_nan=True), st.integers(-5, 5)))
            steps.append((kind, const, data.draw(pick), ann))
        else:
            steps.append((kind, data.draw(st.booleans()), data.draw(pick), ann))
    outs = data.draw(st.lists(st.integers(0, n_in + len(steps) - 1), min_size=1, max_size=3))
    in_types = [data.draw(st.sampled_from(range(len(TYPES)))) for _ in range(n_in)]
    return n_in, in_types, steps, outs


def build_random(G, recipe):
    n_in, in_types, steps, outs = recipe
    g = G.Graph()
    vals = [g.placeholder(f"in{i}", type_expr=TYPES[t]) for i, t in enumerate(in_types)]
    for kind, op, src, ann in steps:
        t = TYPES[ann]
        if kind == "u":
            n = g.call_function(UNARY[op], (vals[src],), type_expr=t)
        elif kind == "b":
            n = g.call_function(BINARY[op], (vals[src[0]], vals[src[1]]), type_expr=t)
        elif kind == "i":
            n = g.call_function(IN_PLACE_T[op], (vals[src[0]], vals[src[1]]), type_expr=t)
        elif kind == "m":
            n = g.call_method("clamp", (vals[src],), {"min": -1.0}, type_expr=t)
        elif kind == "mod":
            n = g.call_module("sub.0", (vals[src],), type_expr=t)
        elif kind == "attr":
            n = g.call_function(operator.mul, (vals[src], g.get_attr("w")), type_expr=t)
        elif kind == "c":
            n = g.call_function(operator.add, (vals[src], op), type_expr=t)
        elif kind == "ix":
            key = (slice(0, None, 1) if op else slice(None), Ellipsis)
            n = g.call_function(operator.getitem, (vals[src], key), type_expr=t)
        else:
            n = g.call_function(torch.softmax, (vals[src],), {"dim": 0, "dtype": torch.float32})
        vals.append(n)
    g.output(tuple(vals[i] for i in outs) if len(outs) > 1 else vals[outs[0]])
    return g


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_graphs_generate_the_same_code_and_values(data):
    recipe = random_program(data)
    ours, theirs = both(lambda G: build_random(G, recipe), make_root)
    assert_same_code(ours, theirs)
    torch.manual_seed(0)
    inputs = [torch.randn(3) for _ in range(recipe[0])]
    got, want = run(ours, inputs), run(theirs, inputs)
    if isinstance(want, BaseException):  # e.g. an in-place op on an aliasing view
        assert type(got) is type(want)
        return
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True)


def run(gm, inputs):
    try:
        return gm(*[t.clone() for t in inputs])
    except RuntimeError as e:
        return e


def test_custom_codegen_with_an_older_signature_and_repr():
    def build(G):
        class TupleOut(G.graph.CodeGen):
            def generate_output(self, output_args):  # no descs / repr_fn keywords
                return f"return ({output_args!r},)"

            def gen_fn_def(self, free_vars, maybe_return_annotation):
                return super().gen_fn_def(free_vars, maybe_return_annotation) + "  # custom"

        g = build_frees(G)
        g.set_codegen(TupleOut())
        return g

    ours, theirs = both(build)
    assert_same_code(ours, theirs)
    assert "# custom" in ours.code and "return ((neg, x),)" in ours.code
    x, y = torch.randn(2), torch.randn(2)
    assert torch.equal(ours(x, y)[0][0], theirs(x, y)[0][0])


# --- print_readable ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", __import__("zoo").CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("options", [{}, {"include_stride": True, "include_device": True}])
def test_print_readable_matches_torch_fx_after_shape_propagation(case, options):
    from torch.fx.passes.shape_prop import ShapeProp as TorchShapeProp

    from fxkit.passes.shape_prop import ShapeProp
    from zoo import example, trace

    ours, theirs = trace(case, fx), trace(case, tfx)
    assert package_swapped(ours.print_readable(False, **options)) == theirs.print_readable(
        False, **options
    )
    args, kwargs = example(case)
    if kwargs:
        return  # ShapeProp takes positional inputs only
    torch.manual_seed(0)
    ShapeProp(ours).propagate(*args)
    torch.manual_seed(0)
    TorchShapeProp(theirs).propagate(*args)
    text = ours.print_readable(False, **options)
    assert package_swapped(text) == theirs.print_readable(False, **options)


def test_print_readable_of_a_make_fx_graph_and_nested_modules():
    from torch.fx.experimental.proxy_tensor import make_fx

    from fxkit.interop import from_torch_fx
    from fxkit.passes.split_module import split_module

    def f(x, w):
        return torch.relu(x @ w).sum(0)

    theirs = make_fx(f, tracing_mode="fake")(torch.randn(2, 3), torch.randn(3, 4))
    ours = from_torch_fx(theirs)
    assert ours.print_readable(False) == theirs.print_readable(False)
    # nested GraphModules print after the forward, indented
    from torch.fx.passes.split_module import split_module as torch_split

    def part(n):
        return 0 if n.name == "mm" else 1

    split_ours = split_module(ours, None, part)
    split_theirs = torch_split(theirs, None, part)
    assert split_ours.print_readable(False) == split_theirs.print_readable(False)
