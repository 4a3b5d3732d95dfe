"""Experimental transforms under torch.fx's ``experimental`` paths (const folding, normalization,
fusion, partitioning, meta tracing, ...); import the submodule you need."""
