"""The per-graph part of code generation (split from codegen.py to keep both readable).

The text is torch.fx's, byte for byte, so users can diff and golden-test ``gm.code`` across
the two libraries: locals and globals share one namespace with torch.fx's naming rules,
values are freed with ``;  a = b = None`` after their last use, in-place operators are
statements, submodules are reached as ``self.a.b``. Where torch.fx would write code that
cannot run (a function or tensor spelled by its ``repr``, a keyword used as an attribute),
fxkit binds a global or uses ``getattr`` instead; no working program sees the difference.
"""

from __future__ import annotations

import builtins
import enum
import functools
import inspect
import itertools
import keyword
import operator
import re
import sys
import types
import typing
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple, Union

import torch

from fxkit.codegen import PythonCode, _custom_builtins
from fxkit.node import Node

if TYPE_CHECKING:
    from fxkit.codegen import CodeGen

# --- names -------------------------------------------------------------------------------------

_SPLIT_NAME = re.compile(r"^([a-zA-Z_][0-9a-zA-Z_]*?)(?:_(\d+))?$")
_NON_IDENT = re.compile("[^0-9a-zA-Z_]+")
# A name in here may only be given to the very object it already means.
_RESERVED: Dict[str, object] = {word: object() for word in keyword.kwlist}
_RESERVED.update(builtins.__dict__)
_RESERVED.update(_custom_builtins)


class _Namespace:
    """Hands out unique identifiers for locals and globals, one per object.

    The rules (suffix counters per base name, never shadowing a builtin with another
    object) are torch.fx's, so both libraries name the same graph's values alike.
    """

    __slots__ = ("by_obj", "by_id", "used", "counts")

    def __init__(self) -> None:
        self.by_obj: Dict[Any, str] = {}
        self.by_id: Dict[int, Tuple[Any, str]] = {}  # for unhashable objects
        self.used: Set[str] = set()
        self.counts: Dict[str, int] = {}

    def lookup(self, obj: Any) -> Optional[str]:
        try:
            return self.by_obj.get(obj)
        except TypeError:
            hit = self.by_id.get(id(obj))
            return hit[1] if hit is not None and hit[0] is obj else None

    def create(self, hint: str, obj: Any) -> str:
        if obj is not None:
            known = self.lookup(obj)
            if known is not None:
                return known
        parts = _SPLIT_NAME.match(hint)
        if parts is None:
            hint = _NON_IDENT.sub("_", hint) or "_unnamed"
            if hint[0].isdigit():
                hint = "_" + hint
            parts = _SPLIT_NAME.match(hint)
            assert parts is not None, hint
        base, suffix = parts.group(1, 2)
        used = self.used
        # A name with a numeric suffix nobody holds is kept as is; anything else continues
        # the base's counter (a builtin or keyword only ever names its own object).
        kept = suffix is not None and hint not in used
        n = int(suffix) if kept else self.counts.get(base, 0)
        if not kept and _RESERVED.get(hint, obj) is not obj:
            n += 1
            hint = f"{base}_{n}"
        if hint in used:
            n = next(k for k in itertools.count(n + 1) if f"{base}_{k}" not in used)
            hint = f"{base}_{n}"
        used.add(hint)
        self.counts[base] = n
        if obj is not None:
            try:
                self.by_obj[obj] = hint
            except TypeError:
                self.by_id[id(obj)] = (obj, hint)
        return hint


# --- how torch.fx names callables and types ----------------------------------------------------

_TORCH_MODULE = re.compile(r"^torch(?:\.(?!_dynamo\.|_inductor\.)[^.]+)*$").fullmatch
_FXKIT_MODULE = re.compile(r"^fxkit(?:\.[^.]+)*$").fullmatch


def _module_of(obj: Any) -> Optional[str]:
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


