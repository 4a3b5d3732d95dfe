"""fxkit.config and fxkit.annotate against torch.fx's modules of the same names."""

from __future__ import annotations

import pytest
import torch
import torch.fx as tfx
import torch.fx.annotate as TA
import torch.fx.config as TC

import fxkit
import fxkit.annotate as KA
import fxkit.config as KC


def _settings(module):
    return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def test_config_has_torch_fx_names_and_defaults():
    assert _settings(KC) == _settings(TC)
    assert KC.disable_progress is True
    assert KC.verbose_progress is False
    assert KC.do_not_emit_stack_traces is False


def _annotated(lib, annotate):
    def f(x, n):
        total = annotate(x.sum(), torch.Tensor)
        return annotate(n, int), total

    return lib.symbolic_trace(f)


def test_annotate_sets_the_node_type_and_code():
    theirs = _annotated(tfx, TA.annotate)
    ours = _annotated(fxkit, KA.annotate)
    assert ours.code == theirs.code
    assert [n.type for n in ours.graph.nodes] == [n.type for n in theirs.graph.nodes]
    assert next(n for n in ours.graph.nodes if n.name == "sum_1").type is torch.Tensor


def test_annotate_outside_tracing_returns_the_value():
    value = [1, 2]
    assert KA.annotate(value, list) is value
    assert KA.annotate(3, str) == TA.annotate(3, str) == 3


def _twice(lib, annotate, first):
    def f(x):
        return annotate(annotate(x.sum(), first), float)

    return lib.symbolic_trace(f)


def test_annotating_twice_raises_torch_fx_error():
    with pytest.raises(RuntimeError) as theirs:
        _twice(tfx, TA.annotate, int)
    with pytest.raises(RuntimeError) as ours:
        _twice(fxkit, KA.annotate, int)
    assert str(ours.value).startswith(str(theirs.value))


@pytest.mark.parametrize("first", [None, 0, ""], ids=["none", "zero", "empty"])
def test_a_falsy_type_can_be_replaced(first):
    # torch.fx tests the existing type for truth, not for None.
    theirs = _twice(tfx, TA.annotate, first)
    ours = _twice(fxkit, KA.annotate, first)
    assert [n.type for n in ours.graph.nodes] == [n.type for n in theirs.graph.nodes]


def test_public_names():
    assert KA.__all__ == TA.__all__ == ["annotate"]
