"""Refinement constraints produced by the gradual type checker's ``Refine`` pass."""

from __future__ import annotations

from typing import Any

__all__ = ["Equality"]


class Equality:
    """The constraint ``lhs = rhs`` between two types or dimensions (terms that may contain
    unification variables). Equal to another Equality with equal sides; prints as ``lhs = rhs``."""

    def __init__(self, lhs: Any, rhs: Any) -> None:
        self.lhs, self.rhs = lhs, rhs

    def __repr__(self) -> str:
        return f"{self.lhs} = {self.rhs}"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Equality):
            return False
        return self.lhs == other.lhs and self.rhs == other.rhs

    # Defining __eq__ makes instances unhashable, as torch.fx does.
    __hash__ = None  # type: ignore[assignment]