def _is_torch_object(obj: Any) -> bool:
    """Objects torch.fx spells by their dotted path under the ``torch`` global."""
    if not isinstance(getattr(obj, "__name__", None), str):
        return False  # an instance (a tensor's class says "torch" too) has no path
    module = _module_of(obj)
    if module is not None:
        return _TORCH_MODULE(module) is not None
    name = getattr(obj, "__name__", None)
    if isinstance(name, str) and name != "torch":
        return any(getattr(m, name, None) is obj for m in (torch, torch.nn.functional))
    return False


def _reachable(obj: Any) -> bool:
    """Whether fxkit's ``module.name`` for ``obj`` leads back to it (closures do not)."""
    if not callable(obj) or not isinstance(getattr(obj, "__name__", None), str):
        return False
    module, _, name = qualified_name(obj).rpartition(".")
    found = sys.modules.get(module)
    return found is not None and getattr(found, name, None) is obj


def _named_in_module(obj: Any) -> bool:
    """Whether ``obj.__name__`` is an attribute of its module (tensor_type's ``Dyn`` names
    its class ``_DynType``): torch.fx spells such objects by that path."""
    name = getattr(obj, "__name__", None)
    module = sys.modules.get(_module_of(obj) or "")
    return isinstance(name, str) and module is not None and hasattr(module, name)


def qualified_name(fn: Any) -> str:
    """The dotted name torch.fx gives a callable (``torch.relu``, ``__main__.helper``)."""
    name = fn.__name__
    if getattr(builtins, name, None) is fn:
        return name
    if (
        isinstance(fn, (types.MethodDescriptorType, types.WrapperDescriptorType))
        and fn is getattr(torch.Tensor, name, None)
    ) or (_module_of(fn) == "torch._tensor" and fn.__qualname__ == f"Tensor.{name}"):
        return f"torch.Tensor.{name}"
    if name == "<lambda>":
        try:
            name = inspect.getsource(fn).split("=")[0].strip()
        except (OSError, TypeError):
            name = "_lambda_"
    module = _module_of(fn)
    if module is None:
        module = next(
            (m.__name__ for m in (torch, torch.nn.functional) if getattr(m, name, None) is fn),
            "",
        )
    module = module.replace("torch._ops", "torch.ops")
    if module == "torch" and name == "segment_reduce":
        name = "_segment_reduce"
    if module == "torch.nn.functional" and name in ("_ScalingType", "_SwizzleType"):
        name = name[1:]
    return f"{module}.{name}"


def type_text(obj: Any) -> str:
    """A type's short text: ``int``, ``torch.Tensor``, ``'Foo'`` for a string annotation."""
    if isinstance(obj, type) and not isinstance(obj, types.GenericAlias):
        return obj.__qualname__ if obj.__module__ == "builtins" else (
            f"{obj.__module__}.{obj.__qualname__}"
        )  # fmt: skip
    if obj is ...:
        return "..."
    if isinstance(obj, types.FunctionType):
        return obj.__name__
    return repr(obj)


_TYPING_ORIGINS: Dict[Any, Any] = {
    list: typing.List,
    dict: typing.Dict,
    set: typing.Set,
    frozenset: typing.FrozenSet,
    tuple: typing.Tuple,
}

