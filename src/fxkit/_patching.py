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
import operator
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch

from fxkit.proxy import Proxy

if TYPE_CHECKING:
    from fxkit._symbolic_trace import Tracer

_ORIG_MODULE_CALL = torch.nn.Module.__call__
_ORIG_MODULE_GETATTR = torch.nn.Module.__getattr__
_ORIG_CALL_IMPL = torch.nn.Module._call_impl

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
        elif self.is_class:
            delattr(self.ns, self.name)
        else:
            del self.ns[self.name]


# Re-entrant: an autowrap scan holds it while it patches what it finds.
_registry_lock = threading.RLock()
_slots: Dict[tuple, _Slot] = {}  # the names patched right now
_trampoline_origin: Dict[int, Any] = {}  # id(trampoline) -> the function it stands for
# Released slots, trampoline included, for the next trace that patches the same name: making a
# trampoline (functools.update_wrapper) costs more than installing it. Bounded, since each one
# keeps its namespace alive.
_idle: Dict[tuple, _Slot] = {}
_IDLE_MAX = 4096


def _new_slot(key: tuple, ns: Any, name: str, is_class: bool, make: Callable) -> Optional[_Slot]:
    """Install a trampoline for a name no trace patches now (registry lock held)."""
    had = True
    if is_class:
        # A class may inherit the name: then the patch goes into its own dict and restoring
        # deletes it again.
        had, orig = name in ns.__dict__, getattr(ns, name)
    elif name in ns:
        orig = ns[name]
    elif hasattr(builtins, name):
        had, orig = False, getattr(builtins, name)
    else:
        return None
    slot = _idle.pop(key, None)
    if slot is None or slot.ns is not ns or slot.orig is not orig or slot.had != had:
        slot = _Slot(key, ns, name, is_class)
        slot.had, slot.orig = had, orig
        slot.new = make(key, orig)
    _slots[key] = slot
    _trampoline_origin[id(slot.new)] = orig
    slot.put(slot.new)
    return slot


def _acquire(ns: Any, name: str, is_class: bool, make: Callable) -> Optional[_Slot]:
    key = (id(ns), name)
    with _registry_lock:
        slot = _slots.get(key) or _new_slot(key, ns, name, is_class, make)
        if slot is not None:
            slot.users += 1
        return slot


def _retire(slot: _Slot) -> None:
    """Restore what ``slot`` patched; its last user is gone (registry lock held)."""
    slot.restore()
    del _slots[slot.key]
    del _trampoline_origin[id(slot.new)]
    if len(_idle) >= _IDLE_MAX:
        _idle.clear()
    _idle[slot.key] = slot


def _release(slot: _Slot) -> None:
    with _registry_lock:
        slot.users -= 1
        if slot.users == 0:
            _retire(slot)


_ids_cache: Dict[int, Tuple[Any, List[str], List[Any], frozenset]] = {}


def public_callable_ids(module: Any) -> frozenset:
    """ids of the functions a module's public names hold (seen through trampolines).

    Cached per module; the cache entry is reused only while the module's names and values are
    exactly those it was computed from (an identity check, much cheaper than the scan).
    """
    ns = module.__dict__
    with _registry_lock:
        keys, values = list(ns), list(ns.values())
        hit = _ids_cache.get(id(module))
        if (
            hit is not None
            and hit[0] is module
            and hit[1] == keys
            and all(map(operator.is_, hit[2], values))
        ):
            return hit[3]
        origin = _trampoline_origin
        ids = frozenset(
            id(origin.get(id(v), v))
            for k, v in zip(keys, values)
            if not k.startswith("_") and callable(v)
        )
        if len(_ids_cache) >= 256:
            _ids_cache.clear()
        _ids_cache[id(module)] = (module, keys, values, ids)
        return ids


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


def _method_trampoline(key: tuple, orig: Callable) -> Callable:
    # A method registered with torch.fx's wrap (torch.fx keeps a list of (class, name)):
    # a call given a Proxy anywhere in its arguments is recorded as call_method.
    name = key[1]

    def method(*args: Any, **kwargs: Any) -> Any:
        run = _current_run.get()
        if run is not None and key in run.active:
            proxy = _find_proxy((args, kwargs))
            if proxy is not None:
                return proxy.tracer.create_proxy("call_method", name, args, kwargs)
        return orig(*args, **kwargs)

    try:
        functools.update_wrapper(method, orig)
    except (AttributeError, TypeError):
        pass
    return method


_fx_registry_reader: Optional[Callable[[], Any]] = None


def _torch_fx_wrapped() -> Any:
    """torch.fx's wrap registry, read through fxkit.interop (imported on first use)."""
    global _fx_registry_reader
    if _fx_registry_reader is None:
        from fxkit.interop import torch_fx_wrap_registry

        _fx_registry_reader = torch_fx_wrap_registry
    return _fx_registry_reader()


