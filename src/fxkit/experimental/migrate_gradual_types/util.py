"""Fresh-variable helpers shared by constraint generation and transformation.

Every helper takes the current counter and returns the new variable(s) together with the
advanced counter, so that numbering stays deterministic across a whole run.
"""

from __future__ import annotations

from fxkit.experimental.migrate_gradual_types.constraint import BinConstraintD, BVar, DVar, TVar
from fxkit.experimental.migrate_gradual_types.operation import op_leq

__all__ = ["gen_bvar", "gen_dvar", "gen_nat_constraints", "gen_tensor_dims", "gen_tvar"]


def gen_tvar(curr: int) -> tuple[TVar, int]:
    """A fresh tensor variable numbered ``curr + 1``, and that number as the new counter."""
    return TVar(curr + 1), curr + 1


def gen_dvar(curr: int) -> tuple[DVar, int]:
    """A fresh dimension variable numbered ``curr + 1``, and the new counter."""
    return DVar(curr + 1), curr + 1


def gen_bvar(curr: int) -> tuple[BVar, int]:
    """A fresh boolean variable numbered ``curr + 1``, and the new counter."""
    return BVar(curr + 1), curr + 1


def gen_tensor_dims(n: int, curr: int) -> tuple[list[DVar], int]:
    """``n`` fresh dimension variables (consecutive numbers after ``curr``), and the new
    counter."""
    return [DVar(curr + k) for k in range(1, n + 1)], curr + max(n, 0)


def gen_nat_constraints(list_of_dims: list[DVar]) -> list[BinConstraintD]:
    """``0 <= d`` for every dimension ``d``: dimensions are natural numbers."""
    return [BinConstraintD(0, d, op_leq) for d in list_of_dims]