# Operators written as Python syntax (templates take the node's positional args in order).
_SYNTAX: Dict[Any, str] = {
    operator.add: "{} + {}", operator.sub: "{} - {}", operator.mul: "{} * {}",
    operator.floordiv: "{} // {}", operator.truediv: "{} / {}", operator.mod: "{} % {}",
    operator.pow: "{} ** {}", operator.lshift: "{} << {}", operator.rshift: "{} >> {}",
    operator.and_: "{} & {}", operator.or_: "{} | {}", operator.xor: "{} ^ {}",
    operator.getitem: "{}[{}]", operator.matmul: "{} @ {}", operator.eq: "{} == {}",
    operator.ne: "{} != {}", operator.lt: "{} < {}", operator.gt: "{} > {}",
    operator.le: "{} <= {}", operator.ge: "{} >= {}", operator.pos: "+{}",
    operator.neg: "-{}", operator.invert: "~{}",
}  # fmt: skip
# In-place operators become statements that rebind their first operand, as Python does.
_IN_PLACE: Dict[Any, str] = {
    operator.iadd: "{} += {}", operator.iand: "{} &= {}", operator.ifloordiv: "{} //= {}",
    operator.ilshift: "{} <<= {}", operator.imod: "{} %= {}", operator.imul: "{} *= {}",
    operator.imatmul: "{} @= {}", operator.ior: "{} |= {}", operator.ipow: "{} **= {}",
    operator.irshift: "{} >>= {}", operator.isub: "{} -= {}", operator.itruediv: "{} /= {}",
    operator.ixor: "{} ^= {}", operator.setitem: "{}[{}] = {}",
}  # fmt: skip
_ARITY = {fn: text.count("{}") for fn, text in {**_SYNTAX, **_IN_PLACE}.items()}


def attr_chain(base: str, dotted: str) -> str:
    """``self.layer1.conv``; ``getattr(x, "0")`` for an atom Python cannot write after a dot."""
    out = base
    for atom in dotted.split("."):
        if atom.isidentifier() and not keyword.iskeyword(atom):
            out = f"{out}.{atom}"
        else:
            out = f'getattr({out}, "{atom}")'
    return out


@functools.lru_cache(maxsize=256)
def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def call_hook(method: Callable, *args: Any, **options: Any) -> Any:
    """Call a CodeGen hook, passing only the keyword options its signature accepts
    (subclasses written for older torch.fx versions take fewer)."""
    fn = getattr(method, "__func__", method)
    kept = {k: v for k, v in options.items() if _accepts(fn, k)}
    return method(*args, **kept)


# --- spelling values ---------------------------------------------------------------------------

_PLAIN_REPR = (str, int, bool, type(None), float, complex, range, torch.dtype, torch.layout,
               torch.memory_format, torch.device, type(Ellipsis))  # fmt: skip
_compiles: Dict[str, bool] = {}


def _is_expression(text: str) -> bool:
    hit = _compiles.get(text)
    if hit is None:
        try:
            compile(text, "<repr>", "eval")
            hit = True
        except SyntaxError:
            hit = False
        if len(_compiles) < 4096:
            _compiles[text] = hit
    return hit


