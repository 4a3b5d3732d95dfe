"""Cut a GraphModule into submodules chosen by a callback: :func:`split_module`.

``split_callback(node)`` names a partition for every call node. Each partition becomes a
submodule ``submod_<name>`` whose placeholders are the values it reads from outside (graph
inputs, attributes, results of other partitions) and whose outputs are the values read
outside it. The returned top module reads the inputs and attributes and calls the submodules
in dependency order.

The work is linear in the size of the graph: partitions are linked by the values that cross
between them, ordered once, and every node is copied once. Partitionings whose submodules would
depend on each other in a cycle are refused with a message naming them; with
``keep_original_order=True`` the submodules are called in the order their first nodes appear
as far as their dependencies allow. Regions under ``torch.amp`` autocast or
``torch._C._set_grad_enabled`` are reopened (and autocast closed again) in every partition
they span, so each submodule runs under the same global state as the original nodes did.
"""

from __future__ import annotations

import heapq
import inspect
import operator
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

import torch

from fxkit.graph import Graph
from fxkit.graph_module import GraphModule, _assign_attr
from fxkit.node import Node
from fxkit.passes.split_utils import _arg_mapper

__all__ = ["Partition", "split_module", "split_module_simple"]

# Calls whose effect is a global mode rather than a value: they are never threaded between
# partitions; each partition inside their region re-enters the mode itself.
_ENTER_AUTOCAST = torch.amp._enter_autocast
_EXIT_AUTOCAST = torch.amp._exit_autocast
_SET_GRAD = torch._C._set_grad_enabled
_GLOBAL_STATE_CALLS = (_ENTER_AUTOCAST, _EXIT_AUTOCAST, _SET_GRAD)


class Partition:
    """One submodule being built by :func:`split_module`.

    ``inputs``/``outputs`` are the names of original nodes crossing its boundary (dicts used
    as ordered sets), ``dependencies``/``dependents`` the names of the partitions it reads
    from and feeds, ``graph`` its new graph, ``environment`` original node -> node of
    ``graph``, and ``targets`` the submodules and attributes the new graph refers to.
    """

    def __init__(self, name: str) -> None:
        self.name: str = name
        self.submod_name = f"submod_{name}"
        self.graph: Graph = Graph()
        self.node_names: List[str] = []  # original nodes placed here, in graph order
        # Ordered sets of names: original values read / produced across the boundary, and
        # the partitions read from / fed.
        self.inputs: Dict[str, None] = dict()
        self.outputs: Dict[str, None] = dict()
        self.dependencies: Dict[str, None] = dict()
        self.dependents: Dict[str, None] = dict()
        self.environment: Dict[Node, Node] = {}  # original node -> its stand-in in ``graph``
        self.targets: Dict[str, Any] = {}  # qualified name -> what ``graph`` refers to

    def __repr__(self) -> str:
        fields = (
            ("name", self.name),
            ("nodes", self.node_names),
            ("inputs", self.inputs),
            ("outputs", self.outputs),
            ("partitions depended on", self.dependencies),
            ("partition dependents", self.dependents),
        )
        return ",\n ".join(f"{label}: {value}" for label, value in fields)


_MISSING = object()


def _get_attr_from_qualname(mod: torch.nn.Module, qualname: str) -> Any:
    """The attribute at dotted ``qualname`` below ``mod``; AttributeError when missing."""
    value: Any = mod
    for part in qualname.split("."):
        value = getattr(value, part, _MISSING)
        if value is _MISSING:
            raise AttributeError(f"Node target {qualname} not found!")
    return value


def _meta_of(node: Any) -> Dict[str, Any]:
    meta = node._meta if type(node) is Node else node.meta  # fxkit makes meta on first use
    return meta or {}


def _free_symbols(value: Any) -> Set[Any]:
    """The sympy symbols a (fake) value's sizes depend on; empty for concrete values."""
    found: Set[Any] = set()
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            found |= v.node.expr.free_symbols
        elif isinstance(v, torch.Tensor):
            if not v.is_sparse:
                pending.extend(v.size())
                pending.extend(v.stride())
                pending.append(v.storage_offset())
        elif isinstance(v, (tuple, list)):
            pending.extend(v)
    return found


