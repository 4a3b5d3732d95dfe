"""fxkit.experimental.const_fold against torch.fx's: same folded graphs, code, attribute names
and values; outputs equal to the unfolded model; FoldedGraphModule copies, pickles and
re-folds."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torch.fx as tfx
import torch.fx.experimental.const_fold as theirs
from torch import nn

import fxkit
import fxkit.experimental.const_fold as ours
from zoo import CASES, example, make_root, tensors_of, trace

# Both libraries warn when the constant graph reads attributes through get_attr before they
# exist on its module (see test_same_get_attr_warning_as_torch_fx).
_GET_ATTR_WARNING = "Attempted to insert a get_attr Node with no underlying reference"
pytestmark = pytest.mark.filterwarnings(f"ignore:{_GET_ATTR_WARNING}")


class Folds(nn.Module):
    """Constant work of several kinds: a transposed and scaled weight, a submodule applied to
    a parameter, reductions and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.b = nn.Parameter(torch.randn(4))
        self.lin = nn.Linear(4, 4)
        self.register_buffer("scale", torch.tensor(3.0))

    def forward(self, x):
        w2 = self.w.t() * self.scale + self.lin(self.b)
        return torch.relu(x @ w2) + self.b.sum(), x.sum() + (self.b + 1)


class OneFold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 3))

    def forward(self, x):
        return x @ (self.w * 2)


class IntFold(nn.Module):
    """A folded int (a size) becomes a one-element Parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 2))

    def forward(self, x):
        return x * self.w.size(0)


class Nothing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return (x + self.w).relu()


class Impure(nn.Module):
    """An assertion on constants must stay in the graph, and so must what depends on it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        torch._assert(self.w.sum() > 0, "positive")
        return x + self.w * 2


class Taken(OneFold):
    """Already has (and reads) attributes with the names the folded attrs would get."""

    def __init__(self) -> None:
        super().__init__()
        self._FX_CONST_FOLDED_ATTRS = nn.Parameter(torch.ones(1))
        self._FX_CONST_FOLDED_ATTRS_1 = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, x):
        return super().forward(x) * self._FX_CONST_FOLDED_ATTRS + self._FX_CONST_FOLDED_ATTRS_1


MODELS = {
    "folds": (Folds, lambda: (torch.randn(2, 4),)),
    "one_fold": (OneFold, lambda: (torch.randn(2, 3),)),
    "int_fold": (IntFold, lambda: (torch.randn(2, 2),)),
    "nothing": (Nothing, lambda: (torch.randn(2, 3),)),
    "impure": (Impure, lambda: (torch.randn(2, 3),)),
    "taken": (Taken, lambda: (torch.randn(2, 3),)),
}


def _build(name):
    torch.manual_seed(0)
    cls, inputs = MODELS[name]
    return cls().eval(), inputs()


