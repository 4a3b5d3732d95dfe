"""Guards of a shape-aware trace, checked when the traced module is called.

A shape-aware trace (:mod:`fxkit._shape_trace`) answers shape questions from fake tensors and
records each answer as a :class:`Guard`. :class:`_GuardProgram` keeps, apart from the graph,
the nodes those answers were computed from; :class:`GuardedGraphModule` re-runs them on meta
(or, failing that, fake) tensors for each new input signature and raises :class:`GuardError`
where an answer differs. The helpers that run one node on fake values live here too; the
tracer uses them while tracing.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import operator
from typing import Any, Dict, Iterator, List, NamedTuple, Tuple

import torch
import torch.utils._pytree as pytree

from fxkit._patching import _current_run
from fxkit.graph_module import GraphModule
from fxkit.node import Node, map_aggregate, map_arg

__all__ = ["Guard", "GuardError", "GuardedGraphModule"]

_NO_VAL = object()
# Read straight from the fake value instead of recording a getattr node (guarded on inputs).
_STATIC_ATTRS = frozenset({"dtype", "device", "is_cuda", "layout"})


class Guard(NamedTuple):
    """One concrete answer a shape-aware trace relied on."""

    node: str  # name of the node whose value was made concrete
    construct: str  # bool len iter iter_min int index float none, or dtype device (inputs)
    value: Any
    where: str  # "file:line" of the user code that asked


def _fake_attr(root: torch.nn.Module, target: str, fake_mode: Any) -> Any:
    with _no_tracing():
        value = operator.attrgetter(target)(root)
        if isinstance(value, torch.Tensor):
            return fake_mode.from_tensor(value, static_shapes=True)
    # Opaque constants (a model config) are their own value; modules are not values.
    return _NO_VAL if isinstance(value, torch.nn.Module) else value


# fmt: off
def _run_fake(root: torch.nn.Module, op: str, target: Any, args: Any, kwargs: Any,
              fake_mode: Any, states: Dict[int, Dict[str, Any]]) -> Any:
    # fmt: on
    """Run one call node on fake values (module calls on fake copies of their state)."""
    with _no_tracing(), fake_mode:
        if op == "call_function":
            return target(*args, **kwargs)
        if op == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if op == "call_module":
            mod = root.get_submodule(target)
            state = _fake_state(mod, fake_mode, states)
            return torch.func.functional_call(mod, state, args, kwargs)
    return _NO_VAL


def _fake_state(mod: torch.nn.Module, fake_mode: Any, states: Dict[int, Dict[str, Any]]) -> Any:
    # Fake copies of the module's parameters and buffers: the fake run can then mutate
    # "its" buffers (BatchNorm statistics) without touching the real ones.
    state = states.get(id(mod))
    if state is None:
        state = {}
        named = (mod.named_parameters(remove_duplicate=False), mod.named_buffers())
        for name, t in (item for group in named for item in group):
            state[name] = fake_mode.from_tensor(t, static_shapes=True)
        states[id(mod)] = state
    return state


@contextlib.contextmanager
def _no_tracing() -> Iterator[None]:
    # Module calls and wrapped functions run for real (on fake tensors), not traced.
    token = _current_run.set(None)
    try:
        yield
    finally:
        _current_run.reset(token)


# -- guards checked on call --------------------------------------------------------------------


class GuardError(RuntimeError):
    """A call's inputs contradict an answer the shape-aware trace relied on."""


