"""replace_pattern / replace_pattern_with_filters, differentially against torch.fx.

Host graphs, patterns and replacements are written once as specs and built with either
library's Graph API, so both rewriters see the same input; we compare which nodes matched,
the resulting op sequences (node names aside) and the outputs of the rewritten modules.
"""

from __future__ import annotations

import operator
import random
from typing import Any, Callable, List, Tuple

import pytest
import torch
import torch.fx as tfx
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx import subgraph_rewriter as tfx_rw

import fxkit
from fxkit import subgraph_rewriter as rw
from fxkit._symbolic_trace import symbolic_trace


class R:
    """A reference to the spec node called ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name


def build(fx, spec: List[tuple]):
    """Build a Graph from ``[(name, op, target, args, kwargs), ...]`` with library ``fx``."""
    g = fx.Graph()
    env: dict = {}

    def conv(a: Any) -> Any:
        if isinstance(a, R):
            return env[a.name]
        if isinstance(a, tuple):
            return tuple(conv(x) for x in a)
        if isinstance(a, list):
            return [conv(x) for x in a]
        if isinstance(a, dict):
            return {k: conv(v) for k, v in a.items()}
        return a

    for name, op, target, args, kwargs in spec:
        if op == "output":
            g.output(conv(args[0]))
        else:
            env[name] = g.create_node(op, target, conv(args), conv(kwargs), name=name)
    return g


def norm(a: Any, idx: dict) -> Any:
    if isinstance(a, (fxkit.Node, tfx.Node)):
        return ("%", idx[a])
    if isinstance(a, list):
        return ("L", tuple(norm(x, idx) for x in a))
    if isinstance(a, tuple):
        return ("T", tuple(norm(x, idx) for x in a))
    if isinstance(a, dict):
        return ("D", tuple((k, norm(v, idx)) for k, v in a.items()))
    return a


def canon(g) -> List[tuple]:
    """The graph as (op, target, args, kwargs) rows with nodes replaced by positions."""
    idx: dict = {}
    rows = []
    for i, n in enumerate(g.nodes):
        idx[n] = i
        target = n.target if n.op != "placeholder" else "ph"
        rows.append((n.op, target, norm(n.args, idx), norm(n.kwargs, idx)))
    return rows


def describe_matches(found) -> List[list]:
    out = []
    for m in found:
        pairs = []
        for pn, gn in m.nodes_map.items():
            pairs.append((pn.name, gn.name if isinstance(gn, (fxkit.Node, tfx.Node)) else repr(gn)))
        out.append(sorted(pairs))
    return out


def assert_close_tree(a, b) -> None:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        torch.testing.assert_close(x, y, equal_nan=True)


class Root(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = torch.nn.ReLU()
        self.act2 = torch.nn.ReLU()
        self.w = torch.nn.Parameter(torch.randn(3))
        self.v = torch.nn.Parameter(torch.randn(3))


def differential(
    host: List[tuple],
    pattern: List[tuple],
    replacement: List[tuple],
    inputs: Tuple[torch.Tensor, ...],
    root: torch.nn.Module | None = None,
    wrap: bool = False,
    **kwargs: Any,
):
    """Rewrite ``host`` with both libraries and check they agree; returns fxkit's result."""
    root = root if root is not None else Root()
    ours = fxkit.GraphModule(root, build(fxkit, host))
    theirs = tfx.GraphModule(root, build(tfx, host))
    before = ours(*inputs)
    p_ours, r_ours = build(fxkit, pattern), build(fxkit, replacement)
    p_theirs, r_theirs = build(tfx, pattern), build(tfx, replacement)
    if wrap:  # as GraphModules over ``root`` (call_module patterns need an owning module)
        p_ours, r_ours = fxkit.GraphModule(root, p_ours), fxkit.GraphModule(root, r_ours)
        p_theirs, r_theirs = tfx.GraphModule(root, p_theirs), tfx.GraphModule(root, r_theirs)
    got = rw.replace_pattern_with_filters(ours, p_ours, r_ours, **kwargs)
    want = tfx_rw.replace_pattern_with_filters(theirs, p_theirs, r_theirs, **kwargs)
    assert describe_matches(got) == describe_matches(want)
    assert [len(r.replacements) for r in got] == [len(r.replacements) for r in want]
    assert canon(ours.graph) == canon(theirs.graph)
    ours.graph.lint()
    assert_close_tree(ours(*inputs), theirs(*inputs))
    return got, before, ours