def _both(module_for_lib, **kwargs):
    """split_const_subgraphs from both libraries, silencing the get_attr warning both emit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return (
            ours.split_const_subgraphs(module_for_lib(fxkit), **kwargs),
            theirs.split_const_subgraphs(module_for_lib(tfx), **kwargs),
        )


def _folded_values(gm):
    name = gm.fx_const_folded_attrs_name
    if name is None:
        return []
    value = getattr(gm, name)
    return list(value) if isinstance(value, nn.ParameterList) else [value]


def _same_code(ours_gm, theirs_gm):
    # Generated code differs by design only where it names the library itself (wrap lines,
    # the tracer's private helpers).
    assert ours_gm.code == theirs_gm.code.replace("torch.fx.", "fxkit.")


def _assert_same_fold(folded, reference):
    assert isinstance(folded, ours.FoldedGraphModule)
    assert isinstance(folded, fxkit.GraphModule)
    _same_code(folded, reference)
    assert folded.fx_const_folded_attrs_name == reference.fx_const_folded_attrs_name
    if reference.const_subgraph_module is None:
        assert folded.const_subgraph_module is None
    else:
        _same_code(folded.const_subgraph_module, reference.const_subgraph_module)
    folded.run_folding()
    reference.run_folding()
    ours_values, theirs_values = _folded_values(folded), _folded_values(reference)
    assert len(ours_values) == len(theirs_values)
    for a, b in zip(ours_values, theirs_values):
        assert isinstance(a, nn.Parameter) and a.requires_grad == b.requires_grad
        torch.testing.assert_close(a, b)
    assert _state_keys(folded) == _state_keys(reference)


def _state_keys(gm):
    # tensor constants included: both libraries register them as buffers
    return sorted(gm.state_dict())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_fold_as_torch_fx(name):
    model, inputs = _build(name)
    folded, reference = _both(lambda lib: model)
    _assert_same_fold(folded, reference)
    for got, want in zip(tensors_of(folded(*inputs)), tensors_of(model(*inputs))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_zoo_graph_modules_fold_as_torch_fx(case):
    # one root per library: tracing stores tensor constants on the root it traces
    try:
        reference_gm = trace(case, tfx, make_root(case))
    except Exception as exc:  # the zoo's case is not traceable by torch.fx: neither folds
        with pytest.raises(type(exc)):
            trace(case, fxkit, make_root(case))
        return
    ours_gm = trace(case, fxkit, make_root(case))
    folded, reference = _both(lambda lib: reference_gm if lib is tfx else ours_gm)
    _assert_same_fold(folded, reference)
    args, kwargs = example(case)
    want = tensors_of(reference_gm(*args, **kwargs))
    for got, expected in zip(tensors_of(folded(*args, **kwargs)), want, strict=True):
        torch.testing.assert_close(got, expected)


def test_folded_values_equal_eager_computation():
    model, (x,) = _build("folds")
    folded, _ = _both(lambda lib: model)
    folded.run_folding()
    with torch.no_grad():
        eager = [
            model.w.t() * model.scale + model.lin(model.b),
            model.b.sum(),
            model.b + 1,
        ]
    for got, want in zip(_folded_values(folded), eager, strict=True):
        torch.testing.assert_close(got, want)


def test_nothing_to_fold_keeps_behaviour():
    model, (x,) = _build("nothing")
    folded = ours.split_const_subgraphs(model)
    assert folded.const_subgraph_module is None and folded.fx_const_folded_attrs_name is None
    assert folded.code == fxkit.symbolic_trace(model).code
    folded.run_folding()
    folded.run_folding()  # nothing to fold: never "already run"
    torch.testing.assert_close(folded(x), model(x))


def test_name_does_not_collide():
    model, _ = _build("taken")
    folded, reference = _both(lambda lib: model)
    assert folded.fx_const_folded_attrs_name == "_FX_CONST_FOLDED_ATTRS_2"
    assert reference.fx_const_folded_attrs_name == "_FX_CONST_FOLDED_ATTRS_2"


@pytest.mark.parametrize(
    "name", ["plain", "a.b-c", "1abc", "x_3", "w", "w_9", "_", "sp ace__", "naïve"]
)
def test_get_unique_attr_name_in_module(name):
    holder = nn.Module()
    holder.x_3 = 1
    holder.w = nn.Parameter(torch.zeros(1))
    holder.w_9 = 2
    holder.w_10 = 3
    expected = theirs.get_unique_attr_name_in_module(holder, name)
    assert ours.get_unique_attr_name_in_module(holder, name) == expected


def test_skip_folding_node_fn():
    model, (x,) = _build("folds")
    skip = lambda n: n.op == "call_module"  # noqa: E731
    folded, reference = _both(lambda lib: model, skip_folding_node_fn=skip)
    _assert_same_fold(folded, reference)
    assert "self.lin(" in folded.code
    for got, want in zip(folded(x), model(x)):
        torch.testing.assert_close(got, want)


def test_run_folding_runs_once_then_refolds_after_reset():
    model, (x,) = _build("one_fold")
    folded = ours.split_const_subgraphs(model)
    assert not folded.has_folding_been_run
    folded(x)
    assert folded.has_folding_been_run
    with pytest.raises(AssertionError, match="Folding has already been run"):
        folded.run_folding()
    # the constant subgraph reads the model's own parameters: re-folding sees new values
    with torch.no_grad():
        model.w.mul_(-1)
    folded.has_folding_been_run = False
    folded.run_folding()
    torch.testing.assert_close(getattr(folded, folded.fx_const_folded_attrs_name), model.w * 2)
    torch.testing.assert_close(folded(x), model(x))


def test_device_for_folded_attrs_applies_to_ints():
    model, (x,) = _build("int_fold")
    folded = ours.split_const_subgraphs(model, device_for_folded_attrs="meta")
    folded.run_folding()
    assert getattr(folded, folded.fx_const_folded_attrs_name).device.type == "meta"
    default = FoldedDefaults()
    assert default.device_for_folded_attrs == "cuda"  # FoldedGraphModule's own default


def FoldedDefaults():  # noqa: N802 - builds the smallest FoldedGraphModule
    g = fxkit.Graph()
    g.output(g.placeholder("x"))
    return ours.FoldedGraphModule(nn.Module(), g)


@pytest.mark.parametrize("when", ["before_folding", "after_folding"])
def test_deepcopy_pickle_and_recompile(when):
    model, (x,) = _build("folds")
    folded = ours.split_const_subgraphs(model)
    if when == "after_folding":
        folded.run_folding()
    expected = model(x)
    clones = [copy.deepcopy(folded), pickle.loads(pickle.dumps(folded))]
    for clone in clones:
        assert isinstance(clone, ours.FoldedGraphModule)
        assert clone.code == folded.code
        assert clone.fx_const_folded_attrs_name == folded.fx_const_folded_attrs_name
        assert clone.has_folding_been_run == folded.has_folding_been_run
        for got, want in zip(clone(x), expected):
            torch.testing.assert_close(got, want)
    folded.recompile()
    for got, want in zip(folded(x), expected):
        torch.testing.assert_close(got, want)


def test_accepts_torch_fx_graph_module():
    model, (x,) = _build("folds")
    gm = tfx.symbolic_trace(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folded = ours.split_const_subgraphs(gm)
        reference = theirs.split_const_subgraphs(gm)
    _assert_same_fold(folded, reference)
    for got, want in zip(folded(x), model(x)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("bad", [None, 3, "model"], ids=["none", "int", "str"])
def test_bad_input_same_exception_type(bad):
    with pytest.raises(Exception) as theirs_err:
        theirs.split_const_subgraphs(bad)
    with pytest.raises(type(theirs_err.value)):
        ours.split_const_subgraphs(bad)


def test_same_get_attr_warning_as_torch_fx():
    model, _ = _build("one_fold")
    with pytest.warns(UserWarning, match=_GET_ATTR_WARNING) as ours_record:
        ours.split_const_subgraphs(model)
    with pytest.warns(UserWarning, match=_GET_ATTR_WARNING) as theirs_record:
        theirs.split_const_subgraphs(model)
    assert [str(w.message) for w in ours_record] == [str(w.message) for w in theirs_record]


def test_keyword_arguments_reach_forward():
    # torch.fx's FoldedGraphModule.__call__ drops keyword arguments (the default is used
    # silently); fxkit's passes them on.
    class Scaled(OneFold):
        def forward(self, x, scale=1.0):
            return super().forward(x) * scale

    torch.manual_seed(0)
    model = Scaled()
    folded = ours.split_const_subgraphs(model)
    x = torch.randn(2, 3)
    torch.testing.assert_close(folded(x, scale=3.0), model(x, scale=3.0))