class _Ref:
    """An argument of a guard step: the value of an earlier step."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _GuardProgram:
    """The part of a traced graph that computes guarded values, kept apart from the graph
    (so editing or dead-code-eliminating the graph cannot lose a guard), and the input
    signatures already checked."""

    def __init__(self, graph: Any, guards: List[Guard], nodes: List[Node]) -> None:
        live = {n for n in graph.nodes}
        pairs = [(g, n) for g, n in zip(guards, nodes) if n in live]
        # An input's dtype/device is read off the input itself, no run needed.
        self.input_attrs = [
            (n.target, g.construct, g.value, g.where, g.node)
            for g, n in pairs
            if g.construct in _STATIC_ATTRS
        ]
        pairs = [(g, n) for g, n in pairs if g.construct not in _STATIC_ATTRS]
        needed: set = set()
        todo = [n for _, n in pairs]
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.add(n)
                todo.extend(n.all_input_nodes)
        index: Dict[Node, int] = {}
        self.params: List[Tuple[str, tuple]] = []
        self.steps: List[Tuple[str, Any, Any, Any]] = []
        for n in graph.nodes:
            if n.op == "placeholder":
                self.params.append((n.target, tuple(n.args)))
            if n in needed:
                index[n] = len(self.steps)
                args, kwargs = map_arg((n.args, n.kwargs), lambda x: _Ref(index[x]))
                self.steps.append((n.op, n.target, args, kwargs))
        self.checks = [(index[n], g.construct, g.value, g.where, g.node) for g, n in pairs]
        self.pytree_codegen = getattr(graph._codegen, "pytree_info", None) is not None
        self.accepted: set = set()

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "accepted"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.accepted = set()

    def check(self, gm: GraphModule, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        key = _input_key(args, kwargs)
        if key is not None and key in self.accepted:
            return
        inputs = self._bind(gm, args, kwargs)
        if inputs is None:
            return  # the call itself will fail with the usual argument error
        for param, attr, expected, where, name in self.input_attrs:
            got = getattr(inputs[param], attr, None)
            if got != expected:
                raise GuardError(_guard_failure_text(attr, name, expected, got, where))
        # Meta tensors first (several times cheaper); fake tensors where meta cannot run an
        # operation (a CPU constant mixed in) or a guard fails, so errors are not spurious.
        for mode in (_MetaMode(), None):
            values = self._run(gm, inputs, mode)
            for step, construct, expected, where, name in self.checks:
                try:
                    got = _answer(construct, values[step], expected)
                except Exception as e:  # noqa: BLE001  (reported as a failed guard below)
                    got = e
                if isinstance(got, Exception) or got != expected:
                    if mode is None:
                        raise GuardError(_guard_failure_text(construct, name, expected, got, where))
                    break
            else:
                break
        if key is not None:
            if len(self.accepted) >= 256:
                self.accepted.clear()
            self.accepted.add(key)

    def _bind(self, gm: GraphModule, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        if self.pytree_codegen:
            # forward(*structured inputs) flattens them into the graph's placeholders.
            try:
                call = inspect.signature(gm.forward).bind(*args, **kwargs)
            except TypeError:
                return None
            call.apply_defaults()
            args, kwargs = tuple(gm.graph._codegen.process_inputs(*call.args)), {}
        bound: Dict[str, Any] = {}
        rest = dict(kwargs)
        pos = 0
        for name, default in self.params:
            if name.startswith("**"):
                bound[name], rest = rest, {}
            elif name.startswith("*"):
                bound[name], pos = tuple(args[pos:]), len(args)
            elif pos < len(args):
                bound[name], pos = args[pos], pos + 1
            elif name in rest:
                bound[name] = rest.pop(name)
            elif default:
                bound[name] = default[0]
            else:
                return None
        return None if rest or pos < len(args) else bound

    def _run(self, gm: GraphModule, inputs: Dict[str, Any], fake_mode: Any) -> List[Any]:
        if fake_mode is None:
            from torch._subclasses.fake_tensor import FakeTensorMode

            fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        states: Dict[int, Dict[str, Any]] = {}
        values: List[Any] = []

        def fake(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return fake_mode.from_tensor(v, static_shapes=True)
            return v

        on_meta = isinstance(fake_mode, _MetaMode)

        def deref(a: Any) -> Any:
            if type(a) is not _Ref:
                # On meta tensors every device the graph names (x.device read while
                # tracing, device="cpu") is the meta device.
                return _META if on_meta and type(a) is torch.device else a
            value = values[a.index]
            if type(value) is _GuardFailed:
                raise value.error  # the first failure is the one worth reporting
            return value

        for op, target, args, kwargs in self.steps:
            try:
                if op == "placeholder":
                    with _no_tracing():
                        value = pytree.tree_map(fake, inputs[target])
                elif op == "get_attr":
                    value = _fake_attr(gm, target, fake_mode)
                else:
                    args, kwargs = map_aggregate((args, kwargs), deref)
                    if on_meta and isinstance(kwargs.get("device"), str):
                        kwargs = {**kwargs, "device": _META}
                    value = _run_fake(gm, op, target, args, kwargs, fake_mode, states)
            except Exception as e:  # noqa: BLE001  (the guards reading it fail, naming it)
                value = _GuardFailed(e)
            values.append(value)
        return values


_META = torch.device("meta")


class _MetaMode:
    """Stands in for a FakeTensorMode with plain meta tensors (no real device, no data)."""

    def from_tensor(self, t: torch.Tensor, static_shapes: bool = True) -> torch.Tensor:
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


class _GuardFailed:
    """The guarded value could not be computed for these inputs."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _answer(construct: str, value: Any, expected: Any) -> Any:
    if isinstance(value, _GuardFailed):
        raise value.error
    if construct == "none":
        return value is None
    with _no_tracing():
        if construct in ("len", "iter"):
            return len(value)
        if construct == "iter_min":  # at least ``expected`` items
            return expected if len(value) >= expected else len(value)
        if construct == "index":
            return value.__index__()
        return {"bool": bool, "int": int, "float": float}[construct](value)


