"""Symbolic tracing with meta tensors riding along, so shape-based control flow traces.

:class:`MetaTracer` gives every proxy it makes a meta tensor (``proxy._tensor_meta``) computed
by running the node's operation on meta tensors as the trace goes. Shape questions then
have plain answers: ``x.shape``, ``x.size(d)``, ``x.dim()`` and ``x.dtype`` return concrete
values (no node is recorded), so ``if x.shape[0] > 2`` and ``x.view(x.size(0), -1)`` trace,
specialised to the shapes of ``meta_args``. ``x.device`` stays a traced value
(:class:`MetaDeviceAttribute`), standing for the meta device while metadata is computed.

Where an operation cannot run on meta tensors, the trace goes on with a warning and that
proxy (and what is computed from it) has no meta. :data:`manual_meta_overrides` maps a
function or module class to a stand-in used for its metadata instead.

The evaluation of one node on meta values is the one fxkit's shape-aware tracing uses
(:mod:`fxkit._shape_guards`); module calls run on meta copies of the module's parameters,
so a model on the CPU traces as well as one on the meta device. An operation seen before on
operands of the same shapes reuses its metadata (per trace; per process for torch's own
operations and ``torch.nn`` leaf modules), which is most of a transformer's layers.

Beyond torch.fx: ``x.size(0)`` answers dimension 0 (torch.fx returns the whole size), leaf
modules with non-meta weights get metadata (torch.fx warns), and traced code sees
``torch.jit.is_tracing()`` as True, so libraries that skip data-dependent checks for torch.fx
Proxies (HuggingFace) skip them for fxkit's as well.
"""

from __future__ import annotations

import builtins
import functools
import operator
import types
import warnings
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar, Union

import torch

from fxkit._patching import _find_proxy, _trampoline_origin
from fxkit._shape_guards import _NO_VAL, _fake_attr, _MetaMode, _no_tracing, _run_fake
from fxkit._shape_trace import _answers_true
from fxkit._symbolic_trace import Tracer
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.node import Node, Target, map_aggregate
from fxkit.proxy import Proxy

# The tracer and its proxies, the entry point, then the metadata stand-ins and helpers.
__all__ = [
    "MetaTracer", "MetaProxy", "MetaAttribute", "MetaDeviceAttribute", "symbolic_trace",
    "manual_meta_overrides", "embedding_override", "nn_layernorm_override",
    "torch_relu_override", "torch_nn_relu_override", "functional_relu_override",
    "torch_where_override", "torch_abs_override", "gen_constructor_wrapper", "proxys_to_metas",
]  # fmt: skip

_C = TypeVar("_C", bound=Callable[..., Any])
_META = torch.device("meta")

# -- metadata stand-ins ------------------------------------------------------------------------


def embedding_override(self: torch.nn.Embedding, input: torch.Tensor) -> torch.Tensor:
    """Metadata of ``nn.Embedding``: the index shape plus the embedding width."""
    return torch.empty(*input.shape, self.weight.shape[-1], device="meta")


def _same_metadata(meta: torch.Tensor) -> torch.Tensor:
    # Shape-preserving ops: the input's meta tensor already describes the result.
    return meta


def nn_layernorm_override(self: torch.nn.LayerNorm, input: torch.Tensor) -> torch.Tensor:
    """Metadata of ``nn.LayerNorm``: shaped like its input."""
    return _same_metadata(input)


def torch_relu_override(x: torch.Tensor) -> torch.Tensor:
    """Metadata of ``torch.relu``: shaped like its input."""
    return _same_metadata(x)


def torch_nn_relu_override(self: torch.nn.ReLU, x: torch.Tensor) -> torch.Tensor:
    """Metadata of ``nn.ReLU``: shaped like its input."""
    return _same_metadata(x)


