"""The z3 sorts that encode gradual tensor types.

A dimension is the pair ``D(known, value)``: ``known`` is 0 for ``Dyn`` and 1 for a number,
``value`` is the number. A tensor type is ``Dyn`` or ``tensorN(d0, ..., dN-1)`` for ranks 1-4.

The sorts exist only when z3 is installed (``pip install fxkit[z3]``); :data:`HAS_Z3` says
whether it is. Reading one of them without z3 raises an ImportError that names the extra.
"""

from __future__ import annotations

from typing import Any

from fxkit.experimental._z3 import HAS_Z3, z3

_Z3_NAMES = ("D", "dim", "dyn", "dyn_type", "tensor_type", "z3_dyn")

MISSING_Z3_MESSAGE = (
    "this part of fxkit.experimental.migrate_gradual_types needs the z3 SMT solver: "
    "install it with `pip install fxkit[z3]` (or `pip install z3-solver`)"
)


def _declare_sorts(z3: Any) -> tuple[Any, ...]:
    """Declare the sorts in z3's default context; returns them in the order of
    ``_Z3_NAMES``."""

    def fields(count: int, sort: Any) -> list[tuple[str, Any]]:
        # Constructor fields are named by position: "0", "1", ...
        return [(str(i), sort) for i in range(count)]

    dyn = z3.DeclareSort("Dyn")
    dim_decl = z3.Datatype("dim")
    dim_decl.declare("dim", *fields(2, z3.IntSort()))
    (dim,) = z3.CreateDatatypes(dim_decl)

    tensor_decl = z3.Datatype("TensorType")
    tensor_decl.declare("Dyn", ("dyn", dyn))
    for rank in (1, 2, 3, 4):
        tensor_decl.declare(f"tensor{rank}", *fields(rank, dim))
    (tensor_type,) = z3.CreateDatatypes(tensor_decl)

    dyn_type = z3.Const("dyn", dyn)
    return dim.dim, dim, dyn, dyn_type, tensor_type, tensor_type.Dyn(dyn_type)


if HAS_Z3:
    D, dim, dyn, dyn_type, tensor_type, z3_dyn = _declare_sorts(z3)

# Without z3 only HAS_Z3 exists, so a star-import stays possible.
__all__ = ["HAS_Z3", *(_Z3_NAMES if HAS_Z3 else ())]


def __getattr__(name: str) -> Any:
    # Only reached for names that are not defined, i.e. the sorts when z3 is missing.
    if name in _Z3_NAMES:
        raise ImportError(f"cannot use z3_types.{name}: {MISSING_Z3_MESSAGE}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
