"""Differential tests: Graph/Node editing behaves as in torch.fx.

Each test runs one script against ``torch.fx`` and ``fxkit`` and compares what is
observable: node order, exception type and message text (fxkit's message must contain
torch.fx's, its own detail comes after), warnings, printed graphs and hook calls.
"""

from __future__ import annotations

import operator
import typing
import warnings
from typing import Any, Callable, List, Tuple

import pytest
import torch
import torch.fx as tfx
import torch.fx._pytree as tfx_pytree
import torch.fx.node as tfx_node
import torch.utils._pytree as pytree

import fxkit
import fxkit._pytree as fk_pytree
import fxkit.node as fk_node

BOTH = [tfx, fxkit]


def outcome(script: Callable[[Any], Any], fx: Any) -> Tuple[str, Any]:
    """("ok", value) or ("raises", exception) for ``script(fx)``."""
    try:
        return ("ok", script(fx))
    except Exception as exc:  # the point is to compare what is raised
        return ("raises", exc)


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def assert_same(script: Callable[[Any], Any], *, full_message: bool = True) -> Tuple[Any, Any]:
    """Run ``script`` on both; same result, or same exception type and message text."""
    theirs, ours = outcome(script, tfx), outcome(script, fxkit)
    assert theirs[0] == ours[0], (theirs, ours)
    if theirs[0] == "ok":
        assert theirs[1] == ours[1]
        return theirs[1], ours[1]
    t_exc, o_exc = theirs[1], ours[1]
    assert isinstance(o_exc, type(t_exc)), (type(t_exc), type(o_exc), o_exc)
    expected = str(t_exc) if full_message else first_line(str(t_exc))
    assert expected in str(o_exc), (str(t_exc), str(o_exc))
    return t_exc, o_exc


def names(g: Any) -> List[str]:
    return [n.name for n in g.nodes]


# --- insertion points -----------------------------------------------------------------------


def test_inserting_after_puts_each_node_right_after_the_anchor() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        y = g.placeholder("y")
        g.output((x, y))
        with g.inserting_after(x):
            g.call_function(torch.neg, (x,), name="p")
            g.call_function(torch.neg, (x,), name="q")
            g.call_function(torch.neg, (x,), name="r")
        with g.inserting_before(y):
            g.call_function(torch.relu, (x,), name="s")
            g.call_function(torch.relu, (x,), name="t")
        with g.inserting_before(None):
            g.placeholder("a")
            g.placeholder("b")
        with g.inserting_after(None):
            g.call_function(torch.tanh, (x,), name="u")
        return names(g)

    theirs, _ = assert_same(script)
    assert theirs[:5] == ["b", "a", "x", "r", "q"]


def test_insert_point_follows_a_moved_anchor() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,), name="a")
        b = g.call_function(torch.neg, (x,), name="b")
        g.output((a, b))
        with g.inserting_after(a):
            g.call_function(torch.relu, (x,), name="r1")
            b.append(a)  # move the anchor after b
            g.call_function(torch.relu, (x,), name="r2")
        with g.inserting_before(a):
            g.call_function(torch.tanh, (x,), name="t1")
            x.append(a)
            g.call_function(torch.tanh, (x,), name="t2")
        return names(g)

    assert_same(script)


def test_inserting_at_a_node_of_another_graph_raises_as_torch_fx() -> None:
    for where in ("inserting_after", "inserting_before"):

        def script(fx: Any, where: str = where) -> Any:
            other = fx.Graph().placeholder("z")
            getattr(fx.Graph(), where)(other)

        assert_same(script)


# --- never fail earlier than torch.fx -------------------------------------------------------


def test_foreign_argument_is_accepted_and_lint_reports_it() -> None:
    def build(fx: Any) -> Any:
        other = fx.Graph()
        y = other.placeholder("y")
        g = fx.Graph()
        g.output(g.call_function(torch.relu, (y,)))
        return g

    assert_same(lambda fx: names(build(fx)))
    assert_same(lambda fx: build(fx).lint(), full_message=False)


