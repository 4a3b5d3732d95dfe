"""Pass infrastructure for GraphModules: ``PassBase``/``PassResult`` and a ``PassManager``
that orders passes by constraints, repeats them until nothing changes, and records what
each pass did."""

from fxkit.passes.infra import pass_manager

__all__ = ["pass_manager"]