def functional_relu_override(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Metadata of ``F.relu`` (out of place only)."""
    if not inplace:
        return _same_metadata(x)
    raise AssertionError("don't support inplace functional.relu for metatensor analysis")


def torch_where_override(condition: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Metadata of ``torch.where``: the three operands broadcast together (their sum on meta
    has the broadcast shape and the promoted dtype)."""
    return _to_meta(condition) + _to_meta(x) + _to_meta(y)


def torch_abs_override(input: torch.Tensor, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Metadata of ``torch.abs`` (without ``out=``): shaped like its input."""
    if out is not None:
        raise AssertionError("Don't support in-place abs for MetaTensor analysis")
    return input


def _to_meta(t: Any) -> Any:
    return t.to(device="meta") if isinstance(t, torch.Tensor) else t


#: Function or module class -> the callable that computes its metadata instead (a module's
#: stand-in gets the module first). Add entries for operations meta tensors cannot run.
manual_meta_overrides: Dict[Callable[..., Any], Callable[..., Any]] = {
    # module classes (called with the module first)
    torch.nn.LayerNorm: nn_layernorm_override,
    torch.nn.ReLU: torch_nn_relu_override,
    torch.nn.Embedding: embedding_override,
    # functions
    torch.abs: torch_abs_override,
    torch.where: torch_where_override,
    torch.relu: torch_relu_override,
    torch.nn.functional.relu: functional_relu_override,
}


def gen_constructor_wrapper(target: _C) -> Tuple[Callable[..., Any], _C]:
    """``(wrapper, target)``: ``wrapper`` records a ``call_function`` of ``target`` when any
    argument is a Proxy (``torch.zeros(n, device=x.device)``) and calls it otherwise."""

    @functools.wraps(target)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        proxy = _find_proxy((args, kwargs))
        if proxy is None:
            return target(*args, **kwargs)
        return proxy.tracer.create_proxy("call_function", target, args, kwargs)

    return wrapper, target


# -- proxies -----------------------------------------------------------------------------------


class MetaProxy(Proxy):
    """A Proxy that may carry a meta tensor (``_tensor_meta``) describing its value; shape
    queries are answered from it without recording nodes."""

    def install_tensor_meta(self, tensor_meta: Any) -> None:
        """Attach the metadata (usually a meta tensor) computed for this value."""
        self._tensor_meta = tensor_meta

    def _meta(self) -> Any:
        # None when this proxy carries no metadata (then queries are recorded as nodes).
        return self.__dict__.get("_tensor_meta")

    def size(self, dim: Optional[int] = None) -> Any:
        """``torch.Size`` (or one dimension) from the metadata, else a recorded call."""
        meta = self._meta()
        if meta is None:
            args = (self,) if dim is None else (self, dim)
            return self.tracer.create_proxy("call_method", "size", args, {})
        return meta.size() if dim is None else meta.size(dim)

    def dim(self) -> Any:
        """Number of dimensions from the metadata, else a recorded call."""
        meta = self._meta()
        if meta is None:
            return self.tracer.create_proxy("call_method", "dim", (self,), {})
        return meta.dim()

    @property
    def shape(self) -> Any:
        """``torch.Size`` from the metadata, else a recorded ``getattr``."""
        meta = self._meta()
        if meta is None:
            return self.tracer.create_proxy("call_function", builtins.getattr, (self, "shape"), {})
        return meta.shape

    @property
    def dtype(self) -> Any:
        """dtype from the metadata, else a recorded ``getattr``."""
        meta = self._meta()
        if meta is None:
            return self.tracer.create_proxy("call_function", builtins.getattr, (self, "dtype"), {})
        return meta.dtype

    @property
    def device(self) -> "MetaDeviceAttribute":
        """Always traced (a ``getattr`` node once used), so the graph keeps the real device;
        metadata computation reads it as the meta device."""
        return MetaDeviceAttribute(self, "device")

    def __getattr__(self, k: str) -> Any:
        if k == "_tensor_meta":
            return self.__getattribute__(k)  # AttributeError: no metadata was installed
        if k in ("node", "tracer"):
            return Proxy.__getattr__(self, k)
        # Not recorded yet: a method call becomes one call_method node.
        return MetaAttribute(self, k)


class MetaAttribute(MetaProxy):
    """``meta_proxy.name``: a ``call_method`` when called, else a ``getattr`` node on use."""

    def __init__(self, root: MetaProxy, attr: str) -> None:
        self.root, self.attr, self.tracer = root, attr, root.tracer
        self._node: Optional[Node] = None

    @property
    def node(self) -> Node:  # type: ignore[override]
        """The ``getattr`` node, created on first use."""
        if self._node is None:
            made = self.tracer.create_proxy("call_function", getattr, (self.root, self.attr), {})
            self._node = made.node
        return self._node

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tracer.create_proxy("call_method", self.attr, (self.root,) + args, kwargs)


class MetaDeviceAttribute(MetaAttribute):
    """``meta_proxy.device``: traced like any attribute, the meta device for metadata."""


def proxys_to_metas(v: Any) -> Any:
    """The metadata standing for ``v``: a device attribute -> ``"meta"``, a MetaProxy -> its
    meta tensor, anything else unchanged. A proxy without metadata is an AssertionError."""
    if isinstance(v, MetaDeviceAttribute):
        return "meta"
    if not isinstance(v, Proxy):
        return v
    if not isinstance(v, MetaProxy):
        raise AssertionError(f"Expected MetaProxy but got {type(v)}")
    if "_tensor_meta" not in v.__dict__:
        raise AssertionError("MetaProxy does not have an associated meta")
    return v._tensor_meta


def _meta_operand(v: Any) -> Any:
    # What an operation runs on: the proxy's metadata, and tensors from elsewhere (a CPU
    # input given in meta_args, a constant) moved to the meta device so devices agree.
    v = proxys_to_metas(v)
    if type(v) is torch.device:
        return _META
    if isinstance(v, torch.Tensor) and v.device.type != "meta":
        return _ON_META.from_tensor(v)
    return v


class _MetaCopies(_MetaMode):
    """Meta copies that keep ``requires_grad``, as ``tensor.to(device="meta")`` does."""

    def from_tensor(self, t: torch.Tensor, static_shapes: bool = True) -> torch.Tensor:
        return t if t.device.type == "meta" else t.to(device="meta")


_ON_META = _MetaCopies()


# -- the tracer --------------------------------------------------------------------------------


class MetaTracer(Tracer):
    """A :class:`~fxkit.Tracer` whose proxies carry meta tensors (see the module docstring).

    ``trace(root, meta_args, concrete_args=None)``: ``meta_args`` maps input names to
    tensors (usually ``device="meta"``) giving their shapes and dtypes. Stateless modules
    created inside ``forward`` (``nn.ReLU()(x)``) are added to the root as
    ``<classname>_<i>`` when ``allow_insert_stateless_mods`` is set.
    """

    allow_insert_stateless_mods: bool = True

    # torch factories that take sizes or devices which may be traced values.
    _TORCH_METHODS_TO_PATCH = ["arange", "zeros", "ones", "full_like", "eye"]

    # fmt: off
    def create_proxy(self, kind: str, target: Target, args: Tuple[Any, ...],
                     kwargs: Dict[str, Any], name: Optional[str] = None,
                     type_expr: Optional[Any] = None,
                     proxy_factory_fn: Optional[Callable[[Node], Proxy]] = None) -> Any:
        # fmt: on
        """As :meth:`Tracer.create_proxy`, then compute the new value's metadata; a failure
        to compute it is a warning, not an error."""
        rv = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if kind == "placeholder":
            if target in self.meta_args:
                rv.install_tensor_meta(self.meta_args[target])
            return rv
        if kind not in _COMPUTED_KINDS:
            return rv
        try:
            meta = self._compute_meta(kind, target, args, kwargs)
            if not isinstance(rv, Proxy):
                raise AssertionError("Don't support composite output yet")
            rv.install_tensor_meta(meta)
        except Exception as e:  # noqa: BLE001  (the trace goes on without this metadata)
            warnings.warn(f"Could not compute metadata for {kind} target {target}: {e}")  # noqa: B028
        return rv

    def _compute_meta(self, kind: str, target: Any, args: Any, kwargs: Any) -> Any:
        if kind == "get_attr":
            value = _fake_attr(self.root, target, _ON_META)
            if not isinstance(value, torch.Tensor):
                with _no_tracing():
                    found = operator.attrgetter(target)(self.root)
                raise AssertionError(f"Expected Tensor, got {type(found)}")
            return value
        if target in self.orig_fns and "device" in kwargs:
            kwargs = {**kwargs, "device": "meta"}  # factories build on meta, not for real
        args, kwargs = map_aggregate((args, kwargs), _meta_operand)
        mod = self._submodule(target) if kind == "call_module" else None
        # Layers repeat: the same operation on operands of the same shapes gives the same
        # metadata, so each distinct one runs once per trace; torch's own operations, whose
        # results depend on nothing else, once per process.
        key = self._memo_key(kind, target, mod, args, kwargs)
        if key is not None:
            memo = _SHARED_MEMO if _is_torch_native(kind, target, mod) else self._memo
            known = memo.get(key, _NO_VAL)
            if known is not _NO_VAL:
                return known
        meta = self._run_on_meta(kind, target, mod, args, kwargs)
        if key is not None:
            if len(memo) >= _SHARED_MEMO_SIZE:
                memo.clear()
            memo[key] = meta
        return meta

    def _submodule(self, path: str) -> torch.nn.Module:
        mod = self._by_path.get(path)
        if mod is None:
            mod = self._by_path[path] = self.root.get_submodule(path)
        return mod

    def _run_on_meta(self, kind: str, target: Any, mod: Any, args: Any, kwargs: Any) -> Any:
        if kind == "call_function":
            stand_in = manual_meta_overrides.get(target)
            if stand_in is not None:
                with _no_tracing():
                    return stand_in(*args, **kwargs)
        elif mod is not None:
            stand_in = manual_meta_overrides.get(type(mod))
            with _no_tracing():
                if stand_in is not None:
                    return stand_in(mod, *args, **kwargs)
                if self._state_on_meta(mod):
                    return mod(*args, **kwargs)
        return _run_fake(self.root, kind, target, args, kwargs, _ON_META, self._meta_states)

    def _memo_key(self, kind: str, target: Any, mod: Any, args: Any, kwargs: Any) -> Any:
        """A hashable description of one operation on its operands, or None when its result
        may depend on more than that (in-place ops, modules holding other modules)."""
        if kind == "call_method":
            if target.endswith("_") or target in _MUTATING_METHODS:
                return None
            what: Any = target
        elif kind == "call_function":
            if target in _MUTATING_FUNCTIONS:
                return None
            what = target
        else:
            what = self._module_config(mod)
            if what is None or _global_module_hooks():
                return None
        try:
            stand_in = manual_meta_overrides.get(type(mod) if mod is not None else what)
            # Grad mode and the default dtype shape results too (requires_grad, factory dtype).
            context = (torch.is_grad_enabled(), torch.get_default_dtype(), stand_in)
            key = (kind, what, _operand_key(args), _operand_key(kwargs), context)
            hash(key)
        except (_Unkeyed, TypeError):  # TypeError: an unhashable target or constant
            return None
        return key

    def _module_config(self, mod: torch.nn.Module) -> Any:
        # What a leaf module's forward can read: its class, plain attributes and the shapes
        # of its parameters and buffers. Submodules, hooks or other state: not memoised.
        known = self._configs.get(id(mod), _NO_VAL)
        if known is not _NO_VAL:
            return known
        config = None
        if not mod._modules and not any(getattr(mod, h, None) for h in _HOOK_DICTS):
            try:
                plain = [
                    (k, _operand_key(v)) for k, v in mod.__dict__.items() if k not in _NOT_CONFIG
                ]
                state = [(k, _operand_key(t)) for k, t in mod._parameters.items()]
                state += [(k, _operand_key(t)) for k, t in mod._buffers.items()]
                config = (type(mod), tuple(plain), tuple(state))
                hash(config)
            except (_Unkeyed, TypeError):
                config = None
        self._configs[id(mod)] = config
        return config

    def _state_on_meta(self, mod: torch.nn.Module) -> bool:
        # A module already on the meta device runs as is (cheaper than swapping in copies).
        known = self._on_meta.get(id(mod))
        if known is None:
            tensors = [*mod.parameters(), *mod.buffers()]
            known = all(t.device.type == "meta" for t in tensors)
            self._on_meta[id(mod)] = known
        return known

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: Dict[str, Any]) -> Any:
        """As :meth:`Tracer.getattr`, except while a module runs for its metadata."""
        if getattr(self, "_disable_module_getattr", False):
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    # fmt: off
    def call_module(self, m: torch.nn.Module, forward: Callable[..., Any],
                    args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        # fmt: on
        """As :meth:`Tracer.call_module`; remembers ``forward`` as ``orig_forward``."""
        self.orig_forward = forward
        return super().call_module(m, forward, args, kwargs)

    def _insert_module_as_submodule(self, mod: torch.nn.Module) -> str:
        """Add ``mod`` to the root under the first free ``<classname>_<i>``; its path."""
        stem = type(mod).__name__.lower()
        index = 0
        while hasattr(self.root, f"{stem}_{index}"):
            index += 1
        path = f"{stem}_{index}"
        self.root.add_module(path, mod)
        return path

    def path_of_module(self, mod: torch.nn.Module) -> str:
        """As :meth:`Tracer.path_of_module`; a stateless module that is not part of the root
        is added to it (see ``allow_insert_stateless_mods``)."""
        try:
            return super().path_of_module(mod)
        except NameError:
            stateless = next(iter(mod.parameters()), None) is None and (
                next(iter(mod.buffers()), None) is None
            )
            if not (self.allow_insert_stateless_mods and stateless):
                raise
        path = self._insert_module_as_submodule(mod)
        self.prev_module = path
        return path

    def proxy(self, node: Node) -> MetaProxy:
        """Proxies of this tracer are :class:`MetaProxy`."""
        return MetaProxy(node, self)

    def trace(  # type: ignore[override]
        self,
        root: Union[torch.nn.Module, Callable[..., Any]],
        meta_args: Dict[str, torch.Tensor],
        concrete_args: Optional[Dict[str, Any]] = None,
    ) -> Graph:
        """Trace ``root`` with inputs described by ``meta_args`` (name -> tensor)."""
        if isinstance(meta_args, dict):
            self.meta_args = meta_args
        else:
            raise AssertionError(f"Expected dict for meta_args, got {type(meta_args)}")
        self._reset_trace_state()
        wrappers = [gen_constructor_wrapper(_torch_function(n)) for n in self._TORCH_METHODS_TO_PATCH]
        self.patched_torch_methods = dict(zip(self._TORCH_METHODS_TO_PATCH, wrappers))
        self.orig_fns = {orig for _, orig in wrappers}
        # The factories are swapped for the wrappers only for this trace and this thread,
        # through the tracer's autowrap trampolines (no process-wide patching).
        self._function_overrides = {orig: wrapper for wrapper, orig in wrappers}
        if torch not in self._autowrap_search:
            self._autowrap_search.append(torch)
        # Library code (HuggingFace) skips data-dependent shortcuts when it sees a torch.fx
        # Proxy *or* ``torch.jit.is_tracing()``; ours are not torch.fx Proxies, so the traced
        # code is told it is being traced, as fxkit's shape-aware tracing does.
        self._function_overrides[torch.jit.is_tracing] = _answers_true
        if torch.jit not in self._autowrap_search:
            self._autowrap_search.append(torch.jit)
        try:
            graph = super().trace(root, concrete_args)
        finally:
            self._reset_trace_state()  # drop the memo and module state copies
        graph._tracer_extras = {"meta_args": meta_args}
        return graph

    def _reset_trace_state(self) -> None:
        self._meta_states: Dict[int, Dict[str, Any]] = {}  # id(module) -> meta copies
        self._on_meta: Dict[int, bool] = {}  # id(module) -> state already on meta
        self._memo: Dict[Any, Any] = {}  # operation on operands -> its metadata
        self._configs: Dict[int, Any] = {}  # id(module) -> hashable configuration
        self._by_path: Dict[str, torch.nn.Module] = {}


# Metadata of torch's own operations and torch.nn leaf modules, shared by all traces.
_SHARED_MEMO: Dict[Any, Any] = {}
_SHARED_MEMO_SIZE = 8192
_TORCH_BUILTIN_MODULES = frozenset(
    {"torch", "torch._C._nn", "torch._C._fft", "torch._C._linalg", "torch._C._special", "_operator"}
)


def _is_torch_native(kind: str, target: Any, mod: Any) -> bool:
    if kind == "call_method":
        return True  # a method of the operand: a tensor method on tensor metadata
    if mod is not None:
        return type(mod).__module__.startswith("torch.nn.")
    if target is builtins.getattr:
        return True
    return type(target) is types.BuiltinFunctionType and (
        getattr(target, "__module__", None) in _TORCH_BUILTIN_MODULES
    )


def _global_module_hooks() -> bool:
    # Hooks registered for every module (torch.nn.modules.module.register_module_*_hook).
    registry = torch.nn.modules.module
    return bool(registry._global_forward_hooks or registry._global_forward_pre_hooks)


class _Unkeyed(Exception):
    """An operand with no hashable description: the operation is not memoised."""


_KEYED_AS_IS = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.Size})
_KEYED_AS_IS |= {type(Ellipsis), torch.layout, torch.memory_format}


def _operand_key(v: Any) -> Any:
    kind = type(v)
    if kind in _KEYED_AS_IS:
        return (kind, v)  # the type too: 1, 1.0 and True are equal keys otherwise
    if isinstance(v, torch.Tensor):
        if kind is not torch.Tensor and kind is not torch.nn.Parameter:
            raise _Unkeyed  # a subclass may carry more than its metadata
        return (kind, v.shape, v.stride(), v.dtype, v.device, v.requires_grad)
    if isinstance(v, (tuple, list)):  # immutable_list and named tuples too
        return (kind, tuple(map(_operand_key, v)))
    if isinstance(v, dict):
        return (kind, tuple((k, _operand_key(x)) for k, x in v.items()))
    if kind is slice:
        return (kind, _operand_key((v.start, v.stop, v.step)))
    raise _Unkeyed


_MUTATING_METHODS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__"})
_MUTATING_FUNCTIONS = frozenset(
    {operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv}
)
_MODULE_DICTS = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})
_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)  # fmt: skip
# Module bookkeeping that is not configuration (hooks are checked to be empty).
_NOT_CONFIG = _MODULE_DICTS | set(_HOOK_DICTS) | {"_is_full_backward_hook"}
_COMPUTED_KINDS = frozenset({"call_function", "call_method", "call_module", "get_attr"})


def _torch_function(name: str) -> Any:
    # What torch.<name> stands for, should another thread's trace have a trampoline there.
    found = getattr(torch, name)
    return _trampoline_origin.get(id(found), found)


def symbolic_trace(
    root: Union[torch.nn.Module, Callable[..., Any]],
    meta_args: Optional[Dict[str, torch.Tensor]] = None,
    concrete_args: Optional[Dict[str, Any]] = None,
) -> GraphModule:
    """Trace ``root`` with :class:`MetaTracer` into a :class:`~fxkit.GraphModule`.

    ``meta_args`` (required, name -> tensor) describes the inputs; shape-dependent Python
    (``if x.shape[0] > 2``) is resolved for those shapes::

        gm = symbolic_trace(model, meta_args={"x": torch.empty(8, 16, device="meta")})
    """
    tracer = MetaTracer()
    graph = tracer.trace(root, meta_args, concrete_args)  # type: ignore[arg-type]
    name = type(root).__name__ if isinstance(root, torch.nn.Module) else root.__name__
    return GraphModule(tracer.root, graph, name)