def _bound_symbol(node: Any) -> Any:
    """The sympy symbol ``node`` binds (its example value is a plain symbolic int), or None."""
    value = _meta_of(node).get("example_value")
    if isinstance(value, (torch.SymInt, torch.SymFloat)):
        expr = value.node.expr
        if getattr(expr, "is_Symbol", False):
            return expr
    return None


def _module_from_attrs(attrs: Dict[str, Any], graph: Graph) -> GraphModule:
    """``GraphModule(attrs, graph)`` with children, parameters and buffers in torch.fx's order
    (targets in node order, shallow paths first). fxkit's dict-root constructor goes through a
    set, so its order varies from run to run; re-assigning here keeps ``named_children()`` and
    ``state_dict()`` keys stable and equal to torch.fx's."""
    gm = GraphModule(attrs, graph)
    targets = [n.target for n in graph.nodes if n.op in ("get_attr", "call_module")]
    targets.sort(key=lambda t: t.count("."))
    if len(targets) > 1:
        gm._modules.clear()
        gm._parameters.clear()
        gm._buffers.clear()
        for target in targets:
            _assign_attr(attrs[target], gm, target)
    return gm


class _GlobalStateRegions:
    """Which partitions each autocast / grad-mode region spans, found in one walk."""

    def __init__(self) -> None:
        self.autocast: Dict[Node, Set[Any]] = {}
        self.autocast_exit: Dict[Node, Optional[Node]] = {}
        self.grad: Dict[Node, Set[Any]] = {}
        self._open_grad: Optional[Node] = None
        self._open_autocasts: Dict[Node, None] = {}

    def see(self, node: Any, pid: Any) -> None:
        """Account for partitioned ``node`` (assigned to ``pid``), in graph order."""
        if node.op == "call_function" and node.target in _GLOBAL_STATE_CALLS:
            self._open_or_close(node, pid)
        if self._open_grad is not None:
            self.grad[self._open_grad].add(pid)
        for enter in self._open_autocasts:
            self.autocast[enter].add(pid)

    def _open_or_close(self, node: Any, pid: Any) -> None:
        args = node.args
        if node.target is _SET_GRAD:
            if len(args) != 1:
                raise AssertionError(f"Expected 1 arg for _set_grad_enabled, got {len(args)}")
            if not isinstance(args[0], bool):
                raise AssertionError(f"Expected bool arg, got {type(args[0])}")
            self._open_grad = node
            self.grad[node] = {pid}
        elif node.target is _ENTER_AUTOCAST:
            if any(isinstance(a, Node) or hasattr(a, "graph") and hasattr(a, "op") for a in args):
                raise AssertionError("Expected all args to be python constants, not Nodes")
            self._open_autocasts[node] = None
            self.autocast[node] = {pid}
            self.autocast_exit[node] = None
        else:
            if len(args) != 1:
                raise AssertionError(f"Expected 1 arg for _exit_autocast, got {len(args)}")
            enter = args[0]
            self.autocast[enter].add(pid)
            del self._open_autocasts[enter]
            self.autocast_exit[enter] = node

    def finish(self) -> None:
        if any(exit_node is None for exit_node in self.autocast_exit.values()):
            raise AssertionError("autocast must exit")

    def __bool__(self) -> bool:
        return bool(self.autocast) or bool(self.grad)


