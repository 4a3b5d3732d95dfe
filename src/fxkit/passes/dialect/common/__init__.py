"""Dialect-agnostic passes (mirrors ``torch.fx.passes.dialect.common``)."""
