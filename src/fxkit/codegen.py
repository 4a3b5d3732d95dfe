"""Turn a graph into Python source (:class:`CodeGen`, :class:`PythonCode`) and compile it.

Generation depends only on the nodes, and the text is torch.fx's for the same graph (see
:mod:`fxkit._codegen_body`): one line per node binding its value to the node's name, values
released with ``a = b = None`` right after their last use, objects without a literal
spelling (user functions, enums, NamedTuple types) passed to the code as globals.

Compilation is cached by source text: structurally identical graphs compile once, and the
source is registered with :mod:`linecache` so tracebacks show the generated line.
"""

from __future__ import annotations

import ast
import importlib
import math
import os
import re
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

import torch
import torch.utils._pytree as pytree
from torch.utils._dtype_abbrs import dtype_abbrs

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
    """Generated source plus the globals it needs (``exec(src, globals)`` defines it).

    ``_lineno_map`` maps a line of ``src``, counted from the ``def`` line
    (``_prologue_start``, 1-based), to the index of the node that produced it.
    """

    src: str
    globals: Dict[str, Any]
    _lineno_map: Optional[Dict[int, Optional[int]]] = field(default=None)
    _prologue_start: int = 0
    _node_names: Optional[List[str]] = field(default=None, repr=False)


class _PyTreeInfo(NamedTuple):
    """Original argument names and pytree specs for graphs whose inputs/outputs are nested."""

    orig_args: List[str]
    in_spec: pytree.TreeSpec
    out_spec: Optional[pytree.TreeSpec]


class CodeGen:
    """Turns a graph's nodes into the source of a ``forward`` function.

    Subclass to change how the signature is written (:meth:`gen_fn_def`), how results are
    returned (:meth:`generate_output`), how runtime inputs/outputs are converted
    (:meth:`process_inputs`, :meth:`process_outputs`) and which extra globals the code sees
    (:meth:`additional_globals`).
    """

    # How verbose code spells symbolic ints/floats; subclasses may override.
    _sym_repr: Callable[[Any], str] = staticmethod(repr)  # type: ignore[assignment]

    def __init__(self) -> None:
        self._body_transformer: Optional[Callable[[List[str]], List[str]]] = None
        self._func_name: str = "forward"

    def gen_fn_def(
        self, free_vars: List[str], maybe_return_annotation: str, *, expanded_def: bool = False
    ) -> str:
        """The ``def`` line; ``free_vars`` are the placeholder declarations (``self`` added).

        ``expanded_def`` puts each parameter on its own line.
        """
        if not free_vars or free_vars[0] != "self":
            free_vars.insert(0, "self")
        if expanded_def:
            params = "".join(_one_param_line(v) for v in free_vars)
            return f"def {self._func_name}(\n{params}){maybe_return_annotation}:"
        return f"def {self._func_name}({', '.join(free_vars)}){maybe_return_annotation}:"

    def generate_output(
        self,
        output_args: "Argument",
        *,
        descs: Optional[Sequence[str]] = None,
        repr_fn: Optional[Callable[[Any], str]] = None,
    ) -> str:
        """The ``return`` statement for the output node's value (not indented).

        ``repr_fn`` spells a value (the generator passes its own); ``descs`` puts one
        element per line, each followed by its description as a comment.
        """
        spell = repr if repr_fn is None else repr_fn
        if descs is not None and isinstance(output_args, (list, tuple)):
            return _multiline(output_args, descs, "return ", spell)
        return f"return {spell(output_args)}"

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


def _one_param_line(param: str) -> str:
    if "#" in param:
        code, comment = param.split("#", 1)
        return f"    {code.rstrip()},  # {comment.lstrip()}\n"
    return f"    {param},\n"


def _multiline(
    items: Sequence[Any], descs: Sequence[str], prefix: str, spell: Callable[[Any], str]
) -> str:
    opening, closing = ("(", ")") if isinstance(items, tuple) else ("[", "]")
    rows = "".join(f"    {spell(item)},  # {desc}\n" for item, desc in zip(items, descs))
    return f"{prefix}{opening}\n{rows}{closing}"


