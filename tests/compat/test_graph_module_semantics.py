"""GraphModule semantics, differentially: the same script on torch.fx and on fxkit.

forward follows the last recompile(); generated source stays in linecache; co_filename and
the stderr report on errors; plain intermediate containers; pickle / torch.save / deepcopy in
and across processes; torch.jit.script; the private names real code imports.
"""

import copy
import inspect
import io
import linecache
import operator
import pickle
import re
import subprocess
import sys
from itertools import chain

import pytest
import torch
import torch.fx
import torch.fx._compatibility
import torch.fx.graph_module
from hypothesis import given, settings
from hypothesis import strategies as st

import fxkit
import fxkit._compatibility
import fxkit.graph_module

LIBS = [pytest.param(torch.fx, id="torch.fx"), pytest.param(fxkit, id="fxkit")]


def _gm_module(fx):
    return torch.fx.graph_module if fx is torch.fx else fxkit.graph_module


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.lin(x)) + 1


# --- 1. forward follows the last recompile() ----------------------------------------------------


@pytest.mark.parametrize("fx", LIBS)
def test_edit_without_recompile_changes_nothing_even_before_the_first_call(fx):
    torch.manual_seed(0)
    m = Small()
    gm = fx.symbolic_trace(m)
    (relu,) = [n for n in gm.graph.nodes if n.target is torch.relu]
    relu.target = torch.sigmoid  # edited before the module ever ran
    x = torch.randn(2, 3)
    assert "torch.relu" in gm.code and "sigmoid" not in gm.code
    assert torch.equal(gm(x), m(x))
    assert torch.equal(gm.forward(x), m(x))
    code = gm.recompile()
    assert "torch.sigmoid" in code.src and code.src == gm.code
    assert torch.allclose(gm(x), torch.sigmoid(m.lin(x)) + 1)


def _bad_codegen(fx):
    class Bad(fx.CodeGen):
        def gen_fn_def(self, free_vars, maybe_return_annotation, **_):
            return "def forward(self, x) this is not python:"

    return Bad()


@pytest.mark.parametrize("fx", LIBS)
def test_invalid_generated_code_raises_at_construction_and_recompile(fx):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.neg, (x,)))
    g.set_codegen(_bad_codegen(fx))
    with pytest.raises(SyntaxError):
        fx.GraphModule(torch.nn.Module(), g)
    ok = fx.Graph()
    ok.output(ok.call_function(torch.neg, (ok.placeholder("x"),)))
    gm = fx.GraphModule(torch.nn.Module(), ok)
    gm.graph.set_codegen(_bad_codegen(fx))
    with pytest.raises(SyntaxError):
        gm.recompile()


def _chain(fx, ops):
    g = fx.Graph()
    cur = x = g.placeholder("x")
    for op in ops:
        cur = g.call_function(op, (cur, x)) if op is operator.add else g.call_function(op, (cur,))
    g.output(cur)
    return fx.GraphModule(torch.nn.Module(), g)


_OPS = [torch.relu, torch.neg, torch.sin, operator.add, torch.tanh]


@settings(max_examples=20, deadline=None)
@given(
    ops=st.lists(st.sampled_from(_OPS), min_size=1, max_size=6),
    edit=st.integers(0, 5),
    new=st.sampled_from([torch.cos, torch.exp, torch.abs]),
    call_first=st.booleans(),
)
def test_edits_show_only_after_recompile_property(ops, edit, new, call_first):
    x = torch.linspace(-1, 1, 5)
    results = []
    for fx in (torch.fx, fxkit):
        gm = _chain(fx, ops)
        before = gm(x) if call_first else None
        node = [n for n in gm.graph.nodes if n.op == "call_function"][edit % len(ops)]
        node.target = new
        if node.target is new and len(node.args) == 2:
            node.args = node.args[:1]
        stale = gm(x)
        if before is not None:
            assert torch.equal(stale, before)
        gm.recompile()
        results.append((stale, gm(x), gm.code))
    (s1, f1, c1), (s2, f2, c2) = results
    assert torch.allclose(s1, s2) and torch.allclose(f1, f2)
    assert c1 == c2


# --- 2./3. linecache lifetime, co_filename, the stderr report ----------------------------------


