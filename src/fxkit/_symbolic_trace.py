"""The symbolic tracer: :class:`Tracer`, :func:`symbolic_trace`, :func:`wrap` and friends.

How a trace runs: placeholders are made from ``forward``'s signature; then, for the length of
the call, ``nn.Module.__call__``/``__getattr__`` and the functions registered with
:func:`wrap` (plus autowrapped ``math`` functions) are replaced by *trampolines*. A trampoline
looks at a :class:`~contextvars.ContextVar` holding the trace running in the current thread:
if there is none it calls the original, so other threads calling the same function are not
affected. Trampolines are reference-counted: the first trace that needs one installs it, the
last one to finish removes it, always in ``finally``.

Lookups of parameter, buffer and module paths use maps built once per trace, so tracing is
linear in model size.
"""

from __future__ import annotations

import collections
import copy
import functools
import inspect
import linecache
import math
import sys
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.utils._pytree as pytree

from fxkit._auto_leaf import ON_ERROR_CHOICES, LeafFallback, trace_or_leaf
from fxkit._module_tree import (  # noqa: F401  (FakeScriptObject: old import path)
    _CONSTANT_TYPES,
    FakeScriptObject,
    _collect_tensor_attrs,
    _module_paths,
)
from fxkit._patching import (  # noqa: F401  (registry names re-exported for tests/tools)
    _ORIG_MODULE_CALL,
    _ORIG_MODULE_GETATTR,
    _current_run,
    _find_proxy,
    _registry_lock,
    _slots,
    _TraceRun,
    _trampoline_origin,
    _wrapped_fns_to_patch,
    public_callable_ids,
)
from fxkit._signature import (  # noqa: F401  (_patch_function: old import path)
    _ArgLayout,
    _flat_caller,
    _is_empty_container,
    _patch_function,
)
from fxkit.graph import Graph, _PyTreeCodeGen, _PyTreeInfo
from fxkit.graph_module import GraphModule
from fxkit.node import Argument, base_types
from fxkit.proxy import (
    _ARG_HANDLERS,
    ParameterProxy,
    Proxy,
    Scope,
    ScopeContextManager,  # noqa: F401  (importable from here, as from torch.fx)
    TraceError,
    TracerBase,
    _is_internal,
    _node_of,
)

__all__ = [
    "Tracer",
    "symbolic_trace",
    "wrap",
    "PH",
    "PHBase",
    "PHWithMeta",
    "ProxyableClassMeta",
    "is_fx_tracing",
    "is_fx_symbolic_tracing",
]

_proxyable_classes: Dict[type, None] = {}


def is_fx_tracing() -> bool:
    """True while a symbolic trace runs in the current thread."""
    return _current_run.get() is not None


def is_fx_symbolic_tracing() -> bool:
    """True while a symbolic trace (not torch.compile/export) runs in the current thread."""
    return _current_run.get() is not None and not torch.compiler.is_compiling()


# --- placeholders for concrete_args ---------------------------------------------------------


class PHBase:
    """Marks a leaf of a ``concrete_args`` structure that stays an input (not specialised)."""

    def __repr__(self) -> str:
        return "PH"


PH = PHBase()


class PHWithMeta(PHBase):
    """A :data:`PH` carrying user attributes (e.g. ``ph_key``) copied onto its placeholder."""

    def __init__(self, ph_key: Optional[str] = None) -> None:
        self.ph_key = ph_key


def _transfer_attrs(fr: object, to: object) -> None:
    for name in dir(fr):
        val = getattr(fr, name)
        if not callable(val) and not name.startswith("__") and not hasattr(to, name):
            try:
                setattr(to, name, val)
            except AttributeError:  # a slotted Node: keep the value in its meta instead
                to.meta[name] = val  # type: ignore[attr-defined]


