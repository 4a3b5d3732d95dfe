"""Values <-> JSON for :mod:`fxkit.serialize`, and the allowlist that resolves names on load.

Every value that is not a JSON primitive is written as a one-key object whose key starts with
``$`` (``{"$t": [...]}`` for a tuple, ``{"$fn": "torch.relu"}`` for a callable, ...), so a
reader can tell encodings apart without guessing. Decoding calls nothing but torch's tensor
constructors and imports nothing but torch's and fxkit's own submodules: other names are
looked up in modules that are already loaded, and only when the :class:`Allowlist` admits
them.
"""

from __future__ import annotations

import builtins
import enum
import importlib
import math
import operator
import sys
import types
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
import torch.utils._pytree as pytree

from fxkit._shape_guards import _Ref

__all__ = ["Allowlist", "DisallowedNameError", "FormatError", "Encoder", "Decoder"]


class FormatError(ValueError):
    """The file is not a well-formed fxkit graph file (truncated, edited, wrong version,
    unexpected entries)."""


class DisallowedNameError(FormatError):
    """The file names a function, class or attribute that the allowlist does not admit."""


# Names no default allowlist entry may resolve to: they run code, touch files or processes,
# or unpickle. A user who needs one adds it by name.
_NEVER_BY_DEFAULT = frozenset(
    f"builtins.{n}"
    for n in (
        "eval exec compile __import__ open input breakpoint exit quit help globals locals "
        "vars setattr delattr memoryview __build_class__ __loader__ __spec__"
    ).split()
)
_RISKY_TORCH_PARTS = (
    "load",
    "save",
    "hub",
    "cpp_extension",
    "jit",
    "package",
    "multiprocessing",
    "distributed",
    "_dynamo",
    "_inductor",
    "compile",
    "serialization",
    "utils.data",
    "_C._jit",
    "library",
    "classes",
)
# Attribute names a graph may not use on values: the ways out of the object graph into
# modules, globals and code objects.
_INTROSPECTION = frozenset(
    (
        "__class__ __globals__ __subclasses__ __bases__ __base__ __mro__ __code__ __builtins__ "
        "__dict__ __getattribute__ __reduce__ __reduce_ex__ __init_subclass__ __closure__ "
        "__func__ __self__ __module__ __loader__ __spec__ __import__ __setattr__ __delattr__ "
        "__init__ __new__ __call__ __get__ __set__ __wrapped__ f_globals f_locals gi_frame"
    ).split()
)
_FXKIT_RISKY = ("fxkit.serialize", "fxkit.cli", "fxkit._to_folder", "fxkit.__main__")
_DEFAULT_MODULES = ("torch", "operator", "math", "builtins", "_operator")


def check_attribute_name(name: str, where: str) -> None:
    """Refuse an attribute path that leaves the value it starts from (``__globals__`` and
    friends) or is not made of identifiers."""
    for atom in name.split("."):
        if not (atom.isidentifier() or atom.isdigit()) or atom in _INTROSPECTION:
            raise DisallowedNameError(
                f"{where}: attribute {name!r} is not allowed in a saved graph (only plain "
                "identifiers, no introspection attributes such as __globals__)"
            )


class Allowlist:
    """Which qualified names a file may resolve on load.

    By default: ``torch`` (functions, ``torch.ops``, ``torch.nn.functional``, tensor methods,
    dtypes; not the loading, saving, hub, jit, compile or distributed entry points),
    ``operator``, ``math`` and ``builtins`` (not ``eval``/``exec``/``open``/...); module
    classes under ``torch.nn``; fxkit's GraphModule classes. ``extra`` adds objects (a
    function, a class) or qualified names; a name that is a loaded module's name admits
    everything under it.
    """

    def __init__(self, extra: Iterable[Any] = (), *, stand_ins: bool = False) -> None:
        # stand_ins: for viewing only (``fxkit show``); a refused name becomes a function of
        # that name that raises when called, so the graph prints as saved and runs nothing.
        self.stand_ins = stand_ins
        self.objects: Dict[int, Any] = {}
        self.names: set = set()
        self.prefixes: List[str] = []
        self._resolved: Dict[str, Any] = {}  # a graph names the same few targets many times
        for item in extra:
            if isinstance(item, str):
                self.names.add(item)
                self.prefixes.append(item + ".")
            else:
                self.objects[id(item)] = item

    def admits(self, name: str) -> bool:
        if name in self.names or any(name.startswith(p) for p in self.prefixes):
            return True
        if name in _NEVER_BY_DEFAULT:
            return False
        top = name.split(".", 1)[0]
        if top == "fxkit":
            # fxkit's own graph helpers (_assert_is_none, GraphModule classes); not the
            # modules that read files or run commands.
            return not name.startswith(_FXKIT_RISKY)
        if top not in _DEFAULT_MODULES:
            return False
        if top == "torch":
            rest = name[len("torch.") :]
            if rest.startswith("ops."):
                return True  # operator overloads: registered kernels, looked up by name
            return not any(part in rest for part in _RISKY_TORCH_PARTS)
        return True

    def resolve(self, name: str, where: str) -> Any:
        """The object ``name`` denotes, if the allowlist admits it and its module is loaded."""
        found = self._resolved.get(name)
        if found is not None:
            return found
        try:
            obj = self._resolve(name, where)
        except DisallowedNameError:
            if not self.stand_ins:
                raise
            obj = stand_in(name)
        self._resolved[name] = obj
        return obj

    def _resolve(self, name: str, where: str) -> Any:
        allowed_by_object = False
        obj = _lookup(name)
        if obj is not _MISSING and id(obj) in self.objects:
            allowed_by_object = True
        if not allowed_by_object and not self.admits(name):
            raise DisallowedNameError(
                f"{where}: {name!r} is not in the allowlist; pass it in load(..., "
                f"allowed=[...]) if you trust this file"
            )
        if obj is _MISSING and not allowed_by_object and name.startswith(("torch.", "fxkit.")):
            # torch's and fxkit's own submodules are trusted code: import them if needed
            obj = _import_and_lookup(name)
        if obj is _MISSING:
            raise DisallowedNameError(
                f"{where}: {name!r} does not name a loaded object (fxkit imports no module "
                "but torch's and its own while loading: import it first)"
            )
        return obj