class _Split:
    """State of one split_module run; each method is one phase, called in order."""

    def __init__(
        self,
        m: Any,
        split_callback: Callable[[Any], Any],
        partition_affix: Optional[str],
    ) -> None:
        self.m = m
        self.nodes = list(m.graph.nodes)
        self.map_nodes = _arg_mapper(m.graph)
        self.callback = split_callback
        self.affix = partition_affix
        self.partitions: Dict[str, Partition] = {}
        self.part_of: Dict[Any, Partition] = {}  # partitioned original node -> partition
        self.pid_of: Dict[Any, Any] = {}  # ... -> the callback's raw answer
        self.by_name: Dict[str, Any] = {}
        self.regions = _GlobalStateRegions()
        self.symbol_nodes: Dict[Any, Any] = {}  # sympy symbol -> first node binding it
        self.attr_cache: Dict[str, Any] = {}

    def attr(self, qualname: str) -> Any:
        hit = self.attr_cache.get(qualname, self)
        if hit is self:
            hit = self.attr_cache[qualname] = _get_attr_from_qualname(self.m, qualname)
        return hit

    def partition_name(self, pid: Any) -> str:
        name = str(pid)
        return name if self.affix is None else f"{self.affix}_{name}"

    # --- phase 1: ask the callback, note global-state regions ----------------------------------

    def assign(self) -> None:
        partitions = self.partitions
        for node in self.nodes:
            self.by_name[node.name] = node
            if _meta_of(node):
                symbol = _bound_symbol(node)
                if symbol is not None:
                    self.symbol_nodes.setdefault(symbol, node)
            if node.op in ("placeholder", "get_attr", "output"):
                continue
            pid = self.callback(node)
            name = self.partition_name(pid)
            part = partitions.get(name)
            if part is None:
                part = partitions[name] = Partition(name)
            part.node_names.append(node.name)
            self.part_of[node] = part
            self.pid_of[node] = pid
            self.regions.see(node, pid)
        self.regions.finish()

    # --- phase 2: record the values crossing partition boundaries ------------------------------

    def link(self) -> None:
        monotonic = bool(self.regions)
        highest: Any = -1
        for node in self.nodes:
            op = node.op
            if op == "output":
                for value in node.all_input_nodes:
                    self.cross(value, None)
                continue
            part = self.part_of.get(node)
            if part is None:
                continue
            if monotonic:
                pid = self.pid_of[node]
                if highest > pid:
                    raise AssertionError(
                        "autocast or set_grad_enabled require monotonically increasing "
                        f"partitions: highest: {highest}, this node's: {pid}"
                    )
                highest = pid
            if op == "call_function" and node.target in _GLOBAL_STATE_CALLS:
                continue  # set up again inside every partition of its region instead
            for value in node.all_input_nodes:
                if self.part_of.get(value) is not part:
                    self.cross(value, part)

    def cross(self, value: Any, user: Optional[Partition]) -> None:
        """``value`` (an original node) is read by ``user`` (None: by the graph output)."""
        source = self.part_of.get(value)
        if source is user:
            return
        if source is not None:
            source.outputs.setdefault(value.name)
            if user is not None:
                source.dependents.setdefault(user.name)
        if user is None:
            return
        user.inputs.setdefault(value.name)
        if self.symbol_nodes:
            self.cross_symbols(value, user)
        if source is not None:
            user.dependencies.setdefault(source.name)

    def cross_symbols(self, value: Any, user: Partition) -> None:
        # A value with symbolic sizes needs those symbols in scope too: pass the node that
        # binds each one into ``user`` (symbols nobody binds are left to the caller).
        example = _meta_of(value).get("example_value")
        if example is None:
            return
        for symbol in sorted(_free_symbols(example), key=str):
            binder = self.symbol_nodes.get(symbol)
            if binder is None or self.part_of.get(binder) is user:
                continue  # unbound (torch.fx raises KeyError), or already computed in ``user``
            user.inputs.setdefault(binder.name)
            if binder.op == "placeholder":
                continue
            home = self.part_of.get(binder)
            if home is not None:
                home.outputs.setdefault(binder.name)
                home.dependents.setdefault(user.name)
                user.dependencies.setdefault(home.name)

    # --- phase 3: order the partitions ---------------------------------------------------------

    def dependency_order(self) -> List[str]:
        """Partitions so each comes after those it reads from (Kahn's algorithm, taking the
        most recently freed partition first, which fixes the order of the submodule calls)."""
        partitions = self.partitions
        waiting = {name: len(p.dependencies) for name, p in partitions.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        order: List[str] = []
        while ready:
            name = ready.pop()
            order.append(name)
            for dependent in partitions[name].dependents:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    ready.append(dependent)
        if len(order) != len(partitions):
            raise RuntimeError(self.cycle_message(set(order)))
        return order

    def original_order(self) -> List[str]:
        """Partitions in order of their first node, except where that would call one before a
        partition it reads from: then the earliest partition whose inputs are ready goes."""
        first_seen = {name: i for i, name in enumerate(self.partitions)}
        waiting = {name: len(p.dependencies) for name, p in self.partitions.items()}
        ready = [first_seen[name] for name, count in waiting.items() if count == 0]
        names = list(self.partitions)
        order: List[str] = []
        while ready:
            name = names[heapq.heappop(ready)]
            order.append(name)
            for dependent in self.partitions[name].dependents:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    heapq.heappush(ready, first_seen[dependent])
        return order

    def cycle_message(self, placed: Set[str]) -> str:
        """torch.fx's message, then one cycle of partitions and a value crossing each step."""
        stuck = {n: p for n, p in self.partitions.items() if n not in placed}
        path: List[str] = []
        at: Dict[str, int] = {}
        current = next(iter(stuck))
        while current not in at:
            at[current] = len(path)
            path.append(current)
            current = next(d for d in stuck[current].dependencies if d in stuck)
        loop = path[at[current] :] + [current]
        steps = []
        for user, source in zip(loop, loop[1:]):
            steps.append(
                f"{stuck[user].submod_name} reads {self.crossing_value(source, user)!r} "
                f"from {stuck[source].submod_name}"
            )
        first, second = stuck[loop[0]].submod_name, stuck[loop[1]].submod_name
        return (
            f"cycle exists between partitions! {first} and {second} depend on each other "
            f"({'; '.join(steps)}). Put the nodes between them in one partition, or give the "
            "later nodes a partition of their own."
        )

    def crossing_value(self, source: str, user: str) -> str:
        produced = self.partitions[source]
        for name in self.partitions[user].inputs:
            if self.part_of.get(self.by_name[name]) is produced:
                return name
        return "?"

    # --- phase 4: fill the partition graphs ----------------------------------------------------

    def reopen_global_state(self) -> None:
        """Map each region's entry node in its first partition; re-enter it in the others."""
        for spans in (self.regions.autocast, self.regions.grad):
            for enter, pids in spans.items():
                first, *later = sorted(pids)
                self.partitions[self.partition_name(first)].environment[enter] = enter
                for pid in later:
                    part = self.partitions[self.partition_name(pid)]
                    again = part.graph.create_node(
                        enter.op, enter.target, tuple(enter.args), {}, type_expr=enter.type
                    )
                    again.meta = dict(_meta_of(enter))
                    part.environment[enter] = again

    def add_inputs(self, order: List[str], keep_original_input_name: bool) -> None:
        """Placeholders for what each partition reads from outside; submodules read through
        ``get_attr`` come last, as attributes of the partition's own module."""
        for name in order:
            part = self.partitions[name]
            values: List[Any] = []
            modules: List[Any] = []
            for input_name in part.inputs:
                value = self.by_name[input_name]
                if value.op == "get_attr" and isinstance(self.attr(value.target), torch.nn.Module):
                    modules.append(value)
                else:
                    values.append(value)
            kept: Dict[str, None] = {}
            graph = part.graph
            for value in values:
                label = value.name if keep_original_input_name else f"arg_{len(kept)}"
                local = graph.placeholder(label, type_expr=value.type)
                kept[value.name] = None
                local.meta = dict(_meta_of(value))
                part.environment[value] = local
            for value in modules:
                local = graph.get_attr(value.target)
                part.targets[value.target] = self.attr(value.target)
                local.meta = dict(_meta_of(value))
                part.environment[value] = local
            part.inputs = kept

    def copy_nodes(self, qualname_map: Optional[Dict[str, str]], keep_names: bool) -> None:
        map_nodes = self.map_nodes
        for node in self.nodes:
            part = self.part_of.get(node)
            if part is None:
                continue
            lookup = part.environment.__getitem__
            args = map_nodes(node.args, lookup)
            kwargs = map_nodes(node.kwargs, lookup)
            target = node.target
            if node.op == "call_module":
                local_target = target.replace(".", "_")
                part.targets[local_target] = self.attr(target)
                if qualname_map is not None:
                    qualname_map[f"{part.submod_name}.{local_target}"] = target
                target = local_target
            new = part.graph.create_node(
                node.op,
                target,
                tuple(args),
                dict(kwargs),
                name=node.name if keep_names else None,
                type_expr=node.type,
            )
            new.meta = dict(_meta_of(node))
            part.environment[node] = new

    def close_autocast(self) -> None:
        """Exit autocast at the end of every partition of a region but the last, innermost
        region first (the last partition runs the original exit node)."""
        for enter in reversed(list(self.regions.autocast)):
            exit_node = self.regions.autocast_exit[enter]
            for pid in sorted(self.regions.autocast[enter])[:-1]:
                part = self.partitions[self.partition_name(pid)]
                closing = part.graph.create_node(
                    exit_node.op,
                    exit_node.target,
                    (part.environment[enter],),
                    {},
                    type_expr=exit_node.type,
                )
                closing.meta = dict(_meta_of(exit_node))

    # --- phase 5: the top graph ----------------------------------------------------------------


class _TopGraph:
    """The graph of the returned module: inputs, attributes, one call per partition."""

    def __init__(self, split: _Split, keep_original_node_name: bool) -> None:
        self.split = split
        self.keep_names = keep_original_node_name
        self.graph = Graph()
        self.env: Dict[Any, Node] = {}  # original node -> node of the top graph
        self.attrs: Dict[str, Any] = {}  # what the returned module will own

    def bring_in(self, values: Iterable[Any]) -> None:
        """Give the top graph the original placeholders / get_attr nodes among ``values``."""
        graph, env = self.graph, self.env
        for node in values:
            if node in env:
                continue
            if node.op == "placeholder":
                default = node.args[0] if node.args else inspect.Signature.empty
                if self.keep_names:
                    args = () if default is inspect.Signature.empty else (default,)
                    local = graph.create_node("placeholder", node.name, args, type_expr=node.type)
                else:
                    local = graph.placeholder(
                        node.target, type_expr=node.type, default_value=default
                    )
            elif node.op == "get_attr":
                local = graph.get_attr(node.target)
                if not isinstance(node.target, str):
                    raise AssertionError(f"Expected str target, got {type(node.target)}")
                self.attrs[node.target] = self.split.attr(node.target)
            else:
                continue
            local.meta = dict(_meta_of(node))
            env[node] = local

    def call(self, part: Partition, tuple_return: bool) -> None:
        by_name = self.split.by_name
        results = [part.environment[by_name[name]] for name in part.outputs]
        if len(results) == 1 and not tuple_return:
            part.graph.output(results[0])
        else:
            part.graph.output(tuple(results))
        self.attrs[part.submod_name] = _module_from_attrs(part.targets, part.graph)
        args = tuple(self.env[by_name[name]] for name in part.inputs)
        call = self.graph.call_module(part.submod_name, args)
        if len(results) == 1 and not tuple_return:
            self.env[by_name[next(iter(part.outputs))]] = call
        elif results:
            for i, name in enumerate(part.outputs):
                item = self.graph.call_function(operator.getitem, (call, i))
                self.env[by_name[name]] = item

    def finish(self) -> GraphModule:
        for node in self.split.nodes:
            if node.op == "output":
                # Attributes only the output reads (never a partition) are fetched here;
                # torch.fx fails with a KeyError on them when keeping the original order.
                self.bring_in(node.all_input_nodes)
                self.graph.output(self.split.map_nodes(node.args[0], self.env.__getitem__))
        result = _module_from_attrs(self.attrs, self.graph)
        result.meta["partition_names"] = {p.submod_name for p in self.split.partitions.values()}
        return result


def split_module(
    m: GraphModule,
    root_m: torch.nn.Module,
    split_callback: Callable[[Node], int],
    qualname_map: Optional[Dict[str, str]] = None,
    keep_original_order: Optional[bool] = False,
    keep_original_node_name: Optional[bool] = False,
    keep_original_input_name: bool = True,
    *,
    partition_affix: Optional[str] = None,
    tuple_return: bool = False,
) -> GraphModule:
    """Split ``m`` into submodules, one per partition that ``split_callback`` names.

    Args:
        m: the GraphModule to split (fxkit or torch.fx); it is left unchanged.
        root_m: the module ``m`` was traced from; unused, kept for torch.fx's signature.
        split_callback: maps every call node to a partition id (``str(id)`` names it; the
            submodule is ``submod_<id>``). Placeholders, ``get_attr`` and output nodes are
            not asked: they go where they are used.
        qualname_map: if given, filled with ``"submod_<id>.<name>" -> original qualified name``
            for every submodule call moved into a partition (dots in names become ``_``).
        keep_original_order: call the submodules in the order of their first nodes (as far as
            their dependencies allow) instead of a dependency order.
        keep_original_node_name: copied nodes (and top-level placeholders) keep their names.
        keep_original_input_name: a submodule's placeholders are named after the values they
            receive; if False they are ``arg_0``, ``arg_1``, ...
        partition_affix: submodules become ``submod_<affix>_<id>``.
        tuple_return: a submodule with a single output still returns a 1-tuple.

    Returns:
        A GraphModule whose ``submod_*`` children compute the original outputs together;
        ``meta["partition_names"]`` is the set of their names.

    Raises:
        RuntimeError: the partitions would depend on each other in a cycle (the message names
            them and a value crossing each way).
        AssertionError: autocast / grad-mode regions with partition ids that decrease along
            the graph, or an autocast region that never exits.

    Example::

        gm = fxkit.symbolic_trace(model)
        split = split_module(gm, model, lambda node: 0 if node.name.startswith("l1") else 1)
        torch.testing.assert_close(split(x), gm(x))
    """
    split = _Split(m, split_callback, partition_affix)
    split.assign()
    split.link()
    order = split.dependency_order()
    split.reopen_global_state()
    split.add_inputs(order, keep_original_input_name)
    split.copy_nodes(qualname_map, bool(keep_original_node_name))
    split.close_autocast()

    top = _TopGraph(split, bool(keep_original_node_name))
    if keep_original_order:
        call_order = split.original_order()
        placeholders = [n for n in split.nodes if n.op == "placeholder"]
    else:
        call_order = order
        top.bring_in(split.nodes)
    for name in call_order:
        part = split.partitions[name]
        if keep_original_order:
            top.bring_in(placeholders)
            placeholders = []  # all in after the first call
            top.bring_in([split.by_name[i] for i in part.inputs])
        top.call(part, tuple_return)
    if keep_original_order and not top.env:
        top.bring_in(split.nodes)
    return top.finish()


def split_module_simple(
    m: GraphModule,
    node_to_partition: Dict[Node, int],
    *,
    partition_affix: Optional[str] = None,
) -> GraphModule:
    """A lighter :func:`split_module` for graphs without autocast / grad-mode regions and
    without submodule calls (as Dynamo produces for inference).

    ``node_to_partition`` gives the partition id of every node except placeholders and the
    output. Partitions are called in the order their first nodes appear, so that order must
    respect their dependencies; submodules are named ``submod_<id>`` (``submod_<affix>_<id>``).
    """
    parts: Dict[Any, Partition] = {}
    part_of: Dict[Any, Partition] = {}
    nodes = list(m.graph.nodes)
    split = _Split(m, lambda n: node_to_partition[n], partition_affix)
    for node in nodes:
        if _meta_of(node):
            symbol = _bound_symbol(node)
            if symbol is not None:
                split.symbol_nodes.setdefault(symbol, node)
        split.by_name[node.name] = node
        if node.op in ("placeholder", "output"):
            continue
        pid = node_to_partition[node]
        part = parts.get(pid)
        if part is None:
            part = parts[pid] = Partition(split.partition_name(pid))
        part_of[node] = part
    split.partitions = {p.name: p for p in parts.values()}
    split.part_of = part_of
    for node in nodes:
        if node.op == "output":
            for value in node.all_input_nodes:
                split.cross(value, None)
        elif node.op != "placeholder":
            for value in node.all_input_nodes:
                split.cross(value, part_of[node])
    for part in parts.values():
        for name in part.inputs:
            value = split.by_name[name]
            local = part.graph.placeholder(name, type_expr=value.type)
            local.meta = dict(_meta_of(value))
            part.environment[value] = local
    for node in nodes:
        part = part_of.get(node)
        if part is not None:
            lookup = part.environment.__getitem__
            new = part.graph.create_node(
                node.op,
                node.target,
                tuple(split.map_nodes(node.args, lookup)),
                dict(split.map_nodes(node.kwargs, lookup)),
                type_expr=node.type,
            )
            new.meta = dict(_meta_of(node))
            part.environment[node] = new
            if node.op in ("get_attr", "call_module"):  # torch.fx leaves these dangling
                part.targets[node.target] = split.attr(node.target)
    top = _TopGraph(split, False)
    for node in nodes:
        if node.op == "placeholder":  # no default values here, as in torch.fx
            top.env[node] = top.graph.placeholder(node.target, type_expr=node.type)
            top.env[node].meta = dict(_meta_of(node))
    for part in parts.values():
        top.call(part, False)
    top.attrs = {p.submod_name: top.attrs[p.submod_name] for p in parts.values()}
    for node in nodes:
        if node.op == "output":
            top.graph.output(split.map_nodes(node.args[0], top.env.__getitem__))
    return _module_from_attrs(top.attrs, top.graph)
