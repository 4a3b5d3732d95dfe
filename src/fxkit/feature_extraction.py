"""Intermediate features of a model as a dict, on fxkit's tracer.

torchvision's ``get_graph_node_names`` / ``create_feature_extractor`` with the same names,
arguments and node naming, so code written against them runs unchanged; it also accepts
``example_inputs=`` (fxkit's shape-aware tracing), so models whose forward branches on
shapes can be cut too::

    from fxkit.feature_extraction import create_feature_extractor, get_graph_node_names

    train_names, eval_names = get_graph_node_names(model)
    body = create_feature_extractor(model, return_nodes={"layer2": "mid", "fc": "logits"})
    feats = body(images)          # {"mid": ..., "logits": ...}

Node names: a ``call_module`` node is the module's path (``layer1.0.conv1``); any other
node is the path of the module whose ``forward`` created it plus the op
(``layer1.0.relu``, ``add`` at the top), and repeats get ``_1``, ``_2``, ... in graph order.
A requested name also matches by prefix: ``"layer1"`` is the last node inside ``layer1``.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from fxkit._symbolic_trace import Tracer
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule, _copy_attrs

__all__ = ["get_graph_node_names", "create_feature_extractor", "DualGraphModule"]

_COUNTER_SUFFIX = re.compile(r"^(.+)_([0-9]+)$")
_DIFF_NOTE = (
    "NOTE: The nodes obtained by tracing the model in eval mode are a subsequence of those "
    "obtained in train mode. When choosing nodes for feature extraction, you may need to "
    "specify output nodes for train and eval mode separately."
)


class _LeafAwareTracer(Tracer):
    """fxkit's tracer plus torchvision's ``leaf_modules`` option (module classes kept as
    calls)."""

    def __init__(self, leaf_modules: Sequence[type] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._extra_leaves = tuple(leaf_modules)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._extra_leaves and isinstance(m, self._extra_leaves):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _trace(
    model: nn.Module,
    tracer_kwargs: Optional[Dict[str, Any]],
    concrete_args: Optional[Dict[str, Any]],
    example_inputs: Any,
) -> Tuple[Graph, nn.Module]:
    kwargs = dict(tracer_kwargs or {})
    leaves = kwargs.pop("leaf_modules", ())
    if example_inputs is None:
        tracer = _LeafAwareTracer(leaves, **kwargs)
        return tracer.trace(model, concrete_args), tracer.root
    if leaves or kwargs:
        raise ValueError("tracer_kwargs cannot be combined with example_inputs")
    from fxkit._shape_trace import shape_trace

    gm = shape_trace(model, concrete_args, example_inputs=example_inputs)
    return gm.graph, gm


def _qualnames(graph: Graph) -> Dict[Any, str]:
    """Each node's feature name, in graph order (see the module docstring)."""
    names: Dict[Any, str] = {}
    last_index: Dict[str, int] = {}  # base name -> highest counter handed out so far
    for node in graph.nodes:
        if node.op == "output":
            continue
        if node.op == "get_attr" and node.target.startswith("_tensor_constant"):
            continue  # constants the tracer lifted itself are not features
        if node.op == "call_module":
            base = node.target
        else:
            stack = node.meta.get("nn_module_stack") or {}
            scope = next(reversed(stack.values()))[0] if stack else ""
            base = f"{scope}.{node.name}" if scope else node.name
        numbered = _COUNTER_SUFFIX.match(base)
        if numbered is not None:
            base = numbered.group(1)
        if base in last_index:
            last_index[base] += 1
            names[node] = f"{base}_{last_index[base]}"
        else:
            last_index[base] = 0
            names[node] = base
    return names


def _in_mode(model: nn.Module, training: bool, fn: Callable[[], Any]) -> Any:
    was = model.training
    model.train(training)
    try:
        return fn()
    finally:
        model.train(was)


def get_graph_node_names(
    model: nn.Module,
    tracer_kwargs: Optional[Dict[str, Any]] = None,
    suppress_diff_warning: bool = False,
    concrete_args: Optional[Dict[str, Any]] = None,
    *,
    example_inputs: Any = None,
) -> Tuple[List[str], List[str]]:
    """The feature names of ``model``'s nodes when traced in train mode and in eval mode.

    Warns (unless ``suppress_diff_warning``) when the two lists differ.
    """
    lists = []
    for training in (True, False):
        graph, _ = _in_mode(
            model, training, lambda: _trace(model, tracer_kwargs, concrete_args, example_inputs)
        )
        lists.append(list(_qualnames(graph).values()))
    train, eval_ = lists
    if train != eval_ and not suppress_diff_warning:
        warnings.warn(_DIFF_NOTE, stacklevel=2)
    return train, eval_


ReturnNodes = Union[List[str], Dict[str, str]]


