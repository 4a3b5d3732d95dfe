"""Build the same graphs with fxkit and torch.fx; compare structure, printing and outputs."""

import operator
import re

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


def _torch_fx_freeing_style(code):
    """Rewrite fxkit's ``;  del a, b`` as torch.fx's ``;  a = b = None`` and its
    ``self._modules['m']`` submodule lookups as torch.fx's ``self.m``."""
    code = re.sub(r"\._modules\['(\w+)'\]", r".\1", code)
    return re.sub(
        r";  del ([\w, ]+)", lambda m: ";  " + " = ".join(m.group(1).split(", ")) + " = None", code
    )


@pytest.mark.parametrize("build", [c[0] for c in CASES])
def test_same_generated_code_text(build):
    # Not required for correctness, but a torch.fx user reading gm.code sees the same
    # statements, frees included (fxkit spells a free as ``del``, which compiles faster).
    ours = fx.GraphModule(make_root(), build(fx)).code.strip()
    theirs = tfx.GraphModule(make_root(), build(tfx)).code.strip()
    assert _torch_fx_freeing_style(ours) == theirs


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
