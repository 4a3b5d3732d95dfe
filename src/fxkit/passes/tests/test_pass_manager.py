"""Self-tests of the legacy :mod:`fxkit.passes.pass_manager` and the GraphModule
:mod:`fxkit.passes.infra.pass_manager` (``python -m unittest fxkit.passes.tests.test_pass_manager``)."""

from __future__ import annotations

import operator
import unittest

import torch

import fxkit
from fxkit.passes.infra import pass_manager as infra
from fxkit.passes.infra.pass_base import PassResult
from fxkit.passes.pass_manager import (
    PassManager,
    inplace_wrapper,
    loop_pass,
    these_before_those_pass_constraint,
    this_before_that_pass_constraint,
)


def _doubler():
    return lambda x: 2 * x


class TestPassManager(unittest.TestCase):
    """The legacy pass manager: schedule, constraints, wrappers."""

    def test_runs_passes_in_order(self) -> None:
        pm = PassManager([lambda x: x + 1, lambda x: x * 10])
        self.assertEqual(pm(1), 20)

    def test_this_before_that_violation_raises(self) -> None:
        passes = [_doubler() for _ in range(4)]
        pm = PassManager(passes)
        pm.add_constraint(this_before_that_pass_constraint(passes[-1], passes[0]))
        self.assertRaises(RuntimeError, pm.validate)

    def test_these_before_those_sees_through_wrappers(self) -> None:
        passes = [_doubler() for _ in range(3)]
        pm = PassManager([inplace_wrapper(p) for p in passes])
        pm.add_constraint(these_before_those_pass_constraint(passes[-1], passes[0]))
        self.assertRaises(RuntimeError, pm.validate)

    def test_managers_share_no_state(self) -> None:
        a, b = PassManager(), PassManager()
        a.add_pass(_doubler())
        self.assertEqual((a(1), b(1)), (2, 1))

    def test_loop_pass(self) -> None:
        self.assertEqual(loop_pass(_doubler(), n_iter=3)(1), 8)
        self.assertEqual(loop_pass(_doubler(), predicate=lambda x: x < 50)(1), 64)
        self.assertRaises(AssertionError, loop_pass, _doubler())


class TestInfraPassManager(unittest.TestCase):
    """The GraphModule pass manager: results, steps, history."""

    def _module(self):
        g = fxkit.Graph()
        x = g.placeholder("x")
        g.output(g.call_function(operator.add, (x, 1)))
        return fxkit.GraphModule(torch.nn.Module(), g)

    def test_rewrite_and_history(self) -> None:
        def add_to_mul(gm):
            for n in gm.graph.nodes:
                if n.target is operator.add:
                    n.target = operator.mul
            return PassResult(gm, False)

        pm = infra.PassManager([add_to_mul])
        res = pm(self._module())
        self.assertEqual(res.graph_module(torch.tensor(3.0)).item(), 3.0)
        self.assertFalse(res.modified)
        self.assertEqual([(r.name, r.changed) for r in pm.history], [("add_to_mul", 1)])
        self.assertIn("add_to_mul", infra.format_pass_history(pm))

    def test_bad_result_names_the_pass(self) -> None:
        pm = infra.PassManager([lambda gm: 1])
        with self.assertRaisesRegex(Exception, "running the '<lambda>' pass"):
            pm(self._module())


if __name__ == "__main__":
    unittest.main()
