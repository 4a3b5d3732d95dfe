"""Record the calls that change a ``ShapeEnv`` and replay them into a fresh one.

A ``ShapeEnv`` (torch's own, from its ``experimental.symbolic_shapes`` module under torch.fx, reached through
:mod:`fxkit.interop`) created with ``should_record_events=True`` keeps, in ``.events``, one
event per state-changing method call, starting with its own construction. Replaying that list
builds a ShapeEnv in the same state, or in the state it had after any prefix of the list;
translation-validation bisection uses this to find the first guard that went wrong.

* :func:`record_shapeenv_event` decorates a ShapeEnv method so its calls are recorded.
* :func:`replay_shape_env_events` rebuilds a ShapeEnv from events (torch's or fxkit's).
* :func:`shape_env_check_state_equal` compares two ShapeEnvs field by field and raises
  :class:`NotEqualError` listing the differences.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.utils._pytree as pytree

from fxkit import interop
from fxkit.node import Node

__all__ = [
    "FakeTensorMeta",
    "NotEqualError",
    "ShapeEnvEvent",
    "record_shapeenv_event",
    "replay_shape_env_events",
    "shape_env_check_state_equal",
]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

# ShapeEnv methods whose FX-node arguments refer to the recording ShapeEnv's own graph, and
# where those arguments sit: (positional index, keyword name). The nodes are swapped for the
# same-named nodes of the ShapeEnv the event is replayed into.
_NODE_TUPLE_ARGUMENT = {"_create_fx_call_function": (2, "args")}
_NODE_ARGUMENT = {"evaluate_expr": (3, "fx_node"), "guard_or_defer_runtime_assert": (3, "fx_node")}


def _symbolic_shapes() -> Any:
    return interop.torch_symbolic_shapes()


def _is_fx_node(value: Any) -> bool:
    # The ShapeEnv's graph is a torch.fx graph; recognise its nodes by their API.
    if isinstance(value, Node):
        return True
    return all(hasattr(value, attr) for attr in ("op", "target", "graph", "name", "meta"))


def _run_event(event: Any, shape_env: Any = None) -> Any:
    """Call ``event.f`` again with ``shape_env`` in place of the ShapeEnv it was recorded on.

    Works on any object with the event fields (``f``, ``args``, ``kwargs``, ``name``), so
    torch's own events (what ``ShapeEnv.events`` holds) replay the same way as fxkit's.
    """
    symbolic_shapes = _symbolic_shapes()
    shape_env_cls = symbolic_shapes.ShapeEnv
    if event.f is shape_env_cls:
        # The constructor event: it makes the ShapeEnv the others are replayed into.
        if not (shape_env is None and event.args is None and event.kwargs is not None):
            raise AssertionError(
                "ShapeEnv constructor requires shape_env=None, args=None, kwargs set"
            )
        return shape_env_cls(**event.kwargs)
    if shape_env is None:
        raise AssertionError("shape_env is required for non-constructor events")

    def retarget(value: Any) -> Any:
        # ShapeEnvs become the new one; symbolic scalars get nodes that live in it.
        if isinstance(value, shape_env_cls):
            return shape_env
        if isinstance(value, symbolic_shapes.SymTypes) and symbolic_shapes.is_symbolic(value):
            return type(value)(value.node.with_shape_env(shape_env))
        return value

    args, kwargs = pytree.tree_map(retarget, (list(event.args or []), dict(event.kwargs or {})))

    def counterpart(node: Any) -> Any:
        if not _is_fx_node(node):
            return node
        # An FX node in an event means translation validation is on, so the new ShapeEnv
        # builds its own graph and indexes it by node name.
        if not hasattr(shape_env, "name_to_node"):
            raise AssertionError("shape_env missing name_to_node attribute")
        nodes = shape_env.name_to_node
        if node.name not in nodes:
            raise AssertionError(f"Node {node.name} not found in name_to_node")
        return nodes[node.name]

    for table, convert in (
        (_NODE_TUPLE_ARGUMENT, lambda nodes: tuple(counterpart(n) for n in nodes)),
        (_NODE_ARGUMENT, counterpart),
    ):
        where = table.get(event.name)
        if where is None:
            continue
        index, keyword = where
        if index < len(args):
            args[index] = convert(args[index])
        if keyword in kwargs:
            kwargs[keyword] = convert(kwargs[keyword])
    return event.f(*args, **kwargs)


def _recorded_method_is(predicate_name: str, method_name: str) -> Callable[[Any], bool]:
    """A predicate method ``predicate_name``: does this event record ShapeEnv's
    ``method_name``?"""

    def predicate(self: Any) -> bool:
        return self.name == method_name

    predicate.__name__ = predicate_name
    predicate.__qualname__ = f"ShapeEnvEvent.{predicate_name}"
    predicate.__doc__ = f"Whether this event records ``ShapeEnv.{method_name}``."
    return predicate


@dataclass
class ShapeEnvEvent:
    """One recorded call: ``f(*args, **kwargs)`` where the first argument is the ShapeEnv.

    Attributes:
        f: the ShapeEnv method (or ``ShapeEnv`` itself for the constructor event).
        args, kwargs: the call's arguments (``args`` is None for the constructor).
        tracked_fakes: snapshot of the ShapeEnv's tracked fakes at the call, when the
            recording decorator asked for one (``save_tracked_fakes=True``).
        name: the method name, which selects special handling on replay.
    """

    f: Callable[..., Any]
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    tracked_fakes: list[Any] | None = None
    name: str | None = None

    def run(self, shape_env: Any = None) -> Any:
        """Replay this call on ``shape_env`` (None for the constructor event, which returns
        the new ShapeEnv)."""
        return _run_event(self, shape_env)

    def __str__(self) -> str:
        return f"event: {self.name or self.f.__name__} ({self.args}, {self.kwargs})"

    # Predicates on which ShapeEnv method was recorded.
    is_create_fx_call_function = _recorded_method_is(
        "is_create_fx_call_function", "_create_fx_call_function"
    )
    is_evaluate_expr = _recorded_method_is("is_evaluate_expr", "evaluate_expr")
    is_defer_runtime_assert = _recorded_method_is(
        "is_defer_runtime_assert", "guard_or_defer_runtime_assert"
    )


def _the_shape_env_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The single ShapeEnv the arguments refer to (directly or through symbolic scalars),
    or None; two different ones are an error."""
    symbolic_shapes = _symbolic_shapes()
    found = None
    for value in itertools.chain(args, kwargs.values()):
        if isinstance(value, symbolic_shapes.ShapeEnv):
            env = value
        elif isinstance(value, symbolic_shapes.SymTypes) and symbolic_shapes.is_symbolic(value):
            env = value.node.shape_env
        else:
            continue
        if found is not None and found is not env:
            raise AssertionError("call with different ShapeEnv")
        found = env
    return found


