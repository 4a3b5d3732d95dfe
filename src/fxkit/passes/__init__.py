"""Graph passes: one pass per module (shape propagation, splitting, matchers, ...)."""
