"""fxkit's proxy dispatch mode: the per-op hot path of make_fx.

Each aten call that reaches the mode is, in order: refused (``NotImplemented``) if it holds a
tensor subclass the trace cannot describe, decomposed (user table, then torch's
CompositeImplicitAutograd kernel where autograd would have used it), or recorded as one
``call_function`` node whose arguments are the nodes of the tensors passed in; then run, and
its results bound to the node. Facts about an overload (tags, node name, whether it can
decompose) are computed once per overload and cached.
"""

from __future__ import annotations

import functools
import operator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor, fake_tensor_tls, unset_fake_temporarily
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _push_mode,
    _unset_infra_mode,
    autograd_would_have_decomposed,
)

from fxkit import traceback as fx_traceback
from fxkit.experimental._proxy_track import (
    _HANDLED,
    _PROXY_KEY,
    _SHAPE_QUERIES,
    _SYM_TYPES,
    CONSTANT_NUMEL_LIMIT,
    _fetch_sym_node,
    _remember_sym,
    _set_node_meta,
    _sym_origin,
    _track,
    record_unbacked_bindings,
    thunkify,
)
from fxkit.graph import Graph
from fxkit.traceback import _preserving

aten = torch.ops.aten
_DATA_DEPENDENT = torch.Tag.data_dependent_output
_SEEDED = torch.Tag.nondeterministic_seeded
_INPLACE_VIEW = torch.Tag.inplace_view
_IMPLICIT_KEY = torch._C.DispatchKey.CompositeImplicitAutograd
_DATA_DEPENDENT_MSG = (
    "It appears that you're trying to get value out of a tracing tensor with {} - erroring "
    "out! It's likely that this is caused by data-dependent control flow or similar.  It may "
    "be possible to trace this with dynamic shapes; try setting tracing_mode='symbolic' in "
    "your make_fx call."
)


class _OpFacts:
    """What the hot path asks about an overload, answered once."""

    __slots__ = ("data_dependent", "seeded", "may_decompose", "name")

    def __init__(self, func: Any) -> None:
        tags = func.tags
        self.data_dependent = _DATA_DEPENDENT in tags
        self.seeded = _SEEDED in tags
        self.may_decompose = func not in _SHAPE_QUERIES and func.has_kernel_for_dispatch_key(
            _IMPLICIT_KEY
        )
        self.name = _NAMER._target_to_str(func.overloadpacket.__name__)


_NAMER = Graph()  # only for its naming rule, which depends on no graph state
_FACTS: Dict[Any, _OpFacts] = {}


class _ArgScan:
    """One pass over an op's arguments: the tensors, whether any SymInt is among them, and
    the constant-propagation facts (are all tracked inputs constants, is any)."""

    __slots__ = ("tensors", "has_sym", "all_constant", "any_constant")

    def __init__(self) -> None:
        self.tensors: List[Tensor] = []
        self.has_sym = False

    def visit(self, items: Any) -> None:
        for a in items:
            if isinstance(a, Tensor):
                self.tensors.append(a)
            elif type(a) in _SYM_TYPES:
                self.has_sym = True
            elif type(a) is list or type(a) is tuple:
                self.visit(a)