_MISSING = object()


def _import_and_lookup(name: str) -> Any:
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        return _lookup(name)
    return _MISSING


def stand_in(name: str) -> Callable[..., Any]:
    """A function that prints as ``name`` in generated code and refuses to run."""
    module, _, short = name.rpartition(".")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} was not resolved: this graph was loaded for viewing only")

    refuse.__name__ = refuse.__qualname__ = short
    refuse.__module__ = module
    refuse.fxkit_stand_in = True  # type: ignore[attr-defined]
    return refuse


def _lookup(name: str) -> Any:
    """Resolve ``a.b.c`` against modules already in ``sys.modules``; imports nothing."""
    if name.startswith("torch.ops."):
        parts = name.split(".")[2:]
        obj: Any = torch.ops
        try:
            for part in parts:
                obj = getattr(obj, part)
        except (AttributeError, RuntimeError):
            return _MISSING
        return obj
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj = module
        try:
            for part in parts[cut:]:
                if part.startswith("__") and part not in ("__getitem__",):
                    return _MISSING
                obj = getattr(obj, part)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


def qualified_name(obj: Any, cache: Optional[Dict[int, Any]] = None) -> Optional[str]:
    """A name that :func:`_lookup` resolves back to ``obj``, or None if there is none.
    ``cache`` (id -> (obj, name)) remembers answers across the nodes of one save."""
    if cache is None:
        return _qualified_name(obj)
    hit = cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    name = _qualified_name(obj)
    cache[id(obj)] = (obj, name)
    return name


def _qualified_name(obj: Any) -> Optional[str]:
    if isinstance(obj, torch._ops.OpOverload):
        return f"torch.ops.{obj.namespace}.{obj._opname}.{obj._overloadname}"
    if isinstance(obj, torch._ops.OpOverloadPacket):
        return f"torch.ops.{obj._qualified_op_name.replace('::', '.')}"
    name = getattr(obj, "__name__", None)
    if not isinstance(name, str):
        return None
    if getattr(builtins, name, None) is obj:
        return f"builtins.{name}"
    candidates = []
    qual = getattr(obj, "__qualname__", name)
    module = getattr(obj, "__module__", None)
    if isinstance(module, str):
        candidates.append(f"{module}.{qual}")
    if getattr(torch.Tensor, name, None) is obj:
        candidates.append(f"torch.Tensor.{name}")
    for home in (
        torch,
        torch.nn.functional,
        operator,
        math,
        torch.special,
        torch.linalg,
        torch.fft,
    ):
        if getattr(home, name, None) is obj:
            candidates.append(f"{home.__name__}.{name}")
    for candidate in candidates:
        if _lookup(candidate) is obj:
            return candidate
    return None


_DTYPES = {str(d).split(".", 1)[1]: d for d in vars(torch).values() if isinstance(d, torch.dtype)}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}
_LAYOUTS = {str(v).split(".", 1)[1]: v for v in vars(torch).values() if isinstance(v, torch.layout)}


