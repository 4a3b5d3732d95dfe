"""Code generation: argument spellings, value freeing, annotations, custom CodeGens, caching."""

import enum
import linecache
import math
import operator
from typing import List

import pytest
import torch
import torch.utils._pytree as pytree

from fxkit.codegen import CodeGen, _PyTreeCodeGen, _PyTreeInfo
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule


class Color(enum.Enum):
    RED = 1
    BLUE = 2


def pick(color, x):
    return x * color.value


def identity(*values, **kw):
    return values, kw


def run_graph(g, *args, root=None):
    gm = GraphModule(root if root is not None else torch.nn.Module(), g)
    return gm(*args), gm.code


@pytest.mark.parametrize(
    "constant",
    [
        (1, (2, [3, {"k": (4,)}])),
        slice(1, None, 2),
        torch.float16,
        torch.device("cpu"),
        torch.Size([2, 3]),
        torch.channels_last,
        torch.strided,
        float("inf"),
        -float("inf"),
        'it\'s a "string"\n',
        None,
        Ellipsis,
        3 + 4j,
        range(3),
        Color.BLUE,
        math.pi,
        torch.int64,
        True,
    ],
    ids=repr,
)
def test_every_argument_kind_round_trips(constant):
    g = Graph()
    g.placeholder("x")
    n = g.call_function(identity, (constant,), {"kw": constant})
    g.output(n)
    (values, kw), code = run_graph(g, torch.ones(1))
    assert values == (constant,) and kw == {"kw": constant}
    compile(code, "<check>", "exec")


def test_nan_round_trips():
    g = Graph()
    g.output(g.call_function(identity, (float("nan"),)))
    (values, _), code = run_graph(g)
    assert math.isnan(values[0]) and "nan" in code


def test_callables_enums_and_classes_become_globals():
    g = Graph()
    x = g.placeholder("x")
    y = g.call_function(pick, (Color.RED, x))
    z = g.call_function(torch.nn.functional.relu, (y,))
    w = g.call_function(isinstance, (z, torch.Tensor))
    g.output((z, w))
    (out, is_tensor), code = run_graph(g, torch.tensor([-1.0, 2.0]))
    assert torch.equal(out, torch.tensor([0.0, 2.0])) and is_tensor
    assert "torch.nn.functional.relu(" in code and "isinstance(" in code


def test_infix_getitem_getattr_and_method_calls():
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(operator.add, (x, 1))
    b = g.call_function(operator.neg, (a,))
    c = g.call_function(operator.getitem, (b, (slice(None), 0)))
    d = g.call_function(getattr, (c, "shape"))
    e = g.call_method("view", (b, -1))
    f = g.call_function(operator.matmul, (e, e))
    g.output((d, f))
    (shape, dot), code = run_graph(g, torch.ones(2, 2))
    assert shape == torch.Size([2]) and dot.item() == 16.0
    for piece in ("x + 1", "-add", "neg[(slice(None, None, None), 0)]", "getitem.shape",
                  "neg.view(-1)", "view @ view"):  # fmt: skip
        assert piece in code


def test_values_are_freed_after_last_use():
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.relu, (x,))
    b = g.call_function(torch.neg, (a,))
    g.call_function(torch.tanh, (x,))  # unused: freed right away
    c = g.call_function(operator.add, (b, x))
    g.output(c)
    code = g.python_code("self").src
    lines = [ln.strip() for ln in code.splitlines()]
    assert "neg = torch.neg(relu);  relu = None" in lines
    assert "tanh = torch.tanh(x);  tanh = None" in lines
    assert "add = neg + x;  neg = x = None" in lines


def test_type_annotations_and_defaults():
    g = Graph()
    x = g.placeholder("x", type_expr=torch.Tensor)
    y = g.placeholder("y", type_expr=int, default_value=3)
    z = g.placeholder("z", type_expr=List[int], default_value=None)
    a = g.call_function(operator.mul, (x, y))
    a.type = torch.Tensor
    out = g.output((a, z))
    out.type = tuple
    code = g.python_code("self").src
    assert (
        "def forward(self, x : torch.Tensor, y : int = 3, z : typing_List[int] = None) -> tuple:"
        in code
    )
    assert "mul : torch.Tensor = x * y" in code
    (value, zz), _ = run_graph(g, torch.ones(1))
    assert value.item() == 3.0 and zz is None


