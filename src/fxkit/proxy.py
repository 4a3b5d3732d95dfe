"""Proxies: the stand-in values that flow through a program while it is traced.

A :class:`Proxy` wraps a :class:`~fxkit.node.Node`. Every operation applied to it (Python
operators, ``torch.*`` functions through ``__torch_function__``, tensor methods through
attribute access) asks its tracer to append a node, and returns a new Proxy for the result.
:class:`TracerBase` holds the node-building hooks that subclasses override
(``create_proxy`` -> ``create_arg`` + ``create_node`` -> ``proxy``).

Values that cannot be known symbolically (``bool(proxy)``, ``len(proxy)``, iteration) raise
:class:`TraceError` naming the user's source line and the ways around it.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import dis
import enum
import logging
import operator
import sys
import types
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

from fxkit import traceback as fx_traceback
from fxkit._frames import (  # noqa: F401  (also imported from here by other modules)
    _describe_frame,
    _is_internal,
    _user_frame,
    _user_location,
    _user_stack,
)
from fxkit.immutable_collections import immutable_dict, immutable_list
from fxkit.node import Argument, Node, Target, base_types
from fxkit.traceback import _preserving

# Proxy kinds first, then the tracer side, then scopes.
__all__ = [
    "Proxy", "Attribute", "ParameterProxy", "MetaProxy", "TraceError",
    "TracerBase", "GraphAppendingTracer", "Scope", "ScopeContextManager",
]  # fmt: skip

log = logging.getLogger(__name__)

# Fields that a node created under ``preserve_node_meta`` copies from the current meta.
# (A list, as torch.fx has it: tracers in the wild append their own fields.)
_COPY_META_FIELDS = (
    "nn_module_stack source_fn_stack torch_fn from_node custom original_aten "
    "recompute ac_graph_id has_backward_hook quantization_tag partitioner_tag "
    "_numeric_debug_handle fxkit_source"
).split()


class TraceError(ValueError):
    """A value produced by tracing was used where a concrete Python value is needed."""


class _LenTraceError(TraceError, RuntimeError):
    # torch.fx raises RuntimeError for len(); callers may catch either type.
    pass


class _DictKeyTraceError(TraceError, RuntimeError):
    # torch.fx raises RuntimeError for a Node inside a dict key.
    pass


# torch.fx's texts, which fxkit's messages start with (callers match on them).
_ITER_TEXT = (
    "Proxy object cannot be iterated. This can be attempted when the Proxy is used in a loop or "
    "as a *args or **kwargs function argument. See the torch.fx docs on pytorch.org for a more "
    "detailed explanation of what types of control flow can be traced, and check out the Proxy "
    "docstring for help troubleshooting Proxy iteration errors"
)
_LEN_TEXT = (
    "'len' is not supported in symbolic tracing by default. If you want this call to be "
    "recorded, please call torch.fx.wrap('len') at module scope"
)


class Scope:
    """The module a node was created in: its qualified path and its type."""

    def __init__(self, module_path: str, module_type: Any) -> None:
        self.module_path = module_path
        self.module_type = module_type

    def __repr__(self) -> str:
        return f"Scope({self.module_path!r}, {self.module_type!r})"


class ScopeContextManager:
    """Set ``scope`` to ``current_scope``'s path and type while the block runs."""

    def __init__(self, scope: Scope, current_scope: Scope) -> None:
        # The switch happens here, not in __enter__: torch.fx callers rely on that.
        self._scope = scope
        self._saved = _swap_scope(scope, (current_scope.module_path, current_scope.module_type))

    def __enter__(self) -> Scope:
        return self._scope

    def __exit__(self, *exc: object) -> None:
        _swap_scope(self._scope, self._saved)


def _swap_scope(scope: Scope, path_and_type: Tuple[str, Any]) -> Tuple[str, Any]:
    """Point ``scope`` at ``path_and_type``; return what it pointed at before."""
    before = (scope.module_path, scope.module_type)
    scope.module_path, scope.module_type = path_and_type
    return before


