"""Build the same graphs with fxkit and torch.fx; compare structure, printing and outputs."""

import operator

import pytest
import torch
import torch.fx as tfx

import fxkit as fx


def graph_rows(graph):
    """print_tabular-level structure: op, name, target text, args, kwargs."""
    return [(n.op, n.name, str(n.args), str(dict(n.kwargs))) for n in graph.nodes]


def build_overview(G):
    g = G.Graph()
    x = g.placeholder("x")
    p = g.get_attr("param")
    a = g.call_function(operator.add, (x, p))
    lin = g.call_module("linear", (a,))
    c = g.call_method("clamp", (lin,), {"min": 0.0, "max": 1.0})
    g.output(c)
    return g


def build_mixed(G):
    g = G.Graph()
    x = g.placeholder("x")
    y = g.placeholder("y", default_value=2)
    s = g.call_function(torch.sum, (x,), {"dim": 1, "keepdim": True})
    t = g.call_function(operator.getitem, (x, (slice(None), slice(0, 2))))
    u = g.call_function(torch.cat, ([s, t],), {"dim": 1})
    v = g.call_method("view", (u, -1))
    w = g.call_function(operator.mul, (v, y))
    shape = g.call_function(getattr, (w, "shape"))
    g.output((w, shape, {"first": s, "pair": [t, y]}))
    return g


def build_edited(G):
    g = G.Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.relu, (x,))
    b = g.call_function(torch.neg, (a,))
    c = g.call_function(operator.add, (b, a))
    g.output(c)
    with g.inserting_after(a):
        t = g.call_function(torch.tanh, (a,))
    a.replace_all_uses_with(t, delete_user_cb=lambda user: user is not t)
    with g.inserting_before(c):
        d = g.call_function(torch.sigmoid, (b,))
    c.replace_input_with(b, d)
    extra = g.call_function(torch.exp, (x,))
    g.erase_node(extra)
    g.eliminate_dead_code()
    return g


def make_root():
    torch.manual_seed(0)
    root = torch.nn.Module()
    root.param = torch.nn.Parameter(torch.rand(3, 4))
    root.linear = torch.nn.Linear(4, 5)
    return root


CASES = [
    (build_overview, lambda: (torch.randn(3, 4),)),
    (build_mixed, lambda: (torch.randn(3, 4), 3)),
    (build_edited, lambda: (torch.randn(3, 4),)),
]


@pytest.mark.parametrize("build,inputs", CASES, ids=[c[0].__name__ for c in CASES])
def test_same_structure_printing_and_outputs(build, inputs):
    ours, theirs = build(fx), build(tfx)
    assert graph_rows(ours) == graph_rows(theirs)
    assert str(ours) == str(theirs)
    root = make_root()
    gm_ours = fx.GraphModule(root, ours)
    gm_theirs = tfx.GraphModule(root, theirs)
    args = inputs()
    out_ours, out_theirs = gm_ours(*args), gm_theirs(*args)
    flat_ours = torch.utils._pytree.tree_leaves(out_ours)
    flat_theirs = torch.utils._pytree.tree_leaves(out_theirs)
    assert len(flat_ours) == len(flat_theirs)
    for a, b in zip(flat_ours, flat_theirs):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
        else:
            assert a == b


@pytest.mark.parametrize("build", [c[0] for c in CASES])
def test_same_generated_code_text(build):
    # Users print, diff and golden-test gm.code: the text is torch.fx's, byte for byte
    # (frees, submodule paths, leading and trailing whitespace included).
    ours = fx.GraphModule(make_root(), build(fx))
    theirs = tfx.GraphModule(make_root(), build(tfx))
    assert ours.code == theirs.code
    assert ours.graph.python_code("self").src == theirs.graph.python_code("self").src


def test_same_dead_code_elimination_and_lint():
    def build(G):
        g = G.Graph()
        x = g.placeholder("x")
        dead = g.call_function(torch.neg, (x,))
        g.call_function(torch.relu, (dead,))
        g.call_function(operator.setitem, (x, 0, 1.0))
        g.call_function(torch._assert, (True, "msg"))
        g.output(x)
        changed = g.eliminate_dead_code()
        g.lint()
        return changed, graph_rows(g)

    assert build(fx) == build(tfx)


def test_same_find_nodes():
    ours, theirs = build_mixed(fx), build_mixed(tfx)
    for op, target in [
        ("call_function", torch.sum),
        ("placeholder", None),
        ("call_method", "view"),
    ]:
        kw = {"op": op} if target is None else {"op": op, "target": target}
        assert [n.name for n in ours.find_nodes(**kw)] == [n.name for n in theirs.find_nodes(**kw)]


# --- traced models: the zoo and HuggingFace blocks ---------------------------------------------


def _package_swapped(code):
    # fxkit's own helpers (wrap lines, _assert_is_none guards) live under ``fxkit``, torch.fx's
    # under ``torch.fx``: the one listed difference in generated text.
    return code.replace("fxkit._symbolic_trace.", "torch.fx._symbolic_trace.")


def _zoo_cases():
    from zoo import CASES

    return CASES


@pytest.mark.parametrize("case", _zoo_cases(), ids=lambda c: c.name)
def test_zoo_traces_generate_torch_fx_code(case):
    from zoo import example, tensors_of, trace

    ours, theirs = trace(case, fx), trace(case, tfx)
    assert _package_swapped(ours.code) == theirs.code
    args, kwargs = example(case)
    for a, b in zip(tensors_of(ours(*args, **kwargs)), tensors_of(theirs(*args, **kwargs))):
        torch.testing.assert_close(a, b)


HF_BLOCKS = [
    ("bert", "encoder.layer.0"),
    ("gpt2", "h.0.mlp"),
    ("vit", "encoder.layer.0"),
    ("llama", "layers.0.mlp"),
    ("t5", "encoder.block.0.layer.1.DenseReluDense"),
]


@pytest.mark.parametrize("name,path", HF_BLOCKS, ids=[f"{n}:{p}" for n, p in HF_BLOCKS])
def test_hf_blocks_generate_torch_fx_code(name, path):
    import warnings

    from test_hf_models import _defaults_except, _model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = _model(name).get_submodule(path)
        concrete = _defaults_except(block, {"hidden_states", "pixel_values"})
        ours = fx.symbolic_trace(block, concrete_args=concrete)
        theirs = tfx.symbolic_trace(block, concrete_args=concrete)
    assert _package_swapped(ours.code) == theirs.code
