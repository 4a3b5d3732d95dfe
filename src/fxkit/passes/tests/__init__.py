"""Self-tests shipped with fxkit.passes (importable, runnable with ``python -m unittest``)."""
