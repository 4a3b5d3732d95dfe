"""Backend-specific partitioning helpers (``cudagraphs``)."""