def _failing_gm(fx):
    g = fx.Graph()
    a = g.placeholder("a")
    mm = g.call_function(torch.matmul, (a, a))
    s = g.call_function(torch.sin, (a,))
    c = g.call_function(torch.cos, (a,))
    g.output((mm, s, c, a))
    return fx.GraphModule(torch.nn.Module(), g)


def _report(capsys, gm, fx):
    with pytest.raises(RuntimeError, match="cannot be multiplied") as info:
        gm(torch.randn(2, 3))
    err = capsys.readouterr().err
    assert "Call using an FX-traced Module" in err
    return err[err.index("Call using an FX-traced Module") :], info.value


def test_generated_source_outlives_a_thousand_other_modules(capsys):
    # torch.fx never drops generated source; fxkit keeps it while the module lives.
    reference, _ = _report(capsys, _failing_gm(torch.fx), torch.fx)
    gm = _failing_gm(fxkit)
    others = []
    for i in range(1100):
        g = fxkit.Graph()
        g.output(g.call_function(operator.add, (g.placeholder("x"), i)))
        other = fxkit.GraphModule(torch.nn.Module(), g)
        other(1)
        others.append(other)
    again, exc = _report(capsys, gm, fxkit)
    assert again == reference and "torch.matmul(a, a)" in again
    assert "while running node 'matmul' (call_function torch.matmul)" in exc.__notes__
    name = type(others[0]).forward.__code__.co_filename
    del others, other
    import gc

    gc.collect()
    assert name not in linecache.cache  # ... and no longer


def test_stderr_report_matches_torch_fx(capsys):
    theirs, _ = _report(capsys, _failing_gm(torch.fx), torch.fx)
    ours, exc = _report(capsys, _failing_gm(fxkit), fxkit)
    assert ours == theirs
    assert "while running node 'matmul' (call_function torch.matmul)" in exc.__notes__


@pytest.mark.parametrize("fx", LIBS)
def test_co_filename_names_the_user_file(fx):
    gm = fx.symbolic_trace(Small())
    code = gm.forward.__code__
    line = Small.forward.__code__.co_firstlineno
    pattern = rf"<eval_with_key>\.\d+ from {re.escape(__file__)}:{line} in forward"
    assert re.fullmatch(pattern, code.co_filename)
    assert "torch.relu" in inspect.getsource(gm.forward)
    assert code.co_firstlineno == gm._prologue_start


def test_lineno_map_means_what_torch_fx_means():
    maps = [fx.symbolic_trace(Small())._lineno_map for fx in (torch.fx, fxkit)]
    assert maps[0] == maps[1]
    gm = fxkit.symbolic_trace(Small())
    nodes = list(gm.graph.nodes)
    lines = gm.code.split("\n")
    first = gm.forward.__code__.co_firstlineno
    for rel, index in gm._lineno_map.items():
        if index is not None and nodes[index].op == "call_function":
            assert nodes[index].name in lines[first + rel - 1]


# --- 4./5. containers, pickle, torch.save, deepcopy --------------------------------------------


def _local_model():
    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Module()
            self.a.b = Inner()

        def forward(self, x):
            return self.a.b(x) * 2

    return Outer()


@pytest.mark.parametrize("fx", LIBS)
def test_function_local_classes_become_plain_containers_and_pickle(fx):
    m = _local_model()
    gm = fx.symbolic_trace(m)
    assert type(gm.a) is torch.nn.Module and type(gm.a.b) is torch.nn.Module
    x = torch.randn(3, 2)
    for clone in (pickle.loads(pickle.dumps(gm)), copy.deepcopy(gm)):
        assert torch.equal(clone(x), m(x))
    buf = io.BytesIO()
    torch.save(gm, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x), m(x))


_SAVER = """
import sys, torch, torch.fx, fxkit
class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
    def forward(self, x):
        return self.lin(x).relu()
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
    def forward(self, x):
        return self.block(x) + 1
torch.manual_seed(0)
net = Net()
for fx, path in ((torch.fx, sys.argv[1]), (fxkit, sys.argv[2])):
    class Sub(fx.GraphModule):
        pass
    gm = fx.symbolic_trace(net)
    torch.save({"gm": gm, "sub": Sub(net, gm.graph), "out": net(torch.ones(1, 2))}, path)
"""