def test_varargs_placeholders_and_renamed_inputs():
    g = Graph()
    args = g.placeholder("*args")
    kwargs = g.placeholder("**kwargs")
    g.output((args, kwargs))
    a, k = GraphModule(torch.nn.Module(), g)(1, 2, key=3)
    assert a == (1, 2) and k == {"key": 3}
    h = Graph()
    p = h.placeholder("sum")  # a builtin name: the node is renamed, the parameter keeps it
    h.output(p)
    assert p.name == "sum_1"
    value, code = run_graph(h, 5)
    assert value == 5 and "sum_1 = sum" in code


def test_submodule_paths_that_are_not_identifiers():
    root = torch.nn.Module()
    root.layers = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh())
    g = Graph()
    x = g.placeholder("x")
    y = g.call_module("layers.1", (x,))
    w = g.get_attr("layers.0.inplace")
    g.output((y, w))
    (value, inplace), code = run_graph(g, torch.zeros(1), root=root)
    assert value.item() == 0.0 and inplace is False
    assert 'getattr(self.layers, "1")(x)' in code
    assert 'getattr(self.layers, "0").inplace' in code


def test_swapping_a_submodule_takes_effect_without_recompile():
    root = torch.nn.Module()
    root.act = torch.nn.ReLU()
    g = Graph()
    g.output(g.call_module("act", (g.placeholder("x"),)))
    gm = GraphModule(root, g)
    assert gm(torch.tensor([-1.0])).item() == 0.0
    gm.act = torch.nn.Identity()
    assert gm(torch.tensor([-1.0])).item() == -1.0


def test_global_names_avoid_node_names():
    def relu(v):
        return v + 100

    g = Graph()
    x = g.placeholder("relu")
    y = g.call_function(relu, (x,))
    g.output(y)
    value, code = run_graph(g, 1)
    assert value == 101


def test_empty_graph_generates_valid_code():
    g = Graph()
    g.placeholder("x")
    value, code = run_graph(g, 1)
    assert value is None and "pass" in code


class ReturnDict(CodeGen):
    """A custom CodeGen: the caller passes a dict, the function returns a dict."""

    def gen_fn_def(self, free_vars, maybe_return_annotation, **kw):
        names = ", ".join(f"{v} = inputs[{v!r}]" for v in free_vars if v != "self")
        return f"def forward(self, inputs):\n    {names}" if names else "def forward(self, inputs):"

    def generate_output(self, output_args, **kw):
        return f"return {{'out': {output_args!r}}}"

    def process_inputs(self, *args):
        return args

    def process_outputs(self, out):
        return out


def test_custom_codegen_changes_signature_and_output():
    g = Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.neg, (x,)))
    g.set_codegen(ReturnDict())
    value, code = run_graph(g, {"x": torch.ones(1)})
    assert value["out"].item() == -1.0


def test_pytree_codegen_round_trips_nested_inputs_and_outputs():
    example = ({"a": torch.ones(1), "b": torch.ones(1) * 2},)
    _, in_spec = pytree.tree_flatten((example, {}))
    out_spec = pytree.tree_flatten({"sum": 0, "pair": (0, 0)})[1]
    g = Graph()
    a = g.placeholder("a")
    b = g.placeholder("b")
    s = g.call_function(operator.add, (a, b))
    # out_spec order: dict keys are sorted? use flatten order of {"sum", "pair"}
    leaves = pytree.tree_flatten({"sum": s, "pair": (a, b)})[0]
    g.output(list(leaves))
    g.set_codegen(_PyTreeCodeGen(_PyTreeInfo(["d"], in_spec, out_spec)))
    gm = GraphModule(torch.nn.Module(), g)
    result = gm({"b": torch.ones(1) * 2, "a": torch.ones(1)})
    assert result["sum"].item() == 3.0 and result["pair"][1].item() == 2.0
    assert "tree_flatten_spec" in gm.code