def _inputs_behind(node: Node, limit: int = 10000) -> list:
    """Names of the placeholders ``node`` depends on (a bounded walk; used in messages)."""
    seen = {node}
    todo = [node]
    found = []
    while todo and len(seen) < limit:
        n = todo.pop()
        if n.op == "placeholder":
            found.append(n.name)
        for inp in n.all_input_nodes:
            if inp not in seen:
                seen.add(inp)
                todo.append(inp)
    return sorted(found)


def _trace_error_text(problem: str, proxy: "Proxy", frame: Optional[types.FrameType]) -> str:
    where = _user_location(frame)
    try:
        node = proxy.node
        what = f"{proxy!r}, the result of `{node.format_node()}`"
        inputs = _inputs_behind(node)
    except Exception:  # a half-built custom proxy must not hide the real error
        what, inputs = repr(proxy), []
    via = f" (it depends on input(s) {', '.join(map(repr, inputs))})" if inputs else ""
    return (
        f"{problem}\n"
        f"  at {where}\n"
        f"  value: {what}{via}\n"
        "  fixes: if the value only depends on configuration, pass it as a constant with "
        "symbolic_trace(..., concrete_args={...}); keep data-dependent code out of the trace "
        "with fxkit.wrap(<function>) at module scope; or move it into a submodule and make "
        "that submodule a leaf (override Tracer.is_leaf_module)."
    )


def _current_instruction(frame: types.FrameType) -> Optional[dis.Instruction]:
    table = _instructions.get(frame.f_code)
    if table is None:
        table = {ins.offset: ins for ins in dis.get_instructions(frame.f_code)}
        if len(_instructions) > 4096:
            _instructions.clear()
        _instructions[frame.f_code] = table
    return table.get(frame.f_lasti)


_instructions: Dict[types.CodeType, Dict[int, dis.Instruction]] = {}


# --- the tracer base ------------------------------------------------------------------------