def test_node_copy_without_arg_transform_is_accepted_and_lint_reports_it() -> None:
    def build(fx: Any) -> Any:
        src = fx.Graph()
        x = src.placeholder("x")
        r = src.call_function(torch.relu, (x,))
        g = fx.Graph()
        g.node_copy(r)
        return g

    assert_same(lambda fx: names(build(fx)))
    assert_same(lambda fx: build(fx).lint(), full_message=False)


def test_foreign_inputs_through_edits_are_accepted_until_lint() -> None:
    def edits(fx: Any, kind: str) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        r = g.call_function(torch.relu, (x,))
        g.output(r)
        z = fx.Graph().placeholder("z")
        if kind == "args":
            r.args = (z,)
        elif kind == "update_arg":
            r.update_arg(0, z)
        elif kind == "replace_input_with":
            r.replace_input_with(x, z)
        else:
            x.replace_all_uses_with(z)
        assert r in z.users
        g.lint()

    for kind in ("args", "update_arg", "replace_input_with", "replace_all_uses_with"):
        assert_same(lambda fx, kind=kind: edits(fx, kind), full_message=False)


def test_wrong_topological_order_lint_message() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,))
        b = g.call_function(torch.relu, (a,))
        g.output(b)
        x.append(b)  # b now precedes its input a
        g.lint()

    t_exc, o_exc = assert_same(script, full_message=False)
    assert isinstance(o_exc, RuntimeError) and ">>" in str(o_exc)


def test_cycle_through_another_node_is_accepted_until_lint() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,))
        b = g.call_function(torch.relu, (a,))
        g.output(b)
        a.update_arg(0, b)
        g.lint()

    assert_same(script, full_message=False)


def test_erased_input_is_accepted_until_lint() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        dead = g.call_function(torch.neg, (x,))
        g.erase_node(dead)
        r = g.call_function(torch.relu, (x,))
        g.output(r)
        r.args = (dead,)
        g.lint()

    assert_same(script, full_message=False)


def test_erase_node_with_users_same_type_and_text() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        g.output(g.call_function(torch.relu, (x,)))
        g.erase_node(x)

    assert_same(script)


def test_erase_node_of_another_graph_same_type_and_text() -> None:
    def script(fx: Any) -> Any:
        other = fx.Graph()
        y = other.placeholder("y")
        fx.Graph().erase_node(y)

    assert_same(script)


