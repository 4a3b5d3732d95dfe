"""Inference-time graph optimizations: BatchNorm folding, dropout removal and MKLDNN layout.

:func:`fuse` folds each BatchNorm that directly follows a convolution or linear layer into that
layer's weights; :func:`remove_dropout` drops ``nn.Dropout`` calls; :func:`optimize_for_inference`
runs both and then moves runs of MKLDNN-capable operations to the MKLDNN tensor layout, keeping
only the runs a heuristic (:func:`use_mkl_length`, :func:`gen_mkl_autotuner`) approves. The
resulting graphs are the ones torch.fx's ``experimental.optimization`` produces.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import operator
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.mkldnn as th_mkldnn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from fxkit._symbolic_trace import Tracer, symbolic_trace
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.interpreter import Transformer
from fxkit.node import Argument, Node, Target, map_arg

__all__ = [
    "MklSubgraph",
    "UnionFind",
    "extract_subgraph",
    "fuse",
    "gen_mkl_autotuner",
    "matches_module_pattern",
    "modules_to_mkldnn",
    "optimize_for_inference",
    "remove_dropout",
    "replace_node_module",
    "reset_modules",
    "use_mkl_length",
]

_log = logging.getLogger(__name__)

# (producer layer, BatchNorm) pairs that fold, with the torch.nn.utils.fusion function that
# folds them. The pairs are disjoint on the producer type, so one walk over the graph finds
# the same matches as a walk per pair.
_FOLDABLE: dict[tuple[type, type], Callable[[Any, Any], nn.Module]] = {
    (nn.Conv1d, nn.BatchNorm1d): fuse_conv_bn_eval,
    (nn.Conv2d, nn.BatchNorm2d): fuse_conv_bn_eval,
    (nn.Conv3d, nn.BatchNorm3d): fuse_conv_bn_eval,
    (nn.Linear, nn.BatchNorm1d): fuse_linear_bn_eval,
}


def _split_qualname(target: str) -> tuple[str, str]:
    """``"a.b.c"`` -> ``("a.b", "c")``; a top-level name has the parent ``""``."""
    parent, _, leaf = target.rpartition(".")
    return parent, leaf


def _module_called_by(node: Any, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module a ``call_module`` node runs, or None for any other node (or unknown path)."""
    if not isinstance(node, Node) and not hasattr(node, "op"):
        return None
    if node.op != "call_module" or not isinstance(node.target, str):
        return None
    return modules.get(node.target)


def matches_module_pattern(
    pattern: Iterable[type], node: Node, modules: dict[str, nn.Module]
) -> bool:
    """True if ``node`` and its first argument are ``call_module`` nodes whose modules have
    exactly the types of ``pattern`` (``(type of node.args[0]'s module, type of node's)``).

    Only two-element patterns are meaningful: the producer and the consumer.
    """
    if not node.args:
        return False
    for expected, candidate in zip(pattern, (node.args[0], node)):
        module = _module_called_by(candidate, modules)
        if module is None or type(module) is not expected:
            return False
    return True


def replace_node_module(node: Node, modules: dict[str, nn.Module], new_module: nn.Module) -> None:
    """Install ``new_module`` at the path ``node`` calls, in the module tree and in ``modules``
    (the ``dict(root.named_modules())`` the caller keeps)."""
    if not isinstance(node.target, str):
        raise AssertionError(f"Expected str target, got {type(node.target)}")
    parent, leaf = _split_qualname(node.target)
    modules[node.target] = new_module
    setattr(modules[parent], leaf, new_module)


def _fold_batchnorms(graph: Any, modules: dict[str, nn.Module], owned: bool) -> None:
    """Fold every foldable BatchNorm of ``graph`` into its producer, editing graph and modules.

    ``owned``: the producer modules are private copies that may be updated in place instead
    of being copied once more by the fusion function.
    """
    # A snapshot of the node list: each step erases only the node it is looking at, and
    # reads the live arguments, so a chain conv -> bn -> bn folds both norms into the conv.
    for node in list(graph.nodes):
        bn = _module_called_by(node, modules)
        if bn is None or not node.args:
            continue
        producer_node = node.args[0]
        producer = _module_called_by(producer_node, modules)
        if producer is None:
            continue
        fold = _FOLDABLE.get((type(producer), type(bn)))
        # Folding needs the producer's output to feed only the norm, and fixed statistics.
        if fold is None or len(producer_node.users) > 1 or not bn.track_running_stats:
            continue
        if owned:
            with _copy_is_identity(producer):
                fused = fold(producer, bn)
        else:
            fused = fold(producer, bn)
        replace_node_module(producer_node, modules, fused)
        node.replace_all_uses_with(producer_node)
        graph.erase_node(node)


