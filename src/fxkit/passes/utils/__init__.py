"""Helpers shared by passes: subgraph matchers and source partitions."""