def test_erasing_an_erased_node_warns_as_torch_fx() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        n = g.call_function(torch.neg, (x,))
        g.output(x)
        g.erase_node(n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            g.erase_node(n)
        return [(w.category, str(w.message)) for w in caught], names(g)

    theirs, _ = assert_same(script)
    assert theirs[0]  # torch.fx does warn


@pytest.mark.parametrize(
    "op, target",
    [
        ("call_function", "relu"),
        ("call_module", torch.relu),
        ("get_attr", 3),
        ("call_method", None),
        ("not_an_op", torch.relu),
    ],
)
def test_bad_targets_and_opcodes_raise_as_torch_fx(op: str, target: Any) -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        g.create_node(op, target, (x,))

    assert_same(script)


@pytest.mark.parametrize("args, kwargs", [([1], None), ((), [1]), ("x", None)])
def test_bad_args_containers_raise_as_torch_fx(args: Any, kwargs: Any) -> None:
    def script(fx: Any) -> Any:
        fx.Graph().create_node("call_function", torch.relu, args, kwargs)

    t_exc, _ = assert_same(script, full_message=False)
    assert isinstance(t_exc, AssertionError)


def test_empty_list_args_are_accepted_as_torch_fx() -> None:
    assert_same(lambda fx: fx.Graph().create_node("call_function", torch.rand, [], []).args)


def test_node_argument_edits_raise_as_torch_fx() -> None:
    def script(fx: Any, which: str) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        r = g.call_function(operator.add, (x, 1))
        g.output(r)
        if which == "insert_arg":
            r.insert_arg(5, x)
        else:
            r.update_arg(5, x)

    for which in ("insert_arg", "update_arg"):
        assert_same(lambda fx, which=which: script(fx, which))


def test_lint_checks_targets_as_torch_fx() -> None:
    def script(fx: Any, case: str) -> Any:
        root = torch.nn.Module()
        root.sub = torch.nn.Module()
        root.sub.value = torch.nn.Parameter(torch.ones(1))
        root.plain = 3
        g = fx.Graph()
        x = g.placeholder("x")
        g.output(x)
        gm = fx.GraphModule(root, g)
        with gm.graph.inserting_after(next(iter(gm.graph.nodes))):
            if case == "missing":
                gm.graph.create_node("get_attr", "sub.nothing")
            elif case == "not_module":
                gm.graph.create_node("call_module", "plain", (x,))
            else:
                n = gm.graph.call_function(torch.relu, (x,))
                n.target = "relu"
        gm.graph.lint()

    for case in ("missing", "not_module", "bad_target"):
        assert_same(lambda fx, case=case: script(fx, case), full_message=False)


def test_get_attr_and_call_module_without_reference() -> None:
    def script(fx: Any, case: str) -> Any:
        root = torch.nn.Module()
        root.sub = torch.nn.Module()
        root.sub.t = torch.ones(1)  # a plain tensor attribute: not a parameter or buffer
        gm = fx.GraphModule(root, fx.Graph())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if case == "call_module":
                gm.graph.call_module("nothing", ())
            else:
                gm.graph.get_attr(case)
        return [(w.category, str(w.message)) for w in caught]

    for case in ("sub.t", "nope.t", "sub.missing", "call_module"):
        assert_same(lambda fx, case=case: script(fx, case))


# --- node hooks (torch.fx's private API; stored on the owning GraphModule) -------------------


def test_create_erase_and_replace_hooks_fire_as_in_torch_fx() -> None:
    def script(fx: Any) -> Any:
        seen: list = []
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,))
        b = g.call_function(torch.relu, (a,))
        g.output(b)
        gm = fx.GraphModule(torch.nn.Module(), g)
        # What _register_*_hook does on torch.fx: append to these lists on the module.
        gm._create_node_hooks = [
            lambda n: seen.append(("create", n.name, n.op, len(gm.graph.nodes)))
        ]
        gm._erase_node_hooks = [lambda n: seen.append(("erase", n.name, n in gm.graph.nodes))]
        gm._replace_hooks = [
            lambda old, new, user: seen.append(("replace", old.name, new, user.name))
        ]
        graph = gm.graph
        x, a, b = list(graph.nodes)[:3]
        with graph.inserting_after(a):
            c = graph.call_function(torch.tanh, (a,))
        a.replace_all_uses_with(c, delete_user_cb=lambda u: u is not c)
        b.replace_input_with(c, a)
        b.name = "renamed"
        c._rename("fresh")
        graph.erase_node(c)
        return seen

    assert_same(script)


# --- printing -------------------------------------------------------------------------------


def _annotated_graph(fx: Any) -> str:
    g = fx.Graph()
    x = g.placeholder("x", typing.List[float])
    y = g.placeholder("y", "MyType")
    z = g.placeholder("z", list[str])
    d = g.placeholder("d", int, default_value=3)
    r = g.call_function(torch.relu, (x,), type_expr=typing.Dict[str, int])
    s = g.call_function(torch.neg, (r,), type_expr=torch.Tensor)
    t = g.call_function(torch.neg, (r, y, z, d), {"k": [s, (r,)]}, type_expr="Foo")
    u = g.call_function(operator.getitem, (t, slice(r, None, 2)))
    g.output((s, t, u), type_expr=list[str])
    return str(g)


def test_print_graph_spells_annotations_as_torch_fx() -> None:
    theirs, _ = assert_same(_annotated_graph)
    assert "typing.List[float]" in theirs and "'MyType'" in theirs


def test_format_arg_and_custom_repr_as_torch_fx() -> None:
    class Custom:
        def _custom_fx_repr_fn(self) -> str:
            return "<custom>"

    def script(fx: Any, format_arg: Callable) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        n = g.call_function(torch.add, (x, Custom()), {"other": [Custom(), x]})
        g.output(n)
        texts = [n.format_node(), str(g)]
        for value in ([1, 2, 3, 4], (x,), (1, 2, 3), {"a": x}, Custom(), slice(1, 2)):
            texts.append(format_arg(value))
            texts.append(format_arg(value, max_list_len=2))
        return texts

    theirs = script(tfx, tfx_node._format_arg)
    ours = script(fxkit, fk_node._format_arg)
    assert theirs == ours
    assert "<custom>" in theirs[0]