_SAID = {"bool": "was {}", "len": "had length {}", "iter": "had {} items to iterate",
         "int": "was int {}", "index": "was index {}", "float": "was float {}",
         "iter_min": "had at least {} items to iterate", "none": "was None: {}",
         "dtype": "had dtype {}", "device": "was on device {}", "is_cuda": "had is_cuda {}",
         "layout": "had layout {}"}  # fmt: skip


def _guard_failure_text(construct: str, name: str, expected: Any, got: Any, where: str) -> str:
    path, _, line = where.rpartition(":")
    source = linecache.getline(path, int(line)).strip() if line.isdigit() else ""
    now = (
        f"could not be computed for them ({type(got).__name__}: {got})"
        if isinstance(got, Exception)
        else "it " + _SAID["iter" if construct == "iter_min" else construct].format(got)
    )
    return (
        f"inputs do not match what this module was traced for: at {where}"
        + (f"\n    {source}\n" if source else " ")
        + f"the traced value {name!r} {_SAID[construct].format(expected)} at trace time, "
        f"but for these inputs {now}. The graph followed the traced answer, so its result "
        f"would be wrong. Trace again with example_inputs like these, or set "
        f"module.check_guards = False to skip this check."
    )


def _leaf_key(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return (v.shape, v.dtype, v.device)
    t = type(v)
    if t is tuple or t is list:
        return tuple(map(_leaf_key, v))
    if t is dict:
        return tuple((k, _leaf_key(x)) for k, x in v.items())
    hash(v)  # unhashable inputs are checked on every call
    return (t, v)


def _input_key(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """What the guards can depend on: shapes, dtypes and devices of tensors, other values."""
    try:
        key = tuple(map(_leaf_key, args))
        if kwargs:
            key += tuple((k, _leaf_key(v)) for k, v in kwargs.items())
        return key
    except TypeError:
        return None


class GuardedGraphModule(GraphModule):
    """A :class:`~fxkit.GraphModule` from a shape-aware trace that checks its guards.

    Each call first checks that the inputs give the answers the trace relied on (a branch
    on ``x.shape[0] > 1``, a loop over ``len(x)``); a mismatch raises :class:`GuardError`
    naming the guard and the user's source line. The check runs once per new input
    signature (tensor shapes, dtypes, devices and other input values): a repeated
    signature costs one tuple build and a set lookup. Set ``gm.check_guards = False`` to
    skip it. The generated code is the same as a plain trace's; guards live in
    ``gm.meta["fxkit_guards"]`` and survive pickling, ``copy`` and ``deepcopy``.
    A forward that returned a dict subclass (HuggingFace's ``ModelOutput``) returns that
    type again (``gm.meta["fxkit_output_type"]``).
    """

    check_guards = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _current_run.get() is not None:
            # Called while another trace runs (its arguments are Proxies): nothing to check.
            return GraphModule.__call__(self, *args, **kwargs)
        meta = self.meta
        if self.check_guards:
            program = meta.get("fxkit_guards")
            if program is not None:
                program.check(self, args, kwargs)
        out = GraphModule.__call__(self, *args, **kwargs)
        if isinstance(out, dict):
            caches = meta.get("fxkit_output_caches")
            if caches:
                out = dict(out)
                for key, cache_cls in caches.items():
                    if key in out:
                        out[key] = cache_cls.from_legacy_cache(out[key])
            cls = meta.get("fxkit_output_type")
            if cls is not None and type(out) is not cls:
                out = cls(**out) if hasattr(cls, "__dataclass_fields__") else cls(out)
        return out

    def __copy__(self) -> "GuardedGraphModule":
        # GraphModule's copy is a plain GraphModule; keep the checks (meta is shared).
        plain = GraphModule.__copy__(self)
        res = GuardedGraphModule(plain, plain.graph, type(self).__name__)
        res.__dict__.update((k, v) for k, v in plain.__dict__.items() if k not in res.__dict__)
        res.meta = plain.meta
        if "check_guards" in self.__dict__:
            res.check_guards = self.check_guards
        return res
