"""Unit and bad-input tests for fxkit.graph."""

import builtins
import copy
import importlib.util
import operator
import pickle
import sys

import pytest
import torch
import torch.fx

from fxkit.graph import Graph
from fxkit.graph_module import GraphModule


def small():
    g = Graph()
    x = g.placeholder("x")
    a = g.call_function(operator.add, (x, 1))
    b = g.call_function(torch.relu, (a,))
    g.output(b)
    return g, x, a, b


def test_names_are_unique_identifiers_and_deterministic():
    def names():
        g = Graph()
        x = g.placeholder("x")
        for _ in range(3):
            x = g.call_function(operator.add, (x, 1))
        g.call_function(torch.sum, (x,))
        g.placeholder("input")
        g.call_module("layer1.0.conv", (x,))
        g.get_attr("linear.weight")
        g.create_node("call_function", torch.relu, (x,), name="my-node")
        g.create_node("call_function", torch.relu, (x,), name="3d")
        g.create_node("call_function", torch.relu, (x,), name="add_1")
        g.create_node("call_method", "__add__", (x, x))
        return [n.name for n in g.nodes]

    got = names()
    assert got == names()
    assert got == [
        "x", "add", "add_1", "add_2", "sum_1", "input_1", "layer1_0_conv", "linear_weight",
        "my_node", "_3d", "add_3", "add_4",
    ]  # fmt: skip
    assert all(n.isidentifier() for n in got)
    assert len(set(got)) == len(got)


def test_names_match_torch_fx():
    import torch.fx as tfx

    def build(G):
        g = G()
        x = g.placeholder("x")
        y = g.placeholder("sum")
        a = g.call_function(operator.add, (x, y))
        b = g.call_function(operator.add, (a, y))
        c = g.create_node("call_function", torch.relu, (b,), name="relu_3")
        d = g.call_function(torch.relu, (c,))
        e = g.call_function(torch.relu, (d,))
        f = g.call_function(builtins.getattr, (e, "shape"))
        h = g.call_method("viewAs", (e, x))
        g.output((f, h))
        return [n.name for n in g.nodes]

    assert build(Graph) == build(tfx.Graph)


def test_nodes_view():
    g, x, a, b = small()
    assert len(g.nodes) == 4
    assert [n.name for n in reversed(g.nodes)] == ["output", "relu", "add", "x"]
    assert a in g.nodes
    assert Graph().nodes.__len__() == 0 and not Graph().nodes


def test_erase_while_iterating():
    g, x, a, b = small()
    extra = [g.call_function(torch.neg, (x,)) for _ in range(3)]
    for n in g.nodes:
        if n in extra:
            g.erase_node(n)
    assert [n.name for n in g.nodes] == [
        "x",
        "add",
        "relu",
        "output",
    ]
    g.lint()


def test_erase_used_node_fails_and_changes_nothing():
    g, x, a, b = small()
    before = str(g)
    with pytest.raises(RuntimeError, match="still had 1 users"):
        g.erase_node(a)
    assert str(g) == before
    other = Graph()
    with pytest.raises(RuntimeError, match="from wrong graph"):
        other.erase_node(b.next)  # the output node: no users, another graph
    with pytest.raises(AttributeError, match="'str' object has no attribute 'users'") as ref:
        torch.fx.Graph().erase_node("add")
    with pytest.raises(AttributeError, match="'str' object has no attribute 'users'") as got:
        g.erase_node("add")
    assert type(got.value) is type(ref.value)


def test_erase_twice_warns():
    g, x, a, b = small()
    n = g.call_function(torch.neg, (x,))
    g.erase_node(n)
    with pytest.warns(UserWarning, match="already erased"):
        g.erase_node(n)
    assert len(g.nodes) == 4


def test_inserting_before_and_after():
    g, x, a, b = small()
    with g.inserting_before(b):
        n1 = g.call_function(torch.neg, (a,))
        n2 = g.call_function(torch.neg, (n1,))
    with g.inserting_after(x):  # each goes right after x: the latest comes first
        n3 = g.call_function(torch.tanh, (x,))
        n4 = g.call_function(torch.tanh, (x,))
    with g.inserting_before(None):
        first = g.placeholder("y")
    order = [n.name for n in g.nodes]
    assert order == ["y", "x", "tanh_1", "tanh", "add", "neg", "neg_1", "relu", "output"]
    assert n2 < b and n4 < n3 < a and first < x
    # outside the with-blocks nodes go to the end again
    last = g.call_function(torch.neg, (x,))
    assert last.prev.op == "output"
    with pytest.raises(AssertionError, match="Node to insert after is not in graph."):
        g.inserting_after(Graph().placeholder("z"))


def test_inserting_point_without_with_statement():
    g, x, a, b = small()
    g.inserting_before(a)
    n = g.call_function(torch.neg, (x,))
    assert n.next is a


def test_find_nodes():
    g, x, a, b = small()
    assert g.find_nodes(op="placeholder") == [x]
    assert g.find_nodes(op="call_function", target=torch.relu) == [b]
    assert g.find_nodes(op="call_function") == [a, b]
    with g.inserting_before(a):
        c = g.call_function(torch.relu, (x,))
    assert g.find_nodes(op="call_function", target=torch.relu) == [c, b]
    g.erase_node(c)
    assert g.find_nodes(op="call_function", target=torch.relu) == [b]


def test_node_copy_and_graph_copy():
    g, x, a, b = small()
    a.meta["k"] = 1
    h = Graph()
    y = h.placeholder("y")
    out = h.graph_copy(g, {x: y})
    assert out.name == "relu"
    assert [n.name for n in h.nodes] == ["y", "add", "relu"]
    copied_add = h.nodes.__iter__().__next__().next
    assert copied_add.meta == {"k": 1} and copied_add.meta is not a.meta
    h.output(out)
    h.lint()
    value, old_out = Graph().graph_copy(g, {}, return_output_node=True)
    assert old_out.op == "output" and value.name == "relu"


