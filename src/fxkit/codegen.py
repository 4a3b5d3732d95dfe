"""Turn a graph into Python source (:class:`CodeGen`, :class:`PythonCode`) and compile it.

Generation depends only on the nodes. Each generated line binds one node's value to the
node's name, and values are released (``name = None``) right after their last use so long
graphs do not keep every intermediate alive. Objects that have no literal spelling (user
functions, enums, classes, arbitrary constants) are passed to the code as globals.

Compilation is cached by source text: structurally identical graphs compile once, and the
source is registered with :mod:`linecache` so tracebacks show the generated line.
"""

from __future__ import annotations

import builtins
import collections
import enum
import hashlib
import importlib
import keyword
import linecache
import math
import operator
import threading
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch
import torch.utils._pytree as pytree

from fxkit import _pytree as fx_pytree
from fxkit.node import Node

if TYPE_CHECKING:
    from fxkit.node import Argument

__all__ = ["CodeGen", "PythonCode", "describe_target"]

# Names the generated code may always use; node names never take them.
_custom_builtins: Dict[str, Any] = {
    "inf": math.inf,
    "nan": math.nan,
    "NoneType": type(None),
    "torch": torch,
    "device": torch.device,
    "fx_pytree": fx_pytree,
    "pytree": pytree,
}

_BINARY_SYMBOLS = {
    operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
    operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
    operator.lshift: "<<", operator.rshift: ">>", operator.and_: "&", operator.or_: "|",
    operator.xor: "^", operator.eq: "==", operator.ne: "!=", operator.lt: "<",
    operator.le: "<=", operator.gt: ">", operator.ge: ">=",
}  # fmt: skip
_UNARY_SYMBOLS = {operator.neg: "-", operator.pos: "+", operator.invert: "~", operator.not_: "not "}
_ROOT_MODULES = {"torch": torch, "operator": operator, "math": math, "builtins": builtins}


def describe_target(target: Any) -> str:
    """A readable dotted name for a node target (``operator.add``, ``torch.relu`` ...)."""
    if isinstance(target, str):
        return target
    path = _importable_path(target)
    if path is not None:
        return path
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    module = getattr(target, "__module__", None)
    if name and module:
        return f"{module}.{name}"
    return repr(target)


def _importable_path(obj: Any) -> Optional[str]:
    """``module.qualname`` of ``obj`` if importing it gives back the very same object."""
    if isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return (
            f"torch.ops.{obj}"
            if isinstance(obj, torch._ops.OpOverloadPacket)
            else (f"torch.ops.{obj.name().replace('::', '.')}")
        )
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module is None and getattr(obj, "__self__", None) is torch._C._VariableFunctions:
        module = "torch"
    if not module or not qualname or "<" in qualname:
        return None
    if module == "torch._C._VariableFunctions" or module == "torch._C._nn":
        module = "torch" if module.endswith("VariableFunctions") else "torch._C._nn"
    if module == "_operator":
        module = "operator"
    try:
        owner: Any = importlib.import_module(module)
    except ImportError:
        return None
    found = owner
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is obj:
        return f"{module}.{qualname}"
    name = getattr(obj, "__name__", None)
    if name and getattr(owner, name, None) is obj:
        return f"{module}.{name}"
    return None


@dataclass
class PythonCode:
    """Generated source plus the globals it needs (``exec(src, globals)`` defines it)."""

    src: str
    globals: Dict[str, Any]
    _lineno_map: Optional[Dict[int, Optional[int]]] = field(default=None)
    _node_names: Optional[List[str]] = field(default=None, repr=False)


class _PyTreeInfo(NamedTuple):
    """Original argument names and pytree specs for graphs whose inputs/outputs are nested."""

    orig_args: List[str]
    in_spec: pytree.TreeSpec
    out_spec: Optional[pytree.TreeSpec]


class _Globals:
    """Allocates names for objects the generated code reads from its globals."""

    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken)
        self.values: Dict[str, Any] = dict(_custom_builtins)
        self.by_id: Dict[int, str] = {id(v): k for k, v in _custom_builtins.items()}

    def name_for(self, obj: Any, preferred: str) -> str:
        known = self.by_id.get(id(obj))
        if known is not None:
            return known
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in preferred) or "obj"
        if base[0].isdigit():
            base = "_" + base
        name, n = base, 0
        while (
            name in self.taken or name in self.values or keyword.iskeyword(name)
            or hasattr(builtins, name)
        ):  # fmt: skip
            n += 1
            name = f"{base}_{n}"
        self.values[name] = obj
        self.by_id[id(obj)] = name
        return name

    def root(self, module_name: str) -> str:
        return self.name_for(_ROOT_MODULES[module_name], module_name)