def record_shapeenv_event(
    *, save_tracked_fakes: bool = False, name: str | None = None
) -> Callable[[_F], _F]:
    """Decorator for a ShapeEnv method that changes the guards the ShapeEnv would produce:
    each outermost call is appended to ``self.events`` as a :class:`ShapeEnvEvent`.

    Args:
        save_tracked_fakes: store a snapshot of ``self.tracked_fakes`` in the event (wanted by
            methods that add a ``torch._assert`` node, the points bisection stops at).
        name: the event name; defaults to the method's ``__name__``.

    Calls made while an event is already being recorded, or on a ShapeEnv with
    ``should_record_events`` off, just run. A call that raises leaves no event behind.
    """

    def decorate(fn: _F) -> _F:
        if not callable(fn):
            raise AssertionError(f"Expected callable, got {type(fn)}")
        parameters = inspect.getfullargspec(fn).args
        if not parameters or parameters[0] != "self":
            raise AssertionError(
                "record_shapeenv_event should only wrap methods on ShapeEnv; refactor your "
                "code so that it calls into a method on ShapeEnv"
            )
        event_name = fn.__name__ if name is None else name

        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            receiver = args[0]
            if not isinstance(receiver, _symbolic_shapes().ShapeEnv):
                raise AssertionError(f"Expected ShapeEnv, got {type(receiver)}")
            log.debug("call %s(*%r, **%r)", event_name, args[1:], kwargs)
            if not receiver.should_record_events or receiver.is_recording:
                return fn(*args, **kwargs)
            try:
                return _record_and_run(fn, event_name, save_tracked_fakes, args, kwargs)
            except Exception:
                log.error("failed while running %s(*%s, **%s)", event_name, args[1:], kwargs)
                raise

        return recorded  # type: ignore[return-value]

    return decorate


