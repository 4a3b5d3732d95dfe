"""The unit of the IR: :class:`Node`, plus helpers that walk nested node arguments.

A node is one operation of a :class:`~fxkit.graph.Graph`. Nodes form an intrusive doubly
linked list owned by their graph (O(1) insert, move and erase), and each node keeps the set
of nodes it reads (``all_input_nodes``) and the set that reads it (``users``) in sync with its
``args``/``kwargs``. Arguments are frozen on assignment (lists and dicts become
:class:`immutable_list` / :class:`immutable_dict`), so no edit can bypass that bookkeeping.
"""

from __future__ import annotations

import math
import operator
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from fxkit._order import _GAP, _relabel_around
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
_torch_fx_registry: Optional[set] = None


def _torch_fx_side_effectful() -> set:
    """torch.fx's live side-effect registry (grad mode, autocast, jvp levels, ...), via interop."""
    global _torch_fx_registry
    if _torch_fx_registry is None:
        from fxkit.interop import torch_fx_side_effectful as registry

        _torch_fx_registry = registry()
    return _torch_fx_registry


def has_side_effect(fn: Callable) -> Callable:
    """Mark ``fn`` as side-effectful so dead code elimination keeps calls to it; returns ``fn``."""
    _side_effectful_functions.add(fn)
    return fn


# ---------------------------------------------------------------------------------------------
# Walking nested arguments


