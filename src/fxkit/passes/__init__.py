"""Graph passes: one pass per module (shape propagation, splitting, partitioning, matchers, ...).

Importing this package imports the same pass modules ``torch.fx.passes`` does, so
``fxkit.passes.split_module`` and friends are reachable as attributes.
"""

from fxkit.passes import (
    graph_drawer,
    graph_manipulation,
    net_min_base,
    operator_support,
    param_fetch,
    reinplace,
    runtime_assert,
    shape_prop,
    split_module,
    split_utils,
    splitter_base,
    tools_common,
)

__all__ = [
    "graph_drawer",
    "graph_manipulation",
    "net_min_base",
    "operator_support",
    "param_fetch",
    "reinplace",
    "runtime_assert",
    "shape_prop",
    "split_module",
    "split_utils",
    "splitter_base",
    "tools_common",
]