def _module_call_trampoline(key: tuple, orig: Callable) -> Callable:
    # Stands in for nn.Module._call_impl (what nn.Module.__call__ calls): replacing a plain
    # attribute of nn.Module is O(1), while replacing a dunder makes Python update the slots of
    # every nn.Module subclass (tens of microseconds per trace, more with big libraries loaded).
    def _call_impl(mod: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        run = _current_run.get()
        if run is None or not run.live or run.call_via_dunder:
            return _ORIG_CALL_IMPL(mod, *args, **kwargs)

        def forward(*args: Any, **kwargs: Any) -> Any:
            # Scanned only when the body really runs: leaves never do.
            run.scan_function_globals(getattr(mod, "forward", None))
            return _ORIG_CALL_IMPL(mod, *args, **kwargs)

        return run.tracer.call_module(mod, forward, args, kwargs)

    return _call_impl


def _module_dunder_call_trampoline(key: tuple, orig: Callable) -> Callable:
    # Used instead of the above when a module in the tree was torch.compile'd: its calls skip
    # _call_impl, so only nn.Module.__call__ sees them.
    def __call__(mod: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        run = _current_run.get()
        if run is None or not run.live or not run.call_via_dunder:
            return _ORIG_MODULE_CALL(mod, *args, **kwargs)

        def forward(*args: Any, **kwargs: Any) -> Any:
            run.scan_function_globals(getattr(mod, "forward", None))
            return _ORIG_MODULE_CALL(mod, *args, **kwargs)

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


def _getattr_owners(modules: Any) -> Tuple[List[type], bool]:
    """The classes to give the ``__getattr__`` trampoline so that ``modules`` all see it.

    Patching ``nn.Module.__getattr__`` itself is correct for every module but slow (a dunder
    change on a class with hundreds of subclasses), so each module class in the tree gets its
    own copy instead, unless one of them has its own ``__getattr__`` that may delegate to
    ``nn.Module``'s: then nn.Module is patched (returned flag) and the class is left alone.
    """
    owners, need_base = [], False
    for cls in {type(m) for m in modules}:
        if (id(cls), "__getattr__") in _slots:
            owners.append(cls)  # another trace patched it; share that patch
            continue
        found = getattr(cls, "__getattr__", None)
        if _trampoline_origin.get(id(found), found) is _ORIG_MODULE_GETATTR:
            owners.append(cls)
        else:
            need_base = True
    return owners, need_base


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
        "call_via_dunder",
    )

    def __init__(self, tracer: "Tracer") -> None:
        self.tracer = tracer
        self.param_cache: Dict[str, Proxy] = {}
        self.active: set = set()  # slot keys this run dispatches on
        self.slots: List[_Slot] = []
        self.visited: set = set()
        self.live = False
        self.call_via_dunder = False
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
        tree = self.tracer.submodule_paths or {}
        self.call_via_dunder = any(m.__dict__.get("_compiled_call_impl") is not None for m in tree)
        with _registry_lock:
            # A function root is an empty module of our own: nothing in it to look up.
            owners, need_base = _getattr_owners(tree) if tree else ([], False)
            if need_base:
                owners.append(torch.nn.Module)
            patches = [(cls, "__getattr__", _module_getattr_trampoline) for cls in owners]
            if self.call_via_dunder:
                patches.append((torch.nn.Module, "__call__", _module_dunder_call_trampoline))
            else:
                patches.append((torch.nn.Module, "_call_impl", _module_call_trampoline))
            for owner, name, make in patches:
                slot = _acquire(owner, name, True, make)
                assert slot is not None
                self.slots.append(slot)
        for (_, name), ns in list(_wrapped_fns_to_patch.items()):
            self.patch_function(ns, name)
        # What libraries registered with torch.fx's own wrap (torchvision, timm) stays a call
        # here too.
        fx_functions, fx_methods = _torch_fx_wrapped()
        for ns, name in fx_functions:
            self.patch_function(ns, name)
        for cls, name in fx_methods:
            self.patch_method(cls, name)
        self.autowrap_scan(fn_globals)
        for module in self.tracer._autowrap_search:
            self.autowrap_scan(module.__dict__)
        self.live = True

    def uninstall(self) -> None:
        self.live = False
        slots = self.slots
        with _registry_lock:
            while slots:
                slot = slots.pop()
                slot.users -= 1
                if slot.users:
                    continue
                ns = slot.ns
                if slot.is_class or not slot.had or ns.get(slot.name) is not slot.new:
                    _retire(slot)
                    continue
                # _retire for the common case (a globals entry we put there), inlined.
                key = slot.key
                ns[slot.name] = slot.orig
                del _slots[key]
                del _trampoline_origin[id(slot.new)]
                if len(_idle) >= _IDLE_MAX:
                    _idle.clear()
                _idle[key] = slot
        self.active.clear()

    def patch_function(self, ns: dict, name: str) -> None:
        self._patch_names(ns, (name,))

    def patch_method(self, cls: type, name: str) -> None:
        slot = _acquire(cls, name, True, _method_trampoline)
        if slot is not None:
            self.active.add(slot.key)
            self.slots.append(slot)

    def _patch_names(self, ns: dict, names: Any) -> None:
        # A trace patches ~60 names (math alone has ~55), so this loop is kept lean: the
        # common case re-installs the trampoline an earlier trace left in _idle.
        nid, active, mine = id(ns), self.active, self.slots
        with _registry_lock:
            for name in names:
                key = (nid, name)
                if key in active:
                    continue
                slot = _slots.get(key)
                if slot is None:
                    slot = _idle.get(key)
                    if slot is not None and slot.had and ns.get(name) is slot.orig:
                        del _idle[key]
                        _slots[key] = slot
                        _trampoline_origin[id(slot.new)] = slot.orig
                        ns[name] = slot.new
                    else:
                        slot = _new_slot(key, ns, name, False, _function_trampoline)
                        if slot is None:
                            continue
                slot.users += 1
                active.add(key)
                mine.append(slot)

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
            origin = _trampoline_origin
            # One cheap id test per name; the few hits get the full check.
            hits = [
                (name, value)
                for name, value in list(ns.items())
                if id(value) in ids or id(value) in origin
            ]
            self._patch_names(
                ns,
                [
                    name
                    for name, value in hits
                    if not name.startswith("_")
                    and callable(value)
                    and id(origin.get(id(value), value)) in ids
                ],
            )
