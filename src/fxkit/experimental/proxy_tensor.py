"""Aten-level capture: run a program under a dispatch mode and record every aten op it reaches.

:func:`make_fx` is the entry point. It returns a function that, called with example inputs,
runs ``f`` once under a :class:`ProxyTorchDispatchMode` and returns an fxkit
:class:`~fxkit.graph_module.GraphModule` whose graph lists the aten overloads that ran, with
``meta["val"]`` (a fake tensor, or a SymInt) and ``meta["tensor_meta"]`` on every node::

    gm = make_fx(model, tracing_mode="fake", _allow_non_fake_inputs=True)(x)

Tracing modes: ``"real"`` runs the real kernels, ``"fake"`` runs on fake tensors with static
shapes and ``"symbolic"`` gives the inputs symbolic sizes (torch's ``ShapeEnv``, reached through
:mod:`fxkit.interop`). The tracer keeps one record per live tensor (keyed by identity, held
weakly) and does the least per-op work that still yields torch's graph.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import traceback
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

from fxkit import traceback as fx_traceback
from fxkit._symbolic_trace import PH, Tracer
from fxkit.experimental import _proxy_dispatch, _proxy_track
from fxkit.experimental._proxy_dispatch import PRESERVED_PRE_DISPATCH, ProxyTorchDispatchMode
from fxkit.experimental._proxy_interp import DecompositionInterpreter, selective_decompose
from fxkit.experimental._proxy_track import (
    _SYM_TYPES,
    _track,
    _value_for_meta,
    disable_proxy_modes_tracing,
    get_proxy_mode,
    init_proxy_trackers,
    maybe_disable_thunkify,
    maybe_enable_thunkify,
    py_sym_types,
)
from fxkit.graph_module import GraphModule
from fxkit.node import Node
from fxkit.traceback import _preserving

aten = torch.ops.aten

# Public names, grouped: the capture entry points, then decomposition, then mode helpers.
__all__ = ["make_fx", "dispatch_trace", "PythonKeyTracer"]
__all__ += ["DecompositionInterpreter", "selective_decompose", "py_sym_types"]
__all__ += ["get_proxy_mode", "get_innermost_proxy_mode", "handle_sym_dispatch"]
__all__ += ["maybe_enable_thunkify", "maybe_disable_thunkify"]

# Also importable from here, as from torch's module.
set_original_aten_op = _proxy_dispatch.set_original_aten_op
CONSTANT_NUMEL_LIMIT = _proxy_track.CONSTANT_NUMEL_LIMIT
HANDLED_TYPES = _proxy_track.HANDLED_TYPES
_ProxyTensor = _proxy_track._ProxyTensor
extract_val = _proxy_track.extract_val
set_meta = _proxy_track.set_meta
snapshot_fake = _proxy_track.snapshot_fake
thunkify = _proxy_track.thunkify
track_tensor_tree = _proxy_track.track_tensor_tree
get_proxy_slot = _proxy_track.get_proxy_slot
set_proxy_slot = _proxy_track.set_proxy_slot
has_proxy_slot = _proxy_track.has_proxy_slot

# --- the tracer ---------------------------------------------------------------------------------


_FXKIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _forward_stack_text() -> str:
    """The user's stack as torch's make_fx records it: only ``forward`` frames (and
    ``torch/__init__.py``), minus the files torch's shape machinery deems uninteresting."""
    from torch.utils._traceback import CapturedTraceback

    from fxkit.interop import torch_symbolic_shapes

    skip = torch_symbolic_shapes().uninteresting_files()
    frames = [
        fr
        for fr in CapturedTraceback.extract().summary()
        if (fr.name == "forward" or fr.filename.endswith("torch/__init__.py"))
        and fr.filename not in skip
        and not fr.filename.startswith(_FXKIT_DIR)  # fxkit's module-call patch is a "forward"
    ]
    return "".join(traceback.StackSummary.from_list(frames).format()).strip()


def _autograd_seq_nr() -> Optional[int]:
    """``meta["seq_nr"]`` under preserved node meta: the autograd sequence number of the op
    being recorded (the backward node's, inside a backward), linking forward to backward."""
    current = fx_traceback.get_current_meta()
    if current.get("in_grad_fn", 0) > 0:
        seq_nr = current["grad_fn_seq_nr"][-1]
    else:
        # The counter was just bumped by the op being recorded.
        seq_nr = torch.autograd._get_sequence_nr() - 1
    replay = fx_traceback.get_current_replay_node()
    if replay is not None and "seq_nr" in replay.meta:
        seq_nr = replay.meta["seq_nr"]
    return seq_nr