def test_compile_cache_shares_code_and_registers_linecache():
    def build():
        g = Graph()
        x = g.placeholder("x")
        g.output(g.call_function(torch.sin, (x,)))
        return GraphModule(torch.nn.Module(), g)

    first, second = build(), build()
    first(torch.ones(1))
    second(torch.ones(1))
    # One compile, shared bytecode; each module has its own file name (as torch.fx) whose
    # source linecache serves while the module lives.
    code_a, code_b = type(first).forward.__code__, type(second).forward.__code__
    assert code_a.co_code == code_b.co_code and code_a.co_filename != code_b.co_filename
    for code in (code_a, code_b):
        assert "torch.sin(x)" in "".join(linecache.getlines(code.co_filename))


def test_body_transformer_chain():
    g = Graph()
    x = g.placeholder("x")
    g.output(x)

    def outer(prev):
        def transform(body):
            body = prev(body) if prev else body
            return ["# second\n", *body]

        return transform

    def inner(prev):
        return lambda body: ["# first\n", *body]

    with g.on_generate_code(inner):
        with g.on_generate_code(outer):
            src = g.python_code("self").src
    assert src.index("# second") < src.index("# first")


def test_verbose_mode_adds_meta_comments():
    g = Graph()
    x = g.placeholder("x")
    y = g.call_function(torch.relu, (x,))
    y.meta["val"] = torch.empty(2, 3)
    y.meta["stack_trace"] = 'File "model.py", line 7, in forward\n    return relu(x)'
    g.output(y)
    src = g.python_code("self", verbose=True).src
    assert 'relu: "f32[2, 3]" = torch.relu(x)' in src
    assert "# File: model.py:7 in forward, code: return relu(x)" in src
    assert "model.py" not in g.python_code("self").src


def test_module_call_tree_runs_the_same_text_faster_with_the_same_positions():
    import traceback

    from fxkit.codegen import module_call_tree

    root = torch.nn.Module()
    root.sub = torch.nn.Sequential(torch.nn.Linear(2, 2))
    root.act = torch.nn.ReLU()
    g = Graph()
    x = g.placeholder("x")
    h = g.call_module("sub.0", (x,))
    w = g.get_attr("sub.0.weight")
    g.output((g.call_module("act", (h,)), w))
    src = g.python_code("self").src
    tree = module_call_tree(src, ["sub.0", "act"])
    assert module_call_tree(src, []) is None and module_call_tree(src, ["other"]) is None
    name = "<module-call-tree-test>"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    scope = dict(g.python_code("self").globals)
    exec(compile(tree, name, "exec"), scope)
    forward = scope["forward"]
    out, weight = forward(root, torch.ones(1, 2))
    assert torch.equal(out, root.act(root.sub(torch.ones(1, 2)))) and weight is root.sub[0].weight
    root.act = torch.nn.Tanh()  # swapped without recompiling: still takes effect
    assert torch.equal(forward(root, torch.ones(1, 2))[0], torch.tanh(root.sub(torch.ones(1, 2))))
    try:
        forward(root, torch.ones(1, 3))
    except RuntimeError as e:
        frame = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == name][0]
        line = src.splitlines()[frame.lineno - 1]
        assert line[frame.colno : frame.end_colno] == 'getattr(self.sub, "0")(x)'
    else:
        raise AssertionError("expected a shape error")


def test_tensor_and_module_constants_become_globals():
    # torch.fx writes `torch.Tensor(size=[2], dtype=float32)`, which cannot run; fxkit hands
    # such constants to the code as globals (a listed difference)
    g = Graph()
    x = g.placeholder("x")
    lin = torch.nn.Linear(2, 2)
    y = g.call_function(torch.add, (x, torch.ones(2)))
    g.output(g.call_function(torch.nn.functional.linear, (y, lin.weight)))
    gm = GraphModule(torch.nn.Module(), g)
    assert "torch.add(x, _tensor_constant)" in gm.code
    out = gm(torch.zeros(2))
    torch.testing.assert_close(out, torch.nn.functional.linear(torch.ones(2), lin.weight))