class _Emitter:
    """Spells arguments and targets of one graph as Python expressions."""

    def __init__(self, node_names: Iterable[str]) -> None:
        self.globals = _Globals(node_names)
        self._refs: Dict[int, Tuple[Any, str]] = {}

    def callable_ref(self, fn: Any) -> str:
        hit = self._refs.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        ref = self._callable_ref(fn)
        self._refs[id(fn)] = (fn, ref)
        return ref

    def _callable_ref(self, fn: Any) -> str:
        short = getattr(fn, "__name__", "")
        if short and getattr(builtins, short, None) is fn:
            return str(short)
        path = _importable_path(fn)
        if path is not None:
            root, _, rest = path.partition(".")
            if root in _ROOT_MODULES and root != "builtins":
                return f"{self.globals.root(root)}.{rest}"
        name = getattr(fn, "__name__", None) or type(fn).__name__
        return self.globals.name_for(fn, name)

    def arg(self, a: Any) -> str:
        t = type(a)
        if t is Node:
            return a.name
        if isinstance(a, Node):
            return repr(a)
        if t is str or t is int or t is bool or a is None or a is Ellipsis:
            return repr(a)
        if t is float:
            if math.isfinite(a):
                return repr(a)
            return "nan" if math.isnan(a) else ("inf" if a > 0 else "-inf")
        if isinstance(a, tuple):
            items = ", ".join(self.arg(x) for x in a)
            if hasattr(a, "_fields"):
                return f"{self.globals.name_for(t, t.__name__)}({items})"
            if t is torch.Size:
                return f"torch.Size([{items}])"
            return f"({items},)" if len(a) == 1 else f"({items})"
        if isinstance(a, list):
            return "[" + ", ".join(self.arg(x) for x in a) + "]"
        if isinstance(a, dict):
            return "{" + ", ".join(f"{self.arg(k)}: {self.arg(v)}" for k, v in a.items()) + "}"
        if t is slice:
            return f"slice({self.arg(a.start)}, {self.arg(a.stop)}, {self.arg(a.step)})"
        if isinstance(a, (torch.dtype, torch.layout, torch.memory_format)):
            return repr(a)  # torch.float32, torch.strided, torch.contiguous_format
        if t is torch.device:
            return repr(a)  # device(type='cpu', index=0); ``device`` is a custom builtin
        if t is complex:
            return f"complex({self.arg(a.real)}, {self.arg(a.imag)})"
        if t is range:
            return repr(a)
        if isinstance(a, enum.Enum):
            return f"{self.globals.name_for(t, t.__name__)}.{a.name}"
        if isinstance(a, type):
            cls_name: str = a.__name__
            if a.__module__ == "builtins" and getattr(builtins, cls_name, None) is a:
                return cls_name
            return self.globals.name_for(a, cls_name)
        if callable(a) and not isinstance(a, torch.nn.Module):
            return self.callable_ref(a)
        return self.globals.name_for(a, f"_{type(a).__name__.lower()}_constant")

    def type_ref(self, t: Any) -> Optional[str]:
        """An annotation expression for ``t``, or ``None`` if it cannot be spelled."""
        if t is None:
            return None
        if isinstance(t, type):
            type_name: str = t.__name__
            if t.__module__ == "builtins" and getattr(builtins, type_name, None) is t:
                return type_name
            path = _importable_path(t)
            if path is not None and path.split(".")[0] == "torch":
                return path
            return self.globals.name_for(t, t.__name__)
        text = repr(t)
        if text.startswith("typing."):
            self.globals.name_for(typing, "typing")
            if "typing" in self.globals.values and self.globals.values["typing"] is typing:
                return text
        return None

    def args_and_kwargs(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
        parts = [self.arg(a) for a in args]
        parts.extend(f"{k} = {self.arg(v)}" for k, v in kwargs.items())
        return ", ".join(parts)


def _attr_path(base: str, dotted: str) -> str:
    """``self.a.b``, with ``getattr`` for segments that are not identifiers (``layers.0``)."""
    out = base
    for part in dotted.split("."):
        if part.isidentifier() and not keyword.iskeyword(part):
            out = f"{out}.{part}"
        else:
            out = f"getattr({out}, {part!r})"
    return out


def _module_path(base: str, dotted: str) -> str:
    """``self._modules['a']._modules['b']``: reaches a submodule by dict lookups.

    Generated code calls submodules this way rather than ``self.a.b`` because every
    attribute read of a submodule goes through the Python-level ``nn.Module.__getattr__``
    (about 0.5 us each); with dict lookups a traced model's forward costs what eager does.
    Swapping a submodule with ``setattr`` still takes effect without a recompile.
    """
    return base + "".join(f"._modules[{part!r}]" for part in dotted.split("."))


class CodeGen:
    """Turns a graph's nodes into the source of a ``forward`` function.

    Subclass to change how the signature is written (:meth:`gen_fn_def`), how results are
    returned (:meth:`generate_output`), how runtime inputs/outputs are converted
    (:meth:`process_inputs`, :meth:`process_outputs`) and which extra globals the code sees
    (:meth:`additional_globals`).
    """

    def __init__(self) -> None:
        self._body_transformer: Optional[Callable[[List[str]], List[str]]] = None
        self._func_name: str = "forward"

    def gen_fn_def(
        self, free_vars: List[str], maybe_return_annotation: str, *, expanded_def: bool = False
    ) -> str:
        """The ``def`` line; ``free_vars`` are the placeholder declarations (``self`` added)."""
        if not free_vars or free_vars[0] != "self":
            free_vars.insert(0, "self")
        return f"def {self._func_name}({', '.join(free_vars)}){maybe_return_annotation}:"

    def generate_output(self, output_args: "Argument", **_unused: Any) -> str:
        """The ``return`` statement for the output node's value."""
        emitter = getattr(self, "_current_emitter", None)
        return f"return {emitter.arg(output_args) if emitter else repr(output_args)}"

    def process_inputs(self, *args: Any) -> Any:
        """Turn the caller's inputs into the graph's placeholder values (identity here)."""
        return args

    def process_outputs(self, outputs: Any) -> Any:
        """Turn the graph's output value into what the caller sees (identity here)."""
        return outputs

    def additional_globals(self) -> List[Tuple[str, Any]]:
        """Extra ``(name, value)`` pairs the generated code needs in its globals."""
        return []

    def _gen_python_code(
        self, nodes: Iterable["Node"], root_module: str, **options: Any
    ) -> PythonCode:
        from fxkit._codegen_body import generate

        return generate(self, list(nodes), root_module, **options)


class _PyTreeCodeGen(CodeGen):
    """CodeGen for graphs traced from nested inputs: the function takes the original
    arguments, flattens them against ``self._in_spec``, and rebuilds outputs from
    ``self._out_spec``."""

    def __init__(self, pytree_info: _PyTreeInfo) -> None:
        super().__init__()
        self.pytree_info = pytree_info

    def process_inputs(self, *inputs: Any) -> Any:
        return pytree.tree_leaves(inputs)

    def process_outputs(self, out: Any) -> Any:
        spec = self.pytree_info.out_spec if self.pytree_info else None
        if spec is None:
            return out
        return pytree.tree_unflatten(out if isinstance(out, (list, tuple)) else [out], spec)

    def gen_fn_def(
        self, free_vars: List[str], maybe_return_annotation: str, *, expanded_def: bool = False
    ) -> str:
        info = self.pytree_info
        if info is None:
            return super().gen_fn_def(free_vars, maybe_return_annotation)
        original = list(info.orig_args)
        header = super().gen_fn_def(list(original), maybe_return_annotation)
        flat = [v.split(":")[0].split("=")[0].strip() for v in free_vars if v != "self"]
        if not flat:
            return header
        call_args = [a for a in original if a != "self"]
        spec = info.in_spec
        children = fx_pytree.spec_children(spec)
        if (
            spec.type is tuple and len(children) == 2
            and children[0].type is tuple and children[1].type is dict
        ):  # fmt: skip
            n_pos = children[0].num_children
            keys = children[1].context
            kw = ", ".join(f"{k!r}: {v}" for k, v in zip(keys, call_args[n_pos:]))
            packed = f"([{', '.join(call_args[:n_pos])}], {{{kw}}})"
        else:
            packed = f"[{', '.join(call_args)}]"
        return (
            f"{header}\n    {', '.join(flat)}, = fx_pytree.tree_flatten_spec({packed}, "
            "self._in_spec)"
        )

    def generate_output(self, output_args: "Argument", **_unused: Any) -> str:
        info = self.pytree_info
        if info is not None and info.out_spec is not None:
            return f"return pytree.tree_unflatten({output_args!r}, self._out_spec)"
        return super().generate_output(output_args)


# ---------------------------------------------------------------------------------------------
# Compiling: cache code objects by source text; register the text with linecache.

_CACHE_LIMIT = 1024
_code_cache: "collections.OrderedDict[str, Tuple[Any, str]]" = collections.OrderedDict()
_cache_lock = threading.Lock()


def _compiled(src: str) -> Any:
    with _cache_lock:
        hit = _code_cache.get(src)
        if hit is not None:
            _code_cache.move_to_end(src)
            return hit[0]
    digest = hashlib.blake2b(src.encode(), digest_size=8).hexdigest()
    filename = f"<fxkit-generated-{digest}>"
    code = compile(src, filename, "exec")
    with _cache_lock:
        _code_cache[src] = (code, filename)
        linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
        while len(_code_cache) > _CACHE_LIMIT:
            _, (_, old_name) = _code_cache.popitem(last=False)
            linecache.cache.pop(old_name, None)
    return code


def _exec_with_source(src: str, globals: Dict[str, Any], co_fields: Any = None) -> None:
    """Run ``src`` in ``globals`` (compiled once per distinct text, visible to tracebacks)."""
    exec(_compiled(src), globals)


def _forward_from_src(src: str, globals: Dict[str, Any], co_fields: Any = None) -> Callable:
    """Compile ``src`` (which defines ``forward``) and return that function."""
    scope = dict(globals)
    _exec_with_source(src, scope, co_fields)
    return scope["forward"]


def generated_filename(src: str) -> Optional[str]:
    """The linecache filename under which ``src`` was compiled, if it is cached."""
    hit = _code_cache.get(src)
    return hit[1] if hit else None
