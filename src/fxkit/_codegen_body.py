"""The per-node loop of code generation (split from codegen.py to keep both readable).

One pass computes, for every node, which values die after it; a second pass writes one line
per node. Both are linear in nodes plus edges.
"""

from __future__ import annotations

import keyword
import operator
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from fxkit.codegen import (
    _BINARY_SYMBOLS,
    _UNARY_SYMBOLS,
    PythonCode,
    _attr_path,
    _Emitter,
    _module_path,
)

if TYPE_CHECKING:
    from fxkit.codegen import CodeGen
    from fxkit.node import Node

_getattr = getattr
_GETITEM = operator.getitem


def _dying_after(nodes: List["Node"]) -> Dict["Node", List["Node"]]:
    """Map each node to the values whose last use it is (plus itself if nobody reads it)."""
    seen: set = set()
    dying: Dict[Node, List[Node]] = {}
    for node in reversed(nodes):
        for inp in node._input_nodes:
            if inp not in seen:
                seen.add(inp)
                dying.setdefault(node, []).append(inp)
        if not node.users and node.op not in ("placeholder", "output"):
            dying.setdefault(node, []).append(node)
    return dying


def _call_expr(em: _Emitter, node: "Node", root: str) -> str:
    op = node.op
    args, kwargs = node._args, node._kwargs
    if op == "call_function":
        target = node._target
        if not kwargs:
            symbol = _BINARY_SYMBOLS.get(target) if len(args) == 2 else None
            if symbol is not None:
                return f"{em.arg(args[0])} {symbol} {em.arg(args[1])}"
            symbol = _UNARY_SYMBOLS.get(target) if len(args) == 1 else None
            if symbol is not None:
                return f"{symbol}{em.arg(args[0])}"
            if target is _GETITEM and len(args) == 2:
                return f"{em.arg(args[0])}[{em.arg(args[1])}]"
            if (
                target is _getattr and len(args) == 2 and isinstance(args[1], str)
                and args[1].isidentifier() and not _is_keyword(args[1])
            ):  # fmt: skip
                return f"{em.arg(args[0])}.{args[1]}"
        return f"{em.callable_ref(target)}({em.args_and_kwargs(args, kwargs)})"
    if op == "call_method":
        if not args:
            raise ValueError(f"call_method node {node.name!r} has no object to call it on")
        rest = em.args_and_kwargs(args[1:], kwargs)
        return f"{em.arg(args[0])}.{node._target}({rest})"
    if op == "call_module":
        return f"{_module_path(root, node._target)}({em.args_and_kwargs(args, kwargs)})"
    if op == "get_attr":
        return _attr_path(root, node._target)
    raise ValueError(f"node {node.name!r} has an opcode codegen does not know: {op!r}")


_is_keyword = keyword.iskeyword


def _verbose_comment(node: "Node") -> Optional[str]:
    meta = node.meta
    parts = []
    tm = meta.get("tensor_meta")
    val = meta.get("val", meta.get("example_value"))
    if val is not None and hasattr(val, "shape"):
        parts.append(f"{getattr(val, 'dtype', '')}{list(val.shape)}")
    elif tm is not None and hasattr(tm, "shape"):
        parts.append(f"{getattr(tm, 'dtype', '')}{list(tm.shape)}")
    trace = meta.get("stack_trace")
    if trace:
        last = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
        if last:
            parts.append(" | ".join(last[-2:]))
    return "# " + "; ".join(parts) if parts else None


def generate(
    codegen: "CodeGen",
    nodes: List["Node"],
    root_module: str,
    *,
    verbose: bool = False,
    **_options: Any,
) -> PythonCode:
    """Generate :class:`PythonCode` for ``nodes`` with ``codegen``'s signature and return."""
    names = [n.name for n in nodes]
    names.extend(n._target.lstrip("*") for n in nodes if n.op == "placeholder")
    em = _Emitter(names)
    dying = _dying_after(nodes)
    free_vars: List[str] = []
    body: List[str] = []
    line_nodes: List[Optional[int]] = []
    return_annotation = ""
    codegen._current_emitter = em  # type: ignore[attr-defined]
    try:
        for index, node in enumerate(nodes):
            op = node.op
            if verbose and op != "placeholder":
                comment = _verbose_comment(node)
                if comment:
                    body.append(f"{comment}\n")
                    line_nodes.append(index)
            if op == "placeholder":
                decl = node._target
                annotation = em.type_ref(node.type)
                if annotation:
                    decl += f" : {annotation}"
                if node._args:
                    decl += f" = {em.arg(node._args[0])}"
                free_vars.append(decl)
                raw = node._target.lstrip("*")
                if raw != node.name:
                    body.append(f"{node.name} = {raw}\n")
                    line_nodes.append(index)
                continue
            if op == "output":
                annotation = em.type_ref(node.type)
                if annotation:
                    return_annotation = f" -> {annotation}"
                body.append(codegen.generate_output(node._args[0]) + "\n")
                line_nodes.append(index)
                continue
            annotation = em.type_ref(node.type) if node.type is not None else None
            target = f"{node.name} : {annotation}" if annotation else node.name
            line = f"{target} = {_call_expr(em, node, root_module)}"
            freed = dying.get(node)
            if freed:
                # ``del`` compiles about a third faster than torch.fx's ``a = b = None``.
                line += ";  del " + ", ".join([n.name for n in freed])
            body.append(line + "\n")
            line_nodes.append(index)
    finally:
        codegen._current_emitter = None  # type: ignore[attr-defined]
    if not body:
        body.append("pass\n")
        line_nodes.append(None)
    transformer = codegen._body_transformer
    if transformer is not None:
        body = transformer(body)
        line_nodes = []
    for name, value in codegen.additional_globals():
        em.globals.values[name] = value
    header = codegen.gen_fn_def(free_vars, return_annotation)
    prologue_lines = header.count("\n") + 1
    src = header + "\n" + "".join("    " + ln for ln in body)
    lineno_map: Dict[int, Optional[int]] = {}
    first = prologue_lines + 1
    for offset, node_index in enumerate(line_nodes):
        lineno_map[first + offset] = node_index
    return PythonCode(src, em.globals.values, lineno_map, names[: len(nodes)])