def fn(name: str, target: Callable, *args: Any, **kwargs: Any) -> tuple:
    return (name, "call_function", target, args, kwargs)


def meth(name: str, target: str, *args: Any, **kwargs: Any) -> tuple:
    return (name, "call_method", target, args, kwargs)


def ph(name: str) -> tuple:
    return (name, "placeholder", name, (), {})


def out(value: Any) -> tuple:
    return ("output", "output", "output", (value,), {})


# --- the pattern zoo ---------------------------------------------------------------------

ADD_RELU = [
    ph("a"),
    ph("b"),
    fn("s", operator.add, R("a"), R("b")),
    fn("r", torch.relu, R("s")),
    out(R("r")),
]
ADD_CLAMP = [
    ph("a"),
    ph("b"),
    fn("s", operator.add, R("a"), R("b")),
    fn("c", torch.clamp, R("s"), min=0),
    out(R("c")),
]


def test_add_relu_zoo_with_escapes_and_shared_inputs():
    host = [
        ph("x"),
        ph("y"),
        fn("n0", operator.add, R("x"), R("y")),
        fn("n1", torch.relu, R("n0")),  # match
        fn("n2", operator.add, R("n1"), R("x")),
        fn("n3", torch.relu, R("n2")),  # match, fed by the previous replacement
        fn("n4", operator.add, R("n3"), R("n3")),  # same node twice: not a match
        fn("n5", torch.relu, R("n4")),
        fn("n6", operator.add, R("n5"), R("y")),
        fn("n7", torch.relu, R("n6")),  # n6 escapes (used by n8): not a match
        fn("n8", operator.mul, R("n6"), R("n7")),
        out((R("n8"), R("n5"))),
    ]
    inputs = (torch.randn(5), torch.randn(5))
    got, before, gm = differential(host, ADD_RELU, ADD_CLAMP, inputs)
    assert len(got) == 2
    assert_close_tree(gm(*inputs), before)  # clamp(min=0) is relu


def conv_bn_relu_spec(prefix: str, x: str) -> List[tuple]:
    return [
        (f"{prefix}w", "get_attr", "conv_w", (), {}),
        (f"{prefix}m", "get_attr", "bn_m", (), {}),
        (f"{prefix}v", "get_attr", "bn_v", (), {}),
        fn(f"{prefix}c", F.conv2d, R(x), R(f"{prefix}w"), padding=1),
        fn(f"{prefix}b", F.batch_norm, R(f"{prefix}c"), R(f"{prefix}m"), R(f"{prefix}v")),
        fn(f"{prefix}r", F.relu, R(f"{prefix}b")),
    ]


