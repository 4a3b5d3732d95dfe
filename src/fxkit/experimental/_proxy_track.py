"""Shared state of fxkit's aten tracer: per-tensor and per-SymInt records, ``meta["val"]``
construction, deferred (thunked) size accessors, and binding results to nodes."""

from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager, nullcontext
from operator import getitem as _getitem
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import SymBool, SymFloat, SymInt, Tensor
from torch._subclasses.fake_impls import fast_detach
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._mode_utils import no_dispatch
from torch.utils._python_dispatch import _push_mode, _unset_infra_mode
from torch.utils._thunk import Thunk

from fxkit.node import Node
from fxkit.passes.shape_prop import _extract_tensor_metadata
from fxkit.proxy import Proxy

aten = torch.ops.aten
py_sym_types = (SymInt, SymFloat, SymBool)
_SYM_TYPES = frozenset(py_sym_types)
HANDLED_TYPES = (Tensor, torch.nn.Parameter, FakeTensor)
_HANDLED = frozenset(HANDLED_TYPES)
# Results with at most this many elements, computed only from constants, stay constants.
CONSTANT_NUMEL_LIMIT = 1
_PROXY_KEY = torch._C._TorchDispatchModeKey.PROXY
_SHAPE_QUERIES = frozenset((aten.size.default, aten.stride.default, aten.storage_offset.default))


class _ProxyTensor:
    """What the tracer knows about a tensor: the node that made it and, for small tensors built
    from literals (``torch.tensor(3.0)``), their real value."""

    __slots__ = ("node", "constant", "_tracer")

    def __init__(self, node: Node, constant: Optional[Tensor], tracer: Any) -> None:
        self.node, self.constant, self._tracer = node, constant, tracer

    @property
    def proxy(self) -> Proxy:
        return Proxy(self.node, self._tracer)


class _TensorTracker:
    """``tracer.tensor_tracker``: tensor -> :class:`_ProxyTensor`, by identity, holding the
    tensors weakly so a long trace does not keep every activation alive."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: Dict[int, Tuple[Any, _ProxyTensor]] = {}

    def get(self, t: Tensor, default: Any = None) -> Any:
        entry = self._by_id.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else default

    def __getitem__(self, t: Tensor) -> _ProxyTensor:
        found = self.get(t)
        if found is None:
            raise KeyError(t)
        return found

    def __contains__(self, t: object) -> bool:
        return self.get(t) is not None  # type: ignore[arg-type]

    def __setitem__(self, t: Tensor, value: _ProxyTensor) -> None:
        self._by_id[id(t)] = (weakref.ref(t), value)

    def __len__(self) -> int:
        return sum(1 for ref, _ in self._by_id.values() if ref() is not None)


class _SymTracker:
    """``tracer.symnode_tracker``: SymInt/SymFloat/SymBool -> thunk of its proxy, keyed by the
    SymNode inside (equal symbols made twice are distinct SymNodes). The first entry wins."""

    __slots__ = ("sym_node_dict",)

    def __init__(self) -> None:
        self.sym_node_dict: Dict[Any, Any] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.sym_node_dict[key.node] = value

    def __getitem__(self, key: Any) -> Any:
        return self.sym_node_dict[key.node]

    def __contains__(self, key: Any) -> bool:
        return key.node in self.sym_node_dict

    def get(self, key: Any, default: Any = None) -> Any:
        return self.sym_node_dict.get(key.node, default)

    def __len__(self) -> int:
        return len(self.sym_node_dict)


# --- meta["val"] -------------------------------------------------------------------------------


def _fake_mode_of_trace(tracer: Any) -> FakeTensorMode:
    """The fake mode that describes real tensors for ``meta["val"]``: the trace's own one, or a
    private one made once per tracer (allocating a mode per node would dominate the trace)."""
    mode = tracer._val_fake_mode
    if mode is None:
        mode = tracer._val_fake_mode = FakeTensorMode(allow_fallback_kernels=True)
    return mode


def snapshot_fake(val: Tensor, include_real: bool = False) -> Optional[Tensor]:
    """A detached alias of the fake tensor ``val`` (same storage, no autograd history)."""
    if isinstance(val, FakeTensor):
        return fast_detach(val.fake_mode, val, include_real)
    return val.detach()


def _describe_real(t: Tensor, tracer: Any) -> Optional[Tensor]:
    if t.is_sparse:
        return None
    mode = tracer._active_fake_mode or _fake_mode_of_trace(tracer)
    if torch._C._get_dispatch_mode(_PROXY_KEY) is not None:
        # A proxy mode is live (DecompositionInterpreter binds inputs with it on): as in torch,
        # the empty_strided that makes the description is itself traced.
        with mode:
            return torch.empty_strided(t.shape, t.stride(), device=t.device, dtype=t.dtype)
    # What ``empty_strided`` under the fake mode makes (a meta tensor wrapped for the mode),
    # built directly: this runs for every node of a real-mode trace.
    with no_dispatch():
        meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return FakeTensor(mode, meta, t.device)


def _value_for_meta(val: Any, tracer: Any, include_real: bool = False) -> Any:
    """What ``meta["val"]`` holds for a traced value: fakes for tensors, SymInts as they are."""
    if isinstance(val, FakeTensor):
        return fast_detach(val.fake_mode, val, include_real)
    if isinstance(val, Tensor):
        return _describe_real(val, tracer)
    if isinstance(val, (list, tuple)):
        return val.__class__([_value_for_meta(x, tracer) for x in val])
    if isinstance(val, dict):
        return {k: _value_for_meta(v, tracer) for k, v in val.items()}
    return val


def extract_val(val: Any, include_real: bool = False) -> Any:
    """``meta["val"]`` for ``val``: fake tensors detached, real tensors described by an
    empty fake tensor of the same shape, strides, dtype and device, other values unchanged."""
    mode = get_proxy_mode()
    tracer = mode.tracer if mode is not None else _StandaloneVals()
    return _value_for_meta(val, tracer, include_real)


class _StandaloneVals:
    """Stands in for a tracer when :func:`extract_val` runs outside any trace."""

    _val_fake_mode = None
    _active_fake_mode = None


def _set_node_meta(node: Node, val: Any, tracer: Any) -> None:
    meta = node.meta
    meta["val"] = _value_for_meta(val, tracer, node.op == "placeholder")
    if isinstance(val, Tensor) and not val.is_sparse:
        meta["tensor_meta"] = _extract_tensor_metadata(val)


def set_meta(proxy: Any, val: Any) -> Any:
    """Record ``val`` on ``proxy``'s node as ``meta["val"]`` (and ``meta["tensor_meta"]``)."""
    node = proxy.node if isinstance(proxy, Proxy) else proxy
    tracer = getattr(proxy, "tracer", None)
    if not hasattr(tracer, "_val_fake_mode"):
        tracer = _StandaloneVals()
    _set_node_meta(node, val, tracer)
    return proxy


