"""The optional z3 solver (PyPI ``z3-solver``, installed by the ``fxkit[z3]`` extra), loaded
once for the modules that use it: ``z3`` is the module, or None when it is not installed."""

from typing import Any

z3: Any
try:
    import z3  # type: ignore[import-not-found,no-redef]
except ImportError:
    z3 = None

HAS_Z3 = z3 is not None
