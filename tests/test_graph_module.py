"""GraphModule: construction, recompile, copying, pickling, folders, submodule edits, errors."""

import copy
import importlib
import operator
import pickle
import sys
import typing

import pytest
import torch

import fxkit
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule


class MyModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.param = torch.nn.Parameter(torch.rand(3, 4))
        self.linear = torch.nn.Linear(4, 5)
        self.unused = torch.nn.Linear(2, 2)
        self.register_buffer("scale", torch.full((5,), 2.0))

    def forward(self, x):
        return self.linear(x + self.param).clamp(min=0.0, max=1.0) * self.scale


def my_graph(target_linear="linear"):
    g = Graph()
    x = g.placeholder("x")
    p = g.get_attr("param")
    a = g.call_function(operator.add, (x, p))
    lin = g.call_module(target_linear, (a,))
    c = g.call_method("clamp", (lin,), {"min": 0.0, "max": 1.0})
    s = g.get_attr("scale")
    g.output(g.call_function(operator.mul, (c, s)))
    return g


@pytest.fixture
def gm_and_module():
    torch.manual_seed(0)
    m = MyModule()
    return GraphModule(m, my_graph()), m


def test_matches_eager_and_copies_only_used(gm_and_module):
    gm, m = gm_and_module
    x = torch.randn(3, 4)
    assert torch.equal(gm(x), m(x))
    assert not hasattr(gm, "unused")
    assert gm.linear is m.linear  # shared, not copied
    assert "scale" in dict(gm.named_buffers())
    assert "param" in dict(gm.named_parameters())
    assert type(gm).__name__ == "GraphModule"


def test_each_instance_has_its_own_class(gm_and_module):
    gm, m = gm_and_module
    other = GraphModule(m, my_graph(), class_name="Other")
    assert type(gm) is not type(other)
    assert type(other).__name__ == "Other" and type(gm).__name__ == "GraphModule"
    assert isinstance(gm, GraphModule)


def test_dict_root_with_dotted_paths():
    lin = torch.nn.Linear(4, 5)
    root = {"param": torch.nn.Parameter(torch.zeros(3, 4)), "blocks.0.lin": lin,
            "scale": torch.ones(5)}  # fmt: skip
    gm = GraphModule(root, my_graph("blocks.0.lin"))
    assert gm.blocks._modules["0"].lin is lin
    assert "scale" in dict(gm.named_buffers())
    gm(torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="does not provide it"):
        GraphModule({"param": torch.zeros(1)}, my_graph())


def test_intermediate_modules_are_created_for_dotted_module_root():
    outer = torch.nn.Module()
    outer.blocks = torch.nn.ModuleList([torch.nn.Module()])
    outer.blocks[0].lin = torch.nn.Linear(4, 5)
    outer.param = torch.nn.Parameter(torch.zeros(3, 4))
    outer.register_buffer("scale", torch.ones(5))
    gm = GraphModule(outer, my_graph("blocks.0.lin"))
    assert gm.get_submodule("blocks.0.lin") is outer.blocks[0].lin
    assert type(gm.blocks) is torch.nn.Module  # fresh intermediate, not the ModuleList


def test_bad_constructor_input():
    with pytest.raises(TypeError, match="nn.Module or a dict"):
        GraphModule([1, 2], my_graph())
    with pytest.raises(TypeError, match="Graph"):
        GraphModule(torch.nn.Module(), "graph")
    with pytest.raises(ValueError, match="non-empty string"):
        GraphModule(MyModule(), my_graph(), class_name="")
    assert type(GraphModule(MyModule(), my_graph(), class_name="<lambda>")).__name__ == "<lambda>"
    gm = GraphModule(MyModule(), my_graph())
    with pytest.raises(TypeError):
        gm.graph = 3


def test_forward_follows_the_last_recompile(gm_and_module):
    gm, m = gm_and_module
    x = torch.randn(3, 4)
    for node in gm.graph.find_nodes(op="call_function", target=operator.add):
        node.target = operator.sub
    # Edited before the first call but not recompiled: forward is still the one generated
    # at construction (torch.fx semantics).
    assert "x + param" in gm.code and gm._code == gm.code
    assert torch.allclose(gm(x), m(x))
    code = gm.recompile()
    assert "x - param" in code.src and "x - param" in gm.code
    expected = m.linear(x - m.param).clamp(0, 1) * m.scale
    assert torch.allclose(gm(x), expected)


def test_graph_setter_recompiles(gm_and_module):
    gm, m = gm_and_module
    g = Graph()
    x = g.placeholder("x")
    g.output(g.call_function(torch.neg, (x,)))
    gm.graph = g
    assert gm(torch.ones(1)).item() == -1.0
    assert g.owning_module is gm


def test_deepcopy_copy_and_pickle(gm_and_module):
    gm, m = gm_and_module
    gm.meta["note"] = "kept"
    x = torch.randn(3, 4)
    expected = gm(x)
    deep = copy.deepcopy(gm)
    assert deep.linear is not gm.linear and torch.equal(deep(x), expected)
    assert deep.graph is not gm.graph and deep.meta["note"] == "kept"
    shallow = copy.copy(gm)
    assert shallow.linear is gm.linear and torch.equal(shallow(x), expected)
    restored = pickle.loads(pickle.dumps(gm))
    assert torch.equal(restored(x), expected)
    assert type(restored).__name__ == "GraphModule" and restored.meta["note"] == "kept"
    restored.graph.lint()


class Sub(GraphModule):
    def extra(self):
        return "sub"