class ConvRoot(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_w = torch.nn.Parameter(torch.randn(2, 2, 3, 3))
        self.register_buffer("bn_m", torch.randn(2))
        self.register_buffer("bn_v", torch.rand(2) + 0.5)


def test_conv_bn_relu_zoo():
    host = [ph("x"), *conv_bn_relu_spec("a", "x"), *conv_bn_relu_spec("b", "ar"), out(R("br"))]
    pattern = [
        ph("x"),
        ph("w"),
        ph("m"),
        ph("v"),
        fn("c", F.conv2d, R("x"), R("w"), padding=1),
        fn("b", F.batch_norm, R("c"), R("m"), R("v")),
        fn("r", F.relu, R("b")),
        out(R("r")),
    ]
    replacement = [
        ph("x"),
        ph("w"),
        ph("m"),
        ph("v"),
        fn("c", F.conv2d, R("x"), R("w"), padding=1),
        fn("b", F.batch_norm, R("c"), R("m"), R("v")),
        fn("r", torch.clamp, R("b"), min=0.0),
        out(R("r")),
    ]
    inputs = (torch.randn(1, 2, 5, 5),)
    got, before, gm = differential(host, pattern, replacement, inputs, ConvRoot())
    assert len(got) == 2
    assert_close_tree(gm(*inputs), before)


MULTI_PATTERN = [
    ph("a"),
    ph("b"),
    fn("s", operator.add, R("a"), R("b")),
    fn("t", torch.relu, R("s")),
    fn("u", torch.neg, R("s")),
    out((R("t"), R("u"))),
]
MULTI_REPLACEMENT = [
    ph("a"),
    ph("b"),
    fn("s", operator.add, R("a"), R("b")),
    fn("t", torch.clamp, R("s"), min=0),
    fn("u", operator.mul, R("s"), -1),
    out((R("t"), R("u"))),
]


def test_multiple_outputs_zoo():
    host = [
        ph("x"),
        ph("y"),
        fn("n0", operator.add, R("x"), R("y")),
        fn("n1", torch.relu, R("n0")),
        fn("n2", torch.neg, R("n0")),
        fn("n3", operator.add, R("n1"), R("n2")),
        fn("n4", torch.neg, R("n3")),  # lone neg: no relu partner, no match
        fn("n5", operator.add, R("n4"), R("y")),
        fn("n6", torch.neg, R("n5")),
        fn("n7", torch.relu, R("n5")),
        out((R("n6"), R("n7"))),
    ]
    got, _, _ = differential(
        host, MULTI_PATTERN, MULTI_REPLACEMENT, (torch.randn(4), torch.randn(4))
    )
    assert len(got) == 2


def test_multiple_outputs_where_one_returned_node_feeds_another():
    pattern = [
        ph("a"),
        fn("s", torch.neg, R("a")),
        fn("t", torch.relu, R("s")),
        out((R("s"), R("t"))),
    ]
    replacement = [
        ph("a"),
        fn("s", operator.mul, R("a"), -1),
        fn("t", torch.clamp, R("s"), min=0),
        out((R("s"), R("t"))),
    ]
    host = [
        ph("x"),
        fn("n0", torch.neg, R("x")),
        fn("n1", torch.relu, R("n0")),
        fn("n2", operator.add, R("n0"), R("n1")),  # n0 is returned, so it may escape
        out(R("n2")),
    ]
    got, _, _ = differential(host, pattern, replacement, (torch.randn(4),))
    assert len(got) == 1


LIT_PATTERN = [
    ph("a"),
    fn("s", operator.add, R("a"), 1),
    fn("m", operator.mul, R("s"), 2),
    out(R("m")),
]
LIT_REPLACEMENT = [
    ph("a"),
    fn("m", operator.mul, R("a"), 2),
    fn("s", operator.add, R("m"), 2),
    out(R("s")),
]


@pytest.mark.parametrize("ignore_literals", [False, True])
def test_literals_zoo(ignore_literals):
    host = [
        ph("x"),
        fn("n0", operator.add, R("x"), 1),
        fn("n1", operator.mul, R("n0"), 2),  # match
        fn("n2", operator.add, R("n1"), 3),
        fn("n3", operator.mul, R("n2"), 2),  # literal differs: match only when ignored
        fn("n4", operator.add, R("n3"), 1.0),
        fn("n5", operator.mul, R("n4"), 2),  # 1.0 is not 1 (type differs)
        out(R("n5")),
    ]
    got, _, _ = differential(
        host, LIT_PATTERN, LIT_REPLACEMENT, (torch.randn(3),), ignore_literals=ignore_literals
    )
    assert len(got) == (3 if ignore_literals else 1)


def test_placeholder_binds_literals_consistently():
    pattern = [
        ph("a"),
        ph("k"),
        fn("s", operator.add, R("a"), R("k")),
        fn("m", operator.mul, R("s"), R("k")),
        out(R("m")),
    ]
    replacement = [ph("a"), ph("k"), fn("m", operator.mul, R("a"), R("k")), out(R("m"))]
    host = [
        ph("x"),
        fn("n0", operator.add, R("x"), 2),
        fn("n1", operator.mul, R("n0"), 2),  # k = 2 both times: match
        fn("n2", operator.add, R("n1"), 2),
        fn("n3", operator.mul, R("n2"), 3),  # k would be 2 and 3: no match
        out(R("n3")),
    ]
    got, _, _ = differential(host, pattern, replacement, (torch.randn(3),))
    assert len(got) == 1


KW_PATTERN = [ph("a"), ph("b"), fn("s", torch.add, R("a"), R("b"), alpha=2), out(R("s"))]
KW_REPLACEMENT = [
    ph("a"),
    ph("b"),
    fn("m", operator.mul, R("b"), 2),
    fn("s", operator.add, R("a"), R("m")),
    out(R("s")),
]


def test_kwargs_zoo():
    host = [
        ph("x"),
        ph("y"),
        fn("n0", torch.add, R("x"), R("y"), alpha=2),  # match
        fn("n1", torch.add, R("n0"), R("y")),  # kwargs differ
        fn("n2", torch.add, R("n1"), R("x"), alpha=3),  # literal differs
        fn("n3", torch.add, R("n2"), R("y"), alpha=2),  # match
        out(R("n3")),
    ]
    got, _, _ = differential(host, KW_PATTERN, KW_REPLACEMENT, (torch.randn(3), torch.randn(3)))
    assert len(got) == 2


def test_aten_overload_arguments_are_normalised_by_schema():
    add = torch.ops.aten.add.Tensor
    pattern = [ph("a"), ph("b"), fn("s", add, R("a"), R("b")), out(R("s"))]
    replacement = [
        ph("a"),
        ph("b"),
        fn("s", torch.ops.aten.sub.Tensor, R("a"), R("b")),
        out(R("s")),
    ]
    host = [
        ph("x"),
        ph("y"),
        fn("n0", add, R("x"), R("y"), alpha=1),  # default spelled out: still a match
        fn("n1", add, R("n0"), R("y"), alpha=2),  # different alpha: no match
        out(R("n1")),
    ]
    got, _, _ = differential(host, pattern, replacement, (torch.randn(3), torch.randn(3)))
    assert len(got) == 1


def test_call_method_zoo():
    pattern = [ph("a"), meth("r", "relu", R("a")), meth("n", "neg", R("r")), out(R("n"))]
    replacement = [
        ph("a"),
        meth("r", "clamp", R("a"), min=0),
        fn("n", torch.neg, R("r")),
        out(R("n")),
    ]
    host = [
        ph("x"),
        meth("n0", "relu", R("x")),
        meth("n1", "neg", R("n0")),
        meth("n2", "neg", R("n1")),
        meth("n3", "relu", R("n2")),
        fn("n4", torch.neg, R("n3")),  # call_function neg is not the method
        meth("n5", "relu", R("n4")),
        meth("n6", "neg", R("n5")),
        out(R("n6")),
    ]
    got, _, _ = differential(host, pattern, replacement, (torch.randn(3),))
    assert len(got) == 2


def test_call_module_zoo():
    pattern = [
        ph("a"),
        ("m", "call_module", "act", (R("a"),), {}),
        meth("n", "neg", R("m")),
        out(R("n")),
    ]
    replacement = [ph("a"), fn("m", torch.relu, R("a")), fn("n", torch.neg, R("m")), out(R("n"))]
    host = [
        ph("x"),
        ("n0", "call_module", "act", (R("x"),), {}),
        meth("n1", "neg", R("n0")),  # match
        ("n2", "call_module", "act2", (R("n1"),), {}),
        meth("n3", "neg", R("n2")),  # act2 is another target: no match
        out(R("n3")),
    ]
    got, _, gm = differential(host, pattern, replacement, (torch.randn(3),), wrap=True)
    assert len(got) == 1
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["act2"]


def test_get_attr_patterns_match_any_tensor_attribute():
    root = Root()
    p_root = torch.nn.Module()
    p_root.w = torch.nn.Parameter(torch.zeros(3))
    pattern = [
        ph("a"),
        ("w", "get_attr", "w", (), {}),
        fn("s", operator.add, R("a"), R("w")),
        out(R("s")),
    ]
    replacement = [ph("a"), fn("s", operator.sub, R("a"), 1.0), out(R("s"))]
    host = [
        ph("x"),
        ("n0", "get_attr", "w", (), {}),
        fn("n1", operator.add, R("x"), R("n0")),
        ("n2", "get_attr", "v", (), {}),
        fn("n3", operator.add, R("n1"), R("n2")),
        out(R("n3")),
    ]
    ours = fxkit.GraphModule(root, build(fxkit, host))
    theirs = tfx.GraphModule(root, build(tfx, host))
    got = rw.replace_pattern(
        ours, fxkit.GraphModule(p_root, build(fxkit, pattern)), build(fxkit, replacement)
    )
    want = tfx_rw.replace_pattern(
        theirs, tfx.GraphModule(p_root, build(tfx, pattern)), build(tfx, replacement)
    )
    assert describe_matches(got) == describe_matches(want)
    assert len(got) == 2
    assert canon(ours.graph) == canon(theirs.graph)
    assert_close_tree(ours(torch.ones(3)), theirs(torch.ones(3)))


# --- random graphs with planted patterns ---------------------------------------------------

UNARY = [torch.relu, torch.neg, torch.sigmoid, torch.tanh]
BINARY = [operator.add, operator.mul, torch.sub]


def planted_graph(seed: int, kind: str, size: int = 40) -> List[tuple]:
    """A random DAG with instances of ``kind`` planted; some reuse an input twice (no match)
    and some leak an internal node (no match)."""
    rng = random.Random(seed)
    spec = [ph("x"), ph("y")]
    vals = ["x", "y"]
    count = 0

    def fresh() -> str:
        nonlocal count
        count += 1
        return f"n{count}"

    leaked: List[str] = []
    while count < size:
        r = rng.random()
        if r < 0.35:
            a, b = rng.choice(vals), rng.choice(vals)
            s, t = fresh(), fresh()
            if kind == "add_relu":
                spec += [fn(s, operator.add, R(a), R(b)), fn(t, torch.relu, R(s))]
                vals.append(t)
            else:
                u = fresh()
                spec += [
                    fn(s, operator.add, R(a), R(b)),
                    fn(t, torch.relu, R(s)),
                    fn(u, torch.neg, R(s)),
                ]
                vals += [t, u]
            if rng.random() < 0.2:
                leaked.append(s)
            vals.append(s) if rng.random() < 0.1 else None
        elif r < 0.7:
            name = fresh()
            spec.append(fn(name, rng.choice(UNARY), R(rng.choice(vals))))
            vals.append(name)
        else:
            name = fresh()
            spec.append(fn(name, rng.choice(BINARY), R(rng.choice(vals)), R(rng.choice(vals))))
            vals.append(name)
    outs = [R(v) for v in rng.sample(vals[2:], min(4, len(vals) - 2))]
    for name in leaked:
        outs.append(R(name))
    spec.append(out(tuple(outs)))
    return spec


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["add_relu", "multi"])
def test_planted_random_graphs_agree_with_torch_fx(seed, kind):
    host = planted_graph(seed, kind)
    pattern, replacement = (
        (ADD_RELU, ADD_CLAMP) if kind == "add_relu" else (MULTI_PATTERN, MULTI_REPLACEMENT)
    )
    differential(host, pattern, replacement, (torch.randn(4), torch.randn(4)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(5, 60),
    kind=st.sampled_from(["add_relu", "multi"]),
)
def test_rewrite_keeps_lint_clean_and_semantics(seed, size, kind):
    """The replacements compute the same values as the patterns, so rewriting must not
    change the module's outputs; the graph must stay well formed."""
    host = planted_graph(seed, kind, size)
    pattern, replacement = (
        (ADD_RELU, ADD_CLAMP) if kind == "add_relu" else (MULTI_PATTERN, MULTI_REPLACEMENT)
    )
    gm = fxkit.GraphModule(Root(), build(fxkit, host))
    inputs = (torch.randn(4), torch.randn(4))
    before = gm(*inputs)
    found = rw.replace_pattern(gm, build(fxkit, pattern), build(fxkit, replacement))
    gm.graph.lint()
    assert_close_tree(gm(*inputs), before)
    # every occurrence left is one the rules forbid: rerunning finds nothing new to do
    # except occurrences made possible by fresh nodes (none: the replacement has no relu)
    assert rw.replace_pattern(gm, build(fxkit, pattern), build(fxkit, replacement)) == []
    n_relu = sum(1 for n in gm.graph.nodes if n.target is torch.relu)
    n_clamp = sum(1 for n in gm.graph.nodes if n.target is torch.clamp)
    assert n_clamp == len(found)
    assert n_relu + n_clamp == sum(1 for row in host if row[2] is torch.relu)


# --- traced patterns, the seed example, filters and callbacks -----------------------------


def test_seed_cat_to_stack_example():
    class M(torch.nn.Module):
        def forward(self, x, w1, w2):
            m1 = torch.cat([w1, w2]).sum()
            m2 = torch.cat([w1, w2]).sum()
            return x + torch.max(m1) + torch.max(m2)

    def pattern(w1, w2):
        return torch.cat([w1, w2])

    def replacement(w1, w2):
        return torch.stack([w1, w2])

    ours = symbolic_trace(M())
    theirs = tfx.symbolic_trace(M())
    got = rw.replace_pattern(ours, pattern, replacement)
    want = tfx_rw.replace_pattern(theirs, pattern, replacement)
    assert describe_matches(got) == describe_matches(want)
    assert len(got) == 2
    assert canon(ours.graph) == canon(theirs.graph)
    assert "torch.stack" in ours.code and "torch.cat" not in ours.code
    args = (torch.randn(3), torch.randn(3), torch.randn(3))
    torch.testing.assert_close(ours(*args), theirs(*args))


def test_traced_module_pattern_and_replacement_copy_submodules():
    class Pattern(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.ReLU()

        def forward(self, x):
            return self.act(x).neg()

    class Replacement(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gelu = torch.nn.GELU()

        def forward(self, x):
            return self.gelu(x).neg()

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.ReLU()

        def forward(self, x):
            return self.act(x).neg() * 2

    ours, theirs = symbolic_trace(M()), tfx.symbolic_trace(M())
    got = rw.replace_pattern(ours, Pattern(), Replacement())
    want = tfx_rw.replace_pattern(theirs, Pattern(), Replacement())
    assert len(got) == len(want) == 1
    assert canon(ours.graph) == canon(theirs.graph)
    assert isinstance(ours.gelu, torch.nn.GELU)
    assert not hasattr(ours, "act")  # no longer used: pruned, as torch.fx does
    x = torch.randn(5)
    torch.testing.assert_close(ours(x), theirs(x))


def test_match_filters_and_replacement_callback():
    host = planted_graph(3, "add_relu")
    gm = fxkit.GraphModule(Root(), build(fxkit, host))
    tgm = tfx.GraphModule(Root(), build(tfx, host))

    def only_x(m, g, p):
        return any(getattr(n, "name", None) == "x" for n in m.placeholder_nodes)

    def make(lib):
        def callback(m, g, p):
            return build(lib, ADD_CLAMP)

        return callback

    got = rw.replace_pattern_with_filters(
        gm, build(fxkit, ADD_RELU), None, match_filters=[only_x], replacement_callback=make(fxkit)
    )
    want = tfx_rw.replace_pattern_with_filters(
        tgm, build(tfx, ADD_RELU), None, match_filters=[only_x], replacement_callback=make(tfx)
    )
    assert describe_matches(got) == describe_matches(want)
    assert canon(gm.graph) == canon(tgm.graph)
    assert all(
        any(n.name == "x" for n in r.nodes_map.values() if isinstance(n, fxkit.Node)) for r in got
    )


def test_replacements_list_and_anchor():
    host = [
        ph("x"),
        ph("y"),
        fn("n0", operator.add, R("x"), R("y")),
        fn("n1", torch.relu, R("n0")),
        out(R("n1")),
    ]
    gm = fxkit.GraphModule(Root(), build(fxkit, host))
    pattern = build(fxkit, ADD_RELU)
    [res] = rw.replace_pattern_with_filters(gm, pattern, build(fxkit, ADD_CLAMP))
    assert res.anchor is list(pattern.nodes)[3]  # the pattern's relu
    assert [n.target for n in res.replacements] == [operator.add, torch.clamp]
    assert all(n.graph is gm.graph for n in res.replacements)
    [m] = rw.replace_pattern(gm, build(fxkit, ADD_CLAMP), build(fxkit, ADD_RELU))
    assert isinstance(m, rw.Match) and m.anchor.target is torch.clamp


def test_node_name_match_lets_the_anchor_match_by_name():
    host = [
        ph("x"),
        ph("y"),
        fn("n0", operator.add, R("x"), R("y")),
        fn("special", torch.sigmoid, R("n0")),
        out(R("special")),
    ]
    differential(
        host, ADD_RELU, ADD_CLAMP, (torch.randn(3), torch.randn(3)), node_name_match="special"
    )


# --- bad input: clear errors, graph unchanged -----------------------------------------------


def host_gm():
    host = [
        ph("x"),
        ph("y"),
        fn("n0", operator.add, R("x"), R("y")),
        fn("n1", torch.relu, R("n0")),
        out(R("n1")),
    ]
    return fxkit.GraphModule(Root(), build(fxkit, host))


def test_not_a_graph_module():
    with pytest.raises(TypeError, match="GraphModule"):
        rw.replace_pattern(build(fxkit, ADD_RELU), ADD_RELU, ADD_CLAMP)
    with pytest.raises(TypeError, match="GraphModule"):
        rw.replace_pattern(torch.nn.ReLU(), build(fxkit, ADD_RELU), build(fxkit, ADD_CLAMP))


def pattern_without_output():
    g = fxkit.Graph()
    a = g.placeholder("a")
    g.call_function(torch.relu, (a,))
    return g


def dead_code_pattern():
    g = fxkit.Graph()
    a = g.placeholder("a")
    g.call_function(torch.neg, (a,))
    g.output(g.call_function(torch.relu, (a,)))
    return g


def unused_input_pattern():
    g = fxkit.Graph()
    a = g.placeholder("a")
    g.placeholder("b")
    g.output(g.call_function(torch.relu, (a,)))
    return g


@pytest.mark.parametrize(
    "pattern,replacement,exc,msg",
    [
        (pattern_without_output, lambda: build(fxkit, ADD_CLAMP), ValueError, "no output"),
        (lambda: fxkit.Graph(), lambda: build(fxkit, ADD_CLAMP), ValueError, "empty"),
        # torch.fx's type for a pattern with dead code.
        (
            dead_code_pattern,
            lambda: build(fxkit, [ph("a"), out(R("a"))]),
            AssertionError,
            "dead code",
        ),
        # torch.fx accepts the pattern and fails with a KeyError once it matches.
        (unused_input_pattern, lambda: build(fxkit, ADD_CLAMP), KeyError, "never used"),
        (
            lambda: build(fxkit, ADD_RELU),
            lambda: build(fxkit, [ph("a"), fn("r", torch.relu, R("a")), out(R("r"))]),
            ValueError,
            "takes 1 input",
        ),
        (
            lambda: build(fxkit, ADD_RELU),
            lambda: build(fxkit, MULTI_REPLACEMENT),
            ValueError,
            "returns 2",
        ),
        (lambda: build(fxkit, ADD_RELU), lambda: 42, TypeError, "replacement must be"),
        (lambda: "relu", lambda: build(fxkit, ADD_CLAMP), TypeError, "pattern must be"),
        (lambda: build(fxkit, ADD_RELU), lambda: None, ValueError, "replacement_callback"),
    ],
)
def test_bad_patterns_and_replacements_leave_the_graph_unchanged(pattern, replacement, exc, msg):
    gm = host_gm()
    before = canon(gm.graph)
    code = gm.code
    with pytest.raises(exc, match=msg):
        rw.replace_pattern_with_filters(gm, pattern(), replacement())
    assert canon(gm.graph) == before
    assert gm.code == code


def test_bad_callback_result_is_rejected_before_editing():
    gm = host_gm()
    before = canon(gm.graph)
    with pytest.raises(TypeError, match="Graph"):
        rw.replace_pattern_with_filters(
            gm, build(fxkit, ADD_RELU), replacement_callback=lambda m, g, p: "nope"
        )
    assert canon(gm.graph) == before


def test_bad_filter_and_callback_types():
    gm = host_gm()
    with pytest.raises(TypeError, match="match_filters"):
        rw.replace_pattern_with_filters(
            gm, build(fxkit, ADD_RELU), build(fxkit, ADD_CLAMP), match_filters=[1]
        )
    with pytest.raises(TypeError, match="callable"):
        rw.replace_pattern_with_filters(gm, build(fxkit, ADD_RELU), replacement_callback=3)


def test_replacement_module_missing_attribute_is_rejected_before_editing():
    rep_root = torch.nn.Module()
    rep = fxkit.GraphModule(rep_root, build(fxkit, ADD_CLAMP))
    with rep.graph.inserting_before(rep.graph.output_node()):
        rep.graph.create_node("get_attr", "nowhere")  # dangling on purpose
    gm = host_gm()
    before = canon(gm.graph)
    with pytest.raises(ValueError, match="nowhere"):
        rw.replace_pattern(gm, build(fxkit, ADD_RELU), rep)
    assert canon(gm.graph) == before


def test_no_match_returns_empty_and_leaves_graph():
    gm = host_gm()
    before = canon(gm.graph)
    assert rw.replace_pattern(gm, build(fxkit, LIT_PATTERN), build(fxkit, LIT_REPLACEMENT)) == []
    assert canon(gm.graph) == before
