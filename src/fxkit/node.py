"""The unit of the IR: :class:`Node`, plus helpers that walk nested node arguments.

A node is one operation of a :class:`~fxkit.graph.Graph`. Nodes form an intrusive doubly
linked list owned by their graph (O(1) insert, move and erase), and each node keeps the set
of nodes it reads (``all_input_nodes``) and the set that reads it (``users``) in sync with its
``args``/``kwargs``. Arguments are frozen on assignment: tuples stay tuples, lists and dicts
become :class:`immutable_list` / :class:`immutable_dict`, so no edit can bypass that
bookkeeping.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from fxkit.immutable_collections import immutable_dict, immutable_list

if TYPE_CHECKING:
    from fxkit.graph import Graph
    from fxkit.operator_schemas import ArgsKwargsPair

__all__ = ["Node", "Argument", "Target", "map_arg", "map_aggregate", "has_side_effect"]

BaseArgumentTypes = Union[
    str, int, float, bool, complex, torch.dtype, torch.Tensor, torch.device,
    torch.memory_format, torch.layout, torch._ops.OpOverload, torch.SymInt, torch.SymBool,
    torch.SymFloat,
]  # fmt: skip
base_types = BaseArgumentTypes.__args__  # type: ignore[attr-defined]

Target = Union[Callable[..., Any], str]
Argument = Optional[
    Union[Tuple[Any, ...], List[Any], Dict[str, Any], slice, range, "Node", BaseArgumentTypes]
]

OPCODES = frozenset(
    ("placeholder", "get_attr", "call_function", "call_module", "call_method", "output", "root")
)
_STRING_TARGET_OPS = frozenset(("placeholder", "get_attr", "call_module", "call_method", "output"))


def _collect_side_effectful() -> set:
    """Functions that must survive dead code elimination even when nobody reads their result."""
    found: set = {torch._assert, operator.setitem}
    for name in ("_assert_async",):
        if hasattr(torch, name):
            found.add(getattr(torch, name))
    aten_ops = [
        ("aten", "_assert_async", "msg"),
        ("aten", "_assert_scalar", "default"),
        ("aten", "_assert_tensor_metadata", "default"),
        ("aten", "sym_constrain_range", "default"),
        ("aten", "sym_constrain_range_for_size", "default"),
        ("profiler", "_record_function_enter", None),
        ("profiler", "_record_function_enter_new", None),
        ("profiler", "_record_function_exit", None),
    ]
    for namespace, op_name, overload in aten_ops:
        try:
            packet = getattr(getattr(torch.ops, namespace), op_name)
            found.add(packet)
            if overload is not None:
                found.add(getattr(packet, overload))
        except (AttributeError, RuntimeError):
            continue
    return found


_side_effectful_functions: set = _collect_side_effectful()


def has_side_effect(fn: Callable) -> Callable:
    """Mark ``fn`` as side-effectful so dead code elimination keeps calls to it; returns ``fn``."""
    _side_effectful_functions.add(fn)
    return fn


# ---------------------------------------------------------------------------------------------
# Walking nested arguments


def map_aggregate(a: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every leaf of ``a``, rebuilding tuples, lists, dicts and slices around it.

    Lists and dicts come back as :class:`immutable_list` / :class:`immutable_dict`; named
    tuples keep their type.
    """
    t = type(a)
    if t is tuple:
        return tuple([map_aggregate(x, fn) for x in a])
    if t is list or t is immutable_list:
        return immutable_list([map_aggregate(x, fn) for x in a])
    if t is dict or t is immutable_dict:
        return immutable_dict({k: map_aggregate(v, fn) for k, v in a.items()})
    if t is slice:
        return slice(
            map_aggregate(a.start, fn), map_aggregate(a.stop, fn), map_aggregate(a.step, fn)
        )
    if isinstance(a, tuple):
        items = [map_aggregate(x, fn) for x in a]
        return t(*items) if hasattr(a, "_fields") else t(items)
    if isinstance(a, list):
        return immutable_list([map_aggregate(x, fn) for x in a])
    if isinstance(a, dict):
        return immutable_dict({k: map_aggregate(v, fn) for k, v in a.items()})
    return fn(a)


