"""Passes for specific graph dialects (mirrors ``torch.fx.passes.dialect``)."""