class ProxyableClassMeta(type):
    """Metaclass making construction of a class traceable.

    Calling such a class with a Proxy among its arguments while tracing records a
    ``call_function`` node whose target is the class, instead of running ``__init__``::

        class TensorPair(metaclass=fxkit.ProxyableClassMeta):
            def __init__(self, left, right):
                self.left, self.right = left, right
    """

    def __init__(cls, name: str, bases: tuple, attrs: dict) -> None:
        _proxyable_classes.setdefault(cls)
        super().__init__(name, bases, attrs)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = cls.__new__(cls)  # type: ignore[call-overload]
        if is_fx_tracing():
            proxy = _find_proxy((args, kwargs))
            if proxy is not None:
                return proxy.tracer.create_proxy("call_function", cls, args, kwargs)
        cls.__init__(instance, *args, **kwargs)  # type: ignore[misc]
        return instance


# --- the tracer -----------------------------------------------------------------------------


class Tracer(TracerBase):
    """Tracer(autowrap_modules=(math,), autowrap_functions=(), param_shapes_constant=False)

    Records what ``root``'s ``forward`` (or a plain function) does into a :class:`Graph`.
    ``symbolic_trace(m)`` is ``GraphModule(m, Tracer().trace(m))``. Subclass it and override
    ``is_leaf_module``, ``call_module``, ``create_proxy``, ``create_arg``, ``getattr``, ... to
    customise tracing.

    Args:
        autowrap_modules: modules whose public functions are recorded as calls when given a
            Proxy, without :func:`wrap` (``math.sqrt(x.size(0))``).
        autowrap_functions: extra functions treated the same way.
        param_shapes_constant: answer ``shape``/``size()``/... of parameters with real
            values instead of recording nodes.

    As in torch.fx, ``record_stack_traces`` defaults to False (set it to fill
    ``meta["stack_trace"]``). fxkit records the user frames that created each node anyway,
    cheaply (no ``inspect.stack()``), in ``meta["fxkit_source"]``, which error notes and the
    graph viewer read; ``record_source = False`` turns that off.
    """

    record_stack_traces: bool = False
    record_source: bool = True
    # Whether create_arg may hand plain values straight to TracerBase's handlers: true unless
    # a class between Tracer and TracerBase in a subclass's MRO overrides create_arg.
    _direct_args: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        after = mro[mro.index(Tracer) + 1 :]
        cls._direct_args = next(c for c in after if "create_arg" in c.__dict__) is TracerBase

    # fmt: off
    def __init__(self, autowrap_modules: Tuple[types.ModuleType, ...] = (math,),
                 autowrap_functions: Tuple[Callable, ...] = (), param_shapes_constant: bool = False,
                 *, on_error: str = "raise") -> None:
        # fmt: on
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.on_error = on_error
        # Submodules made leaves because their body failed to trace (on_error="leaf").
        self.leaf_fallbacks: List[LeafFallback] = []
        self._forced_leaves: set = set()
        self._call_journal: List[str] = []
        for m in autowrap_modules:
            if not isinstance(m, types.ModuleType):
                raise AttributeError(
                    f"'{type(m).__name__}' object has no attribute '__dict__'\n  (fxkit) "
                    f"autowrap_modules must hold modules, got {type(m).__name__} {m!r}"
                )
        # Another thread's trace may have trampolines in these modules right now: count the
        # functions they stand for, not the trampolines.
        self._autowrap_function_ids = set().union(*map(public_callable_ids, autowrap_modules))
        self._autowrap_function_ids.update(id(f) for f in autowrap_functions)
        self._autowrap_search: List[types.ModuleType] = list(autowrap_modules)
        self.param_shapes_constant = param_shapes_constant
        self.submodule_paths: Optional[Dict[torch.nn.Module, str]] = None
        self.root_module_name = ""
        self.scope = Scope("", None)
        self.module_stack = collections.OrderedDict()
        self.num_calls: Dict[str, int] = {}
        self.node_name_to_scope: Dict[str, Tuple[str, type]] = {}
        self._qualname_counter: Dict[str, int] = collections.defaultdict(int)
        self._paths: Dict[str, Optional[dict]] = {"parameters": None, "buffers": None}
        self._added_attrs: List[str] = []
        self.tensor_attrs: Dict[Any, str] = {}

    # -- lookups -------------------------------------------------------------------------------

    def _path_of(self, kind: str, value: Any) -> Optional[str]:
        """Qualified name of a parameter/buffer of root, from a map built once per trace."""
        table = self._paths.get(kind)
        if table is None:
            table = {}
            for name, v in getattr(self.root, "named_" + kind)():
                table.setdefault(v, name)
            self._paths[kind] = table
        name = table.get(value)
        if name is None:
            # Registered after the map was built (lazy modules): look again, remember it.
            for n, v in getattr(self.root, "named_" + kind)():
                if v is value:
                    table[v] = name = n
                    break
        return name

    def get_fresh_qualname(self, prefix: str) -> str:
        """A ``prefix<N>`` attribute name not yet used on ``self.root``."""
        if not hasattr(self.root, f"{prefix}0"):
            self._qualname_counter[prefix] = 0
            return f"{prefix}0"
        i = self._qualname_counter[prefix]
        while hasattr(self.root, f"{prefix}{i}"):
            i += 1
        self._qualname_counter[prefix] = i + 1
        return f"{prefix}{i}"

    def _stash_constant(self, prefix: str, value: Any) -> str:
        qualname = self.get_fresh_qualname(prefix)
        setattr(self.root, qualname, value)
        self._added_attrs.append(qualname)
        return qualname

    # -- hooks ---------------------------------------------------------------------------------

    def create_arg(self, a: Any) -> Argument:
        """Like :meth:`TracerBase.create_arg`, plus module state:

        parameters, buffers and submodules of ``root`` become ``get_attr`` nodes of their
        path; other tensors are stored on ``root`` as ``_tensor_constant<N>`` and read with
        ``get_attr``; named tuples become a constructor call node.
        """
        handler = _DIRECT_ARGS.get(type(a))
        if handler is not None and self._direct_args:
            return handler(self, a)  # what TracerBase.create_arg does, one call less
        if isinstance(a, Proxy) or type(a) in _PLAIN_TYPES:
            return super().create_arg(a)
        # Tensor first: the Parameter check runs Python code (_ParameterMeta.__instancecheck__).
        if isinstance(a, torch.Tensor):
            if isinstance(a, torch.nn.Parameter):
                name = self._path_of("parameters", a)
                if name is None:
                    raise NameError(
                        f"parameter is not a member of this module: a Parameter of shape "
                        f"{tuple(a.shape)} is used but is not registered under the traced root "
                        f"{type(self.root).__name__}"
                    )
                return self.create_node("get_attr", name, (), {})
            name = self._path_of("buffers", a)
            if name is not None:
                return self.create_node("get_attr", name, (), {})
        elif isinstance(a, torch.nn.Module):
            path = self._module_path_or_none(a)
            if path is not None:
                return self.create_node("get_attr", path, (), {})
        if isinstance(a, tuple) and hasattr(a, "_fields"):
            items = tuple(self.create_arg(e) for e in a)
            return self.create_node("call_function", type(a), items, {})
        if isinstance(a, _CONSTANT_TYPES):
            qualname = self.tensor_attrs.get(a)
            if not qualname:
                if isinstance(a, torch.Tensor):
                    prefix = "_tensor_constant"
                elif isinstance(a, pytree.TreeSpec):
                    prefix = "_tree_spec_constant"
                else:
                    prefix = "_torchbind_obj"
                qualname = self._stash_constant(prefix, a)
                self.tensor_attrs[a] = qualname
            return self.create_node("get_attr", qualname, (), {})
        if type(a) in _proxyable_classes:
            qualname = self._stash_constant(f"_{type(a).__name__}_constant_", a)
            return self.create_node("get_attr", qualname, (), {})
        return super().create_arg(a)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        """Whether ``m`` is recorded as one ``call_module`` node instead of traced through.

        Default: modules defined in ``torch.nn`` / ``torch.ao.nn``, except ``Sequential``.
        """
        cls = type(m)
        leaf = _DEFAULT_LEAF.get(cls)
        if leaf is None:
            mod_name = cls.__module__
            leaf = (mod_name.startswith("torch.nn") or mod_name.startswith("torch.ao.nn")) and (
                not issubclass(cls, torch.nn.Sequential)
            )
            _DEFAULT_LEAF[cls] = leaf
        return leaf

    def _module_path_or_none(self, mod: torch.nn.Module) -> Optional[str]:
        if self.submodule_paths:
            return self.submodule_paths.get(mod)
        for n, p in self.root.named_modules():
            if p is mod:
                return n
        return None

    def path_of_module(self, mod: torch.nn.Module) -> str:
        """The qualified name of ``mod`` under ``root`` (``"foo.bar"``); NameError if absent."""
        paths = self.submodule_paths
        path = paths.get(mod) if paths else self._module_path_or_none(mod)
        if path is None:
            raise NameError(
                f"module is not installed as a submodule: a {type(mod).__name__} is called "
                f"during tracing but is not an attribute of the traced root (assign it in "
                f"__init__ so the graph can refer to it)"
            )
        return path

    def call_module(
        self,
        m: torch.nn.Module,
        forward: Callable[..., Any],
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
    ) -> Any:
        """Handle a call to submodule ``m``: a ``call_module`` node for a leaf, else run
        ``forward`` (tracing through it). Keeps ``scope`` and ``module_stack`` current."""
        qualname = self.path_of_module(m)
        # ScopeContextManager's switch, inlined: this runs once per module call.
        scope, mod_type = self.scope, type(m)
        saved = scope.module_path, scope.module_type
        scope.module_path, scope.module_type = qualname, mod_type
        try:
            calls = self.num_calls.get(qualname, 0)
            key = f"{qualname}@{calls}" if calls > 0 else qualname
            self.module_stack[key] = (qualname, mod_type)
            self.num_calls[qualname] = calls + 1
            falls_back = self.on_error != "raise"
            if falls_back:
                self._call_journal.append(qualname)
            try:
                if self.is_leaf_module(m, qualname) or id(m) in self._forced_leaves:
                    return self.create_proxy("call_module", qualname, args, kwargs)
                if not falls_back:
                    return forward(*args, **kwargs)
                run = _current_run.get()
                cache = run.param_cache if run is not None else {}
                return trace_or_leaf(self, m, qualname, forward, args, kwargs, cache)
            finally:
                popped, _ = self.module_stack.popitem(last=True)
                if popped != key:
                    raise RuntimeError(f"module stack out of order: {popped!r} != {key!r}")
        finally:
            scope.module_path, scope.module_type = saved

    def _should_fall_back(self, m: torch.nn.Module, qualname: str, error: Exception) -> bool:
        """With ``on_error="leaf"``: may ``m``, whose body raised ``error``, become a leaf?"""
        return self.on_error == "leaf"

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: Dict[str, Any]) -> Any:
        """What ``module.<attr>`` returns while tracing: parameters (and, with
        ``proxy_buffer_attributes``, buffers) of root become cached ``get_attr`` proxies."""
        if not isinstance(attr_val, torch.Tensor):
            return attr_val  # mostly submodules; cheaper than the Parameter check
        if isinstance(attr_val, torch.nn.Parameter):
            proxy = self._state_proxy("parameters", attr_val, parameter_proxy_cache)
            if proxy is not None:
                return proxy
        if self.proxy_buffer_attributes:
            proxy = self._state_proxy("buffers", attr_val, parameter_proxy_cache)
            if proxy is not None:
                return proxy
        return attr_val

    def _state_proxy(self, kind: str, value: Any, cache: Dict[str, Any]) -> Any:
        name = self._path_of(kind, value)
        if name is None:
            return None
        if name not in cache:
            extra = {}
            if _takes_factory(type(self)):
                extra["proxy_factory_fn"] = (
                    (lambda node: ParameterProxy(self, node, name, value))
                    if self.param_shapes_constant
                    else None
                )
            cache[name] = self.create_proxy("get_attr", name, (), {}, **extra)
        return cache[name]

    # fmt: off
    def create_args_for_root(self, root_fn: Callable[..., Any], is_module: bool,
                             concrete_args: Union[Dict[str, Any], Tuple[Any, ...], None] = None
                             ) -> Tuple[Any, List[Any]]:
        # fmt: on
        """Make the placeholders for ``root_fn``'s signature (incl. ``*args``/``**kwargs``)
        and return the function to call with them. Pytree-structured ``concrete_args`` get a
        flattening wrapper and a ``_PyTreeCodeGen``."""
        inner = inspect.unwrap(root_fn)  # functools.wraps hides the real parameters
        layout = _ArgLayout.of(inner)
        if is_module and not layout.named:
            raise RuntimeError("``self`` argument cannot be part of *args expansion!")
        inputs: List[Any] = [self.root] if is_module else []
        params = layout.named[len(inputs) :]
        if isinstance(concrete_args, tuple) and concrete_args and layout.only_self_and_varargs:
            # forward(self, *args) with a flat tuple: one placeholder per given value.
            inputs += [self._flat_input(i, v) for i, v in enumerate(concrete_args)]
            return root_fn, inputs
        if isinstance(concrete_args, tuple):
            if len(params) != len(concrete_args):
                raise RuntimeError(
                    f"Tracing expected {len(params)} arguments but got "
                    f"{len(concrete_args)} concrete arguments"
                )
            concrete_args = dict(zip(params, concrete_args))
        if inner is not root_fn and layout.starred():
            # A decorator's (*args, **kwargs) cannot be spread from a Proxy: unless given,
            # the extras are empty, as in a call that passes none.
            extras = {s: {} if s.startswith("**") else () for s in layout.starred()}
            concrete_args = {**extras, **(concrete_args or {})}
        sig = inspect.signature(inner)
        inputs += [self._proxy_placeholder(n, concrete_args, sig, inner) for n in params]
        for starred in layout.starred():
            inputs.append(self._proxy_placeholder(starred, concrete_args, sig, None))
        if layout.needs_flat_call:
            root_fn = _flat_caller(root_fn, inner, layout, len(inputs))
        flat_inputs, in_spec = pytree.tree_flatten(tuple(inputs))
        first_starred = len(inputs) - len(layout.starred())
        if all(
            child.is_leaf() or (i >= first_starred and _is_empty_container(inputs[i]))
            for i, child in enumerate(in_spec.children())
        ):
            # Plain inputs (an unused *args/**kwargs given as empty counts as plain).
            return root_fn, inputs
        codegen = _PyTreeCodeGen(_PyTreeInfo(list(layout.named), in_spec, None))
        self.graph._codegen = codegen

        def flatten_fn(*flat: Any) -> Any:
            result = root_fn(*pytree.tree_unflatten(list(flat), in_spec))
            flat_out, out_spec = pytree.tree_flatten(result)
            codegen.pytree_info = codegen.pytree_info._replace(out_spec=out_spec)
            return flat_out

        # The output node's type comes from the traced function's return annotation: this
        # wrapper has none, as in torch.fx (else the code would read ``-> Any``).
        del flatten_fn.__annotations__["return"]

        return flatten_fn, flat_inputs

    def _flat_input(self, index: int, given: Any) -> Proxy:
        proxy = self.create_proxy("placeholder", f"input_{index}", (), {})
        if isinstance(given, PHBase) and given is not PH:
            _transfer_attrs(given, proxy.node)
        return proxy

    # fmt: off
    def _proxy_placeholder(self, name: str, concrete_args: Optional[Dict[str, Any]],
                           sig: inspect.Signature, fn_for_analysis: Optional[Callable]) -> Any:
        # fmt: on
        if name[0] == "*":
            default: tuple = ()
        else:
            param = sig.parameters[name]
            default = () if param.default is inspect.Parameter.empty else (param.default,)
        if concrete_args is not None and name in concrete_args:
            count = 0

            def specialise(x: Any) -> Any:
                nonlocal count
                count += 1
                out = self.create_proxy("placeholder", f"{name}_{count}", default, {})
                if isinstance(x, PHBase):
                    if x is not PH:
                        _transfer_attrs(x, out.node)
                    return out
                if type(x) is bool or (type(x) in base_types and type(x) is not torch.Tensor):
                    torch._assert(
                        out == x,
                        f"{name} has been specialized to have value {x} but got another value",
                    )
                elif x is None:
                    msg = f"{name} has been specialized to have value None but got another value"
                    self.create_proxy("call_function", _assert_is_none, (out, msg), {})
                else:
                    warnings.warn(
                        f"Was not able to add assertion to guarantee correct input {name} to "
                        "specialized function. It is up to the user to make sure that your "
                        "inputs match the inputs you specialized the function with.",
                        stacklevel=2,
                    )
                return x

            return pytree.tree_map(specialise, concrete_args[name])
        annotations = getattr(fn_for_analysis, "__annotations__", {}) if fn_for_analysis else {}
        return self.create_proxy(
            "placeholder", name, default, {}, type_expr=annotations.get(name, None)
        )

    # -- the entry point -----------------------------------------------------------------------

    def trace(
        self,
        root: Union[torch.nn.Module, Callable[..., Any]],
        concrete_args: Optional[Dict[str, Any]] = None,
    ) -> Graph:
        """Trace ``root`` (an ``nn.Module`` or a function) and return its :class:`Graph`.

        ``concrete_args`` fixes some inputs to constants (``{"flag": True}``) or to pytree
        structures whose :data:`PH` leaves stay inputs. For a function root, ``self.root``
        becomes a fresh ``nn.Module`` that holds any constants the graph needs.
        """
        is_module = isinstance(root, torch.nn.Module)
        fn = self._root_function(root)
        _check_concrete_args(fn, is_module, concrete_args)
        anchor = sys._getframe()
        run = _TraceRun(self)
        token = _current_run.set(run)
        self._trace_anchor = anchor
        self._root_frame = None
        self._stack_cache = {}
        self._added_attrs = []
        self._paths = {"parameters": None, "buffers": None}
        self.leaf_fallbacks, self._forced_leaves, self._call_journal = [], set(), []
        try:
            self.graph = Graph(tracer_cls=getattr(self, "__class__", None))
            code = fn.__code__
            self.graph._co_fields = {
                "co_name": code.co_name,
                "co_filename": code.co_filename,
                "co_firstlineno": code.co_firstlineno,
            }
            self.tensor_attrs = {}
            _collect_tensor_attrs(self.root, "", self.tensor_attrs)
            fn_globals, root_fn_for_scan = fn.__globals__, fn
            fn, args = self.create_args_for_root(fn, is_module, concrete_args)
            try:
                run.install(fn_globals)
                run.scan_function_globals(root_fn_for_scan)
                result = fn(*args)
                returns = inspect.get_annotations(inspect.unwrap(fn)).get("return", None)
                self.create_node(
                    "output", "output", (self.create_arg(result),), {}, type_expr=returns
                )
            finally:
                run.uninstall()
            self.submodule_paths = None
        except BaseException as e:
            self._undo_root_edits()
            _note_location(e, self.root_module_name or getattr(root, "__name__", "function"))
            raise
        finally:
            _current_run.reset(token)
            self._trace_anchor = self._root_frame = self._stack_cache = None
        return self.graph

    def _root_function(self, root: Any) -> types.FunctionType:
        if isinstance(root, torch.nn.Module):
            if isinstance(root, GraphModule):
                root.forward  # noqa: B018  (compiles a lazily generated forward)
            fn = getattr(type(root), self.traced_func_name, None)
            if fn is None:
                raise AssertionError(
                    f"traced_func_name={self.traced_func_name} doesn't exist in "
                    f"{type(root).__name__}"
                )
            if not isinstance(fn, types.FunctionType):
                raise AssertionError(
                    f"Expected FunctionType, got {type(fn)}\n  (fxkit) "
                    f"{type(root).__name__}.{self.traced_func_name} must be a Python function "
                    f"to be traced"
                )
            self.root = root
            self.root_module_name = root._get_name()
            self.submodule_paths = _module_paths(root)
            return fn
        if not isinstance(root, types.FunctionType):
            hint = (
                " (a bound method: trace the module, or set Tracer.traced_func_name)"
                if isinstance(root, types.MethodType)
                else ""
            )
            raise AssertionError(
                f"Expected FunctionType, got {type(root)}\n  (fxkit) symbolic tracing needs an "
                f"nn.Module or a Python function, got {type(root).__name__}{hint}"
            )
        self.root = torch.nn.Module()
        self.root_module_name = ""
        self.submodule_paths = None
        return root

    def _undo_root_edits(self) -> None:
        for name in reversed(self._added_attrs):
            try:
                delattr(self.root, name)
            except AttributeError:
                pass
        self._added_attrs = []

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Tracer":
        new = type(self).__new__(type(self))
        for k, v in self.__dict__.items():
            # Modules (autowrap_search) cannot be deep-copied.
            new.__dict__[k] = copy.copy(v) if k == "_autowrap_search" else copy.deepcopy(v, memo)
        return new


