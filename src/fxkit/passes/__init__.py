"""Graph passes: one pass per module (shape propagation, splitting, matchers, ...)."""

from fxkit.passes import graph_manipulation, param_fetch, shape_prop

__all__ = ["graph_manipulation", "param_fetch", "shape_prop"]
