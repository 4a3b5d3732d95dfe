"""Trampolines for symbolic tracing, and the registry that installs and removes them.

While a trace runs, ``nn.Module.__call__``/``__getattr__`` and wrapped/autowrapped functions
are replaced by trampolines that look up the trace of the *current thread* in a ContextVar
and call the original when there is none. Each patched name has a reference-counted slot:
the first trace needing it installs the trampoline, the last one to finish restores the
original. All registry changes happen under one lock.
"""

from __future__ import annotations

import builtins
import contextvars
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch

from fxkit.proxy import Proxy

if TYPE_CHECKING:
    from fxkit._symbolic_trace import Tracer

_ORIG_MODULE_CALL = torch.nn.Module.__call__
_ORIG_MODULE_GETATTR = torch.nn.Module.__getattr__

# The trace running in this thread / task, or None.
_current_run: contextvars.ContextVar[Optional["_TraceRun"]] = contextvars.ContextVar(
    "fxkit_current_trace", default=None
)

# (id(globals), name) -> globals, filled by wrap() at module scope.
_wrapped_fns_to_patch: Dict[Tuple[int, str], dict] = {}


def _find_proxy(a: Any) -> Optional[Proxy]:
    if isinstance(a, Proxy):
        return a
    if isinstance(a, (tuple, list)):
        for e in a:
            p = _find_proxy(e)
            if p is not None:
                return p
    elif isinstance(a, dict):
        for e in a.values():
            p = _find_proxy(e)
            if p is not None:
                return p
    elif isinstance(a, slice):
        return _find_proxy((a.start, a.stop, a.step))
    return None


# --- trampolines and the patch registry -----------------------------------------------------


class _Slot:
    """One patched name: ``ns[name]`` (a globals dict) or ``getattr(ns, name)`` (a class)."""

    __slots__ = ("key", "ns", "name", "is_class", "had", "orig", "new", "users")

    def __init__(self, key: tuple, ns: Any, name: str, is_class: bool) -> None:
        self.key, self.ns, self.name, self.is_class = key, ns, name, is_class
        self.had = True
        self.orig: Any = None
        self.new: Any = None
        self.users = 0

    def current(self) -> Any:
        return getattr(self.ns, self.name) if self.is_class else self.ns.get(self.name)

    def put(self, value: Any) -> None:
        if self.is_class:
            setattr(self.ns, self.name, value)
        else:
            self.ns[self.name] = value

    def restore(self) -> None:
        if self.current() is not self.new:
            return  # someone replaced our trampoline since; theirs wins
        if self.had:
            self.put(self.orig)
        else:
            del self.ns[self.name]


# Re-entrant: an autowrap scan holds it while it patches what it finds.
_registry_lock = threading.RLock()
_slots: Dict[tuple, _Slot] = {}
_trampoline_origin: Dict[int, Any] = {}  # id(trampoline) -> the function it stands for


def _acquire(ns: Any, name: str, is_class: bool, make: Callable) -> Optional[_Slot]:
    key = (id(ns), name)
    with _registry_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _Slot(key, ns, name, is_class)
            if is_class:
                slot.orig = getattr(ns, name)
            elif name in ns:
                slot.orig = ns[name]
            elif hasattr(builtins, name):
                slot.had, slot.orig = False, getattr(builtins, name)
            else:
                return None
            slot.new = make(key, slot.orig)
            _slots[key] = slot
            _trampoline_origin[id(slot.new)] = slot.orig
            slot.put(slot.new)
        slot.users += 1
        return slot


def _release(slot: _Slot) -> None:
    with _registry_lock:
        slot.users -= 1
        if slot.users == 0:
            slot.restore()
            del _slots[slot.key]
            del _trampoline_origin[id(slot.new)]