def _record_and_run(
    fn: Callable[..., Any],
    event_name: str,
    save_tracked_fakes: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    shape_env = _the_shape_env_of(args, kwargs)
    if shape_env is None:
        return fn(*args, **kwargs)
    with shape_env._recording():
        snapshot = shape_env._snapshot_tracked_fakes() if save_tracked_fakes else None
        event = ShapeEnvEvent(fn, list(args), kwargs, snapshot, name=event_name)
        # Appended before running: calls made while it runs are recorded after it (they
        # happen inside it); it is removed again if the call fails.
        shape_env.events.append(event)
        try:
            return event.run(shape_env)
        except Exception:
            shape_env.events.pop()
            raise


def replay_shape_env_events(events: list[Any]) -> Any:
    """A new ShapeEnv in the state reached by ``events`` (``ShapeEnv.events`` or a prefix of
    it). The first event must be the ShapeEnv constructor."""
    shape_env_cls = _symbolic_shapes().ShapeEnv
    first, rest = events[0], events[1:]
    if first.f != shape_env_cls:
        raise AssertionError(f"First event must be ShapeEnv constructor, got {first.f}")
    shape_env = _run_event(first)
    for event in rest:
        try:
            _run_event(event, shape_env)
        except Exception:
            log.error("failed when running event: %s", event)
            raise
    return shape_env


_TorchRecording = interop.torch_fx_experimental("recording")


@dataclass
class FakeTensorMeta(_TorchRecording.FakeTensorMeta):
    """The size, stride, storage offset and nestedness of a fake tensor, kept in place of the
    tensor in tracked-fake snapshots.

    A subclass of torch's class, so ``ShapeEnv.produce_guards`` treats it as a tensor. Fields:
    ``tensor_size``, ``tensor_stride``, ``tensor_storage_offset``, ``is_nested``.
    """

    @staticmethod
    def from_fake(fake: torch.Tensor) -> FakeTensorMeta:
        """The metadata of (fake) tensor ``fake``."""
        layout = (fake.size(), fake.stride(), fake.storage_offset())
        return FakeTensorMeta(*layout, fake.is_nested)

    def size(self) -> tuple[int | torch.SymInt, ...]:
        """The recorded sizes."""
        return self.tensor_size

    def dim(self) -> int:
        """The number of dimensions."""
        return len(self.size())

    def stride(self) -> tuple[int | torch.SymInt, ...]:
        """The recorded strides."""
        return self.tensor_stride

    def storage_offset(self) -> int | torch.SymInt:
        """The recorded storage offset."""
        return self.tensor_storage_offset


class NotEqualError(_TorchRecording.NotEqualError):
    """Two ShapeEnvs differ. ``mismatched`` lists ``(what, left value, right value)``.

    A subclass of torch's ``NotEqualError``, so handlers written for torch's catch it.
    """

    def __init__(self, msg: str, mismatched: list[tuple[str, str, str]]) -> None:
        blocks = [
            f"==> {what}\n  >  Left: {left}\n  > Right: {right}" for what, left, right in mismatched
        ]
        details = "\n".join(blocks)
        Exception.__init__(self, f"ShapeEnv not equal: {msg}\n\n{details}\n")


def _stable_str(value: Any) -> str:
    # Sets and dicts print in a canonical order so the report does not depend on hashing.
    if isinstance(value, dict):
        items = (f"{key}: {value[key]}" for key in sorted(value, key=str))
        return "{" + ", ".join(items) + "}"
    if isinstance(value, set):
        return "{" + ", ".join(str(item) for item in sorted(value)) + "}"
    return str(value)


def shape_env_check_state_equal(env1: Any, env2: Any, non_state_variable_names: tuple[str, ...],
                                map_value: Callable[[str, object], object]) -> None:  # fmt: skip
    """Raise :class:`NotEqualError` unless ``env1`` and ``env2`` have the same state.

    The state is every instance attribute except ``non_state_variable_names``; each pair of
    values is compared as ``map_value(field, value)`` (so a field can be reduced to what
    matters, e.g. guards to their expressions). Neither ShapeEnv is modified.
    """
    skipped = set(non_state_variable_names)
    fields1 = {k: v for k, v in vars(env1).items() if k not in skipped}
    fields2 = {k: v for k, v in vars(env2).items() if k not in skipped}
    if fields1.keys() != fields2.keys():
        only1 = sorted(fields1.keys() - fields2.keys())
        only2 = sorted(fields2.keys() - fields1.keys())
        raise NotEqualError(
            "field set mismatch:", [("found unique fields:", str(only1), str(only2))]
        )
    mismatched = []
    for field in sorted(fields1):
        left, right = map_value(field, fields1[field]), map_value(field, fields2[field])
        if left != right:
            mismatched.append(
                (f"{field}: values don't match.", _stable_str(left), _stable_str(right))
            )
    if mismatched:
        raise NotEqualError("field values don't match:", mismatched)
