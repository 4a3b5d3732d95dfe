"""Shape-aware tracing: proxies that carry a fake tensor, so shape questions get answers.

:class:`ShapeAwareTracer` gives every node it creates a ``meta["val"]``: the result of running
the node's operation on fake tensors (``torch._subclasses.FakeTensorMode``) built from the
example inputs. Nothing real is computed and no real parameter or buffer is touched.

Its proxies (:class:`ShapeProxy`) still record every operation, so ``x.size(0)`` stays a node
and the graph keeps working for other sizes where it can. Only where Python needs a concrete
value (``bool()`` in ``if``/``while``, ``len()``, iteration, ``int()``/``__index__``) does the
proxy answer from its fake value, and the answer is recorded as a *guard*: in the node's
``meta["guards"]`` (``(construct, value, "file:line")`` tuples) and in
:attr:`ShapeAwareTracer.guards`. The graph is valid for inputs that satisfy those guards.
``x.dtype`` and ``x.device`` are answered directly (they do not change with the batch);
read off an input, they are guards too. A loop that stops early over a traced value relies
only on it having at least the items it took (guard ``iter_min``). A recorded call whose example result is ``None`` (a library's "no mask needed") returns
``None`` to the traced code, as it does eagerly, guarded like the answers above.

:func:`shape_trace` (what ``symbolic_trace(m, example_inputs=...)`` runs) returns a
:class:`GuardedGraphModule` when the trace relied on guards: on each call it checks them for
the inputs at hand and raises :class:`GuardError` (naming the guard and the user's line)
instead of returning a result computed down the wrong branch (see :mod:`fxkit._shape_guards`).
A forward returning a dict subclass (HF's ``ModelOutput``) gets that type back, and an HF
key/value cache in it travels through the graph as its tensors and is rebuilt on return.

Values that depend on tensor *contents* (``if x.sum() > 0``) have no fake answer and still
raise a :class:`~fxkit.proxy.TraceError`, now saying that the value is data-dependent.
"""

from __future__ import annotations

import collections
import copy
import functools
import inspect
import operator
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.utils._pytree as pytree

from fxkit._patching import _find_proxy
from fxkit._shape_guards import (
    _NO_VAL,
    _STATIC_ATTRS,
    Guard,
    GuardedGraphModule,
    GuardError,
    _fake_attr,
    _GuardProgram,
    _no_tracing,
    _run_fake,
)
from fxkit._symbolic_trace import Tracer, _ArgLayout
from fxkit.graph_module import GraphModule
from fxkit.immutable_collections import immutable_dict
from fxkit.node import Node, map_arg
from fxkit.proxy import Attribute, Proxy, TraceError, _trace_error_text, _user_frame

__all__ = [
    "ShapeAwareTracer", "ShapeProxy", "Guard", "GuardError", "GuardedGraphModule", "shape_trace"
]  # fmt: skip

# Tensor factories whose size arguments are often traced ints (``torch.ones(b, n)``): called
# with a Proxy they are recorded, like autowrapped functions, instead of failing in torch's
# argument parser.
_FACTORIES = (
    "arange zeros ones full empty eye tensor as_tensor scalar_tensor rand randn randint linspace"
).split()

# Library functions recorded as one call instead of traced through: they build values with
# code no tracer can follow (vmap over index functions, data-dependent shortcuts). Resolved
# only from modules that are already imported.
_LIBRARY_LEAVES = {
    "transformers.masking_utils": (
        "create_causal_mask create_sliding_window_causal_mask create_chunked_causal_mask"
    ).split(),
}


def _library_leaves() -> List[Callable]:
    found = []
    for module_name, names in _LIBRARY_LEAVES.items():
        module = sys.modules.get(module_name)
        found += [getattr(module, n) for n in names if hasattr(module, n)]
    return found


_PLAIN_DICTS = (dict, collections.OrderedDict, immutable_dict)


def _answers_true() -> bool:
    return True


class _NoValue(Exception):
    pass


def _val_of(n: Node) -> Any:
    val = n.meta.get("val", _NO_VAL)
    if val is _NO_VAL:
        raise _NoValue(n.name)
    return val


