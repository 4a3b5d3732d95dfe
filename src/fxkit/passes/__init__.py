"""Graph passes: one pass per module (shape propagation, splitting, matchers, ...)."""

from fxkit.passes import shape_prop

__all__ = ["shape_prop"]
