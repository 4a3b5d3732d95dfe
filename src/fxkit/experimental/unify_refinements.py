"""Symbolic shape inference over a traced graph: run the gradual type checker's ``Refine`` pass
(which replaces ``Dyn`` dimensions by fresh variables and collects equality constraints), solve
the constraints by unification, and write the solved types back onto the nodes."""

from __future__ import annotations

from typing import Any

from fxkit.experimental.refinement_types import Equality
from fxkit.experimental.unification import Var, unify
from fxkit.tensor_type import TensorType

__all__ = [
    # the whole inference
    "infer_symbolic_types",
    "infer_symbolic_types_single_pass",
    # its steps
    "convert_eq",
    "unify_eq",
    "substitute_solution_one_type",
    "substitute_all_types",
    "check_for_type_equality",
]


def __getattr__(name: str) -> Any:
    # ``Refine`` is importable from here as from torch.fx's module, loaded on first use.
    if name == "Refine":
        from fxkit.experimental.graph_gradual_typechecker import Refine

        return Refine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _refine(traced: Any) -> Any:
    """Run a fresh ``Refine`` over ``traced`` and return it (holding its constraints)."""
    # Imported here: the type checker is a large module that most users of this one's pure
    # helpers (convert_eq, unify_eq, ...) never need.
    from fxkit.experimental.graph_gradual_typechecker import Refine

    refiner = Refine(traced)
    refiner.refine()
    return refiner


def _solve_and_substitute(traced: Any) -> Any:
    refiner = _refine(traced)
    substitute_all_types(traced.graph, unify_eq(refiner.constraints))
    return refiner


def infer_symbolic_types_single_pass(traced: Any) -> None:
    """Refine ``traced``'s node types once: generate constraints, unify, substitute."""
    _solve_and_substitute(traced)


def infer_symbolic_types(traced: Any) -> None:
    """Refine ``traced``'s node types in two rounds (one is not always enough, e.g. when
    broadcasting links dimensions that only the first round makes known), then let the second
    round's ``Refine`` infer the algebraic relations (``symbolic_relations``)."""
    _solve_and_substitute(traced)
    _solve_and_substitute(traced).symbolic_relations()


def convert_eq(list_of_eq: list[Equality]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Split equality constraints into the tuple of left sides and the tuple of right sides,
    the form :func:`~fxkit.experimental.unification.unify` takes."""
    lhs = tuple(eq.lhs for eq in list_of_eq)
    rhs = tuple(eq.rhs for eq in list_of_eq)
    return lhs, rhs


def unify_eq(list_of_eq: list[Equality]) -> Any:
    """The most general unifier of all the constraints (a dict variable -> term), or False."""
    return unify(*convert_eq(list_of_eq))


def _substitute_dim(mapping: dict, dim: Any) -> Any:
    # A dimension is replaced only when it is itself a solved variable (no deeper search).
    return mapping[dim] if dim in mapping else dim


def _is_tensor_type(t: Any) -> bool:
    # Also accepts torch.fx's TensorType (same shape of class), for graphs annotated with it.
    return isinstance(t, TensorType) or (
        type(t).__name__ == "TensorType" and hasattr(t, "dims") and hasattr(t, "__origin__")
    )


def substitute_solution_one_type(mapping: dict, t: Any) -> Any:
    """``t`` with the variables solved in ``mapping`` replaced: a variable by its solution, the
    dimensions of a TensorType likewise, lists and tuples element by element. Other values are
    returned unchanged."""
    if isinstance(t, Var):
        return _substitute_dim(mapping, t)
    if _is_tensor_type(t):
        return type(t)(tuple(_substitute_dim(mapping, dim) for dim in t.dims))
    if isinstance(t, (list, tuple)):
        substituted = [substitute_solution_one_type(mapping, item) for item in t]
        return substituted if isinstance(t, list) else tuple(substituted)
    return t


def _hop_once(mapping: dict) -> bool:
    """Replace each value that is itself a key by that key's value (in key order, later keys
    seeing earlier updates); whether any value changed."""
    changed = False
    for key in mapping:
        value = mapping[key]
        if value not in mapping:
            continue
        mapping[key] = mapping[value]
        changed = changed or mapping[key] != value
    return changed


def _resolve_chains(mapping: dict) -> None:
    """Rewrite ``mapping`` in place until no value is itself a key (``a -> b -> 3`` becomes
    ``a -> 3``)."""
    # No chain needs more sweeps than there are keys; more means the bindings form a cycle
    # (torch.fx loops forever on those; unification never produces them).
    for _ in range(len(mapping) + 1):
        if not _hop_once(mapping):
            return
    raise ValueError(f"substitute_all_types: the substitution has a cycle: {mapping}")


def substitute_all_types(graph: Any, mapping: dict) -> None:
    """Apply the unifier ``mapping`` (first resolved to a fixed point, in place) to the type of
    every node of ``graph``."""
    _resolve_chains(mapping)
    for node in graph.nodes:
        node.type = substitute_solution_one_type(mapping, node.type)


def check_for_type_equality(g1: Any, g2: Any) -> bool:
    """Whether corresponding nodes of the two graphs have equal types (compared pairwise up to
    the shorter graph's length)."""
    return all(n.type == m.type for n, m in zip(g1.nodes, g2.nodes))