def test_format_node_with_placeholder_names_as_torch_fx() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        out = g.output(x, type_expr=int)
        collected = ["first"]
        ret = [""]
        return x.format_node(collected), collected, out.format_node(None, ret), ret

    assert_same(script)


# --- replace_all_uses_with: nothing half-edited ----------------------------------------------


def test_propagate_meta_error_changes_nothing() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,))
        b = g.call_function(torch.relu, (a,))
        g.output(b)
        a.meta["val"] = 1
        new = g.call_function(torch.neg, (x,))
        new.meta["kept"] = 2
        try:
            a.replace_all_uses_with(new, propagate_meta=True)
        except AssertionError as exc:
            return str(exc), dict(new.meta), list(a.users), b.args
        return None

    theirs, ours = outcome(script, tfx), outcome(script, fxkit)
    assert theirs[0] == ours[0] == "ok"
    assert theirs[1][0] in ours[1][0]
    assert [repr(v) for v in theirs[1][1:]] == [repr(v) for v in ours[1][1:]]


def test_failing_delete_user_cb_changes_nothing() -> None:
    g = fxkit.Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.neg, (x,))
    b = g.call_function(torch.relu, (a,))
    c = g.call_function(torch.tanh, (a,))
    g.output((b, c))
    new = g.call_function(torch.neg, (x,))
    a.meta["val"] = 1
    before = str(g)

    def callback(user: Any) -> bool:
        if user is c:
            raise KeyError("boom")
        return True

    with pytest.raises(KeyError):
        a.replace_all_uses_with(new, callback, propagate_meta=True)
    assert str(g) == before and not new.meta


# --- _pytree --------------------------------------------------------------------------------


class Point:
    def __init__(self, x: Any, y: Any) -> None:
        self.x, self.y = x, y


def test_tree_flatten_spec_matches_torch_fx() -> None:
    try:
        pytree.register_pytree_node(
            Point, lambda p: ([p.x, p.y], None), lambda vals, _: Point(*vals)
        )
    except ValueError:
        pass
    nt = torch.return_types.max((torch.ones(1), torch.zeros(1)))
    values = [
        {"b": 1, "a": [2, (3, 4)]},
        [1, 2, {"x": 3}],
        (1, (2, 3)),
        nt,
        Point(1, [2, 3]),
    ]
    for value in values:
        _, spec = pytree.tree_flatten(value)
        assert tfx_pytree.tree_flatten_spec(value, spec) == fk_pytree.tree_flatten_spec(value, spec)
    # Longer sequences are cut to the spec; dict keys are read by name; a mismatching
    # unregistered container raises RuntimeError.
    _, spec = pytree.tree_flatten([1, 2])
    assert fk_pytree.tree_flatten_spec([5, 6, 7], spec) == [5, 6]
    _, spec = pytree.tree_flatten({"a": 1, "b": 2})
    assert fk_pytree.tree_flatten_spec({"b": 2, "a": 1}, spec) == [1, 2]
    _, spec = pytree.tree_flatten(Point(1, 2))
    for module in (tfx_pytree, fk_pytree):
        with pytest.raises(RuntimeError, match="is different from expected spec"):
            module.tree_flatten_spec(Point(1, [2, 3]), spec)


def test_register_pytree_flatten_spec_is_honoured() -> None:
    class Pair:
        def __init__(self, a: Any, b: Any) -> None:
            self.a, self.b = a, b

    pytree.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda v, _: Pair(*v))
    try:
        _, spec = pytree.tree_flatten(Pair(1, 2))
        for module in (tfx_pytree, fk_pytree):
            module.register_pytree_flatten_spec(Pair, lambda p, s: [p.b, p.a])
            try:
                assert module.tree_flatten_spec(Pair(1, 2), spec) == [2, 1]
                assert module.SUPPORTED_NODES_EXACT_MATCH[Pair] is None
            finally:
                module._deregister_pytree_flatten_spec(Pair)
            assert Pair not in module.SUPPORTED_NODES
    finally:
        pytree._deregister_pytree_node(Pair)


