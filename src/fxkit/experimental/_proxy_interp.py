"""Re-tracing an existing graph through the proxy mode: :class:`DecompositionInterpreter`
(copy a graph into a new one, decomposing as it goes) and :func:`selective_decompose`."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from fxkit.experimental._proxy_dispatch import ProxyTorchDispatchMode
from fxkit.experimental._proxy_track import _track, init_proxy_trackers
from fxkit.graph import Graph
from fxkit.interpreter import Interpreter
from fxkit.node import Node, map_aggregate
from fxkit.proxy import GraphAppendingTracer


class _AppendingTracer(GraphAppendingTracer):
    """A tracer that only appends to ``graph``, carrying the proxy mode's trackers."""

    def __init__(self, graph: Graph) -> None:
        super().__init__(graph)
        init_proxy_trackers(self)


class DecompositionInterpreter(Interpreter):
    """Run ``module`` on real inputs, writing the aten ops it reaches into ``new_graph``;
    ops in ``decomposition_table`` are replaced by their decompositions."""

    def __init__(self, module: Any, new_graph: Graph,
                 decomposition_table: Optional[Mapping[Any, Callable[..., Any]]] = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(module, **kwargs)
        self.new_graph = new_graph
        self.tracer = _AppendingTracer(new_graph)
        self.decomposition_table = decomposition_table or {}
        self.mode = ProxyTorchDispatchMode(
            self.tracer, tracing_mode="real", decomposition_table=self.decomposition_table
        )

    def placeholder(self, target: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        out = super().placeholder(target, args, kwargs)
        _track(out, self.new_graph.placeholder(target), None, self.tracer)
        return out

    def get_attr(self, target: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        out = super().get_attr(target, args, kwargs)
        _track(out, self.new_graph.get_attr(target), None, self.tracer)
        return out

    def output(self, target: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        out = super().output(target, args, kwargs)
        tracker = self.tracer.tensor_tracker

        def node_of(value: Any) -> Any:
            if isinstance(value, Tensor):
                found = tracker.get(value)
                return value if found is None else found.node
            return value

        self.new_graph.output(map_aggregate(out, node_of))
        return out

    def run(self, *args: Any, **kwargs: Any) -> Any:
        # Entered once around the whole run so the mode can be re-entered by decompositions.
        with self.mode:
            return super().run(*args, **kwargs)


class _SelectiveDecomposer(Interpreter):
    """Runs each node, under ``decompose(table)`` where ``should_decompose(node)`` says so."""

    def __init__(self, module: Any, should_decompose: Callable[[Node], bool],
                 decomposition_table: Optional[Mapping[Any, Callable[..., Any]]],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(module, **kwargs)
        self.should_decompose = should_decompose
        self.decomposition_table = decomposition_table

    def run_node(self, n: Node) -> Any:
        if not self.should_decompose(n):
            return super().run_node(n)
        from fxkit.experimental.proxy_tensor import decompose

        with decompose(self.decomposition_table):
            return super().run_node(n)


def selective_decompose(joint_gm: Any, *args: Any,
                        decomposition: Optional[Mapping[Any, Callable[..., Any]]],
                        should_decompose: Callable[..., bool], trace_joint_graph: bool
                        ) -> Any:  # fmt: skip
    """Re-trace ``joint_gm`` on ``args`` with make_fx, decomposing (with ``decomposition``)
    only the nodes for which ``should_decompose(node)`` is true."""
    from fxkit.experimental.proxy_tensor import make_fx

    for node in joint_gm.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.HigherOrderOperator):
            raise NotImplementedError(
                "selective_decompose: graphs with higher-order operators (subgraph arguments) "
                "are not supported by fxkit"
            )

    def run(*flat: Any) -> Any:
        return _SelectiveDecomposer(joint_gm, should_decompose, decomposition).run(*args)

    if trace_joint_graph:
        # make_fx names the inputs after these parameters; the partitioner relies on them.
        def wrap_fn(primals: Any, tangents: Any) -> Any:
            return run()
    else:

        def wrap_fn(*_args: Any) -> Any:
            return run()

    return make_fx(wrap_fn, decomposition_table={})(*args)


__all__ = ["DecompositionInterpreter", "selective_decompose"]