class PythonKeyTracer(Tracer):
    """The fxkit :class:`~fxkit.Tracer` make_fx records into: submodules are traced through
    (never leaves), attribute reads return real values, and tensors the trace did not produce
    become ``get_attr`` nodes (``_param_constant<N>`` for parameters, ``_tensor_constant<N>``
    otherwise)."""

    record_source = False  # aten nodes have no source line of their own to show

    def __init__(self) -> None:
        super().__init__(autowrap_modules=())
        init_proxy_trackers(self)
        self._param_names: Optional[Dict[int, str]] = None

    def trace(self, root: Any, concrete_args: Any = None) -> Any:
        """:meth:`Tracer.trace`, forgetting the previous root's parameter names first."""
        self._param_names = None
        return super().trace(root, concrete_args)

    def call_module(self, m: torch.nn.Module, forward: Callable[..., Any], args: Any,
                    kwargs: Any) -> Any:  # fmt: skip
        """Trace through every submodule: aten graphs have no module calls."""
        return forward(*args, **kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: Dict[str, Any]) -> Any:
        """Module attributes are read as they are; their tensors are recorded where used."""
        return attr_val

    def create_arg(self, a: Any) -> Any:
        """Parameters become ``get_attr`` nodes of ``root`` (stored as ``_param_constant<N>``
        when ``root`` does not own them); SymInts known to be constant become ints."""
        if isinstance(a, torch.nn.Parameter):
            names = self._param_names
            if names is None:  # the root's own parameters, gathered once per trace
                names = self._param_names = {id(p): n for n, p in self.root.named_parameters()}
            name = names.get(id(a))
            if name is None:
                name = names[id(a)] = self.get_fresh_qualname("_param_constant")
                setattr(self.root, name, a)
            return self.create_node("get_attr", name, (), {})
        if type(a) in _SYM_TYPES:
            if a.node.constant is None:
                raise AssertionError("a.node.constant should not be None")
            return a.node.constant
        return super().create_arg(a)

    def unwrap_proxy(self, e: Any) -> Any:
        """The proxy tracked for ``e`` (a tensor or SymInt), else ``e`` itself."""
        if isinstance(e, Tensor):
            found = self.tensor_tracker.get(e)
            return found.proxy if found is not None else e
        if type(e) in _SYM_TYPES:
            found = self.symnode_tracker.get(e)
            return found.force() if found is not None else e
        return e

    def create_node(self, kind: str, target: Any, args: Any, kwargs: Any,
                    name: Optional[str] = None, type_expr: Any = None) -> Node:  # fmt: skip
        """A node as :class:`~fxkit.Tracer` makes it; ``get_attr`` nodes of tensors also get
        ``meta["val"]``."""
        forward_frames_only = self.record_stack_traces and self._record_forward_stack_traces_only
        if forward_frames_only:
            self.record_stack_traces = False  # recorded below, from forward frames only
            try:
                node = super().create_node(kind, target, args, kwargs, name, type_expr)
            finally:
                self.record_stack_traces = True
            if not node.meta.get("stack_trace"):
                text = _forward_stack_text()
                if text:
                    node.meta["stack_trace"] = text
        else:
            node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if _preserving.get():
            seq_nr = _autograd_seq_nr()
            if seq_nr is not None:
                node.meta["seq_nr"] = seq_nr
        if kind in ("placeholder", "output"):
            node.meta.pop("stack_trace", None)
        elif kind == "get_attr":
            attr = getattr(self.root, target)
            if isinstance(attr, Tensor):
                with disable_proxy_modes_tracing():
                    node.meta["val"] = _value_for_meta(attr, self)
        return node


def get_innermost_proxy_mode() -> Optional[ProxyTorchDispatchMode]:
    """The active proxy mode (there is at most one), or ``None``."""
    return get_proxy_mode()


