"""The acc splitter and the net minimizer, fxkit vs torch.fx.

- ``_SplitterBase`` (construction + split) of a ~2k-node graph made of alternating supported
  and unsupported regions with residual edges, so the split has ~100 submodules;
- ``_MinimizerBase`` binary search over a ~500-node graph with one planted numeric bug
  (the "accelerated" run adds noise at one node).
"""

from __future__ import annotations

import contextlib
import io
import operator

import torch
import torch.fx as tfx
from torch.fx.passes import net_min_base as torch_net_min
from torch.fx.passes import operator_support as torch_op_support
from torch.fx.passes import splitter_base as torch_splitter

import fxkit
from benchmarks._harness import Row, compare
from fxkit.passes import net_min_base as fx_net_min
from fxkit.passes import operator_support as fx_op_support
from fxkit.passes import splitter_base as fx_splitter

# Nodes per region; regions alternate between supported and unsupported ops. The ops shift
# values by constants or take elementwise max/min, so a planted error never fades out.
_REGION = 20
_SUPPORTED = {operator.add, torch.maximum}


def _region_graph(fx, n: int):
    """A chain of ``n`` call nodes in regions of ``_REGION``; every 3rd node also reads the
    node two steps back, so dependencies are not a plain chain."""
    g = fx.Graph()
    x = g.placeholder("x")
    history = [x, x]
    for i in range(n):
        supported_region = (i // _REGION) % 2 == 0
        prev = history[-1]
        if i % 3 == 2:
            fn = torch.maximum if supported_region else torch.minimum
            node = g.call_function(fn, (prev, history[-2]))
        else:
            fn = operator.add if supported_region else operator.sub
            node = g.call_function(fn, (prev, 0.25))
        history.append(node)
    g.output(history[-1])
    return fx.GraphModule(torch.nn.Module(), g)


def _split(lib_splitter, op_support, gm, sample):
    class Support(op_support.OperatorSupportBase):
        def is_node_supported(self, submodules, node):
            return node.target in _SUPPORTED

    settings = lib_splitter._SplitterSettingBase()
    with contextlib.redirect_stdout(io.StringIO()):
        return lib_splitter._SplitterBase(gm, sample, Support(), settings)()


def _run_with_bug(mod, inputs, bug: str | None):
    """Run ``mod``'s graph node by node (works for both libraries); the node named ``bug``
    gets noise added, standing in for a broken accelerated kernel."""
    env = {}
    it = iter(inputs)

    def value(a):
        if isinstance(a, (tuple, list)):
            return type(a)(value(v) for v in a)
        return env[a.name] if hasattr(a, "op") else a

    for n in mod.graph.nodes:
        if n.op == "placeholder":
            env[n.name] = next(it)
        elif n.op == "output":
            return value(n.args[0])
        else:
            result = n.target(*value(n.args))
            env[n.name] = result + 1.0 if n.name == bug else result
    raise AssertionError("graph without output")


def _minimizer_cls(net_min, bug: str):
    class Minimizer(net_min._MinimizerBase):
        def run_a(self, mod, inputs, report_idx=-1):
            return _run_with_bug(mod, inputs, None)

        def run_b(self, mod, inputs, report_idx=-1):
            return _run_with_bug(mod, inputs, bug)

    return Minimizer


def _close(a, b, names):
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    err = max((float((x - y).abs().max()) for x, y in zip(a, b)), default=0.0)
    return err, err < 1e-4


def _minimize(net_min, gm, sample, bug: str):
    settings = net_min._MinimizerSettingBase(traverse_method="binary")
    minimizer = _minimizer_cls(net_min, bug)(gm, sample, _close, settings)
    with contextlib.redirect_stdout(io.StringIO()):
        culprits = minimizer.minimize()
    assert {n.name for n in culprits} == {bug}, culprits
    return culprits


def run(quick: bool) -> list[Row]:
    reps = 3 if quick else 7
    sample = (torch.randn(4, 4),)
    n_split, n_min = 2_000, 500
    rows = [
        compare(
            f"_SplitterBase split, {n_split}-node graph, regions of {_REGION}",
            lambda gm: _split(fx_splitter, fx_op_support, gm, sample),
            lambda gm: _split(torch_splitter, torch_op_support, gm, sample),
            reps=reps,
            setup_fxkit=lambda: _region_graph(fxkit, n_split),
            setup_torch_fx=lambda: _region_graph(tfx, n_split),
            target=0.5,
        )
    ]
    bug = "add_101"  # an acc-region node about a third of the way in
    rows.append(
        compare(
            f"_MinimizerBase binary search, {n_min}-node graph, one planted bug",
            lambda gm: _minimize(fx_net_min, gm, sample, bug),
            lambda gm: _minimize(torch_net_min, gm, sample, bug),
            reps=reps,
            setup_fxkit=lambda: _region_graph(fxkit, n_min),
            setup_torch_fx=lambda: _region_graph(tfx, n_min),
            target=0.5,
        )
    )
    return rows
