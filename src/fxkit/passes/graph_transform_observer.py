"""Watch what a pass does to a GraphModule's graph.

:class:`GraphTransformObserver` is a context manager: while its ``with`` block runs it listens
to the module's node hooks and collects the names of the nodes the pass creates and erases,
and stamps provenance (:class:`~fxkit.traceback.NodeSource`) into ``node.meta["from_node"]``
of created and replacing nodes. When a log directory is set, it writes a before/after picture
of any pass that changed the graph.

It follows torch.fx's observer, including when it is switched on: recording happens only when a
log directory is set or provenance tracking is on (torch's inductor ``trace`` settings; read from
``torch._inductor.config`` when that is loaded, otherwise from the same environment variables),
or, in fxkit, when ``track=True`` is passed. :func:`graph_diff` and :meth:`~GraphTransformObserver.diff`
are fxkit additions: a unified text diff of the graph before and after the pass.
"""

from __future__ import annotations

import difflib
import os
import sys
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Set, TypeVar

from fxkit.traceback import NodeSource, NodeSourceAction

__all__ = ["GraphTransformObserver", "graph_diff"]

T = TypeVar("T")


# --- settings shared with torch's inductor -------------------------------------------------------
# fxkit must not pull in torch._inductor (seconds of import time) just to read three knobs. When a
# program has loaded it, its live values win (they may have been patched); otherwise the knobs
# still have the values inductor would read from the environment at import.


def _inductor_config() -> Any:
    return sys.modules.get("torch._inductor.config")


def _default_log_url() -> Optional[str]:
    config = _inductor_config()
    if config is not None:
        return config.trace.log_url_for_graph_xform
    return os.environ.get("INDUCTOR_LOG_URL_FOR_GRAPH_XFORM")


def _provenance_level() -> int:
    config = _inductor_config()
    if config is not None:
        return config.trace.provenance_tracking_level
    return int(os.environ.get("INDUCTOR_PROVENANCE", os.environ.get("TORCH_COMPILE_DEBUG", "0")))


def _disabled_passes() -> str:
    config = _inductor_config()
    if config is not None:
        return config.disabled_passes
    return os.environ.get("TORCHINDUCTOR_DISABLED_PASSES", "")


def _subsystem_disabled(subsystem: str, passname: str) -> bool:
    # A bisection run always has the bisector loaded; without it nothing can be bisected.
    bisector = sys.modules.get("torch._inductor.compiler_bisector")
    if bisector is None:
        return False
    return bool(
        bisector.CompilerBisector.disable_subsystem("inductor", subsystem, lambda: passname)
    )


# --- text renderings -------------------------------------------------------------------------------


def _graph_text(obj: Any) -> str:
    """``str()`` of a graph, or of a GraphModule's graph, or the string itself."""
    if isinstance(obj, str):
        return obj
    graph = getattr(obj, "graph", obj)
    if not hasattr(graph, "nodes"):
        raise TypeError(
            f"graph_diff expects a Graph, a GraphModule or a str, got {type(obj).__name__}"
        )
    return str(graph)


def graph_diff(
    before: Any, after: Any, *, fromfile: str = "before", tofile: str = "after", n: int = 3
) -> str:
    """Unified diff of two graphs' printed forms (``str(graph)`` lines).

    Each side may be a Graph or GraphModule of either library, or an already printed string.
    Returns ``""`` when the two print the same.
    """
    lines = difflib.unified_diff(
        _graph_text(before).splitlines(),
        _graph_text(after).splitlines(),
        fromfile=fromfile,
        tofile=tofile,
        n=n,
        lineterm="",
    )
    return "\n".join(lines)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Snapshot:
    """What the log files need from a graph at one moment: its text and its node edges."""

    def __init__(self, gm: Any) -> None:
        self.text = str(gm.graph)
        # get_attr nodes are left out, as in torch's pictures of these passes.
        self.nodes: List[tuple] = [
            (n.name, f"{n.op} | {n.target}", [u.name for u in n.users])
            for n in gm.graph.nodes
            if n.op != "get_attr"
        ]

    def dot(self, title: str, highlight: Set[str]) -> str:
        """DOT source; nodes in ``highlight`` are yellow, the rest grey."""
        kept = {name for name, _, _ in self.nodes}
        out = [f"digraph {_dot_quote(title)} {{", "  node [shape=record, style=filled];"]
        for name, label, _ in self.nodes:
            color = "yellow" if name in highlight else "grey"
            label_text = _dot_quote("{" + name + " | " + label + "}")
            out.append(f"  {_dot_quote(name)} [label={label_text}, fillcolor={color}];")
        for name, _, users in self.nodes:
            for user in users:
                if user in kept:
                    out.append(f"  {_dot_quote(name)} -> {_dot_quote(user)};")
        out.append("}")
        return "\n".join(out) + "\n"