# --- other edits: same outcome for the same inputs ------------------------------------------


def _edit_case(fx: Any, case: str) -> Any:
    g = fx.Graph()
    x = g.placeholder("x")
    a = g.call_function(torch.neg, (x,))
    b = g.call_function(torch.relu, (a,))
    g.output(b)
    other = fx.Graph().placeholder("o")
    if case == "prepend_foreign":
        a.prepend(other)
    elif case == "prepend_not_node":
        a.prepend(3)
    elif case == "rauw_constant":
        a.replace_all_uses_with(7)
        return b.args, list(a.users)
    elif case == "replace_input_constant":
        b.replace_input_with(a, 2.5)
        return b.args, list(a.users), b.all_input_nodes
    elif case == "args_list":
        b.args = [x]
        return repr(b.args), list(x.users)
    elif case == "kwarg_non_str_key":
        b.update_kwarg(3, x)
        return repr(dict(b.kwargs))
    elif case == "placeholder_int":
        g.placeholder(3)
    elif case == "placeholder_empty":
        return g.placeholder("").name
    elif case == "insert_after_erased":
        d = g.call_function(torch.neg, (x,))
        g.erase_node(d)
        with g.inserting_after(d):
            g.call_function(torch.tanh, (x,))
    elif case == "output_node_missing":
        g.erase_node(b.next)
        g.output_node()
    elif case == "map_arg_not_callable":
        fx.node.map_arg((x,), 3)
    elif case == "erase_not_node":
        g.erase_node("x")
    elif case == "get_attr_int":
        g.create_node("get_attr", 3)
    elif case == "set_codegen_anything":
        g.set_codegen(None)
        return g._codegen
    return names(g)


@pytest.mark.parametrize(
    "case",
    [
        "prepend_foreign",
        "prepend_not_node",
        "rauw_constant",
        "replace_input_constant",
        "args_list",
        "kwarg_non_str_key",
        "placeholder_int",
        "placeholder_empty",
        "insert_after_erased",
        "output_node_missing",
        "map_arg_not_callable",
        "get_attr_int",
        "set_codegen_anything",
    ],
)
def test_edits_and_bad_inputs_as_torch_fx(case: str) -> None:
    if case in ("rauw_constant", "replace_input_constant", "args_list"):
        theirs, ours = (
            outcome(lambda fx: _edit_case(fx, case), tfx),
            outcome(lambda fx: _edit_case(fx, case), fxkit),
        )
        assert theirs[0] == ours[0] == "ok"
        assert repr(theirs[1]) == repr(ours[1])
        return
    assert_same(lambda fx: _edit_case(fx, case))


def test_erase_non_node_raises_attribute_error_as_torch_fx() -> None:
    theirs, ours = (
        outcome(lambda fx: _edit_case(fx, "erase_not_node"), tfx),
        outcome(lambda fx: _edit_case(fx, "erase_not_node"), fxkit),
    )
    assert isinstance(theirs[1], AttributeError) and isinstance(ours[1], AttributeError)
    assert str(theirs[1]) in str(ours[1])


def test_graph_copy_accepts_a_torch_fx_graph() -> None:
    src = tfx.symbolic_trace(lambda x: torch.relu(x) + 1).graph
    g = fxkit.Graph()
    out = g.graph_copy(src, {})
    g.output(out)
    g.lint()
    assert [n.op for n in g.nodes] == [n.op for n in src.nodes]
    assert [n.name for n in g.nodes] == [n.name for n in src.nodes]


# --- immutable collections ------------------------------------------------------------------


class _TorchFxList(tfx.immutable_collections.immutable_list):  # type: ignore[misc]
    pass


class _FxkitList(fxkit.immutable_collections.immutable_list):
    pass


_SUBCLASSES = {
    "torch.fx.immutable_collections": _TorchFxList,
    "fxkit.immutable_collections": _FxkitList,
}


