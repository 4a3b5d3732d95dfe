"""Graph passes: one pass per module (shape propagation, splitting, partitioning, matchers, ...).

Importing this package also imports the pass modules torch.fx's ``passes`` package imports on
its own, so ``fxkit.passes.split_module`` and friends are reachable as attributes.
"""

import importlib as _importlib

# The modules torch.fx's package makes available as attributes on import (the others, e.g.
# ``infra`` or ``utils``, are imported on first use).
__all__ = sorted(
    """
    tools_common splitter_base split_utils split_module shape_prop runtime_assert reinplace
    param_fetch operator_support net_min_base graph_manipulation graph_drawer
    """.split()
)

for _name in __all__:
    globals()[_name] = _importlib.import_module(f"{__name__}.{_name}")
del _name
