"""Draw a GraphModule as a graphviz DOT graph (torch.fx's ``FxGraphDrawer``).

With ``pydot`` installed, the drawer returns ``pydot.Dot`` objects, as torch.fx does. Without it
the drawer still works and returns :class:`fxkit.drawing.dot.DotGraph` objects with the same
interface subset (``to_string``, ``create_svg``, ``write_svg``, ``write_raw``, ``get_name``);
their SVG comes from graphviz's ``dot`` program when present, otherwise from fxkit's own layout.

Labels are torch.fx's ``record`` labels, with every piece of user text (targets, arguments,
module constants, source lines) escaped for the record syntax, so operators such as ``|`` or
``<``, braces in reprs, quotes and backslashes no longer break ``dot``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import math
from typing import Any, Callable, Dict, Optional

import torch

from fxkit._codegen_body import qualified_name
from fxkit._compatibility import compatibility
from fxkit.drawing.dot import DotCluster, DotEdge, DotGraph, DotNode, record_escape
from fxkit.operator_schemas import normalize_function

__all__ = ["FxGraphDrawer"]


def _pydot_installed() -> bool:
    try:
        return importlib.util.find_spec("pydot") is not None
    except (ImportError, ValueError, AttributeError):  # a broken or blocked install
        return False


HAS_PYDOT = _pydot_installed()

# Fill colours by op (torch.fx's palette; graphviz colour names).
_OP_FILL = dict(
    placeholder='"AliceBlue"', call_module="LemonChiffon1", get_param="Yellow2",
    get_attr="LightGrey", output="PowderBlue",
)  # fmt: skip
# Other ops take one of these, picked by a hash of their target's name (stable across runs).
_TARGET_FILLS = (
    "CadetBlue1", "Coral", "DarkOliveGreen1", "DarkSeaGreen1", "GhostWhite", "Khaki1",
    "LavenderBlush1", "LightSkyBlue", "MistyRose1", "MistyRose2", "PaleTurquoise2",
    "PeachPuff1", "Salmon", "Thistle1", "Thistle3", "Wheat1",
)  # fmt: skip
_PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL_QSCHEMES = (
    torch.per_channel_affine,
    torch.per_channel_symmetric,
    torch.per_channel_affine_float_qparams,
)
_MISSING = object()
_BR = "\\n"  # a centred line break inside a DOT label
_BR_LEFT = "\\l"  # a left-aligned one


def _dot_classes() -> tuple[Callable, Callable, Callable, Callable]:
    """``(Dot, Node, Edge, Cluster)``: pydot's when it is installed, else fxkit's."""
    if HAS_PYDOT:
        import pydot

        return pydot.Dot, pydot.Node, pydot.Edge, pydot.Cluster
    return DotGraph, DotNode, DotEdge, DotCluster


def _qualified_name(fn: Any) -> str:
    """Dotted name of a callable target, spelled the way generated code spells it."""
    name = getattr(fn, "__name__", None)
    if name is None:
        return type(fn).__qualname__
    if name == "<lambda>":
        # codegen reads a lambda's source to name it; a label needs no source
        return f"{getattr(fn, '__module__', None) or ''}.<lambda>".lstrip(".")
    return qualified_name(fn).lstrip(".")


def _color_key(target: Any) -> str:
    """The target text whose hash picks a call's colour (torch.fx's pretty-printed target)."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    name = getattr(target, "__name__", None)
    if name is not None and module in ("builtins", "_operator"):
        return f"{'builtins' if module == 'builtins' else 'operator'}.{name}"
    return _qualified_name(target)


def _is_node(arg: Any) -> bool:
    """Duck-typed Node check, so that torch.fx graphs are drawn the same way."""
    return hasattr(arg, "op") and hasattr(arg, "users") and hasattr(arg, "graph")


def _holds_node(arg: Any) -> bool:
    if _is_node(arg):
        return True
    if isinstance(arg, (list, tuple)):
        return any(_holds_node(a) for a in arg)
    if isinstance(arg, dict):
        return any(_holds_node(a) for a in arg.values())
    return False


def _arg_text(arg: Any, max_items: float = math.inf) -> str:
    """An argument as ``print(graph)`` shows it (nodes as ``%name``); at most ``max_items``
    items of a top-level list or tuple, then its total length."""
    custom = getattr(arg, "_custom_fx_repr_fn", None)
    if custom is not None:
        return custom()
    if _is_node(arg):
        return f"%{arg.name}"
    if isinstance(arg, dict):
        return "{" + ", ".join(f"{k}: {_arg_text(v)}" for k, v in arg.items()) + "}"
    if not isinstance(arg, (list, tuple)):
        return str(arg)
    limit = None if max_items == math.inf else int(max_items)
    shown = [_arg_text(a) for a in itertools.islice(arg, limit)]
    if len(arg) > max_items:
        shown.append(f"...[total_len={len(arg)}]")
    body = ", ".join(shown)
    if isinstance(arg, list):
        return f"[{body}]"
    return f"({body},)" if len(arg) == 1 else f"({body})"