_LOADER = """
import sys, torch, fxkit
for path in sys.argv[1:]:
    saved = torch.load(path, weights_only=False)
    for key in ("gm", "sub"):
        assert torch.equal(saved[key](torch.ones(1, 2)), saved["out"]), key
print("loaded", len(sys.argv) - 1)
"""


def test_pickled_in_a_script_loads_in_a_fresh_process(tmp_path):
    (tmp_path / "save.py").write_text(_SAVER)
    (tmp_path / "load.py").write_text(_LOADER)
    paths = [str(tmp_path / "torch_fx.pt"), str(tmp_path / "fxkit.pt")]
    subprocess.run([sys.executable, "save.py", *paths], check=True, cwd=tmp_path)
    done = subprocess.run(
        [sys.executable, "load.py", *paths], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "loaded 2" in done.stdout


class Guarded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        if x.shape[0] == 2:
            return self.lin(x).relu()
        return x


def test_example_inputs_trace_pickles_saves_and_deepcopies():
    x = torch.randn(2, 3)
    gm = fxkit.symbolic_trace(Guarded(), example_inputs=(x,))
    # torch.fx cannot trace this without example values; what it traces, it pickles.
    reference = torch.fx.symbolic_trace(Small())
    for clone in (copy.deepcopy(reference), pickle.loads(pickle.dumps(reference))):
        assert torch.equal(clone(x), reference(x))
    buf = io.BytesIO()
    torch.save(gm, buf)
    buf.seek(0)
    for clone in (
        pickle.loads(pickle.dumps(gm)),
        torch.load(buf, weights_only=False),
        copy.deepcopy(gm),
    ):
        assert torch.equal(clone(x), gm(x))
        kept = [n for n in clone.graph.nodes if "fxkit_source" in n.meta]
        assert kept  # what pickles is kept
    assert any("val" in n.meta for n in gm.graph.nodes)  # the source module is untouched


@pytest.mark.parametrize("fx", LIBS)
@pytest.mark.parametrize("op", [torch.ops.aten.relu, torch.ops.aten.relu.default])
def test_torch_op_targets_pickle_and_deepcopy(fx, op):
    g = fx.Graph()
    g.output(g.call_function(op, (g.placeholder("a"),)))
    gm = fx.GraphModule(torch.nn.Module(), g)
    x = torch.randn(4)
    for clone in (pickle.loads(pickle.dumps(gm)), copy.deepcopy(gm)):
        assert torch.equal(clone(x), x.relu())
        assert [n.target for n in clone.graph.nodes][1] is op


def _dual_graph_module_class(fx):
    """torchvision's create_feature_extractor result, reduced: skips GraphModule.__init__
    and deep-copies ``__dict__`` wholesale."""
    gmod = _gm_module(fx)

    class DualGraphModule(fx.GraphModule):
        def __init__(self, root, train_graph, eval_graph, class_name="GraphModule"):
            super(fx.GraphModule, self).__init__()
            self.__class__.__name__ = class_name
            self.train_graph = train_graph
            self.eval_graph = eval_graph
            for node in chain(iter(train_graph.nodes), iter(eval_graph.nodes)):
                if node.op in ["get_attr", "call_module"]:
                    gmod._copy_attr(root, self, node.target)
            self.train()
            self.graph = train_graph
            self._tracer_cls = None

        def train(self, mode=True):
            if mode and not self.training:
                self.graph = self.train_graph
            elif not mode and self.training:
                self.graph = self.eval_graph
            return super().train(mode=mode)

        def __deepcopy__(self, memo):
            res = type(self).__new__(type(self))
            memo[id(self)] = res
            fake_mod = torch.nn.Module()
            fake_mod.__dict__ = copy.deepcopy(self.__dict__, memo)
            DualGraphModule.__init__(
                res, fake_mod, fake_mod.__dict__["train_graph"], fake_mod.__dict__["eval_graph"]
            )
            res.meta = copy.deepcopy(getattr(self, "meta", {}), memo)
            for name, attr in res.meta.get(gmod._USER_PRESERVED_ATTRIBUTES_KEY, {}).items():
                setattr(res, name, attr)
            return res

    return DualGraphModule


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
        )
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        y = self.drop(self.body(x)).mean((2, 3))
        return self.head(y).softmax(-1), y.flatten(1).size(0)