class _PyTreeCodeGen(CodeGen):
    """CodeGen for graphs traced from nested inputs: the function takes the original
    arguments, flattens them against ``self._in_spec``, and rebuilds outputs from
    ``self._out_spec``."""

    def __init__(self, pytree_info: _PyTreeInfo) -> None:
        super().__init__()
        self.pytree_info = pytree_info

    def process_inputs(self, *inputs: Any) -> Any:
        return pytree.arg_tree_leaves(*inputs)

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
            return super().gen_fn_def(free_vars, maybe_return_annotation, expanded_def=expanded_def)
        original = list(info.orig_args)
        if original and original[0] == "self":
            free_vars.insert(0, "self")
        header = super().gen_fn_def(
            list(original), maybe_return_annotation, expanded_def=expanded_def
        )
        if free_vars:
            header += self.gen_var_bindings(original, free_vars, expanded_def)
        return header

    def gen_var_bindings(self, fn_args: List[str], free_vars: List[str], expanded_def: bool) -> str:
        """Lines that unpack the original arguments into the graph's flat placeholders.

        Annotations go on a line of their own (``a: T; b: U;``): Python has no annotated
        tuple unpacking.
        """
        spec = self.pytree_info.in_spec
        packed = f"[{', '.join(fn_args)}]"
        if (
            spec.type is tuple and spec.num_children == 2
            and spec.child(0).type is tuple and spec.child(1).type is dict
        ):  # fmt: skip
            n_pos = spec.child(0).num_children
            rest = self.pytree_info.orig_args[n_pos:]
            kw = ", ".join(f"'{k}':{v}" for k, v in zip(spec.child(1).context, rest))
            packed = f"([{', '.join(self.pytree_info.orig_args[:n_pos])}], {{{kw}}})"
        bare = [v.split(":")[0].split("#")[0] for v in free_vars]
        annotated = [v for v in free_vars if ":" in v]
        out = ""
        if annotated:
            if expanded_def:
                out = "\n    " + "\n    ".join(annotated)
            else:
                out = "\n    " + "".join(v + "; " for v in annotated) + "\n"
        return (
            out + f"\n    {', '.join(bare)}, = fx_pytree.tree_flatten_spec({packed}, self._in_spec)"
        )

    def generate_output(
        self,
        output_args: "Argument",
        *,
        descs: Optional[Sequence[str]] = None,
        repr_fn: Optional[Callable[[Any], str]] = None,
    ) -> str:
        info = self.pytree_info
        if info is None or not info.out_spec:
            return super().generate_output(output_args, descs=descs, repr_fn=repr_fn)
        spell = repr if repr_fn is None else repr_fn
        if descs is not None and isinstance(output_args, (list, tuple)):
            head = _multiline(output_args, descs, "return pytree.tree_unflatten(", spell)
            return head + ", self._out_spec)"
        return f"return pytree.tree_unflatten({spell(output_args)}, self._out_spec)"


class _VerboseNotes:
    """What ``python_code(verbose=True)`` adds (torch.fx's text): a ``# File: ...`` summary
    line when the source location changes, and value metadata as string annotations
    (``relu: "f32[2, 3]" = ...``)."""

    def __init__(
        self,
        writer: Any,
        codegen: CodeGen,
        *,
        include_stride: bool = False,
        include_device: bool = False,
        additional_meta: Optional[List[str]] = None,
        **_unused: Any,
    ) -> None:
        self.writer = writer
        self.extra_keys = additional_meta or []
        self.codegen = codegen
        self.stride = include_stride or os.environ.get("FX_GRAPH_SHOW_STRIDE", "0") == "1"
        self.device = include_device or os.environ.get("FX_GRAPH_SHOW_DEVICE", "0") == "1"
        self.previous: Optional[str] = None

    def summary(self, node: "Node") -> Optional[str]:
        if node.op in ("placeholder", "output"):
            return None
        where = "No stacktrace found for following nodes"
        trace = node.meta.get("stack_trace")
        if trace:
            frame = _last_frame(trace)
            if frame is not None:
                where = "File: {}:{} in {}, code: {}".format(*frame)
        custom = node.meta.get("custom")
        tag = ""
        if custom:
            shown = {k: (str(v)[:40] + "..." if len(str(v)) > 40 else v) for k, v in custom.items()}
            tag = f" Annotation: {shown}"
        recompute, graph_id = node.meta.get("recompute"), node.meta.get("ac_graph_id")
        if recompute is not None and graph_id is not None:
            tag += f" ac_graph_id: {graph_id} - {recompute.name}"
        elif recompute is not None:
            tag += f" recompute: {recompute.name}"
        elif graph_id is not None:
            tag += f" ac_graph_id: {graph_id}"
        extra = [f"{k}: {node.meta[k]}" for k in self.extra_keys if k in node.meta]
        prefix = f"# {', '.join(extra)} " if extra else ""
        text = f"\n{prefix}#{tag} {where}\n"
        if text == self.previous:
            return None
        self.previous = text
        return text

    def annotation(self, node: "Node", default: str) -> str:
        meta = node.meta
        val: Any = meta.get("val", meta.get("tensor_meta", meta.get("example_value")))
        if isinstance(val, torch.Tensor) and val.layout not in (torch.sparse_csc, torch.sparse_csr):
            core = self._tensor_text(val)
            if type(val) is torch.Tensor or isinstance(val, torch._subclasses.FakeTensor):
                return f': "{core}"'
            return f': "{type(val).__name__}({core})"'
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return f': "Sym({self.codegen._sym_repr(val)})"'
        if type(val).__name__ == "TensorMetadata" and hasattr(val, "dtype"):
            return f': "{dtype_abbrs[val.dtype]}{_dims(val.shape)}"'
        return default

    def _tensor_text(self, t: torch.Tensor) -> str:
        stride = _dims(t.stride()) if self.stride else ""
        device = f"{t.device}" if self.device else ""
        return f"{dtype_abbrs[t.dtype]}{_dims(t.shape)}{stride}{device}"