def _is_graph_module(module: Any) -> bool:
    """Duck-typed GraphModule check (fxkit's or torch.fx's): a module whose class has a
    ``graph`` (looked up on the class: a miss on the instance costs a raised AttributeError)."""
    if not isinstance(module, torch.nn.Module) or getattr(type(module), "graph", None) is None:
        return False
    return hasattr(module.graph, "nodes")


def _looks_like_tensor_meta(value: Any) -> bool:
    """A TensorMetadata of fxkit's or torch.fx's ShapeProp (or anything shaped like one)."""
    if isinstance(value, torch.Tensor):
        return False
    return all(hasattr(value, f) for f in ("shape", "dtype", "requires_grad", "stride"))


def _innermost_frame(stack_trace: str) -> Optional[tuple[str, str, str]]:
    """``(file, line, code)`` of the last ``File "...", line N, in f`` frame followed by code."""
    lines = stack_trace.strip().split("\n")
    for i in range(len(lines) - 2, -1, -1):
        head = lines[i].strip()
        if not head.startswith('File "'):
            continue
        file_end = head.find('", line ', 6)
        if file_end < 0:
            continue
        rest = head[file_end + len('", line ') :]
        line_no, sep, _ = rest.partition(", in ")
        if sep and line_no.isdigit():
            return head[6:file_end], line_no, lines[i + 1].strip()
    return None