def map_aggregate(a: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every leaf of ``a``, rebuilding tuples, lists, dicts and slices around it.

    Lists and dicts come back as :class:`immutable_list` / :class:`immutable_dict`; named
    tuples keep their type, other tuple subclasses (``torch.Size``) become plain tuples.
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
        # Named tuples keep their type; other tuple subclasses (torch.Size) become plain
        # tuples, as torch.fx stores them.
        return t(*items) if hasattr(a, "_fields") else tuple(items)
    if isinstance(a, list):
        return immutable_list([map_aggregate(x, fn) for x in a])
    if isinstance(a, dict):
        return immutable_dict({k: map_aggregate(v, fn) for k, v in a.items()})
    return fn(a)


def map_arg(a: Any, fn: Callable[["Node"], Any]) -> Any:
    """Apply ``fn`` to every :class:`Node` inside the (possibly nested) argument ``a``."""
    if not callable(fn):
        raise AssertionError(
            f"torch.fx.map_arg(a, fn): fn must be a callable (fxkit's map_arg got {fn!r})"
        )
    return _remap(a, fn)


def _map_nodes_of_class(a: Any, fn: Any, node_cls: type) -> Any:
    """``map_arg`` for arguments whose nodes are ``node_cls`` instances from another library;
    containers come back as plain tuples, lists and dicts."""
    if isinstance(a, node_cls):
        return fn(a)
    if isinstance(a, tuple):
        items = [_map_nodes_of_class(x, fn, node_cls) for x in a]
        return type(a)(*items) if hasattr(a, "_fields") else tuple(items)
    if isinstance(a, list):
        return [_map_nodes_of_class(x, fn, node_cls) for x in a]
    if isinstance(a, dict):
        return {k: _map_nodes_of_class(v, fn, node_cls) for k, v in a.items()}
    if isinstance(a, slice):
        parts = (a.start, a.stop, a.step)
        return slice(*(_map_nodes_of_class(x, fn, node_cls) for x in parts))
    return a


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
        # Named tuples keep their type; other tuple subclasses (torch.Size) become plain
        # tuples, as torch.fx stores them.
        return t(*items) if hasattr(a, "_fields") else tuple(items)
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
        "_name",
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
        if op == "call_function":
            if not callable(target):
                raise ValueError(_target_kind_message(graph, name, target, "a Callable"))
        elif op not in OPCODES or op == "root" and name:
            raise AssertionError(
                f"op '{op}' is not in _legal_ops (expected one of "
                f"{sorted(OPCODES - {'root'})}, node {name!r})"
            )
        elif type(target) is not str and not isinstance(target, str):
            raise ValueError(_target_kind_message(graph, name, target, "a str"))
        if type(args) is not tuple and not isinstance(args, tuple):
            raise AssertionError(f"args must be a tuple, got {type(args)} (node {name!r})")
        if not isinstance(kwargs, dict):
            raise AssertionError(f"kwargs must be a dict, got {type(kwargs)} (node {name!r})")
        if graph._pending_code:  # this node becomes a user of existing ones
            graph._before_edit()
        # Inputs from another graph or erased ones are accepted, as torch.fx does; lint()
        # reports them. A fresh node has no users, so it cannot close a cycle.
        found: Dict[Node, None] = {}
        frozen_args = _freeze(args, found)
        frozen_kwargs = _freeze(kwargs, found) if kwargs else _EMPTY_KWARGS
        self.graph: Graph = graph
        self._name = name
        self.op = op
        self._target: Any = target
        self.users: Dict[Node, None] = {}
        if return_type is not None:
            self.type = return_type
        self._meta: Optional[Dict[str, Any]] = None
        self._prev = self._next = self
        self._order: Any = None  # an int once linked; None while unlinked
        self._args = frozen_args
        self._kwargs = frozen_kwargs
        inputs = _inputs_tuple(found, frozen_args)
        self._input_nodes: Tuple[Node, ...] = inputs
        for inp in inputs:
            inp.users[self] = None

    def _refuse_self_loop(self) -> None:
        # A listed deliberate difference: torch.fx accepts this and lint() reports it later.
        raise ValueError(
            f"node {self._name!r} cannot use itself as an input (a self-loop); create the "
            "replacement first, then point the node at it"
        )

    def _set_name(self, value: str) -> None:
        """Rename in place; tells replace hooks (as torch.fx does) and keeps the name index."""
        old = self._name
        graph = self.graph
        if graph is not None and graph._pending_code:
            graph._before_edit()
        if self.users:
            hooks = _hooks(graph, "_replace_hooks")
            if hooks:
                if not isinstance(value, str):
                    raise AssertionError(f"Expected value to be str, got {type(value)}")
                for user in self.users:
                    for hook in hooks:
                        hook(old=self, new=value, user=user)
        self._name = value
        if self._order is not None and not self._erased and graph is not None:
            index = graph._by_name
            if index.get(old) is self:
                del index[old]
            index[value] = self

    name = property(operator.attrgetter("_name"), _set_name, doc="The node's unique name.")

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

    def _set_inputs(self, args: Any, kwargs: Any) -> None:
        """Replace args and kwargs at once, validating first so a refused edit changes nothing.

        As in torch.fx, inputs from another graph, erased inputs and cycles through other nodes
        are accepted here and reported by ``lint()``; only a self-loop is refused.
        """
        if not isinstance(args, (tuple, list)):  # torch.fx keeps a list as given
            raise TypeError(f"args of node {self._name!r} must be a tuple, got {type(args)}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs of node {self._name!r} must be a dict, got {type(kwargs)}")
        graph = self.graph
        if graph is not None and graph._pending_code:
            graph._before_edit()
        found: Dict[Node, None] = {}
        new_args = _freeze(args, found)
        new_kwargs = _freeze(kwargs, found) if kwargs else _EMPTY_KWARGS
        if self in found:
            self._refuse_self_loop()
        order = self._order
        if order is not None:
            graph = self.graph
            for inp in found:
                if inp.graph is not graph or inp._order is None or inp._order > order:
                    graph._maybe_unordered = True  # a forward or foreign reference
                    break
        for old in self._input_nodes:
            old.users.pop(self, None)
        self._args = new_args
        self._kwargs = new_kwargs
        inputs = _inputs_tuple(found, new_args)
        self._input_nodes = inputs
        for inp in inputs:
            inp.users[self] = None

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
        # Unchecked, as in torch.fx: lint() reports a target of the wrong kind.
        graph = self.graph
        if graph is not None and graph._pending_code:
            graph._before_edit()
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
            raise IndexError(
                f"list assignment index out of range (node {self._name!r} has {len(args)} args, "
                f"index {idx})"
            )
        args[idx] = arg
        self.args = tuple(args)

    def insert_arg(self, idx: int, arg: Argument) -> None:
        """Insert ``arg`` into ``args`` before position ``idx`` (0 <= idx <= len(args))."""
        if not 0 <= idx <= len(self._args):
            raise AssertionError(
                f"insert_args index must be between 0 and len(self.args), got {idx} "
                f"(node {self._name!r} has {len(self._args)} args)"
            )
        self.args = self._args[:idx] + (arg,) + self._args[idx:]

    def update_kwarg(self, key: str, arg: Argument) -> None:
        """Set ``kwargs[key]`` to ``arg``."""
        self.kwargs = {**self._kwargs, key: arg}

    def replace_input_with(self, old_input: "Node", new_input: "Node") -> None:
        """Make this node read ``new_input`` wherever it read ``old_input``."""
        if new_input is self and old_input in self._input_nodes:
            self._refuse_self_loop()
        hooks = _hooks(self.graph, "_replace_hooks")
        if hooks:
            for hook in hooks:
                hook(old=old_input, new=new_input.name, user=self)
        if old_input not in self._input_nodes or old_input is new_input:
            return
        self._swap_input(old_input, new_input)

    def _swap_input(self, old: "Node", new: "Node") -> None:
        """Replace every use of ``old`` by ``new`` (a node, or as in torch.fx any value),
        touching only the containers and user sets involved."""

        def swap(n: Node) -> Node:
            return new if n is old else n

        graph = self.graph
        if graph is not None and graph._pending_code:
            graph._before_edit()

        args = self._args
        self._args = _remap(args, swap)
        if self._kwargs:
            self._kwargs = _remap(self._kwargs, swap)
        inputs = self._input_nodes
        if type(new) is not Node and not isinstance(new, Node):
            self._input_nodes = tuple([n for n in inputs if n is not old])
            old.users.pop(self, None)
            return
        if new in inputs:
            inputs = tuple([n for n in inputs if n is not old])
        else:
            inputs = tuple([new if n is old else n for n in inputs])
            order = self._order
            if order is not None and (
                new.graph is not self.graph or new._order is None or new._order > order
            ):
                self.graph._maybe_unordered = True
        self._input_nodes = self._args if inputs == self._args else inputs
        old.users.pop(self, None)
        new.users[self] = None

    def replace_all_uses_with(
        self,
        replace_with: "Node",
        delete_user_cb: Optional[Callable[["Node"], bool]] = None,
        *,
        propagate_meta: bool = False,
    ) -> List["Node"]:
        """Make every user of this node (those ``delete_user_cb`` accepts) read ``replace_with``.

        Returns the users that were changed. With ``propagate_meta`` the meta of this node is
        copied onto ``replace_with`` (which must have empty meta). Checks come first, so a
        call that raises changes nothing.
        """
        if propagate_meta and replace_with.meta:
            raise AssertionError(
                "Called node.replace_all_uses_with(replace_with, propagate_meta=True), "
                f"but replace_with already has .meta keys ({replace_with.name!r} has "
                f"{sorted(replace_with.meta)}; clear them or copy the keys you want yourself)"
            )
        # Decide which users change before touching anything, so a failing callback leaves
        # the graph as it was.
        users = list(self.users)
        if delete_user_cb is not None:
            users = [user for user in users if delete_user_cb(user)]
        if propagate_meta and self._meta:
            replace_with.meta.update(self._meta)
        new_name = replace_with.name if _hooks(self.graph, "_replace_hooks") else None
        if replace_with is self:
            return users
        hooks = _hooks(self.graph, "_replace_hooks")
        for user in users:
            if hooks:
                for hook in hooks:
                    hook(old=self, new=new_name, user=user)
            # No self-loop check: a user replaced by itself is the caller's to fix, as in
            # torch.fx, where the idiom is to repair it right after.
            user._swap_input(self, replace_with)
        return users

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
            raise TypeError(f"_prepend() argument must be a Node (got {type(x).__name__})")
        if x.graph is not self.graph:
            raise AssertionError(
                f"Attempting to move a Node into a different Graph ({x.name!r} next to "
                f"{self._name!r})"
            )
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
        lo = prev._order
        if anchor is self.graph._root:
            self._order = lo + _GAP
            return
        hi = anchor._order
        if hi - lo >= 2:
            self._order = (lo + hi) >> 1
        else:
            self._order = lo
            _relabel_around(self, self.graph._root)

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
            if target in _side_effectful_functions or target in _torch_fx_side_effectful():
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
        *,
        include_tensor_metadata: bool = False,
    ) -> Optional[str]:
        """One line describing this node, e.g. ``%add : [num_users=1] = call_function[...]``.

        As in torch.fx, a non-empty ``placeholder_names`` list collects placeholder
        descriptions instead (returning ``None``), and ``maybe_return_typename`` receives the
        output's type annotation. Arguments print through :func:`_format_arg`, so objects
        with a ``_custom_fx_repr_fn`` choose their own text. ``include_tensor_metadata`` shows
        a call's tensor value (``meta["val"]`` etc.) as ``Tensor "f32[2, 3][3, 1]cpu"``.
        """
        from fxkit.codegen import describe_target

        op = self.op
        if op == "output":
            if self.type and maybe_return_typename:
                maybe_return_typename[0] = f" -> {_type_repr(self.type)}"
            return f"return {self._args[0]}"
        if op == "placeholder" and placeholder_names:
            placeholder_names.append(
                f"{self._target}: {_type_repr(self.type)}" if self.type else self._target
            )
            return None
        # every other node: "%name : <type >[num_users=N] = <what it does>"
        if op == "placeholder":
            # a falsy annotation prints nothing here, where other ops test for None
            typename = f"{_type_repr(self.type)} " if self.type else ""
            default = f"(default={self._args[0]})" if self._args else ""
            action = f"placeholder[target={self._target}]{default}"
        elif op == "get_attr":
            typename = self._type_prefix()
            action = f"get_attr[target={self._target}]"
        else:
            typename = self._type_prefix()
            if include_tensor_metadata:
                typename = _tensor_annotation(self._meta) or typename
            action = (
                f"{op}[target={describe_target(self._target)}]"
                f"(args = {_format_arg(self._args)}, kwargs = {_format_arg(self._kwargs)})"
            )
        return f"%{self._name} : {typename}[num_users={len(self.users)}] = {action}"

    def _type_prefix(self) -> str:
        return f"{_type_repr(self.type)} " if self.type is not None else ""

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
    """Ask torch's own effect registry (newer torch only): it knows aten ops and the Python
    random functions (``torch.rand``, ``torch.bernoulli``, ...)."""
    try:
        from torch._library.utils import is_impure

        return bool(is_impure(target, args=args, kwargs=kwargs, impure_random=impure_random))
    except Exception:  # older torch lacks the registry; unknown ops count as pure
        return False