class ShapeProxy(Proxy):
    """A Proxy whose node has a fake value; see the module docstring."""

    def __getattr__(self, k: str) -> Any:
        if k in _STATIC_ATTRS:
            val = self.node.meta.get("val")
            if isinstance(val, torch.Tensor):
                answer = getattr(val, k)
                if self.node.op == "placeholder":  # an input's dtype/device: guarded
                    self.tracer._note_input_attr(self.node, k, answer, sys._getframe(1))  # type: ignore[attr-defined]
                return answer
        if k in ("node", "tracer"):
            return Proxy.__getattr__(self, k)
        return _ShapeAttribute(self, k)

    def __setitem__(self, key: Any, value: Any) -> None:
        # In-place writes are common in model code (``mask[:, 0] = 1``); record them.
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __len__(self) -> int:
        return self.tracer._concrete(self, "len", len, sys._getframe(1))  # type: ignore[attr-defined]

    def __index__(self) -> int:
        return self.tracer._concrete(self, "index", _as_index, sys._getframe(1))  # type: ignore[attr-defined]

    def __int__(self) -> int:
        return self.tracer._concrete(self, "int", int, sys._getframe(1))  # type: ignore[attr-defined]

    def __float__(self) -> float:
        return self.tracer._concrete(self, "float", float, sys._getframe(1))  # type: ignore[attr-defined]


class _ShapeAttribute(Attribute, ShapeProxy):
    """``shape_proxy.attr``: an Attribute that answers shape questions like its owner."""


def _as_index(v: Any) -> int:
    return v.__index__()


def _guard_text(frame: Optional[Any]) -> str:
    f = _user_frame(frame)
    return f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "<unknown>"