@compatibility(is_backward_compatible=False)
class FxGraphDrawer:
    """Draw a GraphModule (and each GraphModule it calls) as DOT graphs.

    Example::

        drawer = FxGraphDrawer(fxkit.symbolic_trace(model), "model")
        drawer.get_dot_graph().write_svg("model.svg")
    """

    def __init__(
        self,
        graph_module: torch.nn.Module,
        name: str,
        ignore_getattr: bool = False,
        ignore_parameters_and_buffers: bool = False,
        skip_node_names_in_args: bool = True,
        parse_stack_trace: bool = False,
        dot_graph_shape: Optional[str] = None,
        normalize_args: bool = False,
    ) -> None:
        self._name = name
        self.dot_graph_shape = "record" if dot_graph_shape is None else dot_graph_shape
        self.normalize_args = normalize_args
        self._ignore_getattr = ignore_getattr
        self._ignore_weights = ignore_parameters_and_buffers
        self._skip_node_names = skip_node_names_in_args
        self._parse_stack_trace = parse_stack_trace
        # Each call_module target is looked up for its label, its weights and its subgraph.
        self._leaves: Dict[tuple[int, str], Any] = {}
        self._dot_graphs: Dict[str, Any] = {name: self._to_dot(graph_module, name)}
        for node in graph_module.graph.nodes:
            if node.op == "call_module":
                sub = self._leaf(graph_module, node)
                if _is_graph_module(sub):
                    key = f"{name}_{node.target}"
                    self._dot_graphs[key] = self._to_dot(sub, key)

    def get_dot_graph(self, submod_name: Optional[str] = None) -> Any:
        """The main graph, or the one drawn for submodule ``submod_name``."""
        if submod_name is None:
            return self.get_main_dot_graph()
        return self.get_submod_dot_graph(submod_name)

    def get_main_dot_graph(self) -> Any:
        """The DOT graph of the module passed to the constructor."""
        return self._dot_graphs[self._name]

    def get_submod_dot_graph(self, submod_name: str) -> Any:
        """The DOT graph of the GraphModule called as ``submod_name``."""
        return self._dot_graphs[f"{self._name}_{submod_name}"]

    def get_all_dot_graphs(self) -> Dict[str, Any]:
        """Every graph drawn, keyed ``name`` and ``f"{name}_{submodule}"``."""
        return self._dot_graphs

    # --- node styling and labels -----------------------------------------------------------

    def _get_node_style(self, node: Any) -> Dict[str, str]:
        fill = _OP_FILL.get(node.op)
        if fill is None:
            digest = hashlib.md5(_color_key(node.target).encode(), usedforsecurity=False)
            fill = _TARGET_FILLS[int(digest.hexdigest()[:8], 16) % len(_TARGET_FILLS)]
        return {
            "shape": self.dot_graph_shape,
            "fillcolor": fill,
            "style": '"filled,rounded"',
            "fontcolor": "#000000",
        }

    def _get_leaf_node(self, module: torch.nn.Module, node: Any) -> torch.nn.Module:
        if not isinstance(node.target, str):
            raise AssertionError(f"Expected str target, got {type(node.target)}")
        found: Any = module
        for part in node.target.split("."):
            child = getattr(found, part, _MISSING)
            if child is _MISSING:
                raise RuntimeError(str(found) + " does not have attribute " + part + "!")
            found = child
        return found

    def _leaf(self, module: torch.nn.Module, node: Any) -> Any:
        key = (id(module), node.target)
        found = self._leaves.get(key, _MISSING)
        if found is _MISSING:
            found = self._leaves[key] = self._get_leaf_node(module, node)
        return found

    def _typename(self, target: Any) -> str:
        if isinstance(target, torch.nn.Module):
            text = torch.typename(target)
        elif isinstance(target, str):
            text = target
        else:
            text = _qualified_name(target)
        return record_escape(text)

    def _shorten_file_name(self, full_file_name: str, truncate_to_last_n: int = 2) -> str:
        parts = full_file_name.split("/")
        return (
            "/".join(parts[-truncate_to_last_n:])
            if len(parts) >= truncate_to_last_n
            else full_file_name
        )

    def _arguments_field(self, label: str, items: list[str], open_: str, close: str) -> str:
        """``|args=(...)`` / ``|kwargs={...}``: one item stays on the line, more are listed
        one per line."""
        if not items:
            return ""
        if len(items) == 1:
            return f"|{label}={open_}{items[0]},{close}"
        sep = "," + _BR
        return f"|{label}={open_}{_BR_LEFT}{sep.join(items)}{sep}{close}{_BR_LEFT}"

    def _call_fields(self, node: Any, skip_node_names: bool) -> str:
        args, kwargs = node.args, node.kwargs
        if self.normalize_args:
            try:
                normalized = normalize_function(
                    node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True
                )
            except Exception:  # some targets need an overload to normalize; keep them as is
                normalized = None
            if normalized is not None:
                args, kwargs = normalized
        keep = (lambda a: not _holds_node(a)) if skip_node_names else (lambda a: True)
        positional = [record_escape(_arg_text(a, 8)) for a in args if keep(a)]
        named = [record_escape(f"{k}: {_arg_text(v, 8)}") for k, v in kwargs.items() if keep(v)]
        return (
            f"|target={self._typename(node.target)}{_BR}"
            + self._arguments_field("args", positional, "(", ")")
            + self._arguments_field("kwargs", named, "\\{", "\\}")
            + f"|num_users={len(node.users)}{_BR}"
        )

    def _module_fields(self, module: torch.nn.Module) -> str:
        constants = getattr(module, "__constants__", None)
        listed = ""
        if constants is not None:
            listed = _BR.join(record_escape(f"{c}: {getattr(module, c)}") for c in constants)
        return f"{_BR}{self._typename(module)}{_BR}|{listed}{_BR}"

    def _get_node_label(
        self,
        module: torch.nn.Module,
        node: Any,
        skip_node_names_in_args: bool,
        parse_stack_trace: bool,
    ) -> str:
        # torch.fx puts a real newline (not a DOT "\n" escape) after the op code.
        parts = ["{", f"name=%{node.name}|op_code={node.op}\n"]
        if node.op == "call_module":
            parts.append(self._module_fields(self._leaf(module, node)))
        else:
            parts.append(self._call_fields(node, skip_node_names_in_args))
        meta = node.meta
        parts.append(self._tensor_meta_to_label(meta.get("tensor_meta")))
        buf = meta.get("buf_meta")
        if buf is not None:
            parts.append(f"|buf={record_escape(str(buf.name))}{_BR}|n_origin={buf.n_origin}{_BR}")
        trace = meta.get("stack_trace")
        if parse_stack_trace and isinstance(trace, str):
            frame = _innermost_frame(trace)
            if frame is not None:
                where = f"{self._shorten_file_name(frame[0])}:{frame[1]} {frame[2]}"
                parts.append(f"|file={record_escape(where)}{_BR}")
        parts.append("}")
        return "".join(parts)

    def _tensor_meta_to_label(self, tm: Any) -> str:
        """Lines for a TensorMetadata (or a list/tuple/dict of them); other values add none."""
        if tm is None:
            return ""
        if _looks_like_tensor_meta(tm):
            return self._stringify_tensor_meta(tm)
        if isinstance(tm, (list, tuple)):
            return "".join(self._tensor_meta_to_label(item) for item in tm)
        if isinstance(tm, dict):
            return "".join(self._tensor_meta_to_label(item) for item in tm.values())
        return ""

    def _stringify_tensor_meta(self, tm: Any) -> str:
        facts = [
            ("dtype", tm.dtype),
            ("shape", tuple(tm.shape)),
            ("requires_grad", tm.requires_grad),
            ("stride", tm.stride),
        ]
        if getattr(tm, "is_quantized", False):
            qparams = tm.qparams
            if qparams is None:
                raise AssertionError("qparams is None for quantized tensor")
            if "qscheme" not in qparams:
                raise AssertionError("qscheme not in qparams")
            scheme = qparams["qscheme"]
            if scheme in _PER_TENSOR_QSCHEMES:
                facts += [("q_scale", qparams["scale"]), ("q_zero_point", qparams["zero_point"])]
            elif scheme in _PER_CHANNEL_QSCHEMES:
                facts += [
                    ("q_per_channel_scale", qparams["scale"]),
                    ("q_per_channel_zero_point", qparams["zero_point"]),
                    ("q_per_channel_axis", qparams["axis"]),
                ]
            else:
                raise RuntimeError(f"Unsupported qscheme: {scheme}")
            facts.append(("qscheme", scheme))
        return "".join(f"|{key}={record_escape(str(value))}{_BR}" for key, value in facts)

    def _get_tensor_label(self, t: torch.Tensor) -> str:
        return f"{t.dtype}{list(t.shape)}{_BR}"

    # --- graph assembly ----------------------------------------------------------------------

    def _weight_nodes(self, make_node: Callable, owner: Any, module: torch.nn.Module) -> list:
        """One node per parameter and buffer of a leaf module, labelled with dtype and shape."""
        made = []
        tensors = [*module.named_parameters(), *module.named_buffers()]
        for weight_name, tensor in tensors:
            node_name = f"{owner.name}.{weight_name}"
            kind = "parameter" if isinstance(tensor, torch.nn.Parameter) else "buffer"
            label = "{" + f"{node_name}|op_code=get_{kind}" + self._get_tensor_label(tensor) + "}"
            style = {
                "fillcolor": "Salmon",
                "style": '"filled,rounded"',
                "fontcolor": "#000000",
                "shape": self.dot_graph_shape,
            }
            made.append((node_name, make_node(node_name, label=label, **style)))
        return made

    def _to_dot(
        self,
        graph_module: torch.nn.Module,
        name: str,
        ignore_getattr: Optional[bool] = None,
        ignore_parameters_and_buffers: Optional[bool] = None,
        skip_node_names_in_args: Optional[bool] = None,
        parse_stack_trace: Optional[bool] = None,
    ) -> Any:
        """Build one DOT graph for ``graph_module``'s graph; options left ``None`` take the
        values given to the constructor."""
        pick = lambda given, default: default if given is None else given
        skip_getattr = pick(ignore_getattr, self._ignore_getattr)
        skip_weights = pick(ignore_parameters_and_buffers, self._ignore_weights)
        skip_names = pick(skip_node_names_in_args, self._skip_node_names)
        with_source = pick(parse_stack_trace, self._parse_stack_trace)
        Dot, Node, Edge, Cluster = _dot_classes()
        dot = Dot(name, rankdir="TB")
        buffers: Dict[str, Any] = {}
        drawn = [n for n in graph_module.graph.nodes if not (skip_getattr and n.op == "get_attr")]
        for node in drawn:
            label = self._get_node_label(graph_module, node, skip_names, with_source)
            home = dot
            buf = node.meta.get("buf_meta")
            if buf is not None and buf.n_origin > 1:
                home = buffers.get(buf.name)
                if home is None:
                    home = buffers[buf.name] = Cluster(buf.name, label=buf.name)
            home.add_node(Node(node.name, label=label, **self._get_node_style(node)))
            if node.op != "call_module" or skip_weights:
                continue
            leaf = self._leaf(graph_module, node)
            if _is_graph_module(leaf):
                continue
            for weight_name, weight_node in self._weight_nodes(Node, node, leaf):
                dot.add_node(weight_node)
                dot.add_edge(Edge(weight_name, node.name))
        for cluster in buffers.values():
            cluster.set("color", "royalblue")
            cluster.set("penwidth", "2")
            dot.add_subgraph(cluster)
        for node in drawn:
            for user in node.users:
                dot.add_edge(Edge(node.name, user.name))
        return dot
