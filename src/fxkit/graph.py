"""The :class:`Graph`: an ordered, editable list of :class:`~fxkit.node.Node` objects.

Editing is O(1) per node: nodes form an intrusive linked list around a sentinel ``root``;
names come from per-base counters (no scan of existing names); ``find_nodes`` reads an index
keyed by ``(op, target)`` that is updated as nodes are created, retargeted and erased.
Turning a graph into Python lives in :mod:`fxkit.codegen`; this module re-exports its names.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import inspect
import keyword
import re
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from fxkit.codegen import (
    CodeGen,
    PythonCode,
    _custom_builtins,
    _PyTreeCodeGen,
    _PyTreeInfo,
    describe_target,
)
from fxkit.node import (
    Argument,
    Node,
    Target,
    _hooks,
    _remap,
    map_arg,
)

if TYPE_CHECKING:
    from fxkit.graph_module import GraphModule

__all__ = ["Graph", "CodeGen", "PythonCode", "_PyTreeCodeGen", "_PyTreeInfo"]

_NAME_PARTS = re.compile(r"^([a-zA-Z_][0-9a-zA-Z_]*?)(?:_(\d+))?$")
_NOT_IDENTIFIER_CHARS = re.compile(r"[^0-9a-zA-Z_]+")
_CAMEL_HUMP = re.compile(r"(?<=[a-z])([A-Z])")
_RESERVED = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | frozenset(_custom_builtins)


_TABULAR_HEADERS = ("opcode", "name", "target", "args", "kwargs")


class _NameAllocator:
    """Hands out unique identifiers: ``add``, ``add_1``, ``add_2`` ... in O(1) each.

    A candidate is cleaned into an identifier, split into ``base`` and numeric suffix, and the
    next free suffix for that base is remembered so later requests never rescan. ``live`` is
    the graph's name -> node index (so names need no second set); names of erased nodes stay
    reserved in ``retired``.
    """

    __slots__ = ("live", "retired", "next_suffix")

    def __init__(self, live: Dict[str, Node]) -> None:
        self.live = live
        self.retired: set = set()
        self.next_suffix: Dict[str, int] = {}

    @property
    def used(self) -> set:
        return set(self.live) | self.retired

    def taken(self, name: str) -> bool:
        return name in self.live or name in self.retired

    def allocate(self, candidate: str) -> str:
        parts = _split_name(candidate)
        if parts is None:
            candidate = _NOT_IDENTIFIER_CHARS.sub("_", candidate) or "_unnamed"
            if candidate[0].isdigit():
                candidate = "_" + candidate
            parts = _split_name(candidate)
            assert parts is not None
        base, suffix = parts
        live, retired = self.live, self.retired
        if suffix is not None and candidate not in live and candidate not in retired:
            n = suffix
        else:
            n = self.next_suffix.get(base, 0)
            if candidate in _RESERVED:
                n += 1
                candidate = f"{base}_{n}"
        while candidate in live or candidate in retired:
            n += 1
            candidate = f"{base}_{n}"
        self.next_suffix[base] = n
        return candidate


_split_cache: Dict[str, Optional[Tuple[str, Optional[int]]]] = {}


def _split_name(candidate: str) -> Optional[Tuple[str, Optional[int]]]:
    """``"add_3" -> ("add", 3)``, ``"add" -> ("add", None)``, non-identifiers -> None (cached)."""
    try:
        return _split_cache[candidate]
    except KeyError:
        pass
    m = _NAME_PARTS.match(candidate)
    parts = None if m is None else (m.group(1), None if m.group(2) is None else int(m.group(2)))
    if len(_split_cache) > 65536:
        _split_cache.clear()
    _split_cache[candidate] = parts
    return parts


_candidate_cache: Dict[Tuple[str, Any], str] = {}


def _candidate_name(op: str, target: Target) -> str:
    """The name a node gets by default, derived from what it calls (cached per target)."""
    try:
        return _candidate_cache[(op, target)]
    except (KeyError, TypeError):
        pass
    if callable(target):
        text = getattr(target, "__name__", None)
        if not isinstance(text, str):  # torch.fx fails here; a type name is friendlier
            text = type(target).__name__
    elif isinstance(target, str):
        text = target
        if text.startswith("__") and text.endswith("__"):
            text = text[2:-2]
    else:
        raise AssertionError(
            f"Expected target to be str, got {type(target)} (a {op} node needs a string "
            "target, or pass name=...)"
        )
    name = _CAMEL_HUMP.sub(r"_\1", text).lower()
    try:
        if len(_candidate_cache) > 4096:
            _candidate_cache.clear()
        _candidate_cache[(op, target)] = name
    except TypeError:
        pass
    return name


class _NamespaceView:
    """What code written for torch.fx reaches through ``graph._graph_namespace``."""

    __slots__ = ("_graph",)

    def __init__(self, graph: "Graph") -> None:
        self._graph = graph

    def create_name(self, candidate: str, obj: Any = None) -> str:
        """Reserve and return a unique name based on ``candidate``."""
        name = self._graph._names.allocate(candidate)
        self._graph._names.retired.add(name)  # reserved even if no node takes it
        return name


class _NodeView:
    """Live view over a graph's nodes: ``len``, iteration, ``reversed``, ``in``.

    Iteration tolerates erasing the node just yielded (erased nodes keep their links).
    """

    __slots__ = ("_graph", "_backwards")

    def __init__(self, graph: "Graph", backwards: bool = False) -> None:
        self._graph = graph
        self._backwards = backwards

    def __len__(self) -> int:
        return self._graph._len

    def __iter__(self) -> Iterator[Node]:
        root = self._graph._root
        step = "_prev" if self._backwards else "_next"
        cur = getattr(root, step)
        while cur is not root:
            if not cur._erased:
                yield cur
            cur = getattr(cur, step)

    def __reversed__(self) -> "_NodeView":
        return _NodeView(self._graph, not self._backwards)

    def __contains__(self, node: object) -> bool:
        return isinstance(node, Node) and node.graph is self._graph and not node._erased

    def __bool__(self) -> bool:
        return self._graph._len > 0

    def __repr__(self) -> str:
        return f"<{len(self)} nodes: {', '.join(n.name for n in self)}>"


class _InsertPoint:
    """Sets where new nodes go as soon as it is made; restores the old place on ``__exit__``.

    ``after`` False: each new node goes just before ``anchor`` (so they keep creation order);
    True: each goes just after ``anchor`` (so the latest comes first), as torch.fx does.
    """

    __slots__ = ("_graph", "_saved")

    def __init__(self, graph: "Graph", anchor: Node, after: bool) -> None:
        self._graph = graph
        self._saved = (graph._insert_anchor, graph._insert_after)
        graph._insert_anchor = anchor
        graph._insert_after = after

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        self._graph._insert_anchor, self._graph._insert_after = self._saved


class Graph:
    """The IR of fxkit: a list of :class:`Node` in execution order.

    Build one with the node-creating methods (``placeholder``, ``call_function``, ...), edit it
    with the Node API, check it with :meth:`lint`, and run it through
    :class:`~fxkit.graph_module.GraphModule`, which generates Python from it::

        g = Graph()
        x = g.placeholder("x")
        y = g.call_function(torch.relu, (x,))
        g.output(y)
        print(g)
    """

    def __init__(
        self,
        owning_module: Optional["GraphModule"] = None,
        tracer_cls: Optional[type] = None,
        tracer_extras: Optional[Dict[str, Any]] = None,
    ) -> None:
        self._root = Node(self, "", "root", "", (), {})
        self._root._order = 0
        self._len = 0
        self._by_name: Dict[str, Node] = {}
        self._names = _NameAllocator(self._by_name)
        # (op, target) -> nodes; built on the first find_nodes call, then kept up to date.
        self._by_op_target: Optional[Dict[Tuple[str, Any], Dict[Node, None]]] = None
        self._insert_anchor: Node = self._root  # new nodes go next to this (root: the end)
        self._insert_after = False  # True: just after the anchor; False: just before it
        self._maybe_unordered = False
        self._owning_module = owning_module
        self._tracer_cls = tracer_cls
        self._tracer_extras = tracer_extras
        self._codegen: CodeGen = CodeGen()
        self._co_fields: Dict[
            str, Any
        ] = {}  # the traced function's name/file/line (set by the tracer)

    # Who must see the graph as it is before its next edit (a list; falsy when none): the
    # GraphModules whose recompile() deferred generating code, so a module's forward is the
    # graph as of its last recompile(), and snapshots taken only if a pass edits. Each gets
    # ``_before_graph_edit(graph)`` once, then is dropped.
    _pending_code: Any = ()

    def _before_edit(self) -> None:
        pending = self._pending_code
        self._pending_code = ()
        for listener in pending:
            listener._before_graph_edit(self)

    def _notify_before_next_edit(self, listener: Any) -> None:
        """Call ``listener._before_graph_edit(self)`` just before this graph next changes."""
        pending = self._pending_code
        if not pending:
            self._pending_code = [listener]
        elif not any(p is listener for p in pending):
            pending.append(listener)

    # --- ownership -----------------------------------------------------------------------------

    @property
    def owning_module(self) -> Optional["GraphModule"]:
        """The GraphModule this graph belongs to (used by lint and purity checks)."""
        return self._owning_module

    @owning_module.setter
    def owning_module(self, mod: Optional["GraphModule"]) -> None:
        self._owning_module = mod

    @property
    def nodes(self) -> _NodeView:
        """All nodes in order; supports ``len``, iteration, ``reversed`` and ``in``."""
        return _NodeView(self)

    @property
    def _graph_namespace(self) -> "_NamespaceView":
        """torch.fx-style access to the name allocator (``create_name(candidate, obj)``)."""
        return _NamespaceView(self)

    def output_node(self) -> Node:
        """The graph's ``output`` node (the last node)."""
        last = self._root._prev
        if last is self._root:
            raise RuntimeError("this graph is empty: it has no output node")
        if last.op != "output":
            raise AssertionError(
                f"Expected output node, got op={last.op} (the graph's last node is "
                f"{last.name!r}; call graph.output(...) first)"
            )
        return last

    # --- indexes -------------------------------------------------------------------------------

    def _index(self, node: Node) -> None:
        table = self._by_op_target
        if table is None:
            return
        try:
            table.setdefault((node.op, node._target), {})[node] = None
        except TypeError:  # unhashable target: only findable by op
            table.setdefault((node.op, _UNHASHABLE), {})[node] = None

    def _unindex(self, node: Node) -> None:
        table = self._by_op_target
        if table is None:
            return
        try:
            bucket = table.get((node.op, node._target))
        except TypeError:
            bucket = table.get((node.op, _UNHASHABLE))
        if bucket is not None:
            bucket.pop(node, None)

    def find_nodes(self, *, op: str, target: Optional[Target] = None, sort: bool = True):
        """Nodes with the given ``op`` (and ``target``, if given), from an index: O(matches)
        once the index exists (the first call builds it in one pass)."""
        table = self._by_op_target
        if table is None:
            table = self._by_op_target = {}
            for node in self.nodes:
                self._index(node)
        if target is None:
            found = [n for (o, _), bucket in table.items() if o == op for n in bucket]
        else:
            try:
                found = list(table.get((op, target), ()))
            except TypeError:
                found = [n for n in table.get((op, _UNHASHABLE), ()) if n.target == target]
        if sort:
            found.sort(key=lambda n: n._order)
        return found

    # --- creating nodes ------------------------------------------------------------------------

    def create_node(
        self,
        op: str,
        target: Target,
        args: Optional[Tuple[Argument, ...]] = None,
        kwargs: Optional[Dict[str, Argument]] = None,
        name: Optional[str] = None,
        type_expr: Optional[Any] = None,
    ) -> Node:
        """Create a node and insert it at the current insertion point (see ``inserting_*``)."""
        if not args:
            args = ()
        elif not isinstance(args, tuple):
            raise AssertionError(f"args must be a tuple, got {type(args)}: {args!r}")
        if not kwargs:
            kwargs = {}
        elif not isinstance(kwargs, dict):
            raise AssertionError(f"kwargs must be a dict, got {type(kwargs)}: {kwargs!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"node name must be a string, got {name!r}")
        candidate = name if name else _candidate_name(op, target)
        # Validate by building the node before the name is taken, so a refused node leaves
        # no trace in the namespace.
        node = Node(self, candidate, op, target, args, kwargs, type_expr)
        node._name = self._names.allocate(candidate)
        if self._owning_module is not None:
            for hook in _hooks(self, "_create_node_hooks"):
                hook(node)
        self._insert(node)
        return node

    def _insert(self, node: Node) -> None:
        anchor = self._insert_anchor
        if self._insert_after:
            anchor = anchor._next
        while anchor._erased:  # an anchor erased meanwhile: use its next live neighbour
            anchor = anchor._next
        node._link_before(anchor)
        self._len += 1
        self._by_name[node.name] = node
        self._index(node)
        # Flag anything that may break topological order (matchers rely on the flag): a
        # foreign or erased input always; a later input only when not appending.
        if anchor is self._root:
            for inp in node._input_nodes:
                if inp.graph is not self or inp._erased:
                    self._maybe_unordered = True
                    break
        else:
            order = node._order
            for inp in node._input_nodes:
                o = inp._order
                if inp.graph is not self or inp._erased or o is None or o > order:
                    self._maybe_unordered = True
                    break

    def placeholder(
        self,
        name: str,
        type_expr: Optional[Any] = None,
        default_value: Any = inspect.Signature.empty,
    ) -> Node:
        """Add a function input called ``name`` (``*args``/``**kw`` names are allowed)."""
        args = () if default_value is inspect.Signature.empty else (default_value,)
        return self.create_node("placeholder", name, args, type_expr=type_expr)

    def get_attr(self, qualified_name: str, type_expr: Optional[Any] = None) -> Node:
        """Read a parameter, buffer or other attribute of the owning module by dotted path."""
        self._warn_if_missing(qualified_name, "get_attr")
        return self.create_node("get_attr", qualified_name, type_expr=type_expr)

    def call_module(
        self,
        module_name: str,
        args: Optional[Tuple[Argument, ...]] = None,
        kwargs: Optional[Dict[str, Argument]] = None,
        type_expr: Optional[Any] = None,
    ) -> Node:
        """Call the submodule at dotted path ``module_name``."""
        self._warn_if_missing(module_name, "call_module")
        return self.create_node("call_module", module_name, args, kwargs, type_expr=type_expr)

    def call_method(
        self,
        method_name: str,
        args: Optional[Tuple[Argument, ...]] = None,
        kwargs: Optional[Dict[str, Argument]] = None,
        type_expr: Optional[Any] = None,
    ) -> Node:
        """Call method ``method_name`` on ``args[0]``."""
        return self.create_node("call_method", method_name, args, kwargs, type_expr=type_expr)

    def call_function(
        self,
        the_function: Callable[..., Any],
        args: Optional[Tuple[Argument, ...]] = None,
        kwargs: Optional[Dict[str, Argument]] = None,
        type_expr: Optional[Any] = None,
        name: Optional[str] = None,
    ) -> Node:
        """Call the free function ``the_function`` (``name`` suggests the node's name)."""
        return self.create_node(
            "call_function", the_function, args, kwargs, name=name, type_expr=type_expr
        )

    def output(self, result: Argument, type_expr: Optional[Any] = None) -> Node:
        """Add the ``output`` node returning ``result`` (any nesting of nodes and constants)."""
        return self.create_node("output", "output", (result,), type_expr=type_expr)

    def _warn_if_missing(self, qualified_name: str, op: str) -> None:
        """Warn (with torch.fx's text) when the owning module lacks what a node would use."""
        root = self._owning_module
        if root is None:
            return
        if op == "call_module":
            # get_submodule raises AttributeError for a missing path (torch.fx lets it escape)
            if root.get_submodule(qualified_name) is None:
                warnings.warn(_MISSING_MODULE_TEXT, stacklevel=3)
            return
        path, _, leaf = qualified_name.rpartition(".")
        try:
            owner = root.get_submodule(path)
        except AttributeError:
            warnings.warn(f"Failed to fetch module {path}!", stacklevel=3)
            owner = None
        if owner is not None and hasattr(owner, leaf):
            value = getattr(owner, leaf)
            if isinstance(value, (torch.nn.Module, torch.nn.Parameter)) or leaf in getattr(
                owner, "_buffers", ()
            ):
                return
        warnings.warn(_MISSING_ATTR_TEXT, stacklevel=3)

    # --- editing -------------------------------------------------------------------------------

    def inserting_before(self, n: Optional[Node] = None) -> _InsertPoint:
        """New nodes go just before ``n``, in creation order; a context manager.

        With ``n`` None each new node goes at the very start of the graph (so, as in
        torch.fx, several of them come out latest first).
        """
        if n is None:
            return _InsertPoint(self, self._root, True)
        self._check_own(n, "before")
        return _InsertPoint(self, n, False)

    def inserting_after(self, n: Optional[Node] = None) -> _InsertPoint:
        """Each new node goes just after ``n`` (the end of the graph if ``None``); a context
        manager. As in torch.fx, several nodes created in one block come out latest first."""
        if n is None:
            return _InsertPoint(self, self._root, False)
        self._check_own(n, "after")
        return _InsertPoint(self, n, True)

    def _check_own(self, n: Node, where: str) -> None:
        if not isinstance(n, Node) or n.graph is not self:
            what = type(n).__name__ if not isinstance(n, Node) else f"node {n.name!r}"
            raise AssertionError(
                f"Node to insert {where} is not in graph. ({what} belongs to another graph)"
            )

    def _move_before(self, x: Node, anchor: Node) -> None:
        """Move ``x`` (already in this graph) to just before ``anchor``."""
        if self._pending_code:
            self._before_edit()
        if x._erased:
            raise ValueError(f"cannot move erased node {x.name!r}")
        was_linked = x._order is not None
        if was_linked:
            x._unlink()
        x._link_before(anchor)
        if not was_linked:
            x._name = self._names.allocate(x._name)
            self._len += 1
            self._by_name[x.name] = x
            self._index(x)
        order = x._order
        if any(i.graph is not self or i._erased or i._order > order for i in x._input_nodes) or any(
            u.graph is not self or u._erased or u._order < order for u in x.users
        ):
            self._maybe_unordered = True

    def erase_node(self, to_erase: Node) -> None:
        """Remove a node that nobody uses; raises (and changes nothing) if it still has users."""
        if not isinstance(to_erase, Node):
            raise AttributeError(
                f"'{type(to_erase).__name__}' object has no attribute 'users' (erase_node "
                "expects a Node)"
            )
        if to_erase.users:
            raise RuntimeError(
                f"Tried to erase Node {to_erase} but it still had {len(to_erase.users)} users "
                f"in the graph: {to_erase.users}! (replace its uses first, e.g. with "
                "replace_all_uses_with)"
            )
        if to_erase.graph is not self:
            raise RuntimeError(
                f"Attempting to remove {to_erase} from wrong graph! (it belongs to another Graph)"
            )
        if to_erase._erased:
            warnings.warn(f"erase_node({to_erase}) on an already erased node", stacklevel=2)
            return
        if to_erase.op == "root":
            raise ValueError("the sentinel root node cannot be erased")
        if self._pending_code:
            self._before_edit()
        for hook in _hooks(self, "_erase_node_hooks"):
            hook(to_erase)
        if self._insert_anchor is to_erase:
            # Keep inserting at the same spot: next to the erased node's neighbour.
            self._insert_anchor = to_erase._prev if self._insert_after else to_erase._next
        to_erase._unlink()
        to_erase._erased = True
        self._len -= 1
        self._unindex(to_erase)
        if self._by_name.get(to_erase.name) is to_erase:
            del self._by_name[to_erase.name]
            self._names.retired.add(to_erase.name)
        for inp in to_erase._input_nodes:
            inp.users.pop(to_erase, None)
        if to_erase._input_nodes:
            # Drop references to inputs so an erased node keeps nothing alive.
            to_erase._args = _remap(to_erase._args, _to_none)
            if to_erase._kwargs:
                to_erase._kwargs = _remap(to_erase._kwargs, _to_none)
        to_erase._input_nodes = ()

    def node_copy(
        self, node: Node, arg_transform: Callable[[Node], Argument] = lambda x: x
    ) -> Node:
        """Copy ``node`` (possibly from another graph) into this one, mapping its node inputs
        through ``arg_transform``; meta is copied shallowly."""
        args = map_arg(node.args, arg_transform)
        kwargs = map_arg(node.kwargs, arg_transform)
        result = self.create_node(node.op, node.target, args, kwargs, node.name, node.type)
        # fxkit nodes keep meta lazily; others (torch.fx nodes) by the public name
        meta = node._meta if type(node) is Node else node.meta
        if meta:
            result._meta = dict(meta)
        return result

    def graph_copy(
        self,
        g: "Graph",
        val_map: Dict[Node, Node],
        return_output_node: bool = False,
    ) -> Optional[Argument]:
        """Append copies of all of ``g``'s nodes except its output; ``val_map`` maps old nodes
        to new ones (pre-seed it to substitute inputs). Returns what ``g`` outputs, mapped."""
        for node in g.nodes:
            if node in val_map:
                continue
            if node.op == "output":
                value = map_arg(node.args[0], val_map.__getitem__)
                return (value, node) if return_output_node else value
            val_map[node] = self.node_copy(node, val_map.__getitem__)
        return None

    def __deepcopy__(self, memo: Optional[Dict[int, Any]] = None) -> "Graph":
        memo = {} if memo is None else memo
        fresh = Graph(tracer_cls=self._tracer_cls, tracer_extras=self._tracer_extras)
        memo[id(self)] = fresh
        fresh._codegen = copy.deepcopy(self._codegen, memo)
        copied: Any = fresh.graph_copy(self, {}, return_output_node=True)
        if copied is not None:
            value, old_output = copied
            out = fresh.output(value, type_expr=old_output.type)
            out.meta = copy.copy(old_output.meta)
        return fresh

    def eliminate_dead_code(self, is_impure_node: Optional[Callable[[Node], bool]] = None) -> bool:
        """Erase nodes whose values are unused and that have no side effects; True if any.

        As in torch.fx the graph is linted first (DCE needs topological order), and
        GraphModules that this graph reads with ``get_attr`` are cleaned (and recompiled) too.
        """
        self.lint()
        impure = is_impure_node or (lambda n: n.is_impure())
        changed = False
        for node in reversed(self.nodes):
            if not node.users and not impure(node):
                self.erase_node(node)
                changed = True
        root = self._owning_module
        if root is not None:
            read = {n.target for n in self.find_nodes(op="get_attr", sort=False)}
            for name, child in root.named_children():
                sub: Any = getattr(child, "graph", None) if name in read else None
                recompile: Any = getattr(child, "recompile", None)
                if sub is not None and recompile is not None:
                    changed |= sub.eliminate_dead_code()
                    recompile()
        return changed

    # --- checking and showing ------------------------------------------------------------------

    def lint(self) -> None:
        """Check the graph is well formed; raises with the bad node and its neighbourhood.

        Checks ownership, op/target kinds, that inputs come before their users, that users and
        inputs agree, that names are unique, and (with an owning module) that get_attr and
        call_module targets exist.
        """
        from fxkit._lint import lint_graph

        lint_graph(self)
        self._maybe_unordered = False

    def __str__(self) -> str:
        # Spelled as torch.fx prints graphs: placeholders as nodes, no return annotation.
        lines = [n.format_node() for n in self.nodes]
        return "graph():" + "".join(f"\n    {line}" for line in lines if line)

    def __repr__(self) -> str:
        return f"<fxkit.Graph with {self._len} nodes>"

    def print_tabular(self) -> None:
        """Print one row per node (opcode, name, target, args, kwargs): a ``rich`` table when
        rich is installed, else ``tabulate``'s text when that is, else fxkit's own columns."""
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            print(self._tabular_text())
            return
        table = Table(*_TABULAR_HEADERS)
        for row in self._tabular_rows():
            table.add_row(*row)
        Console().print(table)

    def _tabular_rows(self) -> List[List[str]]:
        return [
            [n.op, n.name, _tabular_target(n), repr(n.args), repr(dict(n.kwargs))]
            for n in self.nodes
        ]

    def _tabular_text(self) -> str:
        headers = list(_TABULAR_HEADERS)
        rows = self._tabular_rows()
        try:
            from tabulate import tabulate
        except ImportError:
            widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
            out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
            out.append("  ".join("-" * w for w in widths))
            out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
            return "\n".join(out)
        return tabulate(rows, headers=headers)

    # --- code generation -----------------------------------------------------------------------

    def set_codegen(self, codegen: CodeGen) -> None:
        """Use ``codegen`` to turn this graph into Python (e.g. a pytree-aware CodeGen); any
        object with CodeGen's methods is accepted (torch.fx does not check either)."""
        if self._pending_code:
            self._before_edit()
        self._codegen = codegen

    @contextlib.contextmanager
    def on_generate_code(self, make_transformer: Callable[[Optional[Callable]], Callable]):
        """Within the block, generated code bodies pass through the transformer that
        ``make_transformer(previous_transformer)`` returns (a ``list[str] -> list[str]``)."""
        if self._pending_code:
            self._before_edit()
        previous = self._codegen._body_transformer
        try:
            self._codegen._body_transformer = make_transformer(previous)
            yield
        finally:
            self._codegen._body_transformer = previous

    def python_code(
        self, root_module: str = "self", *, verbose: bool = False, **options: Any
    ) -> PythonCode:
        """Generate the Python source of this graph's function (``root_module`` names ``self``).

        ``verbose`` adds a comment per node with its value's shape and source line; other
        torch.fx display options (``include_stride``, ``include_device``, ``colored``) are
        accepted and passed to the CodeGen.
        """
        return self._codegen._gen_python_code(self.nodes, root_module, verbose=verbose, **options)

    def process_inputs(self, *args: Any) -> Any:
        """Flatten user inputs the way this graph's CodeGen expects them."""
        return self._codegen.process_inputs(*args)

    def process_outputs(self, out: Any) -> Any:
        """Rebuild user-facing outputs from the graph's raw outputs (CodeGen-specific)."""
        return self._codegen.process_outputs(out)

    def _target_to_str(self, target: Target) -> str:
        return _candidate_name("call_function" if callable(target) else "call_method", target)

    # --- pickling: a flat record instead of the recursive linked list ---------------------------

    def __getstate__(self) -> Dict[str, Any]:
        from fxkit._graph_state import graph_to_state

        return graph_to_state(self)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        from fxkit._graph_state import graph_from_state

        graph_from_state(self, state)


_MISSING_ATTR_TEXT = (
    "Attempted to insert a get_attr Node with no underlying reference in the owning "
    "GraphModule! Call GraphModule.add_submodule to add the necessary submodule, "
    "GraphModule.add_parameter to add the necessary Parameter, or "
    "nn.Module.register_buffer to add the necessary buffer"
)
_MISSING_MODULE_TEXT = (
    "Attempted to insert a call_module Node with no underlying reference in the owning "
    "GraphModule! Call GraphModule.add_submodule to add the necessary submodule"
)


def _to_none(_: Node) -> None:
    return None


class _Unhashable:
    def __repr__(self) -> str:
        return "<unhashable target>"


_UNHASHABLE = _Unhashable()


def _tabular_target(n: Node) -> str:
    t = n.target
    return t if isinstance(t, str) else describe_target(t)