def map_arg(a: Any, fn: Callable[["Node"], Any]) -> Any:
    """Apply ``fn`` to every :class:`Node` inside the (possibly nested) argument ``a``."""
    if not callable(fn):
        raise TypeError(f"map_arg expects a callable as its second argument, got {fn!r}")
    return _remap(a, fn)


def _remap(a: Any, fn: Callable[["Node"], Any]) -> Any:
    """map_arg without the argument check; calls ``fn`` on nodes only (the hot path of edits)."""
    t = type(a)
    if t is Node:
        return fn(a)
    if t in _LEAF_TYPES:
        return a
    if t is tuple:
        return tuple([_remap(x, fn) for x in a])
    if t is list or t is immutable_list:
        return immutable_list([_remap(x, fn) for x in a])
    if t is dict or t is immutable_dict:
        return immutable_dict({k: _remap(v, fn) for k, v in a.items()})
    if t is slice:
        return slice(_remap(a.start, fn), _remap(a.stop, fn), _remap(a.step, fn))
    if isinstance(a, Node):
        return fn(a)
    if isinstance(a, (tuple, list, dict)):
        return map_aggregate(a, lambda x: fn(x) if isinstance(x, Node) else x)
    return a


def _freeze(a: Any, found: dict) -> Any:
    """Return ``a`` with lists/dicts made immutable, recording every Node met in ``found``."""
    t = type(a)
    if t is Node:
        found[a] = None
        return a
    if t is tuple:
        return tuple([_freeze(x, found) for x in a])
    if t is list or t is immutable_list:
        return immutable_list([_freeze(x, found) for x in a])
    if t is dict or t is immutable_dict:
        return immutable_dict({k: _freeze(v, found) for k, v in a.items()})
    if t is slice:
        return slice(_freeze(a.start, found), _freeze(a.stop, found), _freeze(a.step, found))
    if t in _LEAF_TYPES:
        return a
    if isinstance(a, Node):
        found[a] = None
        return a
    if isinstance(a, tuple):
        items = [_freeze(x, found) for x in a]
        return t(*items) if hasattr(a, "_fields") else t(items)
    if isinstance(a, list):
        return immutable_list([_freeze(x, found) for x in a])
    if isinstance(a, dict):
        return immutable_dict({k: _freeze(v, found) for k, v in a.items()})
    return a


_LEAF_TYPES = frozenset((int, float, str, bool, type(None), complex, torch.dtype, torch.device))
_EMPTY_KWARGS: immutable_dict = immutable_dict()


def _inputs_tuple(found: dict, args: tuple) -> tuple:
    """The distinct input nodes as a tuple, reusing ``args`` itself when it is exactly that
    (the common case of a call on nodes only), which saves a tuple per node."""
    inputs = tuple(found)
    if len(inputs) == len(args) and inputs == args:
        return args
    return inputs


# ---------------------------------------------------------------------------------------------
# Ordering keys: every linked node carries a number that increases along the list, so
# "does a come before b" is O(1). Appends take the next multiple of _GAP; inserts take a
# midpoint; when a neighbourhood runs out of room it is respaced locally.

_GAP = 4096.0  # float keys: 24 bytes each, exact integers up to 2**53


def _respace_after(lower: "Node", root: "Node") -> None:
    """Give the packed run of nodes that follows ``lower`` fresh, evenly spaced keys."""
    base = lower._order
    run: list = []
    cur = lower._next
    while cur is not root:
        run.append(cur)
        nxt = cur._next
        if nxt is root:
            break
        # Stop once the span to the next node is roomy relative to the run length; the
        # quadratic threshold keeps repeated inserts at one spot amortised-cheap.
        if nxt._order - base > 4 * (len(run) + 1) ** 2:
            step = (nxt._order - base) // (len(run) + 1)
            for i, node in enumerate(run, 1):
                node._order = base + i * step
            return
        cur = nxt
    for i, node in enumerate(run, 1):
        node._order = base + i * _GAP