def _as_mapping(nodes: Optional[ReturnNodes], what: str) -> Optional[Dict[str, str]]:
    if nodes is None:
        return None
    if isinstance(nodes, (list, tuple)):
        return {str(n): str(n) for n in nodes}
    if isinstance(nodes, dict):
        return {str(k): str(v) for k, v in nodes.items()}
    raise TypeError(f"{what} must be a list or a dict of node names, got {type(nodes).__name__}")


def _select(graph: Graph, names: Dict[Any, str], wanted: Dict[str, str]) -> Graph:
    """Make ``graph`` return ``{output name: node}`` for the requested nodes; drop the rest."""
    by_name: Dict[str, Any] = {}
    for query, out_name in wanted.items():
        hit = None
        for node, qualname in names.items():
            if qualname == query or qualname.startswith(query + "."):
                hit = node  # the last match in graph order
        if hit is None:
            raise ValueError(
                f"node: '{query}' is not present in model. Hint: use `get_graph_node_names` "
                "to make sure the `return_nodes` you specified are present. It may even be "
                "that you need to specify `train_return_nodes` and `eval_return_nodes` "
                "separately."
            )
        by_name[out_name] = hit
    old_output = next(n for n in reversed(graph.nodes) if n.op == "output")
    with graph.inserting_after(old_output):
        graph.output(by_name)
    graph.erase_node(old_output)
    graph.eliminate_dead_code()
    graph.lint()
    return graph


class DualGraphModule(GraphModule):
    """A GraphModule holding one graph for train mode and one for eval mode; ``train()`` and
    ``eval()`` switch between them. Submodules and attributes used by either are copied."""

    def __init__(
        self,
        root: nn.Module,
        train_graph: Graph,
        eval_graph: Graph,
        class_name: str = "GraphModule",
    ) -> None:
        super().__init__(root, train_graph, class_name)  # copies what the train graph uses
        eval_targets = [n.target for n in eval_graph.nodes if n.op in ("get_attr", "call_module")]
        _copy_attrs(root, self, eval_targets)
        self.train_graph = train_graph
        self.eval_graph = eval_graph
        self.graph = train_graph if self.training else eval_graph

    def train(self, mode: bool = True) -> "DualGraphModule":
        train_graph = self.__dict__.get("train_graph")
        eval_graph = self.__dict__.get("eval_graph")
        if train_graph is not None and eval_graph is not None and mode is not self.training:
            self.graph = train_graph if mode else eval_graph
        return super().train(mode)  # type: ignore[return-value]


def create_feature_extractor(
    model: nn.Module,
    return_nodes: Optional[ReturnNodes] = None,
    train_return_nodes: Optional[ReturnNodes] = None,
    eval_return_nodes: Optional[ReturnNodes] = None,
    tracer_kwargs: Optional[Dict[str, Any]] = None,
    suppress_diff_warning: bool = False,
    concrete_args: Optional[Dict[str, Any]] = None,
    *,
    example_inputs: Any = None,
) -> DualGraphModule:
    """A module that runs ``model`` up to the requested nodes and returns their values as a
    dict ``{output name: tensor}`` (torchvision's API; ``return_nodes`` is a list of names or
    a ``{node name: output name}`` dict). Train and eval mode are traced separately."""
    both = train_return_nodes is not None or eval_return_nodes is not None
    if return_nodes is None and not both:
        raise ValueError(
            "Either `return_nodes` or `train_return_nodes` and `eval_return_nodes` together, "
            "should be specified"
        )
    if return_nodes is not None and both:
        raise ValueError(
            "If `train_return_nodes` and `eval_return_nodes` are specified, then both should "
            "be specified"
            if (train_return_nodes is None) != (eval_return_nodes is None)
            else "If `return_nodes` is specified, then `train_return_nodes` and "
            "`eval_return_nodes` should not be specified"
        )
    if both and (train_return_nodes is None or eval_return_nodes is None):
        raise ValueError(
            "If any of `train_return_nodes` and `eval_return_nodes` are specified, then both "
            "should be specified"
        )
    if return_nodes is not None:
        train_wanted = eval_wanted = _as_mapping(return_nodes, "return_nodes")
    else:
        train_wanted = _as_mapping(train_return_nodes, "train_return_nodes")
        eval_wanted = _as_mapping(eval_return_nodes, "eval_return_nodes")
    if not suppress_diff_warning:
        get_graph_node_names(
            model, tracer_kwargs, False, concrete_args, example_inputs=example_inputs
        )

    graphs = {}
    root: nn.Module = model
    for training, wanted in ((True, train_wanted), (False, eval_wanted)):
        graph, traced_root = _in_mode(
            model, training, lambda: _trace(model, tracer_kwargs, concrete_args, example_inputs)
        )
        assert wanted is not None
        # Dead-code elimination asks the owning module whether a call_module is impure.
        owner = GraphModule(traced_root, graph)
        graphs[training] = _select(owner.graph, _qualnames(graph), wanted)
        root = traced_root
    name = type(model).__name__ if isinstance(model, nn.Module) else model.__name__
    extractor = DualGraphModule(root, graphs[True], graphs[False], class_name=name)
    extractor.train(model.training)
    return extractor