# --- the observer ---------------------------------------------------------------------------------


class GraphTransformObserver:
    """Context manager recording the node edits a pass makes to ``gm``'s graph.

    ``created_nodes`` and ``erased_nodes`` hold node names. ``log_url`` (default: inductor's
    ``trace.log_url_for_graph_xform``) is a directory that receives before/after DOT pictures and
    text dumps of each pass that created or erased nodes. ``subsystem`` names the group the pass
    belongs to for inductor's compiler bisector. ``track=True`` (fxkit) records without either.
    """

    # Counts observers built with a log directory; numbers the log files. Name-mangled like
    # torch's, so it is private to this class.
    __pass_count = 0

    def __init__(
        self,
        gm: Any,
        passname: str,
        subsystem: Optional[str] = None,
        log_url: Optional[str] = None,
        *,
        track: bool = False,
    ) -> None:
        self.gm = gm
        self.passname = passname
        self.subsystem = subsystem
        self.log_url = _default_log_url() if log_url is None else log_url
        self.active = bool(track) or self.log_url is not None or _provenance_level() == 1
        # Empty sets even when inactive, so callers can read them unconditionally.
        self.erased_nodes: Set[str] = set()
        self.created_nodes: Set[str] = set()
        self.name_to_node: Dict[str, Any] = {}
        # Deep copies made inside the block inherit the hooks; they are unhooked on exit too.
        self.copied_gms: List[Any] = []
        self._before_text: Optional[str] = None
        self._after_text: Optional[str] = None
        if self.active:
            # Closures rather than bound methods: a bound method would drag the observer (and
            # its gm) into every deep copy of the module made while hooked.
            for kind in ("node_creation", "node_erase", "node_replace", "deepcopy"):
                setattr(self, f"_{kind}_hook", getattr(self, f"get_{kind}_hook")())
        if self.log_url is None:
            return
        GraphTransformObserver.__pass_count += 1
        # The "before" picture is of the graph as handed to the constructor.
        self._input_snapshot = _Snapshot(gm)

    @classmethod
    def get_current_pass_count(cls) -> int:
        """How many observers with a log directory have been built in this process."""
        return cls.__pass_count

    # --- running a pass ----------------------------------------------------------------------------

    def _disabled(self) -> bool:
        # Substring match on purpose: inductor's list is a free-form string of names.
        if self.passname.upper() in _disabled_passes().upper():
            return True
        if self.subsystem is None:
            return False
        return _subsystem_disabled(self.subsystem, self.passname)

    def apply_gm_pass(self, pass_fn: Callable[[Any], T]) -> Optional[T]:
        """Run ``pass_fn(gm)`` under observation; None without running if the pass is disabled."""
        with self:
            if self._disabled():
                return None
            return pass_fn(self.gm)

    def apply_graph_pass(self, pass_fn: Callable[[Any], T]) -> Optional[T]:
        """Run ``pass_fn(gm.graph)`` under observation; None without running if disabled."""
        with self:
            if self._disabled():
                return None
            return pass_fn(self.gm.graph)

    # --- context manager ---------------------------------------------------------------------------

    def __enter__(self) -> "GraphTransformObserver":
        # The text for diff() is kept whether or not hooks are recording.
        self._before_text = str(self.gm.graph) if hasattr(self.gm, "graph") else None
        self._after_text = None
        if not self.active:
            return self
        gm = self.gm
        gm._register_create_node_hook(self._node_creation_hook)
        gm._register_erase_node_hook(self._node_erase_hook)
        gm._register_replace_node_hook(self._node_replace_hook)
        gm._register_deepcopy_hook(self._deepcopy_hook)
        self.erased_nodes.clear()
        self.created_nodes.clear()
        self.copied_gms.clear()
        self.name_to_node = {node.name: node for node in gm.graph.nodes}
        return self

    def __exit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._before_text is not None:
            self._after_text = str(self.gm.graph)
        if not self.active:
            return
        for gm in [*self.copied_gms, self.gm]:
            gm._unregister_create_node_hook(self._node_creation_hook)
            gm._unregister_erase_node_hook(self._node_erase_hook)
            gm._unregister_replace_node_hook(self._node_replace_hook)
            gm._unregister_deepcopy_hook(self._deepcopy_hook)
        if self.log_url is not None and (self.created_nodes or self.erased_nodes):
            self._write_logs()

    def _write_logs(self) -> None:
        # torch draws with pydot and fails without it; fxkit writes the DOT text itself, so the
        # same files appear on any install, plus a plain-text dump of each graph.
        stem = os.path.join(
            self.log_url, f"pass_{GraphTransformObserver.__pass_count}_{self.passname}"
        )
        after = _Snapshot(self.gm)
        for side, snap, marked in (
            ("input", self._input_snapshot, self.erased_nodes),
            ("output", after, self.created_nodes),
        ):
            with open(f"{stem}_{side}_graph.dot", "w") as f:
                f.write(snap.dot(self.passname, marked))
            with open(f"{stem}_{side}_graph.txt", "w") as f:
                f.write(snap.text)

    # --- fxkit additions ---------------------------------------------------------------------------

    def diff(self, n: int = 3) -> str:
        """Unified diff of ``str(graph)`` from entering the block to leaving it (or to now, while
        inside). Works whether or not the observer is recording; ``""`` if never entered."""
        before = self._before_text
        if before is None:
            return ""
        after = self._after_text if self._after_text is not None else str(self.gm.graph)
        return graph_diff(
            before,
            after,
            fromfile=f"{self.passname} (before)",
            tofile=f"{self.passname} (after)",
            n=n,
        )

    # --- hooks ---------------------------------------------------------------------------------------

    def _record_created(self, node: Any) -> None:
        name = node.name
        self.created_nodes.add(name)
        self.name_to_node[name] = node
        stamp = NodeSource(None, self.passname, NodeSourceAction.CREATE)
        node.meta.setdefault("from_node", []).append(stamp)

    def _record_erased(self, node: Any) -> None:
        name = node.name
        self.erased_nodes.add(name)
        self.name_to_node.pop(name, None)

    def get_node_creation_hook(self) -> Callable[[Any], None]:
        """The create-node hook: remember the node and stamp a CREATE provenance entry."""
        record = self._record_created
        return lambda obj: record(obj)  # a function: deepcopy keeps it as is

    def get_node_erase_hook(self) -> Callable[[Any], None]:
        """The erase-node hook: remember the name and forget the node."""
        record = self._record_erased
        return lambda obj: record(obj)  # a function: deepcopy keeps it as is

    def get_node_replace_hook(self) -> Callable[..., None]:
        """The replace hook: record on the replacing node that it took ``old``'s place."""

        def on_replace(old: Any, new: str, user: Any) -> None:
            target = self.name_to_node.get(new)
            if not target:
                return
            history = target.meta.get("from_node", [])
            # Called once per user of ``old``; only the first call adds an entry.
            if any(src.name == old.name for src in history):
                return
            action = [NodeSourceAction.REPLACE]
            if target.name in self.created_nodes:
                action.append(NodeSourceAction.CREATE)
            # The bare CREATE stamp from this pass is superseded by the REPLACE(+CREATE) entry.
            kept = [
                src
                for src in history
                if not (src.pass_name == self.passname and src.action == [NodeSourceAction.CREATE])
            ]
            target.meta["from_node"] = [*kept, NodeSource(old, self.passname, action)]

        return on_replace

    def get_deepcopy_hook(self) -> Callable[[Any], None]:
        """The deepcopy hook: remember copies so their inherited hooks are removed on exit."""
        record = self._record_copy
        return lambda obj: record(obj)  # a function: deepcopy keeps it as is

    def _record_copy(self, copied: Any) -> None:
        self.copied_gms.append(copied)
