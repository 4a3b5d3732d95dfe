"""Passes for specific graph dialects (the dialect package of torch.fx's passes)."""