def handle_sym_dispatch(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run ``func`` on SymInt arguments through the active proxy mode, recording it."""
    mode = get_proxy_mode()
    if not mode:
        raise AssertionError("Expected proxy mode to be set")
    with disable_proxy_modes_tracing():
        return mode.__sym_dispatch__(func, [], args, kwargs)


@contextmanager
def decompose(decomposition_table: Optional[Mapping[Any, Callable[..., Any]]]) -> Iterator[Any]:
    """Within the block, the active proxy mode decomposes with ``decomposition_table``."""
    mode = get_proxy_mode()
    if mode is None:
        raise AssertionError("Expected proxy mode to be set")
    with mode.enable_decompositions(decomposition_table) as table:
        yield table


# --- make_fx ------------------------------------------------------------------------------------


def _positional_shim(fn: Callable[..., Any], nargs: int) -> Callable[..., Any]:
    """A function of ``arg0 .. arg<nargs-1>`` calling ``fn``: tracing needs named inputs."""
    names = ", ".join(f"arg{i}" for i in range(nargs))
    namespace: Dict[str, Any] = {"fn": fn}
    exec(f"shim = lambda {names}: fn({names})", namespace)  # noqa: S102
    return namespace["shim"]


fake_signature = _positional_shim


def _must_keep(node: Node) -> bool:
    """For dead-code elimination: must this node stay even if unused? Only size accessors and
    SymInt arithmetic on SymInts are known to be free of effects."""
    if node.is_impure() or node.target in PRESERVED_PRE_DISPATCH:
        return True
    target = node.target
    if node.op == "call_function" and target in _ACCESSORS:
        return False
    if isinstance(node.meta.get("val"), py_sym_types) and all(
        isinstance(a.meta.get("val"), py_sym_types) for a in node.args if isinstance(a, Node)
    ):
        return False
    return True


_ACCESSORS = frozenset(
    (
        aten.sym_size.default,
        aten.sym_size.int,
        aten.sym_stride.default,
        aten.sym_stride.int,
        aten.sym_storage_offset.default,
        aten.sym_numel.default,
    )
)


def dispatch_trace(root: Any, tracer: Tracer, concrete_args: Optional[Tuple[Any, ...]] = None
                   ) -> GraphModule:  # fmt: skip
    """Trace ``root`` with ``tracer`` (a :class:`PythonKeyTracer` whose proxy mode is active),
    drop unused size accessors, and wrap the graph in a GraphModule named after ``root``."""
    graph = tracer.trace(root, concrete_args)
    graph.eliminate_dead_code(_must_keep)
    from torch._inductor.fx_passes.dedupe_symint_uses import dedupe_symints

    dedupe_symints(graph)  # duck-typed: works on fxkit graphs
    name = type(root).__name__ if isinstance(root, torch.nn.Module) else root.__name__
    return GraphModule(tracer.root, graph, name)


def wrap_key(f: Callable[..., Any], tensors: Any, tracer: Any, pre_dispatch: bool
             ) -> Callable[..., Any]:  # fmt: skip
    """A function of placeholder proxies that binds them to ``tensors``, runs ``f`` on the
    tensors and returns the proxies of what ``f`` returned."""
    flat_tensors, _ = pytree.tree_flatten(tensors)

    @functools.wraps(f)
    def wrapped(*proxies: Any, **_unused: Any) -> Any:
        flat_proxies, _ = pytree.tree_flatten(proxies)
        if len(flat_proxies) != len(flat_tensors):
            raise AssertionError(
                f"Expected same length: {len(flat_proxies)} vs {len(flat_tensors)}"
            )
        with disable_proxy_modes_tracing():
            _track(flat_tensors, [p.node for p in flat_proxies], None, tracer)
        out = f(*tensors)
        return pytree.tree_map(functools.partial(_result_proxy, tracer), out)

    return wrapped


def _result_proxy(tracer: Any, value: Any) -> Any:
    if isinstance(value, Tensor):
        found = tracer.tensor_tracker.get(value)
        return value if found is None else found.proxy
    if type(value) in _SYM_TYPES:
        return get_proxy_slot(value, tracer).force()
    return value


class _AutocastCacheOff(contextlib.ContextDecorator):
    """Turn torch's autocast cache off for a block (usable as a decorator too)."""

    # The autocast cache hands out casts of parameters made outside the trace: untracked.
    def __enter__(self) -> None:
        self._was_on = torch.is_autocast_cache_enabled()
        torch.set_autocast_cache_enabled(False)

    def __exit__(self, *exc_info: Any) -> None:
        torch.set_autocast_cache_enabled(self._was_on)


disable_autocast_cache = _AutocastCacheOff


def get_torch_dispatch_modes() -> List[Any]:
    """The dispatch modes now active, innermost last."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return _get_current_dispatch_mode_stack()


def wrapper_and_args_for_make_fx(func: Callable[..., Any], args: Tuple[Any, ...],
                                 kwargs: Dict[str, Any]) -> Tuple[Callable[..., Any], List[Any]]:  # fmt: skip
    """``func`` as a function of one flat list (what make_fx traces), and that list."""
    flat, spec = pytree.tree_flatten((args, kwargs))

    def call_flat(flat_args: List[Any]) -> Any:
        a, kw = pytree.tree_unflatten(flat_args, spec)
        return func(*a, **kw)

    return call_flat, flat


class _MakeFx:
    """One make_fx configuration; :meth:`trace` builds fresh modes for every call."""

    def __init__(self, decomposition_table: Optional[Mapping[Any, Callable[..., Any]]],
                 tracing_mode: str, allow_non_fake_inputs: bool, pre_dispatch: bool,
                 allow_fake_constant: bool, error_on_data_dependent_ops: bool,
                 record_stack_traces: bool = False) -> None:  # fmt: skip
        table = dict(decomposition_table or {})
        if aten.sym_numel.default not in table:
            from torch._decomp.decompositions import sym_numel

            table[aten.sym_numel.default] = sym_numel
        self.decomposition_table = table
        self.tracing_mode, self.pre_dispatch = tracing_mode, pre_dispatch
        self.allow_non_fake_inputs = allow_non_fake_inputs
        self.allow_fake_constant = allow_fake_constant
        self.error_on_data_dependent_ops = error_on_data_dependent_ops
        self.record_stack_traces = record_stack_traces

    def _fake_mode_for(self, args: Tuple[Any, ...]) -> Optional[FakeTensorMode]:
        if self.tracing_mode == "real":
            return None
        from torch._guards import detect_fake_mode

        from fxkit.interop import torch_symbolic_shapes

        found = detect_fake_mode(args)
        if found is not None:
            if self.tracing_mode == "symbolic" and found.shape_env is None:
                raise AssertionError("shape_env should be set if tracing with 'symbolic'")
            return found
        import torch._functorch.config as functorch_config

        symbolic = self.tracing_mode == "symbolic"
        with functorch_config.patch(fake_tensor_allow_unsafe_data_ptr_access=False):
            return FakeTensorMode(
                allow_fallback_kernels=not symbolic,
                allow_non_fake_inputs=self.allow_non_fake_inputs,
                shape_env=torch_symbolic_shapes().ShapeEnv(),
                static_shapes=not symbolic,
            )

    def _fakify(self, args: Tuple[Any, ...], mode: FakeTensorMode) -> Tuple[Any, ...]:
        from torch._dynamo.source import ConstantSource

        counter = iter(range(1 << 30))
        symbolic = self.tracing_mode == "symbolic"

        def convert(x: Any) -> Any:
            if isinstance(x, Tensor):
                return mode.from_tensor(x, source=ConstantSource(f"input{next(counter)}"))
            if type(x) is int and symbolic:
                source = ConstantSource(f"input{next(counter)}")
                env = mode.shape_env
                return env.create_symintnode(
                    env.create_symbol(x, source, positive=None), hint=x, source=source
                )
            return x

        return pytree.tree_map(convert, args)

    def trace(self, f: Callable[..., Any], *args: Any) -> GraphModule:
        import torch._dynamo  # noqa: F401  (imported before any mode is active, as torch does)

        placeholders = pytree.tree_map(lambda _: PH, args)
        fake_mode = self._fake_mode_for(args)
        if fake_mode is not None:
            args = self._fakify(args, fake_mode)
        unwrapped = inspect.unwrap(f)
        func = f
        code = getattr(unwrapped, "__code__", None)
        if code is None or code.co_flags & inspect.CO_VARARGS:
            func = _positional_shim(f, len(placeholders))
        tracer = PythonKeyTracer()
        tracer._active_fake_mode = fake_mode
        tracer._symbolic = self.tracing_mode == "symbolic"
        if self.record_stack_traces:
            # Like torch: only frames of forward functions, and only what the config allows.
            from fxkit import config

            tracer.record_stack_traces = not getattr(config, "do_not_emit_stack_traces", False)
            tracer._record_forward_stack_traces_only = True
        mode = ProxyTorchDispatchMode(
            tracer,
            self.tracing_mode,
            pre_dispatch=self.pre_dispatch,
            _allow_fake_constant=self.allow_fake_constant,
            _error_on_data_dependent_ops=self.error_on_data_dependent_ops,
            decomposition_table=self.decomposition_table,
        )
        with ExitStack() as stack:
            if fake_mode is not None:
                stack.enter_context(fake_mode)
            if tracer._symbolic:
                from torch._dispatch.python import enable_python_dispatcher

                stack.enter_context(enable_python_dispatcher())
            stack.enter_context(mode)
            stack.enter_context(_AutocastCacheOff())
            gm = dispatch_trace(
                wrap_key(func, args, tracer, self.pre_dispatch),
                tracer=tracer,
                concrete_args=tuple(placeholders),
            )
        if tracer._symbolic:
            gm.shape_env = fake_mode.shape_env
        return gm


def make_fx(f: Callable[..., Any],
            decomposition_table: Optional[Mapping[Any, Callable[..., Any]]] = None,
            tracing_mode: str = "real", _allow_non_fake_inputs: bool = False, *,
            pre_dispatch: bool = False, record_module_stack: bool = False,
            _allow_fake_constant: bool = False, _error_on_data_dependent_ops: bool = True,
            record_stack_traces: bool = False, proxy_module_inputs: bool = False,
            _disable_torch_fn_metadata_mode: bool = False) -> Callable[..., GraphModule]:  # fmt: skip
    """Return a function that traces ``f`` on its arguments into an aten-level GraphModule.

    ``tracing_mode``: ``"real"`` (run real kernels), ``"fake"`` (fake tensors, static
    shapes) or ``"symbolic"`` (fake tensors with symbolic sizes; ``gm.shape_env`` holds the
    symbols). ``decomposition_table`` maps aten overloads to Python decompositions applied
    while tracing. ``_allow_non_fake_inputs`` lets real tensors (a module's parameters)
    meet fake ones in fake/symbolic mode.
    """
    if tracing_mode not in ("real", "fake", "symbolic"):
        raise AssertionError(f"tracing_mode must be real/fake/symbolic, got {tracing_mode}")
    if pre_dispatch:
        # torch's pre-dispatch mode stack admits only torch's own proxy mode class: trace with
        # torch's make_fx (through interop) and convert the result to an fxkit GraphModule.
        from fxkit.interop import torch_make_fx

        return torch_make_fx(
            f, decomposition_table=decomposition_table, tracing_mode=tracing_mode,
            _allow_non_fake_inputs=_allow_non_fake_inputs, pre_dispatch=True,
            record_module_stack=record_module_stack, _allow_fake_constant=_allow_fake_constant,
            _error_on_data_dependent_ops=_error_on_data_dependent_ops,
            record_stack_traces=record_stack_traces,
        )  # fmt: skip
    # torch's make_fx records module stacks only for a torch.compile'd module (``_orig_mod``).
    if (record_module_stack and hasattr(f, "_orig_mod")) or proxy_module_inputs:
        raise NotImplementedError(
            "make_fx: record_module_stack on a compiled module and proxy_module_inputs are "
            "not implemented by fxkit"
        )
    tracer = _MakeFx(
        decomposition_table,
        tracing_mode,
        _allow_non_fake_inputs,
        pre_dispatch,
        _allow_fake_constant,
        _error_on_data_dependent_ops,
        record_stack_traces,
    )

    @functools.wraps(f)
    def wrapped(*args: Any) -> GraphModule:
        return tracer.trace(f, *args)

    return wrapped


def get_isolated_graphmodule(func: Callable[..., Any], args: Tuple[Any, ...],
                             kwargs: Dict[str, Any], tracing_mode: str = "real",
                             decomposition_table: Optional[Mapping[Any, Any]] = None
                             ) -> GraphModule:  # fmt: skip
    """Trace ``func(*args, **kwargs)`` into its own GraphModule, even inside another trace."""
    call_flat, flat = wrapper_and_args_for_make_fx(func, args, kwargs)
    with disable_proxy_modes_tracing():
        return make_fx(
            call_flat, decomposition_table=decomposition_table, tracing_mode=tracing_mode
        )(flat)