class Node:
    """One operation in a :class:`~fxkit.graph.Graph`.

    ``op`` is one of ``placeholder`` (a function input; ``target`` is its name),
    ``get_attr`` (read a parameter/buffer/attribute by qualified name), ``call_function``
    (``target`` is a Python callable), ``call_module`` (``target`` is a submodule path),
    ``call_method`` (``target`` is a method name called on ``args[0]``) and ``output``
    (``args[0]`` is the returned value). ``args``/``kwargs`` may nest other nodes in tuples,
    lists, dicts and slices.

    Nodes are normally made through the Graph API (``graph.call_function(...)``), which also
    links them into the graph.
    """

    __slots__ = (
        "graph",
        "name",
        "op",
        "_target",
        "_args",
        "_kwargs",
        "_input_nodes",
        "users",
        "_meta",
        "_prev",
        "_next",
        "_order",
        "__weakref__",
        "__dict__",
    )  # fmt: skip
    # ``__dict__`` lets passes (and PH placeholders) set ad-hoc attributes, as torch-fx allows.
    # Rarely-set fields are class-level defaults that an instance overrides in its
    # ``__dict__`` only when set, which keeps the common node small.
    type: Optional[Any] = None
    _erased: bool = False
    _repr_fn: Optional[Callable[["Node"], str]] = None

    def __init__(
        self,
        graph: "Graph",
        name: str,
        op: str,
        target: Target,
        args: Tuple[Argument, ...],
        kwargs: Dict[str, Argument],
        return_type: Optional[Any] = None,
    ) -> None:
        if op not in OPCODES:
            raise ValueError(
                f"invalid opcode {op!r} for node {name!r}; expected one of "
                f"{sorted(OPCODES - {'root'})}"
            )
        if op == "call_function":
            if not callable(target):
                raise TypeError(
                    f"call_function node {name!r} needs a callable target, got "
                    f"{type(target).__name__} {target!r}"
                )
        elif op in _STRING_TARGET_OPS and type(target) is not str and not isinstance(target, str):
            raise TypeError(
                f"{op} node {name!r} needs a string target, got {type(target).__name__} {target!r}"
            )
        if type(args) is not tuple and not isinstance(args, tuple):
            raise TypeError(f"args of node {name!r} must be a tuple, got {type(args)}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs of node {name!r} must be a dict, got {type(kwargs)}")
        # A fresh node has no users, so only ownership needs checking (no cycle is possible).
        found: Dict[Node, None] = {}
        frozen_args = _freeze(args, found)
        frozen_kwargs = _freeze(kwargs, found) if kwargs else _EMPTY_KWARGS
        for inp in found:
            if inp.graph is not graph or inp._erased:
                self.name = name
                self._refuse_input(inp, graph)
        self.graph: Graph = graph
        self.name = name
        self.op = op
        self._target: Any = target
        self.users: Dict[Node, None] = {}
        if return_type is not None:
            self.type = return_type
        self._meta: Optional[Dict[str, Any]] = None
        self._prev = self._next = self
        self._order: Any = None  # a float once linked; None while unlinked
        self._args = frozen_args
        self._kwargs = frozen_kwargs
        inputs = _inputs_tuple(found, frozen_args)
        self._input_nodes: Tuple[Node, ...] = inputs
        for inp in inputs:
            inp.users[self] = None

    def _refuse_input(self, inp: "Node", graph: "Graph") -> None:
        if inp.graph is not graph:
            raise ValueError(
                f"node {self.name!r} cannot use {inp.name!r}: it belongs to another graph "
                "(copy it with graph.node_copy or graph.graph_copy first)"
            )
        raise ValueError(f"node {self.name!r} cannot use {inp.name!r}: it was erased")

    @property
    def meta(self) -> Dict[str, Any]:
        """Free-form metadata (``stack_trace``, ``val``, ``tensor_meta``, ...); created on use."""
        meta = self._meta
        if meta is None:
            meta = self._meta = {}
        return meta

    @meta.setter
    def meta(self, value: Dict[str, Any]) -> None:
        self._meta = value

    # --- arguments and def-use bookkeeping ---------------------------------------------------

    def _set_inputs(self, args: Any, kwargs: Any, *, check_cycles: bool = True) -> None:
        """Replace args and kwargs at once, validating first so a refused edit changes nothing."""
        if not isinstance(args, tuple):
            raise TypeError(f"args of node {self.name!r} must be a tuple, got {type(args)}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs of node {self.name!r} must be a dict, got {type(kwargs)}")
        found: Dict[Node, None] = {}
        new_args = _freeze(args, found)
        new_kwargs = _freeze(kwargs, found) if kwargs else _EMPTY_KWARGS
        graph = self.graph
        old_inputs = self._input_nodes
        for inp in found:
            if inp.graph is not graph or inp._erased:
                self._refuse_input(inp, graph)
        if check_cycles and (self.users or self in found):
            for inp in found:
                if inp not in old_inputs and self._would_cycle(inp):
                    raise ValueError(
                        f"using {inp.name!r} as an input of {self.name!r} would create a cycle: "
                        f"{inp.name!r} already depends on {self.name!r}"
                    )
        order = self._order
        if order is not None:
            for inp in found:
                if inp._order is not None and inp._order > order:
                    graph._maybe_unordered = True  # a forward reference
                    break
        for old in old_inputs:
            old.users.pop(self, None)
        self._args = new_args
        self._kwargs = new_kwargs
        inputs = _inputs_tuple(found, new_args)
        self._input_nodes = inputs
        for inp in inputs:
            inp.users[self] = None

    def _would_cycle(self, inp: "Node") -> bool:
        """True if ``self`` is reachable from ``inp`` through inputs (so inp -> self closes)."""
        if inp is self:
            return True
        if inp._order is not None and self._order is not None and inp._order < self._order:
            # In a topologically ordered list nothing earlier can depend on us; graphs that are
            # temporarily out of order fall through to the search below only when inp is later.
            if not self.graph._maybe_unordered:
                return False
        stack = [inp]
        seen = {inp}
        while stack:
            for nxt in stack.pop()._input_nodes:
                if nxt is self:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    @property
    def args(self) -> Tuple[Any, ...]:
        """Positional arguments; assigning a new tuple updates users of old and new inputs."""
        return self._args

    @args.setter
    def args(self, value: Tuple[Any, ...]) -> None:
        self._set_inputs(value, self._kwargs)

    @property
    def kwargs(self) -> Dict[str, Any]:
        """Keyword arguments; assigning a new dict updates users of old and new inputs."""
        return self._kwargs

    @kwargs.setter
    def kwargs(self, value: Dict[str, Any]) -> None:
        self._set_inputs(self._args, value)

    @property
    def target(self) -> Any:
        """What the node calls or reads (callable for call_function, a string otherwise)."""
        return self._target

    @target.setter
    def target(self, value: Any) -> None:
        if self.op == "call_function" and not callable(value):
            raise TypeError(f"call_function node {self.name!r} needs a callable target")
        if self.op in _STRING_TARGET_OPS and not isinstance(value, str):
            raise TypeError(f"{self.op} node {self.name!r} needs a string target")
        graph = self.graph
        if self._order is not None and not self._erased and graph is not None:
            graph._unindex(self)
            self._target = value
            graph._index(self)
        else:
            self._target = value

    @property
    def all_input_nodes(self) -> List["Node"]:
        """The distinct nodes read by ``args`` and ``kwargs``, in first-use order."""
        return list(self._input_nodes)

    def update_arg(self, idx: int, arg: Argument) -> None:
        """Set ``args[idx]`` to ``arg``."""
        args = list(self._args)
        if not -len(args) <= idx < len(args):
            raise IndexError(f"node {self.name!r} has {len(args)} args; index {idx} is invalid")
        args[idx] = arg
        self.args = tuple(args)

    def insert_arg(self, idx: int, arg: Argument) -> None:
        """Insert ``arg`` into ``args`` before position ``idx`` (0 <= idx <= len(args))."""
        if not 0 <= idx <= len(self._args):
            raise IndexError(f"insert_arg index {idx} out of range for node {self.name!r}")
        self.args = self._args[:idx] + (arg,) + self._args[idx:]

    def update_kwarg(self, key: str, arg: Argument) -> None:
        """Set ``kwargs[key]`` to ``arg``."""
        if not isinstance(key, str):
            raise TypeError(f"kwarg names are strings, got {key!r}")
        self.kwargs = {**self._kwargs, key: arg}

    def replace_input_with(self, old_input: "Node", new_input: "Node") -> None:
        """Make this node read ``new_input`` wherever it read ``old_input``."""
        if not isinstance(old_input, Node) or not isinstance(new_input, Node):
            raise TypeError("replace_input_with expects two Nodes")
        if old_input not in self._input_nodes or old_input is new_input:
            return
        if new_input.graph is not self.graph or new_input._erased:
            self._refuse_input(new_input, self.graph)
        if new_input not in self._input_nodes and self._would_cycle(new_input):
            raise ValueError(
                f"using {new_input.name!r} as an input of {self.name!r} would create a cycle"
            )
        self._swap_input(old_input, new_input)

    def _swap_input(self, old: "Node", new: "Node") -> None:
        """Replace every use of ``old`` by the already-validated ``new``, touching only the
        containers and user sets involved."""

        def swap(n: Node) -> Node:
            return new if n is old else n

        args = self._args
        self._args = _remap(args, swap)
        if self._kwargs:
            self._kwargs = _remap(self._kwargs, swap)
        inputs = self._input_nodes
        if new in inputs:
            inputs = tuple([n for n in inputs if n is not old])
        else:
            inputs = tuple([new if n is old else n for n in inputs])
            if self._order is not None and new._order is not None and new._order > self._order:
                self.graph._maybe_unordered = True
        self._input_nodes = self._args if inputs == self._args else inputs
        old.users.pop(self, None)
        new.users[self] = None

    def replace_all_uses_with(
        self,
        replace_with: "Node",
        delete_user_cb: Callable[["Node"], bool] = lambda user: True,
        *,
        propagate_meta: bool = False,
    ) -> List["Node"]:
        """Make every user of this node (those ``delete_user_cb`` accepts) read ``replace_with``.

        Returns the users that were changed. With ``propagate_meta`` the meta of this node is
        copied onto ``replace_with`` (which must have empty meta).
        """
        if not isinstance(replace_with, Node):
            raise TypeError(f"replace_all_uses_with expects a Node, got {type(replace_with)}")
        if replace_with.graph is not self.graph:
            raise ValueError(f"{replace_with.name!r} belongs to another graph than {self.name!r}")
        if propagate_meta:
            if replace_with.meta:
                raise ValueError(
                    f"propagate_meta needs {replace_with.name!r} to have empty meta, it has "
                    f"keys {sorted(replace_with.meta)}"
                )
            replace_with.meta.update(self.meta)
        if replace_with._erased:
            raise ValueError(f"cannot replace uses of {self.name!r} with erased node")
        changed = [user for user in list(self.users) if delete_user_cb(user)]
        if replace_with is self:
            return changed
        for user in changed:
            # No cycle check: a self-loop (a user replaced by itself) is the caller's to fix,
            # as in torch.fx, where the idiom is to repair it right after.
            user._swap_input(self, replace_with)
        return changed

    # --- position in the graph ---------------------------------------------------------------

    @property
    def next(self) -> "Node":
        """The following node (the graph's sentinel root after the last node)."""
        return self._next

    @property
    def prev(self) -> "Node":
        """The preceding node (the graph's sentinel root before the first node)."""
        return self._prev

    def prepend(self, x: "Node") -> None:
        """Move (or insert) ``x`` so it sits immediately before this node."""
        if not isinstance(x, Node):
            raise TypeError(f"prepend expects a Node, got {type(x).__name__}")
        if x.graph is not self.graph:
            raise ValueError(f"cannot move {x.name!r} next to {self.name!r}: different graphs")
        if x is self or self._prev is x:
            return
        self.graph._move_before(x, self)

    def append(self, x: "Node") -> None:
        """Move (or insert) ``x`` so it sits immediately after this node."""
        self._next.prepend(x)

    def _link_before(self, anchor: "Node") -> None:
        """Splice this (unlinked) node into the list just before ``anchor``."""
        prev = anchor._prev
        self._prev = prev
        self._next = anchor
        prev._next = self
        anchor._prev = self
        root = self.graph._root
        lo = prev._order
        if anchor is root:
            self._order = lo + _GAP
        else:
            hi = anchor._order
            if hi - lo >= 2:
                self._order = (lo + hi) // 2
            else:
                self._order = lo + 1
                _respace_after(prev, root)

    def _unlink(self) -> None:
        """Take this node out of the list; its own prev/next stay so live iterators go on."""
        p, n = self._prev, self._next
        p._next = n
        n._prev = p

    def __lt__(self, other: "Node") -> bool:
        return self._order < other._order  # type: ignore[operator]

    def __gt__(self, other: "Node") -> bool:
        return self._order > other._order  # type: ignore[operator]

    def __le__(self, other: "Node") -> bool:
        return self is other or self._order < other._order  # type: ignore[operator]

    def __ge__(self, other: "Node") -> bool:
        return self is other or self._order > other._order  # type: ignore[operator]

    # --- meta and queries --------------------------------------------------------------------

    @property
    def stack_trace(self) -> Optional[str]:
        """The user's source location(s) that created this node (``meta["stack_trace"]``)."""
        return self.meta.get("stack_trace")

    @stack_trace.setter
    def stack_trace(self, trace: Optional[str]) -> None:
        self.meta["stack_trace"] = trace

    def is_impure(self, impure_random: bool = True) -> bool:
        """True if removing this node could change behaviour even when its value is unused."""
        op = self.op
        if op == "placeholder" or op == "output":
            return True
        if op == "call_function":
            target = self._target
            if target in _side_effectful_functions:
                return True
            if impure_random and getattr(target, "_nondeterministic_seeded", False):
                return True
            return _torch_says_impure(target, self._args, self._kwargs, impure_random)
        if op == "call_module":
            root = self.graph.owning_module
            if root is None:
                raise RuntimeError(
                    f"cannot tell whether call_module {self.name!r} is impure: the graph has "
                    "no owning module"
                )
            return bool(getattr(root.get_submodule(self._target), "_is_impure", False))
        return False

    def normalized_arguments(
        self,
        root: torch.nn.Module,
        arg_types: Optional[Tuple[Any, ...]] = None,
        kwarg_types: Optional[Dict[str, Any]] = None,
        normalize_to_only_use_kwargs: bool = False,
    ) -> Optional["ArgsKwargsPair"]:
        """Match ``args``/``kwargs`` to the target's signature; ``None`` if that is ambiguous."""
        from fxkit import operator_schemas

        if self.op == "call_function":
            return operator_schemas.normalize_function(
                self._target, self._args, self._kwargs, arg_types, kwarg_types,
                normalize_to_only_use_kwargs,
            )  # fmt: skip
        if self.op == "call_module":
            return operator_schemas.normalize_module(
                root, self._target, self._args, self._kwargs, normalize_to_only_use_kwargs
            )
        return None

    def format_node(
        self,
        placeholder_names: Optional[List[str]] = None,
        maybe_return_typename: Optional[List[str]] = None,
        **_ignored: Any,
    ) -> Optional[str]:
        """One line describing this node, e.g. ``%add : [num_users=1] = call_function[...]``.

        ``placeholder_names``, if given, collects placeholder descriptions instead (returning
        ``None``), and ``maybe_return_typename`` receives the output's type annotation.
        """
        from fxkit.codegen import describe_target

        if self.op == "placeholder":
            text = self._target
            if self.type is not None:
                text += f": {_type_text(self.type)}"
            if self._args:
                text += f" = {self._args[0]!r}"
            if placeholder_names is not None:
                placeholder_names.append(text)
                return None
            default = f"(default={self._args[0]})" if self._args else ""
            return (
                f"%{self.name} : {self._type_prefix()}[num_users={len(self.users)}] = "
                f"placeholder[target={self._target}]{default}"
            )
        if self.op == "output":
            if self.type is not None and maybe_return_typename is not None:
                maybe_return_typename[0] = f" -> {_type_text(self.type)}"
            return f"return {self._args[0]}"
        if self.op == "get_attr":
            return (
                f"%{self.name} : {self._type_prefix()}[num_users={len(self.users)}] = "
                f"get_attr[target={self._target}]"
            )
        return (
            f"%{self.name} : {self._type_prefix()}[num_users={len(self.users)}] = "
            f"{self.op}[target={describe_target(self._target)}]"
            f"(args = {_fmt_arg(self._args)}, kwargs = {_fmt_arg(self._kwargs)})"
        )

    def _type_prefix(self) -> str:
        return f"{_type_text(self.type)} " if self.type is not None else ""

    def __repr__(self) -> str:
        if self._repr_fn is not None:
            return self._repr_fn(self)
        return self.name

    def _rename(self, candidate: str) -> None:
        """Give this node a fresh unique name based on ``candidate`` (keeps the name index)."""
        if candidate == self.name:
            return
        graph = self.graph
        new_name = graph._names.allocate(candidate)
        if graph._by_name.get(self.name) is self:
            del graph._by_name[self.name]
            graph._names.retired.add(self.name)
        self.name = new_name
        if self._order is not None and not self._erased:
            graph._by_name[new_name] = self

    def _pretty_print_target(self, target: Target) -> str:
        from fxkit.codegen import describe_target

        return describe_target(target)


