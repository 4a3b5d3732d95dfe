"""Symbols naming the operations that appear in constraints (the ``op`` of a
:class:`~fxkit.experimental.migrate_gradual_types.constraint.BinaryConstraint`).

They are plain strings so that constraints print readably.
"""

__all__ = [
    "op_add",
    "op_consistency",
    "op_div",
    "op_eq",
    "op_gt",
    "op_imp",
    "op_leq",
    "op_lt",
    "op_matching",
    "op_mod",
    "op_mul",
    "op_neq",
    "op_precision",
    "op_sub",
]

# arithmetic on dimensions
op_add, op_sub, op_mul, op_div, op_mod = "+", "-", "*", "/", "%"

# comparisons and implication
op_eq, op_neq, op_lt, op_gt, op_imp = "=", "!=", "<", ">", "=>"
op_leq = "\u2264"  # less than or equal

# gradual-typing relations: "has the shape of" (matching), "~" (consistency) and
# "is at least as precise as" (precision)
op_matching, op_consistency, op_precision = "\u22b3", "~", "\u2291"