class ProxyTorchDispatchMode(TorchDispatchMode):
    """Records the aten ops it sees into ``tracer``'s graph (see :func:`make_fx`).

    It is torch's PROXY infra mode: torch's own helpers (``get_proxy_mode``, SymInt
    arithmetic) find it where they look for torch's proxy mode.
    """

    def __init__(self, tracer: Any, tracing_mode: str, pre_dispatch: bool = False,
                 _allow_fake_constant: bool = False, _error_on_data_dependent_ops: bool = True,
                 decomposition_table: Optional[Mapping[Any, Callable[..., Any]]] = None
                 ) -> None:  # fmt: skip
        super().__init__(torch._C.DispatchKey.PreDispatch if pre_dispatch else None)
        self.tracer, self.tracing_mode, self.pre_dispatch = tracer, tracing_mode, pre_dispatch
        self._allow_fake_constant = _allow_fake_constant
        self._error_on_data_dependent_ops = _error_on_data_dependent_ops
        self._mode_key = _PROXY_KEY
        self.enter_stack: List[Any] = []
        self.decomposition_table: Mapping[Any, Callable[..., Any]] = decomposition_table or {}
        self._decomposition_table_stack: List[Mapping[Any, Callable[..., Any]]] = []
        self.decomp_layers = 0
        self.emulate_precision_casts = False

    @property
    def enable_tracing(self) -> bool:
        return True

    @classmethod
    def is_infra_mode(cls) -> bool:
        return True

    def __enter__(self) -> "ProxyTorchDispatchMode":
        # One proxy mode at a time: park the current one until this one exits.
        self.enter_stack.append(_unset_infra_mode(_PROXY_KEY))
        return super().__enter__()

    def __exit__(self, exc_type: Any, exc_value: Any, tb: Any) -> Any:
        try:
            return super().__exit__(exc_type, exc_value, tb)
        finally:
            # Bring back the proxy mode parked by __enter__, if any.
            parked = self.enter_stack.pop()
            if parked is not None:
                _push_mode(parked)

    @contextmanager
    def enable_decompositions(self, decomposition_table: Optional[Mapping[Any, Any]]
                              ) -> Iterator[Mapping[Any, Any]]:  # fmt: skip
        """Within the block, decompose with ``decomposition_table`` instead."""
        stack = self._decomposition_table_stack
        stack.append(self.decomposition_table)
        self.decomposition_table = decomposition_table or {}
        try:
            yield self.decomposition_table
        finally:
            self.decomposition_table = stack.pop()

    def __torch_dispatch__(self, func: Any, types: Any, args: Tuple[Any, ...] = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:  # fmt: skip
        if kwargs is None:
            kwargs = {}
        if func is torch.ops.prim.device.default:
            return func(*args, **kwargs)
        if _preserving.get():
            with set_original_aten_op(func):
                return self._record(func, args, kwargs)
        return self._record(func, args, kwargs)

    # -- the hot path --------------------------------------------------------------------------

    def _record(self, func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        tracer = self.tracer
        scan = _ArgScan()
        scan.visit(args)
        if kwargs:
            scan.visit(kwargs.values())
        by_id = tracer.tensor_tracker._by_id
        records = []
        for t in scan.tensors:
            entry = by_id.get(id(t))
            if entry is not None and entry[0]() is t:
                records.append(entry[1])
            elif type(t) not in _HANDLED and not (
                self._allow_fake_constant and isinstance(t, FakeTensor)
            ):
                return NotImplemented  # a subclass must unwrap itself first

        table = self.decomposition_table
        if table and func in table:
            with self:
                self.decomp_layers += 1
                out = table[func](*args, **kwargs)
                self.decomp_layers -= 1
                return out

        facts = _FACTS.get(func)
        if facts is None:
            facts = _FACTS[func] = _OpFacts(func)
        if (
            facts.may_decompose
            and not self.pre_dispatch
            and autograd_would_have_decomposed(func, scan.tensors)
        ):
            with self:
                out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out

        if func is aten.is_nonzero.default:
            with self:
                torch._check(
                    args[0].numel() == 1,
                    lambda: "Boolean value of Tensor with more than one value is ambiguous",
                )
                return (args[0] != 0).item()

        all_constant = not scan.has_sym and all(r.constant is not None for r in records)
        if facts.data_dependent:
            if all_constant:
                with unset_fake_temporarily():
                    return func(*_constants_of(args, by_id), **_constants_of(kwargs, by_id))
            if self._error_on_data_dependent_ops and not any(
                isinstance(t, FakeTensor) for t in scan.tensors
            ):
                raise RuntimeError(_DATA_DEPENDENT_MSG.format(func))

        node_args = _to_nodes(args, by_id, tracer)
        node_kwargs = {k: _to_node(v, by_id, tracer) for k, v in kwargs.items()} if kwargs else {}
        if func is aten.lift_fresh.default:
            # The lifted tensor is a stored constant: a copy keeps later in-place ops off it.
            func = aten.lift_fresh_copy.default
            facts = _FACTS.get(func) or _OpFacts(func)
        # The tracer's create_node copies preserved meta and stack traces; without those
        # the graph's own is all it would do.
        create = (
            tracer.create_node
            if _preserving.get() or tracer.record_stack_traces
            else tracer.graph.create_node
        )
        node = create("call_function", func, node_args, node_kwargs, facts.name)

        fake_mode = tracer._active_fake_mode
        if fake_mode is not None and fake_mode.allow_non_fake_inputs:
            args, kwargs = _convert_real_inputs(func, args, kwargs, scan.tensors, fake_mode)
        # SymInt arithmetic inside the kernel is deferred: recorded only if something uses it.
        saved_thunkify, tracer.enable_thunkify = tracer.enable_thunkify, True
        try:
            out = func(*args, **kwargs)
        finally:
            tracer.enable_thunkify = saved_thunkify

        constant = None
        if func is aten.lift_fresh_copy.default and out.numel() <= CONSTANT_NUMEL_LIMIT:
            with unset_fake_temporarily():
                constant = args[0].clone()
        elif (
            records
            and not facts.seeded
            and all_constant
            and any(r.constant is not None for r in records)
            and _all_small(out)
        ):
            with unset_fake_temporarily():
                constant = func(*_constants_of(args, by_id), **_constants_of(kwargs, by_id))
        record_unbacked_bindings(out, node)
        _track(out, node, constant, tracer)
        return out

    # -- SymInt arithmetic -----------------------------------------------------------------------

    def __sym_dispatch__(self, func: Any, types: Any, args: Tuple[Any, ...],
                         kwargs: Dict[str, Any]) -> Any:  # fmt: skip
        # x * 1 is x: no node, and no guard from comparing with 1.
        if func is operator.mul:
            for kept, other in ((0, 1), (1, 0)):
                if isinstance(args[other], int) and args[other] == 1:
                    return args[kept]
        if kwargs:
            raise AssertionError("Expected no keyword arguments")
        out = func(*args)
        if type(out) in _SYM_TYPES:
            tracer = self.tracer
            _remember_sym(tracer, out, thunkify(tracer, _sym_node_for, tracer, func, args, out))
        return out


_ORIGINAL_ATEN: ContextVar[Any] = ContextVar("fxkit_original_aten", default=None)


@contextmanager
def set_original_aten_op(func: Any) -> Iterator[None]:
    """While node meta is preserved, nodes made in the block record ``func`` (the outermost
    aten op being traced) as ``meta["original_aten"]``."""
    if _ORIGINAL_ATEN.get() is not None or not _preserving.get():
        yield
        return
    token = _ORIGINAL_ATEN.set(func)
    current = fx_traceback.get_current_meta()
    current["original_aten"] = func
    try:
        yield
    finally:
        _ORIGINAL_ATEN.reset(token)
        current["original_aten"] = None


# Calls that pre-dispatch graphs keep as nodes: they change how later ops run.
PRESERVED_PRE_DISPATCH = (
    torch._C._set_grad_enabled,
    torch.amp._enter_autocast,
    torch.amp._exit_autocast,
)


@functools.lru_cache(None)
def _sympy_handlers() -> Dict[Any, Callable[..., Any]]:
    """sympy expression head -> the Python callable that computes it on SymInts."""
    import sympy
    from torch.utils._sympy.interp import handlers

    table: Dict[Any, Callable[..., Any]] = {}
    for head, name in handlers().items():
        if hasattr(operator, name):
            table[head] = getattr(operator, name)
        elif name in ("maximum", "minimum"):
            pick = torch.sym_max if name == "maximum" else torch.sym_min
            table[head] = functools.partial(functools.reduce, pick)
    table[sympy.Add] = torch.sym_sum  # n-ary, unlike operator.add
    return table


_NOT_LITERAL = object()


def _sympy_literal(expr: Any) -> Any:
    """``expr`` as a Python number when it is one (or a sympy constant), else a sentinel."""
    if isinstance(expr, (int, float, bool)):
        return expr
    for flag, convert in (("is_Integer", int), ("is_Float", float)):
        if getattr(expr, flag):
            return convert(expr)
    return _NOT_LITERAL


def _rebuild_sym(tracer: Any, expr: Any, out: Any = None) -> Any:
    """Recover how an untracked SymInt (``out``, whose expression is ``expr``) derives from
    tracked symbols, registering that computation for ``out``; ``None`` if it cannot.

    Happens when a size was computed with tracing switched off and used with it back on.
    """
    known = tracer.sympy_expr_tracker.get(expr)
    if known is not None:
        return known.value
    literal = _sympy_literal(expr)
    if literal is not _NOT_LITERAL:
        return literal
    compute = _sympy_handlers().get(expr.func)
    parts = [_rebuild_sym(tracer, sub) for sub in expr.args]
    if compute is None or any(part is None for part in parts):
        return None
    if out is None:
        return compute(*parts)
    _remember_sym(tracer, out, thunkify(tracer, _sym_node_for, tracer, compute, tuple(parts), out))
    return out


def _sym_node_for(tracer: Any, func: Any, args: Tuple[Any, ...], out: Any) -> Any:
    """Record the SymInt computation ``func(*args) == out`` (``sym_sum`` takes a list)."""
    from fxkit.proxy import Proxy

    def arg(a: Any) -> Any:
        if type(a) not in _SYM_TYPES:
            return a
        # The tracked producer first, even for a value known to be constant: torch records
        # the computation from its source (dead-code elimination drops what goes unused).
        thunk = _sym_origin(a, tracer)
        return thunk.force().node if thunk is not None else _fetch_sym_node(a, tracer)

    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        node_args: Tuple[Any, ...] = (tuple(arg(a) for a in args[0]),)
    else:
        node_args = tuple(arg(a) for a in args)
    node = tracer.create_node("call_function", func, node_args, {})
    _set_node_meta(node, out, tracer)
    return Proxy(node, tracer)


def _to_node(a: Any, by_id: Dict[int, Any], tracer: Any) -> Any:
    if isinstance(a, Tensor):
        entry = by_id.get(id(a))
        if entry is not None and entry[0]() is a:
            return entry[1].node
        return tracer.create_arg(a)  # not made by the trace: a stored constant
    kind = type(a)
    if kind is list or kind is tuple:
        return kind(_to_node(x, by_id, tracer) for x in a)
    if kind in _SYM_TYPES:
        return _fetch_sym_node(a, tracer)
    if isinstance(a, (torch.dtype, torch.device, torch.memory_format, torch.layout)) or a is None:
        return a
    if isinstance(a, (int, float, bool, str, complex)):
        return a
    return tracer.create_arg(a)


def _to_nodes(args: Tuple[Any, ...], by_id: Dict[int, Any], tracer: Any) -> Tuple[Any, ...]:
    out = []
    for a in args:
        if isinstance(a, Tensor):
            entry = by_id.get(id(a))
            out.append(
                entry[1].node if entry is not None and entry[0]() is a else tracer.create_arg(a)
            )
        elif type(a) is int or type(a) is float or type(a) is bool or a is None:
            out.append(a)
        else:
            out.append(_to_node(a, by_id, tracer))
    return tuple(out)


def _convert_real_inputs(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                         tensors: List[Tensor], fake_mode: Any) -> Tuple[Any, Any]:  # fmt: skip
    """Hand the fake mode fakes of the real tensors (parameters) it would convert itself when
    they meet fake ones.

    The conversion is the fake mode's own (memoised per tensor), so results are unchanged; but
    with only fake inputs its dispatch cache applies, where a real input would bypass it.
    """
    has_ours = has_real = False
    for t in tensors:
        if isinstance(t, FakeTensor):
            has_ours = has_ours or t.fake_mode is fake_mode
        else:
            has_real = True
    # Only mixed calls: with no fake input at all, the fake mode runs the op for real.
    if not (has_ours and has_real):
        return args, kwargs
    if _INPLACE_VIEW in func.tags or fake_tensor_tls.allow_non_fake_inputs_override is False:
        return args, kwargs  # the fake mode raises its own error for these
    converter = fake_mode.fake_tensor_converter
    swap: Dict[int, Any] = {}
    for t in tensors:
        if not isinstance(t, FakeTensor):
            swap[id(t)] = converter.from_real_tensor(fake_mode, t)
    if not swap:
        return args, kwargs
    return _swap_tensors(args, swap), _swap_tensors(kwargs, swap)


def _swap_tensors(tree: Any, swap: Dict[int, Any]) -> Any:
    if isinstance(tree, Tensor):
        return swap.get(id(tree), tree)
    if isinstance(tree, dict):
        return {k: _swap_tensors(v, swap) for k, v in tree.items()}
    if type(tree) is list or type(tree) is tuple:
        return type(tree)(_swap_tensors(x, swap) for x in tree)
    return tree


def _constants_of(tree: Any, by_id: Dict[int, Any]) -> Any:
    """``tree`` with each tracked tensor replaced by its known constant value."""
    if isinstance(tree, Tensor):
        entry = by_id.get(id(tree))
        return entry[1].constant if entry is not None and entry[0]() is tree else tree
    if isinstance(tree, dict):
        return {k: _constants_of(v, by_id) for k, v in tree.items()}
    if type(tree) is list or type(tree) is tuple:
        return type(tree)(_constants_of(x, by_id) for x in tree)
    return tree


def _all_small(out: Any) -> bool:
    if isinstance(out, Tensor):
        return out.numel() <= CONSTANT_NUMEL_LIMIT
    if isinstance(out, (list, tuple)):
        return all(_all_small(x) for x in out)
    return True


__all__ = ["ProxyTorchDispatchMode", "set_original_aten_op"]