@pytest.mark.parametrize("fx", LIBS)
def test_subclass_deepcopy_that_copies_dict_and_skips_init(fx):
    torch.manual_seed(0)
    m = ConvNet()
    dual_cls = _dual_graph_module_class(fx)
    dual = dual_cls(m, fx.Tracer().trace(m.train()), fx.Tracer().trace(m.eval()))
    clone = copy.deepcopy(dual)
    x = torch.randn(2, 3, 8, 8)
    clone.eval()
    dual.eval()
    assert type(clone).__name__ == "GraphModule"
    assert torch.equal(clone(x)[0], dual(x)[0]) and torch.equal(clone(x)[0], m.eval()(x)[0])
    assert torch.equal(pickle.loads(pickle.dumps(clone))(x)[0], dual(x)[0])


# --- 6. TorchScript --------------------------------------------------------------------------


class MethodsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(4, 8)
        self.l2 = torch.nn.Linear(8, 4)
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x):
        h = self.l1(x).relu().transpose(0, 1).contiguous().transpose(0, 1)
        return torch.cat([self.l2(h) * self.scale, x], dim=-1).sum(-1, keepdim=True)


@pytest.mark.parametrize("fx", LIBS)
@pytest.mark.parametrize(
    "make, shape", [(ConvNet, (2, 3, 8, 8)), (MethodsNet, (3, 4)), (Small, (2, 3))]
)
def test_torch_jit_script(fx, make, shape):
    torch.manual_seed(0)
    m = make().eval()
    gm = fx.symbolic_trace(m)
    scripted = torch.jit.script(gm)
    x = torch.randn(shape)
    out, ref = scripted(x), m(x)
    flat_out = out if isinstance(out, tuple) else (out,)
    flat_ref = ref if isinstance(ref, tuple) else (ref,)
    for a, b in zip(flat_out, flat_ref):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-6)


# --- 7. private surface ------------------------------------------------------------------------

_PRIVATE = ["_exec_with_source", "_forward_from_src", "_copy_attr", "_assign_attr"]


@pytest.mark.parametrize("name", _PRIVATE + ["_CodeOnlyModule.__init__"])
def test_private_helpers_have_torch_fx_signatures(name):
    def resolve(mod):
        obj = mod
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    ours = inspect.signature(resolve(fxkit.graph_module))
    theirs = inspect.signature(resolve(torch.fx.graph_module))
    assert list(ours.parameters) == list(theirs.parameters)
    assert [p.default for p in ours.parameters.values()] == [
        p.default for p in theirs.parameters.values()
    ]


@pytest.mark.parametrize("fx", LIBS)
def test_private_helpers_behave_alike(fx):
    gmod = _gm_module(fx)
    assert gmod._USER_PRESERVED_ATTRIBUTES_KEY == "_user_preserved_attributes"
    scope = {"k": 2}
    gmod._exec_with_source("def f(x):\n    return x * k\n", scope)
    assert scope["f"](3) == 6
    fwd = gmod._forward_from_src("def forward(self, x):\n    return x + k\n", scope)
    assert fwd(None, 1) == 3 and "forward" not in scope
    assert "return x + k" in inspect.getsource(fwd)
    src, dst = torch.nn.Module(), torch.nn.Module()
    src.a = torch.nn.Module()
    src.a.register_buffer("buf", torch.ones(1))
    gmod._copy_attr(src, dst, "a.buf")
    assert type(dst.a) is torch.nn.Module and "a.buf" in dict(dst.named_buffers())
    gmod._assign_attr(torch.zeros(2), dst, "x.y")
    assert "x.y" in dict(dst.named_buffers())
    body = {"training": True}
    code_only = gmod._CodeOnlyModule(body)
    assert code_only.__dict__ is body and isinstance(code_only, torch.nn.Module)


@pytest.mark.parametrize("stable", [True, False])
def test_compatibility_decorator_marks_and_returns(stable):
    results = []
    for mod in (torch.fx._compatibility, fxkit._compatibility):

        def f():
            """Doc."""

        out = mod.compatibility(is_backward_compatible=stable)(f)
        results.append(
            (
                out is f,
                f in mod._MARKED_WITH_COMPATIBILITY,
                f in mod._BACK_COMPAT_OBJECTS,
                f.__doc__.startswith("Doc.") and len(f.__doc__) > 4,
            )
        )
    assert results[0] == results[1] == (True, True, stable, True)