def _dims(shape: Iterable[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


_FRAME_LINE = re.compile(r'^File "(.+)", line (\d+), in (.+)$')


def _last_frame(trace: str) -> Optional[Tuple[str, str, str, str]]:
    """(file, line, function, code) of the innermost ``File ...`` frame in a stack trace."""
    lines = trace.strip().split("\n")
    for i in range(len(lines) - 2, -1, -1):
        found = _FRAME_LINE.match(lines[i].strip())
        if found:
            return found.group(1), found.group(2), found.group(3), lines[i + 1].strip()
    return None


# ---------------------------------------------------------------------------------------------
# Faster submodule calls for the same text.


def module_call_tree(src: str, module_paths: Iterable[str], root: str = "self") -> Optional[Any]:
    """``src`` parsed, with calls of the given submodules (``self.layer1.conv(x)``,
    ``getattr(self.sub, "0")(x)``) reaching them through ``_modules`` dict lookups instead
    of ``nn.Module.__getattr__``, or ``None`` if ``src`` calls none of them.

    Compile the result under ``src``'s file name: each replacement keeps the source
    position of the expression it replaces, so tracebacks still underline the right span
    of the text users read. A submodule swapped with ``setattr`` still takes effect; one
    deleted without ``recompile()`` raises ``KeyError`` where attribute access would raise
    ``AttributeError``.
    """
    paths = set(module_paths)
    if not paths:
        return None
    tree = ast.parse(src)
    rewriter = _ModuleCalls(root, paths)
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef):
            for stmt in fn.body:
                # generated module calls are whole statements: ``name = <path>(args)``
                value = getattr(stmt, "value", None)
                if isinstance(value, ast.Call):
                    rewriter.rewrite(value)
    return tree if rewriter.changed else None


class _ModuleCalls:
    def __init__(self, root: str, paths: set) -> None:
        self.root, self.paths, self.changed = root, paths, False

    def rewrite(self, call: ast.Call) -> None:
        links = self._links(call.func)
        if not links or ".".join(name for name, _ in links) not in self.paths:
            return
        base: ast.expr = ast.copy_location(ast.Name(self.root, ast.Load()), call.func)
        for name, where in links:
            table = ast.copy_location(ast.Attribute(base, "_modules", ast.Load()), where)
            key = ast.copy_location(ast.Constant(name), where)
            base = ast.copy_location(ast.Subscript(table, key, ast.Load()), where)
        call.func = base
        self.changed = True

    def _links(self, expr: ast.expr) -> Optional[List[Tuple[str, ast.expr]]]:
        """``[(name, node), ...]`` for an attribute chain rooted at the root name."""
        if isinstance(expr, ast.Name):
            return [] if expr.id == self.root else None
        if isinstance(expr, ast.Attribute):
            inner, name = expr.value, expr.attr
        elif (
            isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
            and expr.func.id == "getattr" and len(expr.args) == 2 and not expr.keywords
            and isinstance(expr.args[1], ast.Constant) and isinstance(expr.args[1].value, str)
        ):  # fmt: skip
            inner, name = expr.args[0], expr.args[1].value
        else:
            return None
        head = self._links(inner)
        return None if head is None else [*head, (name, expr)]