def test_immutable_collections_as_torch_fx() -> None:
    import pickle

    import torch.fx.immutable_collections as tic

    import fxkit.immutable_collections as fic

    for mod in (tic, fic):
        with pytest.raises(TypeError) as info:
            mod.immutable_list([1]).append(2)
        if mod is tic:
            expected = str(info.value)
        else:
            assert expected in str(info.value)
        with pytest.raises(TypeError, match="does not support mutation"):
            mod.immutable_dict(a=1)["b"] = 2
        a, b = mod.immutable_dict(a=1, b=2), mod.immutable_dict(b=2, a=1)
        assert a == b and hash(a) == hash(b)
        sub = _SUBCLASSES[mod.__name__]
        assert type(pickle.loads(pickle.dumps(sub([1, 2])))) is sub
    ours = pytree.tree_flatten_with_path(fic.immutable_list([1, fic.immutable_dict(k=2)]))[0]
    theirs = pytree.tree_flatten_with_path(tic.immutable_list([1, tic.immutable_dict(k=2)]))[0]
    assert ours == theirs


def test_dead_code_elimination_lints_first_and_cleans_subgraphs() -> None:
    def unsorted(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,))
        b = g.call_function(torch.relu, (a,))
        g.output(b)
        x.append(b)
        g.eliminate_dead_code()

    assert_same(unsorted, full_message=False)

    def with_subgraph(fx: Any) -> Any:
        sub_graph = fx.Graph()
        y = sub_graph.placeholder("y")
        sub_graph.call_function(torch.neg, (y,))  # dead
        sub_graph.output(y)
        root = torch.nn.Module()
        root.sub = fx.GraphModule(torch.nn.Module(), sub_graph)
        g = fx.Graph()
        x = g.placeholder("x")
        s = g.get_attr("sub")
        g.output(g.call_function(operator.add, (x, s)))
        gm = fx.GraphModule(root, g)
        changed = gm.graph.eliminate_dead_code()
        return changed, names(gm.sub.graph), gm.sub.code

    assert_same(with_subgraph)


def test_format_node_with_tensor_metadata_as_torch_fx() -> None:
    def script(fx: Any) -> Any:
        g = fx.Graph()
        x = g.placeholder("x")
        a = g.call_function(torch.neg, (x,), type_expr=torch.Tensor)
        b = g.call_function(torch.relu, (a,))
        g.output(b)
        a.meta["val"] = torch.empty(2, 3, dtype=torch.float16).t()
        b.meta["tensor_meta"] = "not a tensor"
        return [n.format_node(include_tensor_metadata=True) for n in (x, a, b)]

    theirs, _ = assert_same(script)
    assert 'Tensor "f16[3, 2][1, 3]cpu"' in theirs[1]


_PURITY_TARGETS = [
    (torch.rand_like, lambda x: (x,)),
    (torch.rand, lambda x: (2,)),
    (torch.bernoulli, lambda x: (x,)),
    (torch.relu, lambda x: (x,)),
    (operator.add, lambda x: (x, x)),
    (torch.ops.aten.rand.default, lambda x: ([2],)),
    (torch.nn.functional.dropout, lambda x: (x,)),
    (torch._assert, lambda x: (True, "m")),
]


@pytest.mark.parametrize("target,make_args", _PURITY_TARGETS)
def test_is_impure_agrees_with_torch_fx(target, make_args):
    seen = []
    for fx in (torch.fx, fxkit):
        g = fx.Graph()
        x = g.placeholder("x")
        node = g.call_function(target, make_args(x))
        g.output(x)
        seen.append((node.is_impure(), node.is_impure(impure_random=False)))
    assert seen[0] == seen[1]


def test_dead_code_elimination_keeps_what_torch_fx_registers_as_side_effects():
    # grad-mode and autocast switches are registered in torch.fx's own registry
    import torch.fx as tfx

    for target, args in (
        (torch._C._set_grad_enabled, (False,)),
        (torch.amp._enter_autocast, ("cpu", None, True, None)),
    ):
        kept = []
        for lib in (fxkit, tfx):
            g = lib.Graph()
            x = g.placeholder("x")
            g.call_function(target, args)
            g.output(x)
            g.eliminate_dead_code()
            kept.append([n.op for n in g.nodes])
        assert kept[0] == kept[1] == ["placeholder", "call_function", "output"]