class Encoder:
    """Turns values into JSON-ready data; tensors go to ``tensors`` under generated keys.

    ``on_unknown(value)`` decides what happens to a value with no encoding: raise (for graph
    arguments) or return a marker that drops it (for ``node.meta``)."""

    def __init__(self, tensors: Dict[str, torch.Tensor], node_name: Callable[[Any], str]) -> None:
        self.tensors = tensors
        self.node_name = node_name
        self._tensor_keys: Dict[int, str] = {}
        # While a module's attributes are encoded: its own parameters and buffers by id, so
        # an attribute that points at one (an RNN's flat weight list) stays a reference.
        self.own: Dict[int, str] = {}
        self.names: Dict[int, Any] = {}  # qualified_name's cache

    def tensor(self, t: torch.Tensor) -> str:
        key = self._tensor_keys.get(id(t))
        if key is None:
            key = self._tensor_keys[id(t)] = f"const/{len(self._tensor_keys)}"
            self.tensors[key] = t
        return key

    def encode(self, v: Any) -> Any:
        t = type(v)
        if v is None or t is bool or t is int or t is str:
            return v
        if t is float:
            return v if math.isfinite(v) else {"$f": repr(v)}
        if hasattr(v, "_input_nodes") or (hasattr(v, "op") and hasattr(v, "graph")):
            return {"$n": self.node_name(v)}
        if isinstance(v, torch.Size):
            return {"$size": [self.encode(x) for x in v]}
        if isinstance(v, tuple) and hasattr(v, "_fields"):
            name = qualified_name(t)
            if name is None:
                raise TypeError(f"named tuple type {t.__qualname__} has no importable name")
            return {"$nt": [name, [self.encode(x) for x in v]]}
        if isinstance(v, tuple):
            return {"$t": [self.encode(x) for x in v]}
        if isinstance(v, list):
            return [self.encode(x) for x in v]
        if isinstance(v, dict):
            return {"$d": [[self.encode(k), self.encode(x)] for k, x in v.items()]}
        if t is slice:
            return {"$s": [self.encode(v.start), self.encode(v.stop), self.encode(v.step)]}
        if t is complex:
            return {"$c": [v.real, v.imag]}
        if v is Ellipsis:
            return {"$e": 0}
        if isinstance(v, torch.dtype):
            return {"$dtype": str(v).split(".", 1)[1]}
        if isinstance(v, torch.device):
            return {"$dev": str(v)}
        if isinstance(v, torch.memory_format):
            return {"$mf": str(v).split(".", 1)[1]}
        if isinstance(v, torch.layout):
            return {"$layout": str(v).split(".", 1)[1]}
        if isinstance(v, pytree.TreeSpec):
            return {"$spec": pytree.treespec_dumps(v)}
        if isinstance(v, torch.Tensor):
            own = self.own.get(id(v))
            return {"$own": own} if own is not None else self._tensor_value(v)
        if isinstance(v, weakref.ref):
            own = self.own.get(id(v()))
            if own is not None:
                return {"$ownref": own}
        if isinstance(v, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return {"$sym": [type(v).__name__, str(v)]}
        if isinstance(v, enum.Enum):
            name = qualified_name(type(v))
            if name is not None:
                return {"$enum": [name, v.name]}
        if isinstance(v, type) or callable(v):
            name = qualified_name(v, self.names)
            if name is not None:
                return {"$fn": name}
        if type(v) is _Ref:  # a guard step's reference to an earlier step
            return {"$ref": v.index}
        raise TypeError(f"cannot save a value of type {type(v).__qualname__}: {v!r:.80}")

    def _tensor_value(self, t: torch.Tensor) -> Any:
        from torch._subclasses.fake_tensor import FakeTensor

        if isinstance(t, FakeTensor) or t.device.type == "meta":
            return {
                "$fake": {
                    "shape": [self.encode(x) for x in t.shape],
                    "stride": [self.encode(x) for x in t.stride()],
                    "dtype": str(t.dtype).split(".", 1)[1],
                    "device": str(t.device if not isinstance(t, FakeTensor) else t.fake_device),
                    "requires_grad": t.requires_grad,
                }
            }
        return {"$tensor": self.tensor(t)}


class Decoder:
    """Inverse of :class:`Encoder`. ``nodes`` maps names to rebuilt nodes; ``tensors`` holds
    the loaded weights; names resolve through ``allow``. ``lenient`` (for meta) keeps a
    name the allowlist refuses as its string instead of failing."""

    def __init__(
        self,
        allow: Allowlist,
        tensors: Dict[str, torch.Tensor],
        nodes: Optional[Dict[str, Any]] = None,
        where: str = "graph",
    ) -> None:
        self.allow = allow
        self.tensors = tensors
        self.nodes = nodes if nodes is not None else {}
        self.where = where
        self.lenient = False
        self._fake_mode: Any = None
        self.own: Dict[str, torch.Tensor] = {}  # the module's own tensors, see Encoder.own

    def own_tensor(self, name: Any) -> torch.Tensor:
        try:
            return self.own[name]
        except (KeyError, TypeError):
            raise FormatError(
                f"{self.where}: reference to unknown own tensor {name!r:.40}"
            ) from None

    def decode(self, v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.decode(x) for x in v]
        if not isinstance(v, dict) or len(v) != 1:
            raise FormatError(f"{self.where}: malformed value {v!r:.80}")
        ((tag, body),) = v.items()
        handler = _DECODERS.get(tag)
        if handler is None:
            raise FormatError(f"{self.where}: unknown value tag {tag!r}")
        try:
            return handler(self, body)
        except FormatError:
            raise
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise FormatError(f"{self.where}: malformed {tag} value: {e}") from None

    def name(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise FormatError(f"{self.where}: a name must be a string, got {name!r:.80}")
        try:
            return self.allow.resolve(name, self.where)
        except DisallowedNameError:
            if self.lenient:
                return name
            raise

    def node(self, name: str) -> Any:
        try:
            return self.nodes[name]
        except KeyError:
            raise FormatError(
                f"{self.where}: reference to node {name!r} that is not defined before it"
            ) from None

    def fake(self, body: Dict[str, Any]) -> Any:
        from torch._subclasses.fake_tensor import FakeTensorMode

        shape = [self.decode(x) for x in body["shape"]]
        stride = [self.decode(x) for x in body["stride"]]
        if not all(type(x) is int for x in (*shape, *stride)):
            return None  # symbolic sizes cannot be rebuilt without their ShapeEnv
        if self._fake_mode is None:
            self._fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        with self._fake_mode:
            t = torch.empty_strided(
                shape, stride, dtype=_DTYPES[body["dtype"]], device=torch.device(body["device"])
            )
        return t.requires_grad_(bool(body["requires_grad"])) if body["requires_grad"] else t


def _decode_float(d: Decoder, body: Any) -> float:
    if body not in ("inf", "-inf", "nan"):
        raise FormatError(f"{d.where}: bad float {body!r:.40}")
    return float(body)


def _decode_named_tuple(d: Decoder, body: Any) -> Any:
    name, fields = body
    cls = d.name(name)
    values = [d.decode(x) for x in fields]
    if isinstance(cls, str) or getattr(cls, "fxkit_stand_in", False):
        return tuple(values)
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise DisallowedNameError(f"{d.where}: {name!r} is not a named tuple type")
    return tuple.__new__(cls, values)


def _decode_tensor(d: Decoder, key: Any) -> torch.Tensor:
    try:
        return d.tensors[key]
    except KeyError:
        raise FormatError(f"{d.where}: tensor {key!r} is missing from the weights") from None


def _decode_enum(d: Decoder, body: Any) -> Any:
    cls = d.name(body[0])
    if isinstance(cls, str):
        return f"{cls}.{body[1]}"
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        raise DisallowedNameError(f"{d.where}: {body[0]!r} is not an enum")
    return cls[body[1]]


def _decode_callable(d: Decoder, name: Any) -> Any:
    obj = d.name(name)
    if isinstance(obj, types.ModuleType):
        raise DisallowedNameError(f"{d.where}: {name!r} is a module, not a function or class")
    return obj


def _decode_sym(d: Decoder, body: Any) -> str:
    # A symbolic size keeps its printed form; the ShapeEnv it belonged to is not saved.
    return str(body[1])


_DECODERS: Dict[str, Callable[[Decoder, Any], Any]] = {
    "$n": lambda d, b: d.node(b),
    "$t": lambda d, b: tuple(d.decode(x) for x in b),
    "$d": lambda d, b: {d.decode(k): d.decode(x) for k, x in b},
    "$f": _decode_float,
    "$size": lambda d, b: torch.Size(d.decode(x) for x in b),
    "$nt": _decode_named_tuple,
    "$s": lambda d, b: slice(*(d.decode(x) for x in b)),
    "$c": lambda d, b: complex(float(b[0]), float(b[1])),
    "$e": lambda d, b: Ellipsis,
    "$dtype": lambda d, b: _DTYPES[b],
    "$dev": lambda d, b: torch.device(b),
    "$mf": lambda d, b: _MEMORY_FORMATS[b],
    "$layout": lambda d, b: _LAYOUTS[b],
    "$tensor": _decode_tensor,
    "$fake": lambda d, b: d.fake(b),
    "$sym": _decode_sym,
    "$enum": _decode_enum,
    "$fn": _decode_callable,
    "$ref": lambda d, b: _guard_ref(int(b)),
    "$spec": lambda d, b: pytree.treespec_loads(b),
    "$own": lambda d, b: d.own_tensor(b),
    "$ownref": lambda d, b: weakref.ref(d.own_tensor(b)),
}


def _guard_ref(index: int) -> Any:
    return _Ref(index)