# --- thunks for symbolic sizes ------------------------------------------------------------------


@contextmanager
def _thunkify_enabled(tracer: Any, enable: bool = True) -> Iterator[None]:
    saved = tracer.enable_thunkify
    tracer.enable_thunkify = enable
    try:
        yield
    finally:
        tracer.enable_thunkify = saved


def thunkify(tracer: Any, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Thunk:
    """``f(*args)`` now, or deferred until first forced when the tracer allows thunks."""
    if tracer.enable_thunkify:
        return Thunk(functools.partial(f, *args, **kwargs))
    value = f(*args, **kwargs)
    return Thunk(lambda: value)


@contextmanager
def maybe_disable_thunkify() -> Iterator[None]:
    """Within the block, SymInt computations are recorded at once, not deferred."""
    mode = get_proxy_mode()
    with _thunkify_enabled(mode.tracer, False) if mode is not None else nullcontext():
        yield


@contextmanager
def maybe_enable_thunkify() -> Iterator[None]:
    """Within the block, SymInt computations enter the graph only if something uses them."""
    mode = get_proxy_mode()
    with _thunkify_enabled(mode.tracer, True) if mode is not None else nullcontext():
        yield


def _sym_accessor(tracer: Any, target: Any, args: tuple, val: Any) -> Proxy:
    node = tracer.create_node("call_function", target, args, {})
    _set_node_meta(node, val, tracer)
    return Proxy(node, tracer)


def _remember_sym(tracer: Any, sym: Any, thunk: Thunk) -> None:
    tracked = tracer.symnode_tracker
    if sym.node in tracked.sym_node_dict:
        return  # the first producer wins: later equal values reuse it
    tracked.sym_node_dict[sym.node] = thunk
    expr = sym.node.expr
    if getattr(expr, "is_Symbol", False):
        tracer.sympy_expr_tracker[expr] = _SymExprEntry(thunk, sym)


class _SymExprEntry:
    __slots__ = ("proxy", "value")

    def __init__(self, proxy: Any, value: Any) -> None:
        self.proxy, self.value = proxy, value


def _track_tensor_sizes(tensor: Tensor, node: Node, tracer: Any) -> None:
    """Offer a deferred ``sym_size``/``sym_stride``/... node for each symbolic size of
    ``tensor`` (symbolic traces, and unbacked sizes such as ``nonzero``'s)."""
    with _thunkify_enabled(tracer):
        for i, s in enumerate(tensor.shape):
            if type(s) is SymInt:
                _remember_sym(
                    tracer,
                    s,
                    thunkify(tracer, _sym_accessor, tracer, aten.sym_size.int, (node, i), s),
                )
        sparse = tensor.layout != torch.strided
        if not sparse:
            for i, s in enumerate(tensor.stride()):
                if type(s) is SymInt:
                    accessor = aten.sym_stride.int
                    _remember_sym(
                        tracer, s, thunkify(tracer, _sym_accessor, tracer, accessor, (node, i), s)
                    )
        numel = tensor.numel()
        if type(numel) is SymInt:
            accessor = aten.sym_numel.default
            _remember_sym(
                tracer, numel, thunkify(tracer, _sym_accessor, tracer, accessor, (node,), numel)
            )
        offset = tensor.storage_offset() if not sparse else 0
        if type(offset) is SymInt:
            accessor = aten.sym_storage_offset.default
            _remember_sym(
                tracer, offset, thunkify(tracer, _sym_accessor, tracer, accessor, (node,), offset)
            )


# --- tracking results ---------------------------------------------------------------------------


def _track(value: Any, node: Any, constant: Any, tracer: Any) -> None:
    """Attach ``node`` (a Node, or a list of nodes for a list input) to ``value``'s tensors
    and SymInts, recording their meta; tuple results get one ``getitem`` node per element."""
    if isinstance(value, Tensor):
        if isinstance(value, FakeTensor) and value._has_symbolic_sizes_strides:
            _track_tensor_sizes(value, node, tracer)
        tracer.tensor_tracker._by_id[id(value)] = (
            weakref.ref(value),
            _ProxyTensor(node, constant, tracer),
        )
        _set_node_meta(node, value, tracer)
    elif type(value) in _SYM_TYPES:
        _set_node_meta(node, value, tracer)
        _remember_sym(tracer, value, thunkify(tracer, Proxy, node, tracer))
    elif isinstance(value, (tuple, list)):
        if isinstance(node, Node):
            _set_node_meta(node, value, tracer)
            parts = [
                tracer.create_node("call_function", _getitem, (node, i), {})
                for i in range(len(value))
            ]
        else:
            parts = node
        for i, item in enumerate(value):
            _track(item, parts[i], None if constant is None else constant[i], tracer)
    elif isinstance(value, dict):
        whole = isinstance(node, Node)
        if whole:
            _set_node_meta(node, value, tracer)
        for key, item in value.items():
            sub = tracer.create_node("call_function", _getitem, (node, key), {}) if whole else None
            _track(item, sub if whole else node[key], None, tracer)


def _as_node(p: Any) -> Any:
    if isinstance(p, Proxy):
        return p.node
    if isinstance(p, (list, tuple)):
        return [_as_node(x) for x in p]
    if isinstance(p, dict):
        return {k: _as_node(v) for k, v in p.items()}
    return p


_FAKE_KEY = torch._C._TorchDispatchModeKey.FAKE


def record_unbacked_bindings(out: Any, node: Any) -> None:
    """If producing ``out`` minted unbacked symbols (``.item()``, ``nonzero``), file where
    each one sits in ``out`` under ``node.meta["unbacked_bindings"]``.

    The symbols are looked up in the shape env of the fake mode on the dispatch stack, as
    torch does: that is the user's own mode when they fakified the inputs themselves. Only
    the outermost result of an op is bound: the per-element ``getitem`` nodes are not.
    """
    fake_mode = torch._C._get_dispatch_mode(_FAKE_KEY)
    shape_env = getattr(fake_mode, "shape_env", None) if fake_mode is not None else None
    if shape_env is None or not (
        shape_env.pending_fresh_unbacked_symbols or shape_env.ignorable_fresh_unbacked_symbols
    ):
        return  # the common case, kept off the hot path; torch's helper would do nothing
    from fxkit.interop import torch_symbolic_shapes

    # Also consumes the pending list, so a later op does not claim these symbols.
    paths = torch_symbolic_shapes().compute_unbacked_bindings(shape_env, out)
    if not paths:
        return
    if isinstance(node, Proxy):
        node = node.node
    if not isinstance(node, Node):
        raise AssertionError(f"Expected Proxy, got {node}")
    node.meta["unbacked_bindings"] = paths


def track_tensor_tree(inner_res: Any, proxy_res: Any, *, constant: Any, tracer: Any) -> Any:
    """Associate each tensor/SymInt in ``inner_res`` with the matching proxy in ``proxy_res``
    (a Proxy, or a structure of them shaped like ``inner_res``); returns ``inner_res``.
    Fresh unbacked symbols in ``inner_res`` are bound on ``proxy_res``'s node."""
    record_unbacked_bindings(inner_res, proxy_res)
    _track(inner_res, _as_node(proxy_res), constant, tracer)
    return inner_res


def _fetch_sym_node(sym: Any, tracer: Any) -> Any:
    """The graph value for a SymInt argument: its constant, or the node that computes it."""
    sym_node = sym.node
    if sym_node.constant is not None:
        return sym_node.constant
    expr = sym_node.expr
    if expr.is_number:
        return (
            bool(expr)
            if type(sym) is SymBool
            else int(expr)
            if type(sym) is SymInt
            else float(expr)
        )
    thunk = _sym_origin(sym, tracer)
    if thunk is None:
        raise RuntimeError(f"{sym} ({type(sym)}, {id(sym)})is not tracked with proxy for {tracer}")
    return thunk.force().node


def _sym_origin(sym: Any, tracer: Any) -> Any:
    """The thunk of the proxy that computes ``sym``: recorded for its SymNode, else for its
    symbol, else rebuilt from the tracked symbols its expression uses; ``None`` if unknown."""
    thunk = tracer.symnode_tracker.sym_node_dict.get(sym.node)
    if thunk is not None or not sym.node.is_symbolic():
        return thunk
    entry = tracer.sympy_expr_tracker.get(sym.node.expr)
    if entry is not None:
        return entry.proxy
    from fxkit.experimental._proxy_dispatch import _rebuild_sym

    _rebuild_sym(tracer, sym.node.expr, sym)
    return tracer.symnode_tracker.sym_node_dict.get(sym.node)


class _NoDefault:
    pass


_NO_DEFAULT = _NoDefault()


def _tracker_for(obj: Any, tracer: Any) -> Tuple[Any, Any]:
    """The tracker of a tensor (or script object) and the key it is filed under there."""
    if isinstance(obj, Tensor):
        return tracer.tensor_tracker, obj
    return tracer.script_object_tracker, id(obj)


def has_proxy_slot(obj: Any, tracer: Any) -> bool:
    """Whether ``tracer`` has recorded where ``obj`` (a tensor or SymInt) comes from."""
    return get_proxy_slot(obj, tracer, False, lambda _: True)


def get_proxy_slot(obj: Any, tracer: Any, default: Any = _NO_DEFAULT,
                   transform: Callable[[Any], Any] = lambda x: x) -> Any:  # fmt: skip
    """``transform`` of what ``tracer`` recorded for ``obj`` (a :class:`_ProxyTensor` for a
    tensor, a thunk of its proxy for a SymInt); ``default`` if nothing, else RuntimeError."""
    if type(obj) in _SYM_TYPES:
        found = _sym_origin(obj, tracer)
    else:
        tracker, key = _tracker_for(obj, tracer)
        found = tracker.get(key)
    if found is None:
        if default is _NO_DEFAULT:
            raise RuntimeError(
                f"{obj} ({type(obj)}, {id(obj)})is not tracked with proxy for {tracer}"
            )
        return default
    return transform(found)


def set_proxy_slot(obj: Any, tracer: Any, proxy: Any) -> None:
    """Record ``proxy`` as the origin of ``obj``: a tensor's record is replaced (in-place ops
    move it on), a SymInt keeps its first one."""
    if isinstance(obj, Tensor):
        tracer.tensor_tracker[obj] = proxy
    elif type(obj) in _SYM_TYPES:
        _remember_sym(tracer, obj, proxy)
    else:
        tracer.script_object_tracker[id(obj)] = proxy


@contextmanager
def disable_proxy_modes_tracing() -> Iterator[Any]:
    """Suspend the active proxy mode for the block; yields it (or ``None``)."""
    parked = _unset_infra_mode(_PROXY_KEY)
    try:
        yield parked
    finally:
        if parked is not None:
            _push_mode(parked)


def get_proxy_mode() -> Any:
    """The proxy tracing mode now active (pre-dispatch or not), or ``None``."""
    pre = torch._ops._get_dispatch_mode_pre_dispatch(_PROXY_KEY)
    mode = torch._C._get_dispatch_mode(_PROXY_KEY)
    if not (pre is None or mode is None):
        raise AssertionError(f"pre_dispatch_mode={pre}, mode={mode}")
    return pre or mode


def init_proxy_trackers(tracer: Any) -> None:
    """Give ``tracer`` the empty trackers and flags the proxy dispatch mode reads and writes
    (tensor, SymNode, sympy-expression and opaque-object proxies; thunking; fake modes)."""
    tracer.tensor_tracker = _TensorTracker()
    tracer.symnode_tracker = _SymTracker()
    tracer.sympy_expr_tracker = {}
    tracer.script_object_tracker = {}
    tracer.opaque_tracker = {}
    tracer._opaque_real_obj_proxy = {}
    tracer.torch_fn_metadata = None
    tracer.torch_fn_counts = {}
    tracer.enable_thunkify = False
    tracer._val_fake_mode = None
    tracer._active_fake_mode = None
    tracer._symbolic = False
