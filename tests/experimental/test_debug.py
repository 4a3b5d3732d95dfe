"""fxkit.experimental.debug.set_trace against torch.fx's: same code text, and the generated
forward stops in pdb before running the graph."""

from __future__ import annotations

import pdb

import pytest
import torch
import torch.fx as tfx
import torch.fx.experimental.debug as theirs

import fxkit
import fxkit.experimental.debug as ours
from zoo import BY_NAME, make_root, trace


@pytest.mark.parametrize("case", ["mlp", "resnet", "kw_only", "pytree_inputs"])
def test_code_matches_torch_fx(case):
    zoo_case = BY_NAME[case]
    gm = trace(zoo_case, fxkit, make_root(zoo_case))
    plain = gm.code
    assert ours.set_trace(gm) is gm
    reference = theirs.set_trace(trace(zoo_case, tfx, make_root(zoo_case)))
    assert gm.code == reference.code
    assert "import pdb; pdb.set_trace()" in gm.code and plain != gm.code
    if zoo_case.concrete_args is None:  # (a pytree signature unpacks its inputs first)
        assert _body_lines(gm.code)[0] == "import pdb; pdb.set_trace()"


def _body_lines(code: str) -> list[str]:
    lines = [line.strip() for line in code.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("def forward"))
    return lines[start + 1 :]


def test_breakpoint_runs_before_the_graph(monkeypatch):
    calls = []

    def fake_set_trace(*args, **kwargs):
        calls.append("pdb")

    monkeypatch.setattr(pdb, "set_trace", fake_set_trace)
    model = torch.nn.Linear(3, 2)
    gm = ours.set_trace(fxkit.symbolic_trace(model))
    x = torch.randn(4, 3)
    torch.testing.assert_close(gm(x), model(x))
    gm(x)
    assert calls == ["pdb", "pdb"]


def test_keeps_existing_body_transformer_and_lasts_until_recompile():
    gm = fxkit.symbolic_trace(torch.nn.ReLU())

    def add_comment(body):
        return ["# traced\n", *body]

    gm.graph._codegen._body_transformer = add_comment
    ours.set_trace(gm)
    lines = _body_lines(gm.code)
    assert lines[:2] == ["import pdb; pdb.set_trace()", "# traced"]
    assert gm.graph._codegen._body_transformer is add_comment
    gm.graph._codegen._body_transformer = None
    gm.recompile()
    assert "pdb" not in gm.code


def test_bad_input_same_exception_type():
    for bad in (None, torch.nn.ReLU()):
        with pytest.raises(Exception) as theirs_err:
            theirs.set_trace(bad)
        with pytest.raises(type(theirs_err.value)):
            ours.set_trace(bad)