def _function_trampoline(key: tuple, orig: Callable) -> Callable:
    def trampoline(*args: Any, **kwargs: Any) -> Any:
        run = _current_run.get()
        if run is not None and key in run.active:
            stand_in = run.overrides.get(id(orig))
            if stand_in is not None:
                return stand_in(*args, **kwargs)
            proxy = _find_proxy((args, kwargs))
            if proxy is not None:
                out = proxy.tracer.create_proxy("call_function", orig, args, kwargs)
                out.node.meta["is_wrapped"] = True
                return out
        return orig(*args, **kwargs)

    try:
        functools.update_wrapper(trampoline, orig)
    except (AttributeError, TypeError):  # some builtins lack metadata
        pass
    return trampoline


def _module_call_trampoline(key: tuple, orig: Callable) -> Callable:
    def __call__(mod: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        run = _current_run.get()
        if run is None or not run.live:
            return _ORIG_MODULE_CALL(mod, *args, **kwargs)

        def forward(*args: Any, **kwargs: Any) -> Any:
            return _ORIG_MODULE_CALL(mod, *args, **kwargs)

        run.scan_function_globals(getattr(mod, "forward", None))
        return run.tracer.call_module(mod, forward, args, kwargs)

    return __call__


def _module_getattr_trampoline(key: tuple, orig: Callable) -> Callable:
    def __getattr__(mod: torch.nn.Module, attr: str) -> Any:
        value = _ORIG_MODULE_GETATTR(mod, attr)
        run = _current_run.get()
        if run is None or not run.live:
            return value
        return run.tracer.getattr(attr, value, run.param_cache)

    return __getattr__


class _TraceRun:
    """The state of one ``Tracer.trace`` call; lives in ``_current_run`` while it runs."""

    __slots__ = (
        "tracer",
        "param_cache",
        "active",
        "slots",
        "visited",
        "live",
        "_keep",
        "overrides",
    )

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.param_cache: Dict[str, Proxy] = {}
        self.active: set = set()  # slot keys this run dispatches on
        self.slots: List[_Slot] = []
        self.visited: set = set()
        self.live = False
        self._keep: list = []  # namespaces scanned; held so their ids stay unique
        # id(original function) -> what this trace calls instead (Tracer._function_overrides)
        self.overrides: Dict[int, Callable] = {
            id(fn): sub for fn, sub in getattr(tracer, "_function_overrides", {}).items()
        }

    def scan_function_globals(self, fn: Any) -> None:
        """Autowrap-scan the module globals of ``fn`` and of what its decorators wrap."""
        seen = 0
        while fn is not None and seen < 8:  # a bounded walk: __wrapped__ chains can loop
            self.autowrap_scan(getattr(fn, "__globals__", None))
            fn = getattr(fn, "__wrapped__", None)
            seen += 1

    def install(self, fn_globals: dict) -> None:
        for name, make in (
            ("__getattr__", _module_getattr_trampoline),
            ("__call__", _module_call_trampoline),
        ):
            slot = _acquire(torch.nn.Module, name, True, make)
            assert slot is not None
            self.slots.append(slot)
        for (_, name), ns in list(_wrapped_fns_to_patch.items()):
            self.patch_function(ns, name)
        self.autowrap_scan(fn_globals)
        for module in self.tracer._autowrap_search:
            self.autowrap_scan(module.__dict__)
        self.live = True

    def uninstall(self) -> None:
        self.live = False
        while self.slots:
            _release(self.slots.pop())
        self.active.clear()

    def patch_function(self, ns: dict, name: str) -> None:
        key = (id(ns), name)
        if key in self.active:
            return
        slot = _acquire(ns, name, False, _function_trampoline)
        if slot is not None:
            self.active.add(key)
            self.slots.append(slot)

    def autowrap_scan(self, ns: Optional[dict]) -> None:
        if ns is None or id(ns) in self.visited:
            return
        self.visited.add(id(ns))
        self._keep.append(ns)
        ids = self.tracer._autowrap_function_ids
        if self.overrides:
            ids = ids | self.overrides.keys()
        if not ids:
            return
        # Under the lock: another thread may be swapping trampolines into this namespace.
        with _registry_lock:
            for name, value in list(ns.items()):
                if name.startswith("_") or not callable(value):
                    continue
                origin = _trampoline_origin.get(id(value), value)
                if id(origin) in ids:
                    self.patch_function(ns, name)