def _hook_script(fx):
    """Register every kind of node hook, edit, rename, deep-copy; return what fired."""

    def f(x):
        return torch.relu(x) + 1

    gm = fx.symbolic_trace(f)
    log = []
    gm._register_create_node_hook(lambda n: log.append(("create", n.name)))
    gm._register_erase_node_hook(lambda n: log.append(("erase", n.name)))
    gm._register_replace_node_hook(lambda old, new, user: log.append(("rep", old.name, new)))
    gm._register_deepcopy_hook(lambda m: log.append(("deepcopy", m.graph is not gm.graph)))
    g = gm.graph
    relu = next(n for n in g.nodes if n.target is torch.relu)
    with g.inserting_after(relu):
        sig = g.call_function(torch.sigmoid, (relu.args[0],))
    relu.replace_all_uses_with(sig)
    g.erase_node(relu)
    sig.name = "sig"
    copied = copy.deepcopy(gm)
    log.append(("copied hooks", len(copied._create_node_hooks), len(copied._deepcopy_hooks)))
    for bad in ("_register_create_node_hook", "_register_erase_node_hook"):
        with pytest.raises(AssertionError) as info:
            getattr(gm, bad)(3)
        log.append(str(info.value))
    with gm._set_replace_hook(print):
        log.append(("inside", len(gm._replace_hooks)))
    log.append(("after", len(gm._replace_hooks)))
    gm._unregister_create_node_hook(gm._create_node_hooks[0])
    g.call_function(torch.neg, (sig,))
    return log


def test_node_hooks_fire_as_in_torch_fx():
    theirs, ours = _hook_script(torch.fx), _hook_script(fxkit)
    assert ours == theirs
    assert ("create", "sigmoid") in ours and ("erase", "relu") in ours


def _edit(fx, gm, kind, pick):
    """One edit of the given kind, made the same way on either library's graph."""
    g = gm.graph
    calls = [n for n in g.nodes if n.op == "call_function"]
    if not calls:
        return
    node = calls[pick % len(calls)]
    x = next(iter(g.nodes))
    if kind == "target":
        node.target = torch.cos
        node.args = node.args[:1]
    elif kind == "args":
        node.args = (x,) + tuple(node.args[1:])
    elif kind == "insert":
        with g.inserting_after(node):
            extra = g.call_function(torch.exp, (node,))
        node.replace_all_uses_with(extra, delete_user_cb=lambda u: u is not extra)
    elif kind == "erase":
        node.replace_all_uses_with(node.args[0])
        g.erase_node(node)
    elif kind == "rename":
        node.name = "renamed"
    elif kind == "move":
        before = node.prev
        if before.op == "call_function" and before not in node.all_input_nodes:
            before.prepend(node)
    elif kind == "update_arg":
        node.update_arg(0, x)
    elif kind == "replace_input":
        if node.args and node.args[0] is not x:
            node.replace_input_with(node.args[0], x)
    elif kind == "dce":
        g.output_node().args = (x,)
        g.eliminate_dead_code()


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(st.sampled_from(_OPS), min_size=2, max_size=6),
    edits=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "target",
                    "args",
                    "insert",
                    "erase",
                    "rename",
                    "move",
                    "update_arg",
                    "replace_input",
                    "dce",
                ]
            ),
            st.integers(0, 5),
        ),
        min_size=1,
        max_size=4,
    ),
    look=st.sampled_from(["nothing", "code", "call"]),
)
def test_any_edit_without_recompile_leaves_forward_and_code_alone(ops, edits, look):
    # fxkit may generate code lazily; whatever the edits, gm.code and gm(x) must stay what
    # they were at construction until recompile(), as on torch.fx.
    x = torch.linspace(-1, 1, 5)
    seen = []
    for fx in (torch.fx, fxkit):
        gm = _chain(fx, ops)
        if look == "code":
            gm.code
        elif look == "call":
            gm(x)
        for kind, pick in edits:
            _edit(fx, gm, kind, pick)
        stale_code, stale_out = gm.code, gm(x)
        gm.recompile()
        seen.append((stale_code, stale_out, gm.code, gm(x)))
    (c1, o1, n1, f1), (c2, o2, n2, f2) = seen
    assert c1 == c2 and n1 == n2
    assert torch.allclose(o1, o2, equal_nan=True) and torch.allclose(f1, f2, equal_nan=True)