@contextlib.contextmanager
def _copy_is_identity(module: nn.Module) -> Iterator[None]:
    """Within the block, ``copy.deepcopy(module)`` returns ``module`` itself.

    torch's fusion functions deep-copy the layer and then assign the folded weight and bias;
    on a layer that is already a private copy that first copy is pure overhead (most of the
    cost of folding), so the fusion function's checks run unchanged and the assignment lands
    on the private copy.
    """
    module.__dict__["__deepcopy__"] = lambda memo: module
    try:
        yield
    finally:
        del module.__dict__["__deepcopy__"]


def _copy_sharing_tensors(model: nn.Module) -> tuple[nn.Module, set[int]]:
    """A deep copy of ``model`` that still shares its parameters and buffers, and the ids of
    those shared tensors. Folding replaces most of them; :func:`_unshare` copies the rest."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        memo[id(tensor)] = tensor
    shared = set(memo)
    return copy.deepcopy(model, memo), shared


def _unshare(result: nn.Module, shared: set[int]) -> None:
    """Replace every tensor of ``result`` whose id is in ``shared`` by a deep copy (one copy
    per tensor, so tied weights stay tied)."""
    memo: dict[int, Any] = {}
    for module in result.modules():
        for store in (module._parameters, module._buffers):
            for name, tensor in store.items():
                if tensor is not None and id(tensor) in shared:
                    store[name] = copy.deepcopy(tensor, memo)  # type: ignore[assignment]
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor) and id(value) in shared:
                module.__dict__[name] = copy.deepcopy(value, memo)


def fuse(model: nn.Module, inplace: bool = False, no_trace: bool = False) -> nn.Module:
    """Fold BatchNorm layers into the Conv1d/2d/3d or Linear layer that feeds them, for
    inference (the model must be in eval mode: folding a training-mode model raises torch's
    ``AssertionError("Fusion only for eval!")``).

    The model is deep-copied first unless ``inplace``. It is symbolically traced unless
    ``no_trace`` is set and it already is a GraphModule. Returns a new GraphModule.
    """
    reuse_graph = no_trace and isinstance(model, GraphModule)
    shared: set[int] = set()
    if not inplace:
        if reuse_graph or not isinstance(model, nn.Module):
            model = copy.deepcopy(model)
        else:
            # Copy the module structure now and the tensors only once folding has replaced
            # what it replaces: the result is as independent of ``model`` as a full deep
            # copy would make it, at a fraction of the cost.
            model, shared = _copy_sharing_tensors(model)
    root: nn.Module
    if reuse_graph:
        root = model
        # the caller's GraphModule keeps its graph
        graph: Graph = copy.deepcopy(model.graph)  # type: ignore[assignment]
    elif inplace:
        # modules are replaced in the traced module's own (fresh) containers, never in the
        # caller's
        root = symbolic_trace(model)
        graph = root.graph
    else:
        # the private copy can be edited directly: no intermediate GraphModule needed
        tracer = Tracer()
        graph = tracer.trace(model)
        root = tracer.root
    modules = dict(root.named_modules())
    _fold_batchnorms(graph, modules, owned=not inplace)
    result = GraphModule(root, graph)
    if shared:
        _unshare(result, shared)
    return result


class _DropoutStripper(Transformer):
    """Rebuilds a graph with every ``nn.Dropout`` call replaced by its input."""

    def call_module(self, target: Target, args: tuple[Argument, ...], kwargs: dict[str, Any]):
        if not isinstance(self.submodules[target], nn.Dropout):  # type: ignore[index]
            return super().call_module(target, args, kwargs)
        if len(args) != 1:
            raise AssertionError(f"Expected 1 arg for Dropout, got {len(args)}")
        return args[0]


def remove_dropout(model: nn.Module) -> nn.Module:
    """Trace ``model`` and return a GraphModule without its ``nn.Dropout`` layers."""
    return _DropoutStripper(symbolic_trace(model)).transform()


def extract_subgraph(
    orig_module: nn.Module, nodes: list[Node], inputs: list[Node], outputs: list[Node]
) -> GraphModule:
    """A GraphModule (over ``orig_module``'s attributes) running just ``nodes``: one
    placeholder per node of ``inputs`` (same names), returning the list of ``outputs``."""
    sub = Graph()
    copied: dict[Node, Node] = {inp: sub.placeholder(inp.name) for inp in inputs}
    for node in nodes:
        copied[node] = sub.node_copy(node, copied.__getitem__)
    sub.output([copied[out] for out in outputs])
    sub.lint()
    return GraphModule(orig_module, sub)


# What runs on MKLDNN tensors: these module classes, and these functions.
_MKLDNN_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)
_MKLDNN_FUNCTIONS = (torch.relu, torch.transpose, torch.sigmoid, F.relu, F.avg_pool2d)
mkldnn_supported = [
    *_MKLDNN_MODULES,
    nn.AdaptiveAvgPool2d,
    *_MKLDNN_FUNCTIONS,
    F.adaptive_avg_pool2d,
]
# Operators that work on MKLDNN tensors only when their tensor operands already are (a scalar
# operand cannot be converted): they join an MKLDNN run only behind one.
mkldnn_supported_unknown = [operator.add, operator.mul]
# Modules with a prepacked MKLDNN counterpart, built as ``factory(module, dtype)``.
mkldnn_map: dict[type, Callable[[Any, Any], nn.Module]] = dict(
    [
        (nn.BatchNorm2d, lambda bn, _dtype: th_mkldnn.MkldnnBatchNorm(bn)),
        (nn.Conv2d, th_mkldnn.MkldnnConv2d),
        (nn.Linear, th_mkldnn.MkldnnLinear),
    ]
)


def _module_calls(nodes: Iterable[Node]) -> Iterator[Node]:
    """The ``call_module`` nodes among ``nodes`` (their targets checked to be strings)."""
    for node in nodes:
        if node.op == "call_module":
            if isinstance(node.target, str):
                yield node
            else:
                raise AssertionError(f"Expected str target, got {type(node.target)}")


def _mkldnn_counterpart(module: nn.Module) -> nn.Module | None:
    """``module`` converted by its ``mkldnn_map`` entry (float weights), or None."""
    factory = mkldnn_map.get(type(module))
    converted = None if factory is None else factory(module, torch.float)
    if converted is None or isinstance(converted, nn.Module):
        return converted
    raise AssertionError(f"Expected nn.Module, got {type(converted)}")


def modules_to_mkldnn(
    nodes: list[Node], modules: dict[str, nn.Module]
) -> dict[nn.Module, nn.Module]:
    """Swap each module called by ``nodes`` that has an MKLDNN counterpart for it; returns
    ``{mkldnn module: copy of the original}`` so :func:`reset_modules` can undo the swap."""
    originals: dict[nn.Module, nn.Module] = {}
    for node in _module_calls(nodes):
        current = modules[node.target]
        converted = _mkldnn_counterpart(current)
        if converted is not None:
            originals[converted] = copy.deepcopy(current)
            replace_node_module(node, modules, converted)
    return originals


def reset_modules(
    nodes: Iterable[Node], modules: dict[str, nn.Module], old_modules: dict[nn.Module, nn.Module]
) -> None:
    """Put back the original of every module swapped by :func:`modules_to_mkldnn` that
    ``nodes`` call."""
    for node in _module_calls(nodes):
        original = old_modules.get(modules[node.target])
        if original is not None:
            replace_node_module(node, modules, original)


class MklSubgraph:
    """One connected run of MKLDNN-layout nodes of ``fx_graph``: its ``to_mkldnn`` entry
    nodes (``start_nodes``), ``to_dense`` exit nodes (``end_nodes``) and the nodes between."""

    def __init__(self, fx_graph: Graph) -> None:
        self.fx_graph = fx_graph
        self.nodes: list[Node] = []
        self.start_nodes: list[Node] = []
        self.end_nodes: list[Node] = []


def _seconds(fn: Callable[[], object], iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    timed_calls = itertools.repeat(fn, iters)
    start = time.time()
    for call in timed_calls:
        call()
    return time.time() - start


def gen_mkl_autotuner(
    example_inputs: list[torch.Tensor], iters: int = 10, warmup: int = 1
) -> Callable[[MklSubgraph], bool]:
    """A heuristic for :func:`optimize_for_inference` that times each candidate subgraph on
    random inputs shaped as ``example_inputs`` produce them, with and without MKLDNN, and
    keeps MKLDNN where it is faster::

        heuristic = gen_mkl_autotuner(example_inputs, iters=10)
        fast_model = optimize_for_inference(model, {"mkldnn_layout_optimize":
                                                    {"heuristic": heuristic}})
    """
    # Shapes are propagated once, on the first subgraph asked about.
    state: dict[str, Any] = {}

    def use_mkl_heuristic(graph: MklSubgraph) -> bool:
        if not state:
            owner = graph.fx_graph.owning_module
            if owner is None:
                raise AssertionError("fx_graph.owning_module must not be None")
            from fxkit.passes.shape_prop import ShapeProp

            state["module"] = owner
            state["old_modules"] = graph.fx_graph.old_modules  # type: ignore[attr-defined]
            ShapeProp(owner).propagate(*example_inputs)
        # torch.fx reads ``node.shape``, which nothing sets; the propagated shape is in meta.
        samples = [torch.randn(_node_shape(n)) for n in graph.start_nodes]
        exits = [n.args[0] for n in graph.end_nodes]
        sub = extract_subgraph(state["module"], graph.nodes, graph.start_nodes, exits)
        mkl_time = _seconds(
            lambda: [t.to_dense() for t in sub(*[s.to_mkldnn() for s in samples])], iters, warmup
        )
        reset_modules(sub.graph.nodes, dict(sub.named_modules()), state["old_modules"])
        dense_time = _seconds(lambda: sub(*samples), iters, warmup)
        return mkl_time < dense_time

    return use_mkl_heuristic


def _node_shape(node: Node) -> Any:
    shape = getattr(node, "shape", None)
    if shape is None:
        shape = node.meta["tensor_meta"].shape
    return shape


def use_mkl_length(graph: MklSubgraph) -> bool:
    """A heuristic for :func:`optimize_for_inference`: use MKLDNN for subgraphs of more than
    two nodes."""
    return len(graph.nodes) > 2


class UnionFind:
    """Disjoint sets over ``0..n-1`` (union by size, path compression); an element belongs to
    no set until :meth:`make_set`."""

    def __init__(self, n: int) -> None:
        self.size: list[int] = [0] * n  # set size, valid at representatives
        self.parent: list[int | None] = [None for _ in range(n)]

    def make_set(self, v: int) -> None:
        """Put ``v`` in a set of its own."""
        self.size[v] = 1
        self.parent[v] = v

    def find(self, v: int) -> int:
        """The representative of ``v``'s set."""
        root = v
        path = []
        while True:
            up = self.parent[root]
            if up is None:
                raise AssertionError("Parent is None")
            if up == root:
                break
            path.append(root)
            root = up
        for member in path:
            self.parent[member] = root
        return root

    def join(self, a: int, b: int) -> int | None:
        """Merge the sets of ``a`` and ``b``; returns the representative only if they were
        already one set (torch.fx's return convention)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        big, small = (ra, rb) if self.size[ra] >= self.size[rb] else (rb, ra)
        self.parent[small] = big
        self.size[big] += self.size[small]
        return None


_DEFAULT_PASS_CONFIG: dict[str, Any] = {
    "conv_bn_fuse": True,
    "remove_dropout": True,
    "mkldnn_layout_optimize": {"heuristic": use_mkl_length},
}


def _mkldnn_kind(node: Node, modules: dict[str, nn.Module]) -> str | None:
    """``"yes"`` for a node that runs on MKLDNN tensors, ``"maybe"`` for one that does when
    its inputs do, None otherwise. Raises for supported modules that are not CPU float32."""
    if node.op == "call_module":
        module = modules[node.target]
        if type(module) not in mkldnn_supported:
            return None
        param = next(module.parameters(), None)
        if param is not None:
            if param.dtype != torch.float:
                raise AssertionError("this pass is only for torch.float modules")
            if param.device != torch.device("cpu"):
                raise AssertionError("this pass is only for CPU modules")
        return "yes"
    if node.op == "call_function":
        if node.target in mkldnn_supported:
            return "yes"
        if node.target in mkldnn_supported_unknown:
            return "maybe"
    return None


def _wrap_in_layout_changes(graph: Graph, modules: dict[str, nn.Module]) -> None:
    """Convert the inputs of every MKLDNN-capable node with ``to_mkldnn`` and its output back
    with ``to_dense``."""
    for node in list(graph.nodes):
        kind = _mkldnn_kind(node, modules)
        if kind is None:
            continue
        if kind == "maybe" and not any(getattr(a, "target", None) == "to_dense" for a in node.args):
            continue
        with graph.inserting_before(node):
            node.args = map_arg(node.args, lambda a: graph.call_method("to_mkldnn", (a,)))
        with graph.inserting_after(node):
            dense = graph.create_node("call_method", "to_dense", (node,))
            # every reader of node reads the dense value; then point dense back at node
            node.replace_all_uses_with(dense)
            dense.args = (node,)


def _drop_round_trips(graph: Graph) -> None:
    """Rewrite ``a -> to_dense -> to_mkldnn -> b`` into ``a -> b``."""
    for node in list(graph.nodes):
        if node.op != "call_method" or node.target != "to_dense":
            continue
        source = node.args[0]
        for user in list(node.users):
            if user.op == "call_method" and user.target == "to_mkldnn":
                user.replace_all_uses_with(source)
                graph.erase_node(user)
        if not node.users:
            graph.erase_node(node)


def _mkl_subgraphs(graph: Graph) -> list[MklSubgraph]:
    """Group the MKLDNN-layout nodes into connected subgraphs, in graph order of their first
    entry node: a flood fill from each ``to_mkldnn`` node whose colours are merged where a node
    reads from two runs."""
    sets = UnionFind(len(graph.nodes))
    # role of each coloured node: "start", "mid" or "end", with its colour (a position)
    colour: dict[Node, tuple[str, int]] = {}

    def root_colour(n: Any) -> int | None:
        entry = colour.get(n)
        if entry is None or entry[0] == "end":
            return None
        return sets.find(entry[1])

    for position, node in enumerate(graph.nodes):
        if node.op == "call_method" and node.target == "to_mkldnn":
            sets.make_set(position)
            colour[node] = ("start", position)
            continue
        if node.op == "call_method" and node.target == "to_dense":
            c = root_colour(node.args[0])
            if c is None:
                raise AssertionError("Expected color for to_dense input")
            colour[node] = ("end", c)
            continue
        found = sorted(c for c in map(root_colour, node.all_input_nodes) if c is not None)
        if found:
            colour[node] = ("mid", found[0])
            for other in found[1:]:
                sets.join(found[0], other)

    groups: dict[int, MklSubgraph] = {}
    for node, (role, c) in colour.items():
        group = groups.get(sets.find(c))
        if group is None:
            group = groups[sets.find(c)] = MklSubgraph(graph)
        getattr(group, _ROLE_LISTS[role]).append(node)
    return list(groups.values())


# Which list of an MklSubgraph holds the nodes of each role.
_ROLE_LISTS = {"start": "start_nodes", "mid": "nodes", "end": "end_nodes"}


def optimize_for_inference(
    model: nn.Module, pass_config: dict[str, Any] | None = None, tracer: type[Tracer] = Tracer
) -> nn.Module:
    """Optimize ``model`` for CPU inference: fold Conv/BN (``"conv_bn_fuse"``), remove
    dropout (``"remove_dropout"``) and run MKLDNN-capable subgraphs in the MKLDNN layout
    (``"mkldnn_layout_optimize": {"heuristic": fn}`` or False); ``fn(MklSubgraph) -> bool``
    decides per subgraph. All passes are on by default.

    Assumes no tensor aliasing (the graph does not record it).
    """
    config = {**_DEFAULT_PASS_CONFIG, **(pass_config or {})}
    if config["conv_bn_fuse"]:
        model = fuse(model)
    if config["remove_dropout"]:
        model = remove_dropout(model)
    layout = config["mkldnn_layout_optimize"]
    if layout is False:
        return model
    if not isinstance(layout, dict):
        raise RuntimeError("mkldnn_layout_optimize config is not a dict")
    if "heuristic" not in layout:
        raise RuntimeError("Heuristic not found in mkldnn_layout_optimize config")
    heuristic = layout["heuristic"]

    active = tracer()
    graph = active.trace(copy.deepcopy(model))
    GraphModule(active.root, graph)  # gives the graph an owning module for the heuristic
    modules: dict[str, nn.Module] = dict(model.named_modules())

    _wrap_in_layout_changes(graph, modules)
    old_modules = modules_to_mkldnn(list(graph.nodes), modules)
    graph.old_modules = old_modules  # type: ignore[attr-defined]
    _drop_round_trips(graph)

    for sub in _mkl_subgraphs(graph):
        if heuristic(sub):
            continue
        for boundary in sub.start_nodes + sub.end_nodes:
            boundary.replace_all_uses_with(boundary.args[0])
            graph.erase_node(boundary)
        reset_modules(sub.nodes, modules, old_modules)

    conversions = sum(n.target in ("to_mkldnn", "to_dense") for n in graph.nodes)
    _log.info("mkldnn conversions: %s", conversions)
    graph.lint()
    return GraphModule(model, graph)