_PLAIN_TYPES = frozenset({int, float, str, bool, type(None), tuple, list, dict, slice})
# The exact types Tracer.create_arg passes on untouched to TracerBase, with what it does.
_DIRECT_ARGS: Dict[type, Callable[[Any, Any], Any]] = {
    t: _ARG_HANDLERS[t] for t in (int, float, str, bool, type(None), tuple, list, dict)
}
_DIRECT_ARGS[Proxy] = _node_of
_DEFAULT_LEAF: Dict[type, bool] = {}  # is_leaf_module's default answer, by module class


@functools.lru_cache(maxsize=None)
def _takes_factory(cls: type) -> bool:
    # Old tracer subclasses override create_proxy without the proxy_factory_fn parameter.
    try:
        return "proxy_factory_fn" in inspect.signature(cls.create_proxy).parameters
    except (TypeError, ValueError):
        return False


def _check_concrete_args(fn: types.FunctionType, is_module: bool, concrete_args: Any) -> None:
    if concrete_args is None or isinstance(concrete_args, tuple):
        return
    if not isinstance(concrete_args, dict):
        raise TypeError(
            f"concrete_args must be a dict of argument name -> value (or a tuple), got "
            f"{type(concrete_args).__name__}"
        )
    layout = _ArgLayout.of(inspect.unwrap(fn))
    known = set(layout.named[int(is_module) :])
    for starred in layout.starred():
        known.update((starred, starred.lstrip("*")))
    unknown = [k for k in concrete_args if k not in known]
    if unknown:
        # torch.fx ignores them; a warning keeps the typo visible without failing earlier.
        plain = [*layout.named[int(is_module) :], *(s.lstrip("*") for s in layout.starred())]
        warnings.warn(
            f"concrete_args names {unknown} are not parameters of {fn.__name__}() and are "
            f"ignored; its parameters are {plain}",
            stacklevel=4,
        )