class Writer:
    """Spells one graph's values, targets and types; owns the namespace and the globals."""

    def __init__(self) -> None:
        self.names = _Namespace()
        self._named = self.names.by_obj  # node -> local name, read once per argument
        self.globals: Dict[str, Any] = {}
        self._refs: Dict[int, Tuple[Any, str]] = {}
        for name, obj in _custom_builtins.items():
            self.add_global(name, obj)

    def add_global(self, hint: str, obj: Any) -> str:
        if obj is not torch.device and _is_torch_object(obj):
            return qualified_name(obj)
        if _FXKIT_MODULE(_module_of(obj) or "") and (_reachable(obj) or _named_in_module(obj)):
            import fxkit

            return f"{self.add_global('fxkit', fxkit)}.{qualified_name(obj).partition('.')[2]}"
        name = self.names.create(hint, obj)
        known = self.globals.get(name, obj)
        if known is not obj and known != obj:
            raise AssertionError(f"Global name {name} already assigned to different object")
        self.globals[name] = obj
        return name

    def local(self, node: Node) -> str:
        name = self._named.get(node)
        return name if name is not None else self.names.create(node._name, node)

    def callable_ref(self, fn: Any) -> str:
        hit = self._refs.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        if isinstance(getattr(fn, "__name__", None), str):
            ref = self.add_global(qualified_name(fn), fn)
        else:  # a callable object (functools.partial, an instance): torch.fx cannot name it
            ref = self.add_global(type(fn).__name__, fn)
        self._refs[id(fn)] = (fn, ref)
        return ref

    def value(self, a: Any) -> str:
        """A Python expression for argument ``a``."""
        t = type(a)
        if t is Node:  # the common case first: a value computed earlier
            name = self._named.get(a)
            return name if name is not None else self.names.create(a._name, a)
        if isinstance(a, Node):
            return self.local(a)
        if t in _PLAIN_REPR:
            return repr(a)
        if isinstance(a, tuple):
            if hasattr(a, "_fields"):
                cls = self.add_global(qualified_name(t), t)
                return cls + self.value(tuple(a))
            inner = ", ".join([self.value(x) for x in a])
            return f"({inner},)" if len(a) == 1 else f"({inner})"
        if isinstance(a, list):
            return "[" + ", ".join([self.value(x) for x in a]) + "]"
        if isinstance(a, dict):
            return "{" + ", ".join(f"{self.value(k)}: {self.value(v)}" for k, v in a.items()) + "}"
        if t is slice:
            return f"slice({self.value(a.start)}, {self.value(a.stop)}, {self.value(a.step)})"
        if isinstance(a, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            return self.add_global(qualified_name(a), a)
        if isinstance(a, enum.Enum):
            return f"{self.add_global(t.__name__, t)}.{a.name}"
        if isinstance(a, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
            return repr(a)
        if isinstance(a, type):
            return self.add_global(type_text(a), a)
        if isinstance(a, (torch.Tensor, torch.nn.Module)):
            return self.add_global(f"_{t.__name__.lower()}_constant", a)
        if callable(a) and isinstance(getattr(a, "__name__", None), str):
            return self.callable_ref(a)
        if t.__repr__ is not object.__repr__:
            text = repr(a)
            if _is_expression(text):
                return text
        return self.add_global(f"_{t.__name__.lower()}_constant", a)

    def call_args(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
        parts = [self.value(a) for a in args]
        parts.extend([f"{k} = {self.value(v)}" for k, v in kwargs.items()])
        return ", ".join(parts)

    def annotation(self, t: Any) -> str:
        """A type annotation as torch.fx writes it in code (``typing_List[float]``)."""
        if isinstance(t, tuple) and t == ():
            return "()"
        text = type_text(t)
        if isinstance(t, types.UnionType) and "|" in text:
            return "|".join(self.annotation(a) for a in typing.get_args(t))
        origin = getattr(t, "__origin__", None)
        if origin:
            if isinstance(t, typing._GenericAlias):  # type: ignore[attr-defined]
                origin = _TYPING_ORIGINS.get(origin, origin)
            head = self.add_global(type_text(origin), origin)
            params = t.dims if type(t).__name__ == "TensorType" else typing.get_args(t)
            if params:
                return f"{head}[{','.join(self.annotation(p) for p in params)}]"
            return head
        return self.add_global(text, t)


# --- the body ----------------------------------------------------------------------------------


def _last_uses(nodes: List[Node]) -> Dict[Node, List[Node]]:
    """For each node, the values it reads for the last time (in first-seen order)."""
    seen: Set[Node] = set()
    out: Dict[Node, List[Node]] = {}
    for node in reversed(nodes):
        for inp in node._input_nodes:
            if inp not in seen:
                seen.add(inp)
                out.setdefault(node, []).append(inp)
    return out


def _statement(w: Writer, node: Node, root: str, ann: str, wrapped: Dict[str, None]) -> str:
    op = node.op
    args, kwargs = node._args, node._kwargs
    if op == "call_function":
        target = node._target
        if not callable(target):
            raise AssertionError(f"Expected node.target to be callable, got {type(target)}")
        try:
            arity = _ARITY.get(target)
        except TypeError:  # an unhashable callable object
            arity = None
        if arity is not None and arity == len(args):
            template = _SYNTAX.get(target)
            if template is not None:
                return f"{w.local(node)}{ann} = {template.format(*[w.value(a) for a in args])}"
        if arity is not None and arity == len(args) and isinstance(args[0], Node):
            # (a constant target would be `1 += x`, a SyntaxError: it takes the call form)
            first = w.value(args[0])
            stmt = _IN_PLACE[target].format(first, *[w.value(a) for a in args[1:]])
            return f"{stmt};  {w.local(node)}{ann} = {first}"
        fn = w.callable_ref(target)
        if (
            fn == "getattr" and len(args) == 2 and isinstance(args[1], str)
            and args[1].isidentifier() and not keyword.iskeyword(args[1])
        ):  # fmt: skip
            return f"{w.local(node)}{ann} = {w.value(args[0])}.{args[1]}"
        text = f"{w.local(node)}{ann} = {fn}({w.call_args(args, kwargs)})"
        meta = node._meta
        if meta and meta.get("is_wrapped", False):
            wrapped.setdefault(fn)
        return text
    if op == "call_method":
        if not args:
            raise ValueError(f"call_method node {node.name!r} has no object to call it on")
        obj = attr_chain(w.value(args[0]), node._target)
        return f"{w.local(node)}{ann} = {obj}({w.call_args(args[1:], kwargs)})"
    if op == "call_module":
        call = f"{attr_chain(root, node._target)}({w.call_args(args, kwargs)})"
        return f"{w.local(node)}{ann} = {call}"
    if op == "get_attr":
        return f"{w.local(node)}{ann} = {attr_chain(root, node._target)}"
    raise NotImplementedError(f"node: {node.op} {node.target}")


def generate(
    codegen: "CodeGen",
    nodes: List[Node],
    root_module: str,
    **options: Any,
) -> PythonCode:
    """Generate :class:`PythonCode` for ``nodes`` with ``codegen``'s signature and return."""
    if type(codegen).__module__ == "fxkit.codegen":
        return _generate(codegen, nodes, root_module, **options)
    # A user's CodeGen may spell nodes with repr(): make that the generated local's name.
    w = Writer()
    saved = [n.__dict__.get("_repr_fn") for n in nodes]
    for n in nodes:
        n._repr_fn = w.local
    try:
        return _generate(codegen, nodes, root_module, writer=w, **options)
    finally:
        for n, fn in zip(nodes, saved):
            if fn is None:
                n.__dict__.pop("_repr_fn", None)
            else:
                n._repr_fn = fn


def _generate(
    codegen: "CodeGen",
    nodes: List[Node],
    root_module: str,
    *,
    writer: Optional[Writer] = None,
    verbose: bool = False,
    expanded_def: bool = False,
    record_func: bool = False,
    **options: Any,
) -> PythonCode:
    from fxkit.codegen import _VerboseNotes

    w = writer or Writer()
    last_uses = _last_uses(nodes)
    free_vars: List[str] = []
    # Text pieces, each ending in a newline, with an int (node index) before each node's text.
    body: List[Union[int, str]] = []
    wrapped: Dict[str, None] = {}
    return_annotation = ""
    notes = _VerboseNotes(w, codegen, **options) if verbose else None
    if record_func:
        body.append(f"_rf = {_RECORD}('## ENTER_GRAPH_PLACEHOLDER_KEY ##'); _rf.__enter__()\n")
    for index, node in enumerate(nodes):
        op = node.op
        if notes is not None:
            summary = notes.summary(node)
            if summary:
                body.append(summary)
        body.append(index)
        profiled = record_func and op in ("call_function", "call_method", "call_module")
        if profiled:
            rf = f"_rf_{node._name}"
            body.append(f"{rf} = {_RECORD}('## {index} ##'); {rf}.__enter__()\n")
        ann = "" if node.type is None else f" : {w.annotation(node.type)}"
        if notes is not None:
            ann = notes.annotation(node, ann)
        if op == "placeholder":
            decl = f"{node._target}{ann}"
            if node._args:
                decl += f" = {w.value(node._args[0])}"
            if expanded_def and node.meta.get("desc") is not None:
                decl += f"  # {node.meta['desc']}"
            free_vars.append(decl)
            raw = node._target.replace("*", "")
            name = w.local(node)
            if raw != name:
                body.append(f"{name} = {raw}\n")
            continue
        if op == "output":
            if node.type is not None:
                return_annotation = f" -> {w.annotation(node.type)}"
            descs = node.meta.get("desc") if expanded_def else None
            line = call_hook(codegen.generate_output, node._args[0], descs=descs, repr_fn=w.value)
            body.append(line + "\n")
            continue
        line = _statement(w, node, root_module, ann, wrapped)
        dead = last_uses.get(node)
        if not node.users:
            dead = [*dead, node] if dead else [node]
        if dead:
            line += ";  " + " = ".join([w.local(n) for n in dead]) + " = None"
        body.append(line + "\n")
        if profiled:
            body.append(f"_rf_{node._name}.__exit__(None, None, None)\n")
    if record_func:
        body.append("_rf.__exit__(None, None, None)\n")
    if not body or all(type(piece) is int for piece in body):
        body.append("pass\n")
    wrap_lines = ""
    if wrapped:
        import fxkit

        wrap_fn = w.add_global("wrap", fxkit.wrap)
        wrap_lines = "\n".join(f'{wrap_fn}("{name}")' for name in wrapped)
    transformer = codegen._body_transformer
    for name, value in codegen.additional_globals():
        w.add_global(name, value)
    header = call_hook(codegen.gen_fn_def, free_vars, return_annotation, expanded_def=expanded_def)
    first_key = header.count("\n") + 1
    if transformer is not None:
        text, lineno_map = _transformed(transformer, body, first_key)
    else:
        text, lineno_map = _joined(body, first_key)
    code = "    " + text.lstrip("\n").replace("\n", "\n    ")
    src = f"\n{wrap_lines}\n\n{header}\n{code}"
    node_names = [n.name for n in nodes]
    return PythonCode(src, w.globals, lineno_map, wrap_lines.count("\n") + 4, node_names)


def _joined(body: List[Union[int, str]], first_key: int) -> Tuple[str, Dict[int, Optional[int]]]:
    """The body text and a map from line (counted from ``first_key``) to node index."""
    texts: List[str] = []
    lineno_map: Dict[int, Optional[int]] = {}
    key = first_key
    owner: Optional[int] = None
    for piece in body:
        if type(piece) is int:
            owner = piece  # type: ignore[assignment]
            continue
        texts.append(piece)  # type: ignore[arg-type]
        for _ in range(piece.count("\n")):  # type: ignore[union-attr]
            lineno_map[key] = owner
            key += 1
    lineno_map[key] = owner
    return "".join(texts), lineno_map


_RECORD = "torch._C._profiler._RecordFunctionFast"
_MARK = re.compile(r"# COUNTER: (\d+)")


def _transformed(
    transformer: Callable[[List[str]], List[str]], body: List[Union[int, str]], first_key: int
) -> Tuple[str, Dict[int, Optional[int]]]:
    """Like :func:`_joined`, for a body passed through a user transformer: node positions
    travel as ``# COUNTER: i`` lines, as torch.fx's transformers expect to see them."""
    pieces = [f"# COUNTER: {p}\n" if type(p) is int else p for p in body]
    lines: List[str] = []
    lineno_map: Dict[int, Optional[int]] = {}
    owner: Optional[int] = None
    for line in "".join(transformer(pieces)).split("\n"):  # type: ignore[arg-type]
        mark = _MARK.search(line)
        if mark is not None:
            owner = int(mark.group(1))
            continue
        lineno_map[len(lines) + first_key] = owner
        lines.append(line)
    return "\n".join(lines), lineno_map