def test_deepcopy_and_pickle_graph():
    g, x, a, b = small()
    a.meta["k"] = [1]
    for clone in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
        assert str(clone) == str(g)
        clone.lint()
        assert next(iter(clone.nodes)).graph is clone
        assert clone.find_nodes(op="call_function", target=torch.relu)[0].name == "relu"


def test_pickle_long_chain_does_not_recurse():
    g = Graph()
    x = g.placeholder("x")
    for _ in range(sys.getrecursionlimit() * 3):
        x = g.call_function(operator.neg, (x,))
    g.output(x)
    clone = pickle.loads(pickle.dumps(g))
    assert len(clone.nodes) == len(g.nodes)


def test_lint_reports_bad_node_with_context():
    g, x, a, b = small()
    with g.inserting_before(a):
        early = g.call_function(torch.neg, (x,))
    early._args = (b,)  # bypass the API to simulate a broken pass
    early._input_nodes = {b: None}
    x.users.pop(early)
    b.users[early] = None
    with pytest.raises(RuntimeError, match="was used before it has been defined") as info:
        g.lint()
    assert ">>" in str(info.value) and "neg" in str(info.value)


def test_lint_checks_targets_against_owning_module():
    g = Graph()
    x = g.placeholder("x")
    m = g.call_module("missing", (x,))
    g.output(m)
    gm = GraphModule({"missing": torch.nn.ReLU()}, g)
    gm.graph.lint()
    with pytest.raises(AttributeError):  # get_submodule's error, as in torch.fx
        gm.graph.call_module("also_missing", (x,))
    with pytest.warns(UserWarning, match="no underlying reference"):
        gm.graph.get_attr("nothing_here")
    del gm.missing
    with pytest.raises(RuntimeError, match="references nonexistent attribute missing"):
        gm.graph.lint()


def test_dead_code_elimination_keeps_impure():
    g, x, a, b = small()
    dead = g.call_function(torch.neg, (x,))
    g.call_function(torch.neg, (dead,))
    kept = g.call_function(operator.setitem, (x, 0, 1))
    assert g.eliminate_dead_code()
    assert [n.name for n in g.nodes] == ["x", "add", "relu", "output", "setitem"]
    assert not g.eliminate_dead_code()
    assert kept in g.nodes
    # custom purity
    g.eliminate_dead_code(is_impure_node=lambda n: n.op == "placeholder")
    assert kept not in g.nodes


def test_str_and_tabular(capsys, monkeypatch):
    g, x, a, b = small()
    assert str(g).splitlines()[0] == "graph():"
    assert "return relu" in str(g)
    g.print_tabular()
    preferred = capsys.readouterr().out  # a rich table when rich is installed
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    g.print_tabular()
    with_tabulate = capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "tabulate", None)
    g.print_tabular()
    without = capsys.readouterr().out
    for text in (with_tabulate, without):
        assert text.splitlines()[0].split() == ["opcode", "name", "target", "args", "kwargs"]
        assert "operator.add" in text and "(x, 1)" in text
    for word in ("opcode", "kwargs", "operator.add", "(x, 1)"):
        assert word in preferred


def test_print_readable_colored_uses_rich_when_installed(monkeypatch):
    import fxkit

    gm = fxkit.symbolic_trace(lambda x: x + 1)
    plain = gm.print_readable(False)
    colored = gm.print_readable(False, colored=True)
    strip = __import__("re").compile(r"\x1b\[[0-9;]*m")
    if importlib.util.find_spec("rich") is not None:
        assert "\x1b[" in colored
    assert strip.sub("", colored).rstrip() == plain.rstrip()
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert gm.print_readable(False, colored=True) == plain  # no rich: the plain text


def test_output_node_and_placeholder_defaults():
    g, x, a, b = small()
    assert g.output_node().op == "output"
    with pytest.raises(RuntimeError):
        Graph().output_node()
    h = Graph()
    p = h.placeholder("y", default_value=3)
    assert p.args == (3,)
    assert h.placeholder("").name == "_unnamed"  # accepted, as in torch.fx
    with pytest.raises(AssertionError, match="Expected output node, got op=placeholder"):
        h.output_node()


def test_on_generate_code_and_set_codegen():
    from fxkit.codegen import CodeGen

    g, x, a, b = small()

    def make(previous):
        def add_comment(body):
            return ["# instrumented\n", *body]

        return add_comment

    with g.on_generate_code(make):
        src = g.python_code("self").src
    assert "# instrumented" in src
    assert "# instrumented" not in g.python_code("self").src
    g.set_codegen("nope")  # unchecked, as in torch.fx; generating code then fails
    with pytest.raises(AttributeError):
        g.python_code("self")
    g.set_codegen(CodeGen())


def test_many_inserts_at_one_point_keep_order():
    g, x, a, b = small()
    inserted = []
    for _ in range(300):
        with g.inserting_after(x):
            inserted.append(g.call_function(torch.neg, (x,)))
    nodes = list(g.nodes)
    keys = [n._order for n in nodes]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert nodes[1] is inserted[-1]


def test_rename_and_namespace_compat():
    g, x, a, b = small()
    a._rename("total")
    assert a.name == "total" and g._by_name["total"] is a and "add" not in g._by_name
    n = g.call_function(operator.add, (x, 1))
    assert n.name == "add_1"  # the old name stays reserved
    reserved = g._graph_namespace.create_name("relu", None)
    assert reserved == "relu_1"
    assert g.call_function(torch.relu, (x,)).name == "relu_2"
    assert "total" in g.python_code("self").src