def test_subclass_survives_pickle_and_deepcopy(gm_and_module):
    gm, m = gm_and_module
    sub = Sub(m, my_graph())
    for clone in (copy.deepcopy(sub), pickle.loads(pickle.dumps(sub))):
        assert isinstance(clone, Sub) and clone.extra() == "sub"


class CustomDeepcopy(GraphModule):
    """A subclass pattern seen in the wild: skip GraphModule.__init__, then set the graph."""

    def __deepcopy__(self, memo):
        res = type(self).__new__(type(self))
        torch.nn.Module.__init__(res)
        res.__dict__["_modules"] = copy.deepcopy(self._modules, memo)
        res.__dict__["_parameters"] = copy.deepcopy(self._parameters, memo)
        res.__dict__["_buffers"] = copy.deepcopy(self._buffers, memo)
        res.graph = copy.deepcopy(self.graph, memo)
        return res


def test_subclass_deepcopy_that_skips_init(gm_and_module):
    gm, m = gm_and_module
    x = torch.randn(3, 4)
    c = CustomDeepcopy(m, my_graph())
    clone = copy.deepcopy(c)
    assert torch.equal(clone(x), c(x))


def test_to_folder_writes_an_importable_package(tmp_path, gm_and_module):
    gm, m = gm_and_module
    folder = tmp_path / "exported"
    gm.to_folder(folder, "Exported")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("exported")
        loaded = module.Exported()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("exported", None)
        sys.modules.pop("exported.module", None)
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), gm(x))
    with pytest.raises(ValueError):
        gm.to_folder(tmp_path / "bad", "not-valid")


def test_add_and_delete_submodules(gm_and_module):
    gm, m = gm_and_module
    assert gm.add_submodule("extra.deep.relu", torch.nn.ReLU())
    assert isinstance(gm.get_submodule("extra.deep.relu"), torch.nn.ReLU)
    gm.flag = 3
    assert not gm.add_submodule("flag.relu", torch.nn.ReLU())
    assert gm.flag == 3
    assert gm.delete_submodule("extra.deep.relu")
    assert not gm.delete_submodule("extra.deep.relu")
    assert not gm.delete_submodule("nothing.here")
    gm.delete_all_unused_submodules()
    assert not hasattr(gm, "extra")
    assert isinstance(gm.linear, torch.nn.Linear)
    with pytest.raises(TypeError):
        gm.add_submodule("x", 3)


def test_delete_all_unused_keeps_children_of_used_modules():
    root = torch.nn.Module()
    root.seq = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh())
    g = Graph()
    x = g.placeholder("x")
    g.output(g.call_module("seq", (x,)))
    gm = GraphModule(root, g)
    gm.add_submodule("spare", torch.nn.ReLU())
    gm.delete_all_unused_submodules()
    assert not hasattr(gm, "spare") and len(gm.seq) == 2


def boom(x):
    raise ValueError("bad value inside the graph")


def test_exception_note_names_node_and_user_line():
    g = Graph()
    x = g.placeholder("x")
    y = g.call_function(torch.relu, (x,))
    z = g.call_function(boom, (y,))
    z.meta["stack_trace"] = '  File "user_model.py", line 12, in forward\n    return boom(y)\n'
    g.output(z)
    gm = GraphModule(torch.nn.Module(), g)
    with pytest.raises(ValueError, match="bad value") as info:
        gm(torch.ones(1))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    if sys.version_info >= (3, 11):
        assert "boom" in notes and "user_model.py" in notes
    import traceback

    text = "".join(traceback.format_exception(info.value))
    assert "boom(relu)" in text  # the generated line, from linecache


def test_str_and_print_readable(gm_and_module, capsys):
    gm, m = gm_and_module
    assert "def forward" in str(gm)
    inner = GraphModule(m, my_graph())
    gm.add_submodule("inner", inner)
    text = gm.print_readable(print_output=False)
    assert text.startswith("class GraphModule(torch.nn.Module):")
    assert "class inner(torch.nn.Module):" in text
    gm.print_readable()
    assert "def forward" in capsys.readouterr().out


def test_training_flag_is_copied():
    m = MyModule().eval()
    assert not GraphModule(m, my_graph()).training


def test_reading_an_attribute_of_a_called_module_keeps_the_module():
    root = torch.nn.Module()
    root.a = torch.nn.Linear(2, 2)
    g = Graph()
    x = g.placeholder("x")
    y = g.call_module("a", (x,))
    w = g.get_attr("a.weight")
    g.output((y, w))
    gm = GraphModule(root, g)
    assert gm.a is root.a
    out, weight = gm(torch.ones(1, 2))
    assert torch.equal(out, root.a(torch.ones(1, 2))) and weight is root.a.weight


def test_to_folder_with_string_and_typing_annotations(tmp_path):
    # the generated code binds string annotations ("Foo" -> _Foo_) and typing names as
    # globals, as torch.fx does; the written module must define them too
    g = fxkit.Graph()
    x = g.placeholder("x", type_expr="Foo")
    y = g.placeholder("y", type_expr=typing.List[float])
    g.output(g.call_function(operator.add, (x, y)))
    gm = fxkit.GraphModule(torch.nn.Module(), g)
    assert "x : _Foo_, y : typing_List[float]" in gm.code
    gm.to_folder(tmp_path / "annotated", "Annotated")
    sys.path.insert(0, str(tmp_path))
    try:
        loaded = importlib.import_module("annotated").Annotated()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("annotated", None)
        sys.modules.pop("annotated.module", None)
    assert loaded(1, 2) == 3
    assert loaded.forward.__annotations__["x"] == "Foo"
