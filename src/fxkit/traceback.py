"""Node-metadata preservation and provenance (the torch-fx ``traceback`` module's API).

While :func:`preserve_node_meta` is active, every node a tracer creates copies selected
fields (``stack_trace``, ``nn_module_stack``, ``source_fn_stack``, ``from_node``, ``custom``
...) from the *current meta*; :func:`set_current_meta` makes an existing node's meta current,
so a pass that re-traces a node (``Transformer``, the rewriter) keeps where it came from and
records a :class:`NodeSource` in ``meta["from_node"]``.

The state lives in :class:`contextvars.ContextVar` objects, so two threads (or asyncio tasks)
transforming graphs at the same time never see each other's meta.
"""

from __future__ import annotations

import copy
import functools
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Union

if TYPE_CHECKING:
    from fxkit.node import Node

# Provenance types, then the meta-preservation context managers, then the small setters.
__all__ = [
    "NodeSource", "NodeSourceAction",
    "preserve_node_meta", "has_preserved_node_meta", "annotate",
    "set_current_meta", "get_current_meta", "set_current_replay_node", "get_current_replay_node",
    "set_stack_trace", "format_stack", "set_grad_fn_seq_nr", "reset_grad_fn_seq_nr",
    "annotate_fn", "get_graph_provenance_json",
]  # fmt: skip

_preserving: ContextVar[bool] = ContextVar("fxkit_preserve_node_meta", default=False)
_current_meta: ContextVar[Optional[dict]] = ContextVar("fxkit_current_meta", default=None)
_replay_node: ContextVar[Optional["Node"]] = ContextVar("fxkit_replay_node", default=None)


def _meta() -> dict:
    meta = _current_meta.get()
    if meta is None:
        # Each context gets its own dict on first use; a shared default would leak writes
        # from one thread into another.
        meta = {}
        _current_meta.set(meta)
    return meta


class NodeSourceAction(Enum):
    """How a node came from another one: created from it, or replacing it."""

    CREATE = "create"
    REPLACE = "replace"


class NodeSource:
    """Provenance of a node: the node it was made from, by which pass and how.

    ``a.meta["from_node"] = [NodeSource(b, "my_pass", NodeSourceAction.CREATE)]`` says ``a``
    was created from ``b``; ``b``'s own ``from_node`` chain is kept (deep-copied) so the full
    history can be printed with :meth:`print_readable` or exported with :meth:`to_dict`.
    """

    class NodeInfo:
        """Name, target text and graph identity of the source node."""

        def __init__(self, name: str, target: str, graph_id: int) -> None:
            self.name = name
            self.target = target
            self.graph_id = graph_id

    def __init__(
        self,
        node: Optional["Node"],
        pass_name: str = "",
        action: Union[NodeSourceAction, list, None] = None,
    ) -> None:
        actions = [] if action is None else action if isinstance(action, list) else [action]
        for a in actions:
            if not isinstance(a, NodeSourceAction):
                raise AssertionError(
                    f"Expected NodeSourceAction, got {type(a)}\n  (fxkit) action must be a "
                    f"NodeSourceAction, got {a!r}"
                )
        self.pass_name = pass_name
        self.action: list = actions
        if node is not None:
            self.node_info: Optional[NodeSource.NodeInfo] = self.NodeInfo(
                node.name, str(node.target), id(node.graph)
            )
            earlier = node.meta.get("from_node")
            self.from_node: list = copy.deepcopy(earlier) if earlier else []
        else:
            self.node_info = None
            self.from_node = []
        self._dict: Optional[dict] = None

    # ``name``, ``target`` and ``graph_id`` read through to node_info; see below the class.
    name: str
    target: str
    graph_id: int

    def _action_text(self) -> str:
        return "+".join(a.name.lower() for a in self.action)

    def print_readable(self, indent: int = 0) -> str:
        """The provenance chain as indented lines (at most 10 levels deep)."""
        if indent > 9:
            return ""
        text = (
            " "
            * (4 * indent)
            + f"(name={self.name}, pass_name={self.pass_name}, action={self._action_text()}, "
            f"graph_id={self.graph_id})\n"
        )
        return text + "".join(src.print_readable(indent + 1) for src in self.from_node)

    def __repr__(self) -> str:
        return self.print_readable()

    def to_dict(self) -> dict:
        """A JSON-friendly nested dict of this provenance chain."""
        if self._dict is None:
            self._dict = {
                "name": self.name,
                "target": self.target,
                "graph_id": self.graph_id,
                "pass_name": self.pass_name,
                "action": self._action_text(),
                "from_node": [src.to_dict() for src in self.from_node],
            }
        return self._dict

    @classmethod
    def _from_dict(cls, d: Optional[dict]) -> Optional["NodeSource"]:
        if d is not None and not isinstance(d, dict):
            raise AssertionError(f"Expected a dict, got {type(d)}")
        return None if d is None else cls._rebuild(d)

    @classmethod
    def _rebuild(cls, d: dict) -> "NodeSource":
        # Bypasses __init__: there is no live node to read, only its recorded facts.
        info_keys = ("name", "target", "graph_id")
        has_info = all(k in d for k in info_keys)
        out = cls.__new__(cls)
        out.__dict__.update(
            _dict=None,
            pass_name=d.get("pass_name", ""),
            action=[NodeSourceAction[p.upper()] for p in d.get("action", "").split("+") if p],
            node_info=cls.NodeInfo(*(d[k] for k in info_keys)) if has_info else None,
            from_node=[s for s in map(cls._from_dict, d.get("from_node") or []) if s],
        )
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeSource) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        def freeze(obj: Any) -> Any:
            if isinstance(obj, dict):
                return tuple(sorted((k, freeze(v)) for k, v in obj.items()))
            if isinstance(obj, list):
                return tuple(freeze(v) for v in obj)
            return obj

        return hash(freeze(self.to_dict()))