class TracerBase:
    """Builds graph nodes from traced values; the hooks a custom tracer overrides.

    Flags: ``record_stack_traces`` (store the user's stack in ``node.meta["stack_trace"]``),
    ``check_mutable_operations`` (refuse in-place ops on traced values),
    ``trace_asserts`` (record ``assert proxy`` as a call instead of failing),
    ``proxy_buffer_attributes`` (buffers read in ``forward`` become ``get_attr`` proxies).
    """

    graph: Any
    scope: Scope
    module_stack: "collections.OrderedDict[str, Tuple[str, Any]]"
    node_name_to_scope: Dict[str, Tuple[str, type]]
    # Feature switches (see above), all off unless a subclass or instance turns them on.
    record_stack_traces = check_mutable_operations = trace_asserts = False
    proxy_buffer_attributes = _record_forward_stack_traces_only = False
    traced_func_name = "forward"
    # The frame that started the current trace; user stacks are cut there.
    _trace_anchor: Optional[types.FrameType] = None
    _root_frame: Optional[types.FrameType] = None
    # Per trace: innermost user frame -> its callers' text (see _user_stack).
    _stack_cache: Optional[dict] = None

    # fmt: off
    def create_node(self, kind: str, target: Target, args: Tuple[Argument, ...],
                    kwargs: Dict[str, Argument], name: Optional[str] = None,
                    type_expr: Optional[Any] = None) -> Node:
        # fmt: on
        """Append a node to ``self.graph`` and fill in its scope and provenance metadata."""
        if kind == "call_function" and self.check_mutable_operations:
            from fxkit.operator_schemas import check_for_mutable_operation

            check_for_mutable_operation(target, args, kwargs)  # type: ignore[arg-type]
        node = self.graph.create_node(kind, target, args, kwargs, name, type_expr)
        scope = self.scope
        self.node_name_to_scope[node.name] = (scope.module_path, scope.module_type)
        meta = node.meta
        if _preserving.get():
            current = fx_traceback.get_current_meta()
            stack_trace = current.get("stack_trace")
            if stack_trace:
                meta["stack_trace"] = stack_trace
            for field in _COPY_META_FIELDS:
                if field in current:
                    meta[field] = copy.copy(current[field])
            replay = fx_traceback.get_current_replay_node()
            if replay is not None:
                meta["is_functional_regenerated"] = True
                if "custom" in replay.meta:
                    meta["custom"] = replay.meta["custom"]
                if "stack_trace" in replay.meta:
                    meta["stack_trace"] = replay.meta["stack_trace"]
        elif self.module_stack:
            meta["nn_module_stack"] = self.module_stack.copy()
        record = self.record_stack_traces
        wanted = record or (getattr(self, "record_source", False) and "fxkit_source" not in meta)
        if wanted and not meta.get("stack_trace"):
            text, outer = _user_stack(self._trace_anchor, sys._getframe(1), self._stack_cache)
            if outer is not None:
                self._root_frame = outer
            elif self._root_frame is not None:
                # Made by the tracer after forward returned (the output's named tuples,
                # attribute values returned as is): the frame now sits on its return line.
                text = _describe_frame(self._root_frame)
            if text:
                # torch.fx's key only when asked for (print_readable and export read it);
                # fxkit's own source record otherwise
                meta["stack_trace" if record else "fxkit_source"] = text
        return node

    def proxy(self, node: Node) -> "Proxy":
        """Wrap a new node in the Proxy type this tracer hands out."""
        return Proxy(node, self)

    # fmt: off
    def create_proxy(self, kind: str, target: Target, args: Tuple[Any, ...],
                     kwargs: Dict[str, Any], name: Optional[str] = None,
                     type_expr: Optional[Any] = None,
                     proxy_factory_fn: Optional[Callable[[Node], "Proxy"]] = None) -> "Proxy":
        # fmt: on
        """Lower ``args``/``kwargs`` with :meth:`create_arg`, create the node, wrap it.

        For ``placeholder`` nodes ``args`` holds the default value, if any.
        """
        args_ = self.create_arg(args)
        kwargs_ = self.create_arg(kwargs)
        if type(args_) is not tuple and not isinstance(args_, tuple):
            _bad_lowering("args", args_, tuple)
        if type(kwargs_) is not dict and not isinstance(kwargs_, dict):
            _bad_lowering("kwargs", kwargs_, dict)
        node = self.create_node(kind, target, args_, kwargs_, name, type_expr)
        if proxy_factory_fn is None:
            return self.proxy(node)
        return proxy_factory_fn(node)

    def create_arg(self, a: Any) -> Argument:
        """Turn a value seen while tracing into something a node can store.

        Proxies become their nodes; tuples, lists, dicts, slices and ranges are rebuilt
        element by element (each element through ``self.create_arg``); dataclass instances
        become a constructor call node; plain constants pass through.
        """
        handler = _ARG_HANDLERS.get(type(a))
        if handler is not None:
            return handler(self, a)
        return _create_arg_slow(self, a)

    def to_bool(self, obj: "Proxy") -> bool:
        """Called for ``bool(proxy)`` (``if``/``while``/``and``); by default an error."""
        raise TraceError(
            _trace_error_text(
                "symbolically traced variables cannot be used as inputs to control flow",
                obj,
                sys._getframe(1),
            )
        )

    def iter(self, obj: "Proxy") -> Iterator:
        """Called when a proxy is iterated (``for``, ``*proxy``); by default an error."""
        raise TraceError(
            _trace_error_text(
                f"{_ITER_TEXT}.\n  (fxkit) its length is unknown while tracing (a loop over it, "
                "or *proxy unpacking); index it explicitly instead, e.g. "
                "`for i in range(n): proxy[i]` with a constant n",
                obj,
                sys._getframe(1),
            )
        )

    def keys(self, obj: "Proxy") -> "Proxy":
        """Called for ``proxy.keys()`` (and so for ``**proxy``); records a ``keys`` call."""
        return Attribute(obj, "keys")()


def _bad_lowering(label: str, value: Any, kind_needed: type) -> None:
    raise AssertionError(
        f"Expected {label}_ to be {kind_needed.__name__}, got {type(value)}\n"
        f"  (fxkit) create_arg({label}) must return a {kind_needed.__name__}, got "
        f"{type(value).__name__}"
    )