class ShapeAwareTracer(Tracer):
    """A :class:`~fxkit.Tracer` that runs fake tensors alongside the proxies.

    Args:
        example_inputs: positional inputs of ``forward`` (tuple) or a name -> value dict.
            Tensors are only read for shape, dtype and device.
        meta_args: name -> tensor (``device="meta"`` tensors are fine), HuggingFace style.
            Meta tensors are given the device of the root's parameters (CPU if none).
        fake_mode: a ``FakeTensorMode`` to use instead of a fresh one.
        jit_tracing: make ``torch.jit.is_tracing()`` answer True to the traced code, so
            libraries (HuggingFace) skip data-dependent shortcuts.
        specialize_defaults: give inputs named by neither their default (see below).
        defaults_as_values: with ``specialize_defaults=False``, keep such inputs as
            placeholders but answer questions about them from their default (``explain``).
        **tracer_kwargs: passed on to :class:`~fxkit.Tracer`.

    Parameters of ``forward`` given by neither are specialised to their default value
    (``concrete_args``), as HuggingFace's tracer does: an absent ``attention_mask=None``
    stays ``None`` so ``if attention_mask is not None`` takes the branch it takes eagerly.
    """

    # Buffers read in forward become get_attr proxies, so ``self.inv_freq.expand(n, -1)``
    # with a traced ``n`` is recorded instead of failing in torch's argument parser.
    proxy_buffer_attributes = True

    # fmt: off
    def __init__(self, example_inputs: Any = None, meta_args: Optional[Mapping[str, Any]] = None,
                 *, fake_mode: Any = None, jit_tracing: bool = True,
                 specialize_defaults: bool = True, defaults_as_values: bool = False,
                 **tracer_kwargs: Any) -> None:
        # fmt: on
        super().__init__(**tracer_kwargs)
        if example_inputs is not None and not isinstance(example_inputs, (tuple, list, dict)):
            raise TypeError(
                "example_inputs must be a tuple of positional inputs or a dict of name -> "
                f"value, got {type(example_inputs).__name__}"
            )
        if meta_args is not None and not isinstance(meta_args, Mapping):
            raise TypeError(f"meta_args must be a dict of name -> tensor, got {type(meta_args)}")
        if fake_mode is None:
            from torch._subclasses.fake_tensor import FakeTensorMode

            fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.fake_mode = fake_mode
        factories = [getattr(torch, n) for n in _FACTORIES]
        leaves = _library_leaves()
        self._autowrap_function_ids |= {id(f) for f in factories + leaves}
        self._autowrap_search.append(torch)
        # A library leaf whose example result is None returns None to the traced code.
        self._function_overrides = {f: self._none_aware(f) for f in leaves}
        if jit_tracing:
            # Library code asks torch.jit.is_tracing() to pick its trace-friendly branch
            # (no data-dependent shortcuts); answer True to calls made by the traced code.
            self._function_overrides[torch.jit.is_tracing] = _answers_true
            self._autowrap_search.append(torch.jit)
        self.example_inputs = example_inputs
        self.specialize_defaults = specialize_defaults
        self.defaults_as_values = defaults_as_values
        self.meta_args = dict(meta_args or {})
        self.guards: List[Guard] = []
        self._guard_nodes: List[Node] = []  # the node each guard is about, in step
        self.output_type: Optional[type] = None  # a dict subclass forward returned
        self.output_caches: Dict[str, type] = {}  # output key -> cache class to rebuild
        self._input_vals: Dict[str, Any] = {}
        self._module_states: Dict[int, Dict[str, Any]] = {}

    # -- entry point ---------------------------------------------------------------------------

    def trace(self, root: Any, concrete_args: Optional[Dict[str, Any]] = None) -> Any:
        """Like :meth:`Tracer.trace`; unnamed inputs get their defaults as concrete_args."""
        fn = self._forward_of(root)
        params = _ArgLayout.of(inspect.unwrap(fn)).named[int(isinstance(root, torch.nn.Module)) :]
        given = self._name_inputs(params)
        if concrete_args is not None and not isinstance(concrete_args, dict):
            raise TypeError("ShapeAwareTracer takes concrete_args as a dict of name -> value")
        concrete = dict(concrete_args or {})
        sig = inspect.signature(fn)
        defaults: Dict[str, Any] = {}
        for name in params:
            default = sig.parameters[name].default
            if name not in given and name not in concrete and default is not sig.empty:
                defaults[name] = default
        if self.specialize_defaults:
            concrete.update(defaults)
        for starred in _ArgLayout.of(inspect.unwrap(fn)).starred() if self.specialize_defaults else ():
            # An unused *args / **kwargs is empty, as in an eager call without extras.
            concrete.setdefault(starred, {} if starred.startswith("**") else ())
        device = _root_device(root)
        self.guards, self._guard_nodes, self.output_type = [], [], None
        self.output_caches = {}
        self._module_states = {}
        with _no_tracing():
            self._input_vals = {
                n: pytree.tree_map(lambda v: self._fake(v, device), v) for n, v in given.items()
            }
        if self.defaults_as_values and not self.specialize_defaults:
            self._input_vals.update(defaults)
        return super().trace(root, concrete or None)

    def _forward_of(self, root: Any) -> Callable:
        if isinstance(root, torch.nn.Module):
            fn = getattr(type(root), self.traced_func_name, None)
            if fn is None:
                raise AttributeError(f"{type(root).__name__} has no {self.traced_func_name!r}")
            return fn
        if not callable(root):
            raise TypeError(f"can only trace an nn.Module or a function, got {type(root)}")
        return root

    def _name_inputs(self, params: Tuple[str, ...]) -> Dict[str, Any]:
        given: Dict[str, Any] = {}
        ex = self.example_inputs
        if isinstance(ex, dict):
            given.update(ex)
        elif ex is not None:
            if len(ex) > len(params):
                raise TypeError(
                    f"example_inputs has {len(ex)} values but forward takes {len(params)} "
                    f"named inputs {list(params)}"
                )
            given.update(zip(params, ex))
        overlap = set(given) & set(self.meta_args)
        if overlap:
            raise ValueError(f"inputs {sorted(overlap)} given in both example_inputs and meta_args")
        given.update(self.meta_args)
        unknown = [n for n in given if n not in params]
        if unknown:
            raise TypeError(f"example inputs {unknown} are not parameters; forward takes {params}")
        return given

    def _fake(self, v: Any, device: torch.device) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        if v.device.type == "meta":
            with self.fake_mode:
                return torch.empty_strided(
                    v.shape, v.stride(), dtype=v.dtype, device=device, requires_grad=v.requires_grad
                )
        return self.fake_mode.from_tensor(v, static_shapes=True)

    # -- values --------------------------------------------------------------------------------

    def proxy(self, node: Node) -> Proxy:
        return ShapeProxy(node, self)

    def _none_aware(self, fn: Callable) -> Callable:
        """Record ``fn`` as one call; if its example result is ``None``, return ``None`` (as
        eagerly, e.g. HF's mask builders when no mask is needed), guarded."""

        def call(*args: Any, **kwargs: Any) -> Any:
            if _find_proxy((args, kwargs)) is None:
                return fn(*args, **kwargs)
            out = self.create_proxy("call_function", fn, args, kwargs)
            out.node.meta["is_wrapped"] = True
            if out.node.meta.get("val", _NO_VAL) is None:
                self._add_guard(out.node, "none", True, sys._getframe(1))
                return None
            return out

        return call

    # fmt: off
    def create_args_for_root(self, root_fn: Callable[..., Any], is_module: bool,
                             concrete_args: Any = None) -> Tuple[Any, List[Any]]:
        # fmt: on
        fn, inputs = super().create_args_for_root(root_fn, is_module, concrete_args)

        @functools.wraps(fn)  # the return annotation is read through it
        def noting_output_type(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            # A dict subclass (HF's ModelOutput) becomes a plain dict in the graph; remember
            # the type so the traced module can hand back what the model does.
            if isinstance(out, dict) and type(out) not in _PLAIN_DICTS:
                self.output_type = type(out)
            if isinstance(out, dict) and any(map(_is_kv_cache, out.values())):
                # A key/value cache object is returned as its tensors (HF's legacy tuple
                # layout) and rebuilt around the traced module's result.
                self.output_caches = {k: type(v) for k, v in out.items() if _is_kv_cache(v)}
                out = {k: v.to_legacy_cache() if k in self.output_caches else v
                       for k, v in out.items()}  # fmt: skip
            return out

        return noting_output_type, inputs

    def create_arg(self, a: Any) -> Any:
        """As :meth:`Tracer.create_arg`; objects a node cannot hold (a library's config passed
        to a recorded call) are stored on the root as ``_<Type>_constant_<N>`` attributes."""
        try:
            return super().create_arg(a)
        except NotImplementedError:
            if isinstance(a, (Proxy, torch.Tensor)) or not _is_opaque(a):
                raise
        qualname = self._stash_constant(f"_{type(a).__name__}_constant_", _snapshot(a))
        return self.create_node("get_attr", qualname, (), {})

    # fmt: off
    def create_node(self, kind: str, target: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                    name: Optional[str] = None, type_expr: Optional[Any] = None) -> Node:
        # fmt: on
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        try:
            val = self._evaluate(node)
        except _NoValue:
            return node
        except Exception as e:  # noqa: BLE001  (a failing fake run only loses the answer)
            node.meta["val_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return node
        if val is not _NO_VAL:
            node.meta["val"] = val
        return node

    def _evaluate(self, node: Node) -> Any:
        op, target = node.op, node.target
        if op == "placeholder":
            return self._input_vals.get(target, _NO_VAL)  # type: ignore[arg-type]
        if op == "get_attr":
            return _fake_attr(self.root, target, self.fake_mode)  # type: ignore[arg-type]
        args, kwargs = map_arg((node.args, node.kwargs), _val_of)
        if op == "output":
            return args[0]
        return _run_fake(self.root, op, target, args, kwargs, self.fake_mode, self._module_states)

    # -- concrete answers ----------------------------------------------------------------------

    def _concrete(self, proxy: Proxy, construct: str, how: Callable[[Any], Any], frame: Any) -> Any:
        node = proxy.node
        val = node.meta.get("val", _NO_VAL)
        if val is _NO_VAL:
            why = _first_val_error(node)
            raise TraceError(
                _trace_error_text(
                    f"{construct}() of a traced value whose example value is unknown"
                    + (f" (computing it failed: {why})" if why else "")
                    + "; give example_inputs for every tensor input it depends on",
                    proxy,
                    frame,
                )
            )
        try:
            with _no_tracing():
                answer = how(val)
        except Exception as e:  # noqa: BLE001
            raise TraceError(
                _trace_error_text(
                    f"{construct}() of a value that depends on tensor data, not only on shapes "
                    f"({type(e).__name__}); it cannot be decided while tracing",
                    proxy,
                    frame,
                )
            ) from e
        self._add_guard(node, construct, answer, frame)
        return answer

    def _note_input_attr(self, node: Node, attr: str, answer: Any, frame: Any) -> None:
        if (attr, answer) not in [g[:2] for g in node.meta.get("guards", ())]:
            self._add_guard(node, attr, answer, frame)

    def _add_guard(self, node: Node, construct: str, answer: Any, frame: Any) -> None:
        guard = Guard(node.name, construct, answer, _guard_text(frame))
        node.meta.setdefault("guards", []).append(guard[1:])
        self.guards.append(guard)
        self._guard_nodes.append(node)

    def to_bool(self, obj: Proxy) -> bool:
        """``bool(proxy)``: the fake value's truth, recorded as a guard."""
        return self._concrete(obj, "bool", bool, sys._getframe(1))

    def iter(self, obj: Proxy) -> Iterator:
        """Iterate ``len(fake value)`` items, each a ``proxy[i]`` node made when reached."""
        n = self._concrete(obj, "iter", len, sys._getframe(1))
        return _GuardedIter(self, obj, n)

    def _replace_last_guard(self, node: Node, construct: str, answer: Any) -> None:
        last = self.guards[-1]._replace(construct=construct, value=answer)
        self.guards[-1] = last
        node.meta["guards"][-1] = last[1:]


class _GuardedIter:
    """Iteration over a traced value of ``n`` items. Code that stops early (``for x in
    proxy: ... break``, HF's ``ModelOutput`` probing its first field) relied only on there
    being at least as many items as it took: the guard says so until the loop runs out."""

    def __init__(self, tracer: ShapeAwareTracer, proxy: Proxy, n: int) -> None:
        self.tracer, self.proxy, self.n, self.i = tracer, proxy, n, 0
        self.guard = len(tracer.guards) - 1  # the one _concrete just recorded
        self._relied_on("iter_min", 0)

    def _relied_on(self, construct: str, answer: Any) -> None:
        tracer, node = self.tracer, self.proxy.node
        if len(tracer.guards) - 1 == self.guard:
            tracer._replace_last_guard(node, construct, answer)
        else:  # other guards came since: record a new one instead of rewriting history
            guard = tracer.guards[self.guard]._replace(construct=construct, value=answer)
            node.meta["guards"].append(guard[1:])
            tracer.guards.append(guard)
            tracer._guard_nodes.append(node)
            self.guard = len(tracer.guards) - 1

    def __iter__(self) -> "_GuardedIter":
        return self

    def __next__(self) -> Any:
        if self.i >= self.n:
            self._relied_on("iter", self.n)  # ran out: the exact count mattered
            raise StopIteration
        item = self.proxy[self.i]  # type: ignore[index]
        self.i += 1
        self._relied_on("iter_min", self.i)
        return item


def _first_val_error(node: Node, limit: int = 10000) -> Optional[str]:
    """Why ``node`` has no fake value: the error of the nearest input that failed to run."""
    todo, seen = [node], {node}
    while todo and len(seen) < limit:
        n = todo.pop(0)
        err = n.meta.get("val_error")
        if err:
            return err if n is node else f"at {n.name!r}: {err}"
        for inp in n.all_input_nodes:
            if inp not in seen and "val" not in inp.meta:
                seen.add(inp)
                todo.append(inp)
    return None


def _is_kv_cache(v: Any) -> bool:
    t = type(v)
    return t.__module__.startswith("transformers.") and hasattr(t, "from_legacy_cache")


def _snapshot(a: Any) -> Any:
    """A copy of an opaque constant as it is now: tracing may go on to mutate the object
    (an HF cache filled layer by layer) after the call that reads it was recorded."""
    try:
        return copy.deepcopy(a)
    except Exception:  # noqa: BLE001  (not copyable: the object itself, as before)
        return a


def _is_opaque(a: Any) -> bool:
    # Plain objects only: containers holding proxies must keep failing loudly.
    return not isinstance(a, (tuple, list, dict, set, slice, range)) and not callable(a)


def _root_device(root: Any) -> torch.device:
    if isinstance(root, torch.nn.Module):
        for t in root.parameters():
            if t.device.type != "meta":
                return t.device
    return torch.device("cpu")


# fmt: off
def shape_trace(root: Any, concrete_args: Optional[Dict[str, Any]] = None, *,
                example_inputs: Any = None, meta_args: Optional[Dict[str, Any]] = None,
                on_error: str = "raise", check_guards: bool = True) -> GraphModule:
    # fmt: on
    """``symbolic_trace(root, example_inputs=..., meta_args=...)``: a shape-aware trace.

    Returns a :class:`GuardedGraphModule` when the trace relied on guards or the forward
    returned a dict subclass, else a plain :class:`~fxkit.GraphModule`.
    ``check_guards=False`` turns the check off for this module (``gm.check_guards``).
    """
    tracer = ShapeAwareTracer(example_inputs, meta_args, on_error=on_error)
    graph = tracer.trace(root, concrete_args)
    name = type(root).__name__ if isinstance(root, torch.nn.Module) else root.__name__
    program = _GuardProgram(graph, tracer.guards, tracer._guard_nodes)
    guarded = program.checks or program.input_attrs
    if not guarded and tracer.output_type is None and not tracer.output_caches:
        return GraphModule(tracer.root, graph, name)
    gm = GuardedGraphModule(tracer.root, graph, name)
    if guarded:
        gm.meta["fxkit_guards"] = program
    if tracer.output_type is not None:
        gm.meta["fxkit_output_type"] = tracer.output_type
    if tracer.output_caches:
        gm.meta["fxkit_output_caches"] = tracer.output_caches
    if not check_guards:
        gm.check_guards = False
    return gm
