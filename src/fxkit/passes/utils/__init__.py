"""Helpers shared by passes: subgraph matchers and source partitions."""

from fxkit.passes.utils.common import HolderModule, compare_graphs, lift_subgraph_as_module

__all__ = ["HolderModule", "compare_graphs", "lift_subgraph_as_module"]