def _torch_says_impure(target: Any, args: Any, kwargs: Any, impure_random: bool) -> bool:
    """Ask torch's own effect registry (newer torch only) about operator targets."""
    if not isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return False
    checker = _torch_impure_checker()
    if checker is None:
        return False
    try:
        return bool(checker(target, args=args, kwargs=kwargs, impure_random=impure_random))
    except Exception:
        return False


def _torch_impure_checker() -> Optional[Callable]:
    try:
        from torch._library.utils import is_impure
    except ImportError:
        return None
    return is_impure


def _type_text(t: Any) -> str:
    if isinstance(t, type):
        if t.__module__ == "builtins":
            return t.__qualname__
        return f"{t.__module__}.{t.__qualname__}"
    return repr(t).replace("typing.", "")


def _fmt_arg(arg: Any) -> str:
    """Render an argument for ``format_node``: nodes as ``%name``, containers recursively."""
    if isinstance(arg, Node):
        return f"%{arg.name}"
    if isinstance(arg, tuple) and not hasattr(arg, "_fields"):
        inner = ", ".join(_fmt_arg(a) for a in arg)
        return f"({inner},)" if len(arg) == 1 else f"({inner})"
    if isinstance(arg, list):
        return "[" + ", ".join(_fmt_arg(a) for a in arg) + "]"
    if isinstance(arg, dict):
        return "{" + ", ".join(f"{k}: {_fmt_arg(v)}" for k, v in arg.items()) + "}"
    if isinstance(arg, slice):
        return f"slice({_fmt_arg(arg.start)}, {_fmt_arg(arg.stop)}, {_fmt_arg(arg.step)})"
    return str(arg)