def _note_location(e: BaseException, what: str) -> None:
    if isinstance(e, TraceError) or not hasattr(e, "add_note"):
        return  # TraceErrors already say where; add_note needs Python 3.11
    tb = e.__traceback__
    where = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if not _is_internal(code.co_filename):
            where = (code.co_filename, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    if where is None:
        return
    line = linecache.getline(where[0], where[1]).strip()
    text = f'File "{where[0]}", line {where[1]}, in {where[2]}' + (f"\n    {line}" if line else "")
    e.add_note(f"(fxkit) raised while symbolically tracing {what}, at {text}")


def _assert_is_none(value: Any, msg: str) -> None:
    """Runtime check of an input specialised to ``None`` through ``concrete_args``."""
    assert value is None, msg


# --- public functions -----------------------------------------------------------------------


def wrap(fn_or_name: Union[str, Callable]) -> Any:
    """Record calls to a module-level function as ``call_function`` nodes instead of
    tracing through it. Call at module scope, with the function or its name::

        fxkit.wrap("len")          # builtins too

        @fxkit.wrap
        def my_op(x, y):
            return x * x + y * y

    Only calls made through the calling module's globals are affected, and only while a
    trace runs; everywhere else the function behaves as before. The name may be wrapped
    before its ``def``: it is resolved when a trace starts.
    """
    if isinstance(fn_or_name, str):
        name = fn_or_name
    elif callable(fn_or_name):
        try:
            name = fn_or_name.__name__
        except AttributeError as e:
            raise AttributeError(
                f"{e}\n  (fxkit) wrap() needs a named function, got {fn_or_name!r} (no __name__)"
            ) from None
    else:
        raise RuntimeError(
            "Unsupported type for global function! Must be either a callable or string name"
            f"\n  (fxkit) got {type(fn_or_name).__name__}"
        )
    caller = sys._getframe(1)
    if caller.f_code.co_name != "<module>":
        raise NotImplementedError(
            f"wrap must be called at the top level of a module (it was called from "
            f"{caller.f_code.co_name}() in {caller.f_code.co_filename}:{caller.f_lineno})"
        )
    # As in torch.fx, the name is only recorded here: it may be defined further down the
    # module, and is looked up in these globals (or builtins) each time a trace starts. A
    # name that never resolves (a lambda's "<lambda>") is simply never patched.
    _wrapped_fns_to_patch[(id(caller.f_globals), name)] = caller.f_globals
    return fn_or_name


# fmt: off
def symbolic_trace(root: Union[torch.nn.Module, Callable[..., Any]],
                   concrete_args: Optional[Dict[str, Any]] = None, *,
                   example_inputs: Any = None, meta_args: Optional[Dict[str, Any]] = None,
                   on_error: str = "raise", check_guards: bool = True) -> GraphModule:
    # fmt: on
    """Trace ``root`` (an ``nn.Module`` or function) into a :class:`GraphModule`.

    ``concrete_args`` specialises inputs: ``{"flag": True}`` removes control flow on
    ``flag`` (an assert checks it at run time); pytree structures with :data:`PH` leaves
    flatten structured inputs::

        gm = fxkit.symbolic_trace(f, concrete_args={"x": {"a": fxkit.PH, "b": fxkit.PH}})

    ``example_inputs`` (positional tuple or name -> value dict) and/or ``meta_args``
    (name -> tensor, ``device="meta"`` allowed) turn on shape-aware tracing: fake tensors run
    alongside the proxies, so ``x.shape[0] > 1``, ``len(x)`` and loops over sizes resolve;
    every such answer is a guard in ``node.meta["guards"]`` (see ``fxkit._shape_trace``).
    Inputs named by neither are specialised to their defaults. The traced module checks
    its guards when called and raises ``GuardError`` (a ``RuntimeError``) naming the guard
    and the user's line on a mismatch; ``check_guards=False`` (or ``gm.check_guards =
    False``) turns that off.

    ``on_error="leaf"`` makes each submodule whose body cannot be traced a ``call_module``
    leaf (reason in ``node.meta["fxkit_leaf_reason"]``) instead of failing.

    Tracing errors (a Proxy used in ``if``, ``len``, iteration) name the source line and the
    fixes: ``concrete_args``, :func:`wrap`, ``example_inputs``, or a leaf module.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    if example_inputs is not None or meta_args is not None:
        from fxkit._shape_trace import shape_trace

        return shape_trace(root, concrete_args, example_inputs=example_inputs,
                           meta_args=meta_args, on_error=on_error, check_guards=check_guards)
    if on_error == "leaf":
        from fxkit._auto_leaf import none_defaults_as_concrete

        # inputs defaulting to None take their default, as shape-aware tracing does, so
        # `if mask is not None` follows the branch an eager call without a mask takes
        concrete_args = none_defaults_as_concrete(root, concrete_args)
    tracer = Tracer(on_error=on_error)
    graph = tracer.trace(root, concrete_args)
    name = type(root).__name__ if isinstance(root, torch.nn.Module) else root.__name__
    return GraphModule(tracer.root, graph, name)
