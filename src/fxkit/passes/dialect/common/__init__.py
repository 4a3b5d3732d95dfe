"""Dialect-agnostic passes (the dialect.common package of torch.fx's passes)."""