def _through_node_info(field: str, when_missing: Any) -> property:
    def read(self: NodeSource) -> Any:
        info = self.node_info
        return when_missing if info is None else getattr(info, field)

    return property(read, doc=f"The source node's {field} ({when_missing!r} when unknown).")


for _field, _fallback in (("name", ""), ("target", ""), ("graph_id", -1)):
    setattr(NodeSource, _field, _through_node_info(_field, _fallback))
del _field, _fallback


@contextmanager
def preserve_node_meta(enable: bool = True) -> Iterator[None]:
    """Within this block, new nodes copy fields of :func:`get_current_meta` into their meta.

    The current meta is restored on exit, so edits made inside do not leak out.
    """
    saved = dict(_meta())
    flag_token = _preserving.set(enable)
    meta_token = _current_meta.set(dict(saved))
    try:
        yield
    finally:
        _current_meta.reset(meta_token)
        _preserving.reset(flag_token)


def has_preserved_node_meta() -> bool:
    """Whether :func:`preserve_node_meta` is active in this context."""
    return _preserving.get()


def set_stack_trace(stack: list) -> None:
    """Set the current meta's ``stack_trace`` (joined lines); empty clears it."""
    if not _preserving.get():
        return
    if stack:
        _meta()["stack_trace"] = "".join(stack)
    else:
        _meta().pop("stack_trace", None)


def set_grad_fn_seq_nr(seq_nr: int) -> None:
    """Enter an autograd function with this sequence number (used by backward tracers)."""
    if _preserving.get():
        meta = _meta()
        meta["grad_fn_seq_nr"] = meta.get("grad_fn_seq_nr", []) + [seq_nr]
        meta["in_grad_fn"] = meta.get("in_grad_fn", 0) + 1


def reset_grad_fn_seq_nr() -> None:
    """Leave the innermost autograd function entered with :func:`set_grad_fn_seq_nr`."""
    if not _preserving.get():
        return
    meta = _meta()
    level = meta.get("in_grad_fn", 0)
    if level <= 0:
        raise RuntimeError("reset_grad_fn_seq_nr() without a matching set_grad_fn_seq_nr()")
    if level == 1:
        del meta["in_grad_fn"]
        del meta["grad_fn_seq_nr"]
    else:
        meta["in_grad_fn"] = level - 1
        meta["grad_fn_seq_nr"] = meta["grad_fn_seq_nr"][:-1]


def format_stack() -> list:
    """The preserved ``stack_trace`` (as a one-item list), or the live Python stack."""
    if _preserving.get():
        return [_meta().get("stack_trace", "")]
    return traceback.format_list(traceback.extract_stack()[:-1])


@contextmanager
def set_current_meta(node: "Node", pass_name: str = "") -> Iterator[None]:
    """Make ``node``'s meta current while the block runs (only when preserving meta).

    Nodes created inside get ``meta["from_node"] = [NodeSource(node, pass_name, CREATE)]``.
    """
    if _preserving.get() and node.meta:
        meta = node.meta.copy()
        meta["from_node"] = [NodeSource(node, pass_name, NodeSourceAction.CREATE)]
        token = _current_meta.set(meta)
        try:
            yield
        finally:
            _current_meta.reset(token)
    else:
        yield


def get_current_meta() -> dict:
    """The meta dict new nodes copy from while :func:`preserve_node_meta` is active."""
    return _meta()


@contextmanager
def set_current_replay_node(node: Optional["Node"]) -> Iterator[None]:
    """Mark ``node`` as the node being regenerated while the block runs."""
    token = _replay_node.set(node)
    try:
        yield
    finally:
        _replay_node.reset(token)


def get_current_replay_node() -> Optional["Node"]:
    """The node set by :func:`set_current_replay_node`, or ``None``."""
    return _replay_node.get()


@contextmanager
def annotate(annotation_dict: dict) -> Iterator[None]:
    """Add ``annotation_dict`` to the current meta's ``custom`` field for the block."""
    if not isinstance(annotation_dict, dict):
        raise TypeError(f"annotate() takes a dict, got {type(annotation_dict).__name__}")
    meta = _meta()
    had = "custom" in meta
    old = copy.copy(meta.get("custom", {}))
    try:
        meta.setdefault("custom", {}).update(annotation_dict)
        yield
    finally:
        if had:
            meta["custom"] = old
        else:
            meta.pop("custom", None)


def annotate_fn(annotation_dict: dict) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of :func:`annotate`: every call of the decorated function runs inside
    ``annotate(annotation_dict)``, so the nodes it creates carry the annotations::

        @annotate_fn({"pp_stage": 1})
        def stage(x):
            return x + 1
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def annotated(*args: Any, **kwargs: Any) -> Any:
            with annotate(annotation_dict):
                return fn(*args, **kwargs)

        return annotated

    return decorate


def get_graph_provenance_json(graph: Any) -> dict:
    """``{node name: [NodeSource.to_dict(), ...]}`` for each ``call_function`` node of
    ``graph`` (an empty list where no ``from_node`` is recorded). A debugging aid: on an
    unexpected error it returns ``{}`` instead of raising."""
    try:
        return {
            node.name: [source.to_dict() for source in node.meta.get("from_node", ())]
            for node in graph.nodes
            if node.op == "call_function"
        }
    except Exception:  # noqa: BLE001 - provenance must never break the caller
        return {}