def _no_nodes_in_key(arg: Argument) -> Any:
    raise _DictKeyTraceError(
        f"Keys for dictionaries used as an argument cannot contain a Node. Got key: {arg}\n"
        "  (fxkit) dictionary keys used as node arguments must be constants"
    )


def _dict_key_arg(tracer: TracerBase, key: Any) -> Any:
    # String keys are the norm and need no lowering; anything else must hold no Node.
    if isinstance(key, str):
        return key
    from fxkit.node import map_arg

    lowered = tracer.create_arg(key)
    map_arg(lowered, _no_nodes_in_key)
    return lowered


def _create_arg_dict(tracer: TracerBase, a: dict) -> dict:
    return {_dict_key_arg(tracer, k): tracer.create_arg(v) for k, v in a.items()}


def _create_arg_slow(tracer: TracerBase, a: Any) -> Argument:
    if isinstance(a, Proxy):
        return a.node
    if hasattr(a, "__fx_create_arg__"):
        return a.__fx_create_arg__(tracer)
    if isinstance(a, tuple):
        items = [tracer.create_arg(e) for e in a]
        return type(a)(*items) if hasattr(a, "_fields") else type(a)(items)
    if isinstance(a, list):
        return [tracer.create_arg(e) for e in a]
    if isinstance(a, dict):
        return _create_arg_dict(tracer, a)
    if isinstance(a, slice):
        return slice(
            tracer.create_arg(a.start), tracer.create_arg(a.stop), tracer.create_arg(a.step)
        )
    if isinstance(a, range):
        return range(
            tracer.create_arg(a.start), tracer.create_arg(a.stop), tracer.create_arg(a.step)
        )
    if isinstance(a, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        return a
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        fields = {f.name: tracer.create_arg(getattr(a, f.name)) for f in dataclasses.fields(a)}
        return tracer.create_node("call_function", type(a), (), fields)
    if isinstance(a, (*base_types, enum.Enum)) or a is None or a is ...:
        return a
    raise NotImplementedError(
        f"argument of type: {type(a)} cannot be stored in a graph node ({a!r:.80}); "
        "give it a __fx_create_arg__(tracer) method or override Tracer.create_arg"
    )


def _same(tracer: TracerBase, a: Any) -> Any:
    return a


def _node_of(tracer: TracerBase, a: "Proxy") -> Node:
    return a.node


def _tuple_arg(tracer: TracerBase, a: tuple) -> tuple:
    return tuple([tracer.create_arg(e) for e in a])


def _list_arg(tracer: TracerBase, a: list) -> list:
    return [tracer.create_arg(e) for e in a]


# Exact-type dispatch for the common cases; subclasses take the isinstance path.
_ARG_HANDLERS: Dict[type, Callable[[TracerBase, Any], Any]] = {
    t: _same
    for t in (*base_types, type(None), type(...), torch._ops.OpOverload)
    if t is not torch.Tensor
}
_ARG_HANDLERS[torch._ops.HigherOrderOperator] = _same
_ARG_HANDLERS[torch.Tensor] = _same
_ARG_HANDLERS[tuple] = _tuple_arg
_ARG_HANDLERS[list] = _list_arg
_ARG_HANDLERS[immutable_list] = _list_arg
_ARG_HANDLERS[dict] = _create_arg_dict
_ARG_HANDLERS[immutable_dict] = _create_arg_dict


class GraphAppendingTracer(TracerBase):
    """The tracer of a ``Proxy(node)`` made outside tracing: appends to ``node.graph``."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.scope = Scope("", None)
        self.module_stack = collections.OrderedDict()
        self.node_name_to_scope = {}


def assert_fn(x: Any) -> None:
    """Runtime form of a traced ``assert`` (recorded when ``trace_asserts`` is on)."""
    assert x


# --- proxies --------------------------------------------------------------------------------


class Proxy:
    """A symbolic value: a :class:`~fxkit.node.Node` plus the tracer that records uses of it.

    Operations on a Proxy become nodes; its value is unknown, so it cannot decide control
    flow, be iterated or have a ``len``. To build graphs by hand, wrap a node::

        x = Proxy(graph.placeholder("x"))
        graph.output((x.relu() + 1).node)

    When a loop needs a Proxy's length, use a fixed count (``for i in range(n): p[i]``) or
    wrap the code in a function registered with :func:`fxkit.wrap`.
    """

    def __init__(self, node: Node, tracer: Optional[TracerBase] = None) -> None:
        # A bare Proxy(node) appends to the node's own graph.
        self.tracer = GraphAppendingTracer(node.graph) if tracer is None else tracer
        self.node = node

    def __getattr__(self, k: str) -> "Attribute":
        if k in ("node", "tracer"):
            # Reached only when construction was skipped; an Attribute would recurse forever.
            raise AttributeError(f"{type(self).__name__} has no {k!r} (was __init__ skipped?)")
        # Not recorded yet: a method call peepholes to call_method on the root.
        return Attribute(self, k)

    def __repr__(self) -> str:
        return f"Proxy({self.node.name})"

    def __getstate__(self) -> Dict[str, Any]:
        return self.__dict__

    def __setstate__(self, d: Dict[str, Any]) -> None:
        self.__dict__ = d

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Proxy":
        state = {}
        for k, v in self.__dict__.items():
            try:
                state[k] = copy.deepcopy(v, memo)
            except Exception:
                log.warning("shallow-copying %s of %r: it cannot be deep-copied", k, self)
                state[k] = copy.copy(v)
        new = Proxy(state["node"], state["tracer"])
        new.__dict__.update(state)
        return new

    def __call__(self, *args: Any, **kwargs: Any) -> "Proxy":
        return self.tracer.create_proxy("call_method", "__call__", (self,) + args, kwargs)

    def __iter__(self) -> Iterator["Proxy"]:
        caller = sys._getframe(1)
        ins = _current_instruction(caller)
        if ins is not None and ins.opname == "UNPACK_SEQUENCE":
            # `a, b = proxy`: the arity is in the bytecode, so indexing is well defined.
            return (self[i] for i in range(ins.argval))
        return self.tracer.iter(self)

    def __abs__(self) -> "Proxy":
        return self.tracer.create_proxy("call_function", operator.abs, (self,), {})

    def __bool__(self) -> bool:
        if self.tracer.trace_asserts and _inside_assert(sys._getframe(1)):
            self.tracer.create_proxy("call_function", assert_fn, (self,), {})
            return True
        return self.tracer.to_bool(self)

    def keys(self) -> "Proxy":
        """``proxy.keys()``; delegated to the tracer so ``**proxy`` can be customised."""
        return self.tracer.keys(self)

    def __len__(self) -> int:
        raise _LenTraceError(
            _trace_error_text(
                f"{_LEN_TEXT} (fxkit.wrap('len') works too)",
                self,
                sys._getframe(1),
            )
        )

    # fmt: off
    @classmethod
    def __torch_function__(cls, orig_method: Callable, types: Tuple[type, ...],
                           args: Optional[tuple] = None,
                           kwargs: Optional[dict] = None) -> "Proxy":
        # fmt: on
        args = args if args else ()
        kwargs = kwargs if kwargs else {}
        found: list = []
        _collect_tracers(cls, args, found)
        _collect_tracers(cls, kwargs, found)
        if not found:
            raise RuntimeError(f"no {cls.__name__} among the arguments of {orig_method}")
        tracer = found[0]
        for other in found:
            if other is not tracer:
                raise RuntimeError(
                    f"Found multiple different tracers {[tracer, other]} while trying to "
                    f"trace operations {orig_method}"
                )
        if isinstance(orig_method, torch._C.ScriptMethod):
            return tracer.create_proxy(
                "call_method", orig_method.name, (orig_method.owner,) + args, kwargs
            )
        is_method, node_name = _torch_fn_info(orig_method)
        if is_method:
            return tracer.create_proxy("call_method", orig_method.__name__, args, kwargs)
        if isinstance(orig_method, torch._ops.HigherOrderOperator):
            _refuse_callables(orig_method, args, kwargs)
        return tracer.create_proxy("call_function", orig_method, args, kwargs, name=node_name)


def _collect_tracers(cls: type, a: Any, found: list) -> None:
    if isinstance(a, cls):
        found.append(a.tracer)
    elif isinstance(a, (tuple, list)):
        for e in a:
            _collect_tracers(cls, e, found)
    elif isinstance(a, dict):
        for e in a.values():
            _collect_tracers(cls, e, found)
    elif isinstance(a, slice):
        _collect_tracers(cls, (a.start, a.stop, a.step), found)


_TORCH_FN_INFO: Dict[Any, Tuple[bool, str]] = {}


def _torch_fn_info(fn: Callable) -> Tuple[bool, str]:
    """(is it a Tensor method or property, the node name torch.fx would give it); cached."""
    try:
        return _TORCH_FN_INFO[fn]
    except (KeyError, TypeError):
        pass
    info = (
        torch.overrides.is_tensor_method_or_property(fn),
        _snake_case(getattr(fn, "__name__", type(fn).__name__)),
    )
    try:
        _TORCH_FN_INFO[fn] = info
    except TypeError:
        pass
    return info


def _snake_case(name: str) -> str:
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and name[i - 1].islower():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _refuse_callables(op: Any, args: tuple, kwargs: dict) -> None:
    callables = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)

    def visit(a: Any) -> None:
        if isinstance(a, callables) or type(a).__name__ == "partial":
            raise RuntimeError(
                f"Unable to symbolically trace the HigherOrderOperator {op._name} because it "
                f"received an arbitrary callable argument {a}. Use make_fx or dynamo tracing "
                "instead."
            )
        if isinstance(a, (tuple, list)):
            for e in a:
                visit(e)
        elif isinstance(a, dict):
            for e in a.values():
                visit(e)

    visit(args)
    visit(kwargs)


def _inside_assert(frame: types.FrameType) -> bool:
    """Is ``bool(x)`` being evaluated by an ``assert x`` statement in ``frame``?"""
    ins = _current_instruction(frame)
    if ins is None or "POP_JUMP" not in ins.opname or "IF_TRUE" not in ins.opname:
        return False
    table = _instructions[frame.f_code]
    offsets = sorted(table)
    i = offsets.index(ins.offset)
    for off in offsets[i + 1 : i + 4]:
        nxt = table[off]
        if nxt.opname in ("CACHE", "EXTENDED_ARG", "NOP"):
            continue
        return nxt.opname == "LOAD_ASSERTION_ERROR" or (
            nxt.opname == "LOAD_GLOBAL" and nxt.argval == "AssertionError"
        )
    return False


class MetaProxy(Proxy):
    """A Proxy that also computes ``node.meta["val"]`` with fake tensors as it goes."""

    fake_mode: Any

    def __init__(self, node: Node, tracer: Optional[TracerBase] = None, fake_mode: Any = None):
        Proxy.__init__(self, node, tracer)
        self.fake_mode = fake_mode

    # fmt: off
    @classmethod
    def __torch_function__(cls, orig_method: Callable, types: Tuple[type, ...],
                           args: Optional[tuple] = None,
                           kwargs: Optional[dict] = None) -> "MetaProxy":
        # fmt: on
        args = args if args else ()
        kwargs = kwargs if kwargs else {}
        first = next((a for a in args if isinstance(a, MetaProxy)), None)
        if first is None:
            raise RuntimeError(f"{orig_method}: no MetaProxy among the positional arguments")
        proxy = super().__torch_function__(orig_method, types, args, kwargs)
        with first.fake_mode:
            vals = [a.node.meta["val"] if isinstance(a, Proxy) else a for a in args]
            proxy.node.meta["val"] = orig_method(*vals, **kwargs)
        return MetaProxy(proxy.node, proxy.tracer, first.fake_mode)

    def __repr__(self) -> str:
        return f"MetaProxy({self.node.name})"


class Attribute(Proxy):
    """``proxy.name``: becomes ``call_method`` when called, else a ``getattr`` node on use."""

    def __init__(self, root: Proxy, attr: str) -> None:
        self.root = root
        self.attr = attr
        self.tracer = root.tracer
        self._node: Optional[Node] = None

    @property
    def node(self) -> Node:  # type: ignore[override]
        # Created on first use: most attributes are method lookups that never need a node.
        if self._node is None:
            self._node = self.tracer.create_proxy(
                "call_function", getattr, (self.root, self.attr), {}
            ).node
        return self._node

    def __call__(self, *args: Any, **kwargs: Any) -> Proxy:
        return self.tracer.create_proxy("call_method", self.attr, (self.root,) + args, kwargs)


class ParameterProxy(Proxy):
    """A parameter's proxy whose shape queries (``shape``, ``size()``, ``dim()``, ``ndim``,
    ``numel()``, ``nelement()``) answer with the real parameter's values, so code that checks
    them keeps tracing (see ``Tracer(param_shapes_constant=True)``)."""

    def __init__(self, tracer: TracerBase, node: Node, name: str, param: torch.nn.Parameter):
        # Checked before anything is set, so a wrong call leaves no half-made proxy behind.
        if not isinstance(param, torch.nn.Parameter):
            raise AssertionError(
                f"Expected Parameter, got {type(param)}\n  (fxkit) ParameterProxy needs an "
                f"nn.Parameter, got {type(param).__name__}"
            )
        Proxy.__init__(self, node, tracer)
        self.param, self.name = param, name

    def __repr__(self) -> str:
        return f"ParameterProxy({self.name})"


def _answer_from_param(name: str, is_property: bool) -> Any:
    """A ParameterProxy member that asks the real parameter instead of recording a node."""
    if is_property:
        return property(lambda self: getattr(self.param, name), doc=f"The parameter's {name}.")

    def ask(self: ParameterProxy, *args: Any) -> Any:
        return getattr(self.param, name)(*args)

    ask.__name__ = ask.__qualname__ = name
    return ask


# name -> read as an attribute (True) or called (False)
_PARAM_QUERIES = {"shape": True, "ndim": True, "size": False, "dim": False, "numel": False}
_PARAM_QUERIES["nelement"] = False
for _query, _is_prop in _PARAM_QUERIES.items():
    setattr(ParameterProxy, _query, _answer_from_param(_query, _is_prop))
del _query, _is_prop


# --- operators ------------------------------------------------------------------------------

# Operators with a reflected form (``1 + proxy``) and those without.
_REFLECTABLE = (
    "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "lshift", "rshift",
    "and_", "or_", "xor", "getitem", "matmul",
)  # fmt: skip
_ONE_WAY = ("eq", "ne", "lt", "gt", "le", "ge", "pos", "neg", "invert")


def _forward_op(target: Callable) -> Callable:
    def impl(*args: Any, **kwargs: Any) -> Proxy:
        return args[0].tracer.create_proxy("call_function", target, args, kwargs)

    return impl


def _reflected_op(target: Callable) -> Callable:
    def impl(self: Proxy, rhs: Any) -> Proxy:
        return self.tracer.create_proxy("call_function", target, (rhs, self), {})

    return impl


def _install_operators() -> None:
    for op_name in _REFLECTABLE + _ONE_WAY:
        target = getattr(operator, op_name)
        dunder = f"__{op_name.strip('_')}__"
        impl = _forward_op(target)
        impl.__name__ = impl.__qualname__ = dunder
        setattr(Proxy, dunder, impl)
    for op_name in _REFLECTABLE:
        target = getattr(operator, op_name)
        dunder = f"__r{op_name.strip('_')}__"
        impl = _reflected_op(target)
        impl.__name__ = impl.__qualname__ = dunder
        setattr(Proxy, dunder, impl)


# Assigned after the class body on purpose: defining __eq__ in the body would make Proxy
# unhashable, and tracers keep proxies in dicts and sets.
_install_operators()