def _tensor_annotation(meta: Optional[Dict[str, Any]]) -> str:
    """``Tensor "f32[2, 3][3, 1]cpu"`` for a dense tensor value recorded in ``meta``."""
    if not meta:
        return ""
    value = meta.get("val", meta.get("tensor_meta", meta.get("example_value")))
    if not isinstance(value, torch.Tensor) or value.layout in (torch.sparse_csc, torch.sparse_csr):
        return ""
    from torch.utils._dtype_abbrs import dtype_abbrs

    shape = ", ".join(str(d) for d in value.shape)
    stride = ", ".join(str(d) for d in value.stride())
    return f'Tensor "{dtype_abbrs[value.dtype]}[{shape}][{stride}]{value.device}"'


def _type_repr(t: Any) -> str:
    """How ``print(graph)`` spells a type annotation (torch.fx's spelling): classes as
    ``module.qualname`` (bare for builtins), functions by name, everything else by ``repr``
    (``typing.List[float]``, ``list[str]``, string annotations with their quotes)."""
    if t is ...:
        return "..."
    if isinstance(t, type) and not isinstance(t, types.GenericAlias):
        module = t.__module__
        return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"
    return t.__name__ if isinstance(t, types.FunctionType) else repr(t)


def _format_arg(arg: object, max_list_len: float = math.inf) -> str:
    """Render a node argument as torch.fx's ``format_node`` does: nodes as ``%name``, lists
    and tuples item by item (at most ``max_list_len`` items, then the total length), dicts as
    ``{key: value}``; an object with a ``_custom_fx_repr_fn`` method renders itself."""
    custom = getattr(arg, "_custom_fx_repr_fn", None)
    if custom is not None:
        return custom()
    if isinstance(arg, (list, tuple)):
        shown = ", ".join(_format_arg(a) for i, a in enumerate(arg) if i < max_list_len)
        more = "" if len(arg) < max_list_len + 1 else f", ...[total_len={len(arg)}]"
        if isinstance(arg, list):
            return f"[{shown}{more}]"
        comma = "," if len(arg) == 1 else ""
        return f"({shown}{comma}{more})"
    if isinstance(arg, dict):
        return "{" + ", ".join(f"{k}: {_format_arg(v)}" for k, v in arg.items()) + "}"
    if isinstance(arg, Node):
        return f"%{arg}"
    return str(arg)


def _hooks(graph: Any, kind: str) -> Any:
    """The hook list ``kind`` (``_create_node_hooks``, ``_erase_node_hooks``,
    ``_replace_hooks``) that torch.fx's ``_register_*_hook`` methods keep on the graph's
    owning module; empty when none. Read from the instance dict: a miss through
    ``nn.Module.__getattr__`` would cost more than creating the node."""
    module = getattr(graph, "_owning_module", None)
    if module is None:
        return ()
    found = getattr(module, "__dict__", _NO_HOOKS).get(kind)
    return found if found is not None else ()


_NO_HOOKS: Dict[str, Any] = {}


def _target_kind_message(graph: Any, name: str, target: Any, expected: str) -> str:
    return (
        f"Node [graph = {graph}, name = '{name}'] target {target} has type "
        f"{torch.typename(target)} but {expected} is expected"
    )
