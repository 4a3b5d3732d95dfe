""":class:`GraphModule`: an ``nn.Module`` whose ``forward`` is generated from a :class:`Graph`.

Construction only copies the attributes the graph reads and records the graph; source is
generated and compiled on first use (a call, ``.code`` or ``.forward``), and the compiled
code object is shared by every module with the same source (see :mod:`fxkit.codegen`).
Each instance gets its own class, as in torch.fx, so ``forward`` can live on the class.
"""

from __future__ import annotations

import copy
import os
import pathlib
from typing import Any, Dict, Optional, Union

import torch

from fxkit.codegen import PythonCode, _forward_from_src, generated_filename
from fxkit.graph import Graph, _PyTreeCodeGen

__all__ = ["GraphModule"]

_USER_PRESERVED_ATTRIBUTES_KEY = "_user_preserved_attributes"

# Per-instance state that is derived from the graph and rebuilt, never copied or pickled.
_DERIVED = ("_graph", "_code", "_lineno_map", "_node_names", "_python_code", "_code_globals")


class _CodeOnlyModule(torch.nn.Module):
    """A bare module whose ``__dict__`` is given: used to rebuild modules from saved state."""

    def __init__(self, body: Dict[str, Any]) -> None:
        super().__init__()
        self.__dict__ = body


def _walk_to_parent(root: torch.nn.Module, target: str, create: bool) -> Optional[Any]:
    *path, _ = target.split(".")
    obj: Any = root
    for part in path:
        nxt = getattr(obj, part, None)
        if nxt is None:
            if not create:
                return None
            nxt = torch.nn.Module()
            setattr(obj, part, nxt)
        obj = nxt
    return obj


def _copy_attr(from_module: torch.nn.Module, to_module: torch.nn.Module, target: str) -> None:
    """Copy the attribute at dotted ``target`` from one module to another, creating empty
    intermediate modules on the destination; buffers stay buffers."""
    _copy_attrs(from_module, to_module, (target,))


def _copy_attrs(from_module: torch.nn.Module, to_module: torch.nn.Module, targets: Any) -> None:
    """``_copy_attr`` for many targets, resolving each dotted parent path once (a deep model
    has ~150 targets sharing a few dozen parents; each getattr step runs Module.__getattr__)."""
    # path -> (module at path under from_module, the one under to_module, or None when the
    # whole source module was installed as is)
    parents: Dict[str, Any] = {"": (from_module, to_module)}

    def parent(path: str) -> Any:
        hit = parents.get(path)
        if hit is None:
            up, _, part = path.rpartition(".")
            src, dst = parent(up)
            src = getattr(src, part)
            nxt = None if dst is None else getattr(dst, part, None)
            if dst is None or nxt is src:
                hit = (src, None)
            else:
                if nxt is None:
                    nxt = torch.nn.Module()
                    setattr(dst, part, nxt)
                hit = (src, nxt)
            parents[path] = hit
        return hit

    for target in targets:
        path, _, leaf = target.rpartition(".")
        src, dst = parent(path)
        if dst is None:
            continue
        value = getattr(src, leaf)
        buffers = getattr(src, "_buffers", {})
        if (
            isinstance(value, torch.Tensor)
            and not isinstance(value, torch.nn.Parameter)
            and (leaf in buffers)
        ):
            persistent = leaf not in src._non_persistent_buffers_set
            dst.register_buffer(leaf, value, persistent=persistent)
        else:
            setattr(dst, leaf, value)


def _assign_attr(from_obj: Any, to_module: torch.nn.Module, target: str) -> None:
    """Store ``from_obj`` at dotted ``target`` on ``to_module``; plain tensors become buffers."""
    parent: Any = _walk_to_parent(to_module, target, create=True)
    leaf = target.rsplit(".", 1)[-1]
    if isinstance(from_obj, torch.Tensor) and not isinstance(from_obj, torch.nn.Parameter):
        parent.register_buffer(leaf, from_obj)
    else:
        setattr(parent, leaf, from_obj)


class _CompileOnFirstUse:
    """Class-level ``forward`` placeholder: generates and compiles on first access, then
    replaces itself on the (per-instance) class with the real function."""

    def __get__(self, obj: Optional["GraphModule"], objtype: Any = None) -> Any:
        if obj is None:
            return self
        fn = obj._compile_forward()
        return fn.__get__(obj, objtype)


_LAZY_FORWARD = _CompileOnFirstUse()


class _LazyPythonCode(PythonCode):
    """What ``recompile()`` returns: generated only when ``src``/``globals`` are read."""

    def __init__(self, module: "GraphModule") -> None:
        object.__setattr__(self, "_module", module)

    def __getattribute__(self, name: str) -> Any:
        if name in ("src", "globals", "_lineno_map", "_node_names"):
            return getattr(object.__getattribute__(self, "_module")._get_python_code(), name)
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        return f"PythonCode(src={self.src!r})"


class GraphModule(torch.nn.Module):
    """An ``nn.Module`` generated from a :class:`Graph`.

    ``root`` supplies what the graph's ``get_attr`` and ``call_module`` nodes refer to: either
    a module (only the referenced submodules, parameters and buffers are copied, with empty
    intermediate modules for dotted paths) or a dict mapping qualified names to values.
    Assigning ``gm.graph`` or calling :meth:`recompile` regenerates ``forward``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "GraphModule":
        # Derive from ``cls`` itself (even if it is already a per-instance class) so that
        # Python still runs ``__init__`` on the result of ``type(gm)(root, graph)``.
        per_instance = type(cls.__name__, (cls,), {"_fxkit_instance_class": True})
        per_instance.__qualname__ = cls.__qualname__
        per_instance.__module__ = cls.__module__
        return super().__new__(per_instance)

    def __init__(
        self,
        root: Union[torch.nn.Module, Dict[str, Any]],
        graph: Graph,
        class_name: str = "GraphModule",
    ) -> None:
        super().__init__()
        if not isinstance(graph, Graph):
            raise TypeError(f"GraphModule needs a fxkit Graph, got {type(graph).__name__}")
        if not isinstance(class_name, str) or not class_name:
            raise ValueError(f"class_name must be a non-empty string, got {class_name!r}")
        type(self).__name__ = class_name
        referenced = [n.target for n in graph.nodes if n.op in ("get_attr", "call_module")]
        if isinstance(root, torch.nn.Module):
            self.training = root.training
            _copy_attrs(root, self, referenced)
        elif isinstance(root, dict):
            missing = [t for t in referenced if t not in root]
            if missing:
                raise RuntimeError(
                    f"graph refers to {missing[0]!r} but the root dict does not provide it "
                    f"(it has {sorted(root)[:8]})"
                )
            # Shallow paths first so "a" exists before "a.b" is assigned into it.
            for target in sorted(set(referenced), key=lambda t: t.count(".")):
                _assign_attr(root[target], self, target)
        else:
            raise TypeError(
                f"GraphModule root must be an nn.Module or a dict, got {type(root).__name__}"
            )
        tracer_cls = graph._tracer_cls
        self._tracer_cls = (
            tracer_cls if tracer_cls and "<locals>" not in tracer_cls.__qualname__ else None
        )
        self._tracer_extras = graph._tracer_extras
        self.meta: Dict[str, Any] = {}
        self.graph = graph

    # --- graph and code ------------------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        """The graph this module runs; assigning one regenerates ``forward``."""
        return self.__dict__["_graph"]

    @graph.setter
    def graph(self, g: Graph) -> None:
        if not isinstance(g, Graph):
            raise TypeError(f"GraphModule.graph must be a fxkit Graph, got {type(g).__name__}")
        self.__dict__["_graph"] = g
        g.owning_module = self
        self.recompile()

    def recompile(self) -> PythonCode:
        """Mark ``forward`` stale; it is regenerated from the graph on next use. Returns the
        (lazily generated) :class:`PythonCode`."""
        for key in _DERIVED[1:]:
            self.__dict__.pop(key, None)
        codegen = self.__dict__["_graph"]._codegen
        if isinstance(codegen, _PyTreeCodeGen) and codegen.pytree_info is not None:
            self._in_spec = codegen.pytree_info.in_spec
            self._out_spec = codegen.pytree_info.out_spec
        type(self).forward = _LAZY_FORWARD  # type: ignore[assignment]
        return _LazyPythonCode(self)

    def _get_python_code(self) -> PythonCode:
        code = self.__dict__.get("_python_code")
        if code is None:
            code = self.__dict__["_graph"].python_code(root_module="self")
            d = self.__dict__
            d["_python_code"] = code
            d["_code"] = code.src
            d["_lineno_map"] = code._lineno_map
            d["_node_names"] = code._node_names
        return code

    def _compile_forward(self) -> Any:
        code = self._get_python_code()
        fn = _forward_from_src(code.src, code.globals)
        type(self).forward = fn  # type: ignore[assignment]
        return fn

    @property
    def code(self) -> str:
        """The Python source of ``forward``."""
        return self._get_python_code().src

    @property
    def _code(self) -> str:
        # torch.fx code reads ``gm._code``; here it is generated on demand like ``code``.
        return self._get_python_code().src

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return torch.nn.Module.__call__(self, *args, **kwargs)
        except Exception as exc:
            _note_generated_frame(exc, self)
            raise

    # --- submodules ------------------------------------------------------------------------------

    def add_submodule(self, target: str, m: torch.nn.Module) -> bool:
        """Install ``m`` at dotted path ``target``, creating empty intermediate modules.
        Returns False (changing nothing) if an intermediate name is taken by a non-module."""
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"add_submodule expects a Module, got {type(m).__name__}")
        *path, leaf = target.split(".")
        obj: torch.nn.Module = self
        for part in path:
            nxt = getattr(obj, part, None)
            if nxt is not None and not isinstance(nxt, torch.nn.Module):
                return False
            obj = nxt if nxt is not None else obj
        obj = self
        for part in path:
            nxt = getattr(obj, part, None)
            if nxt is None:
                nxt = torch.nn.Module()
                obj.add_module(part, nxt)
            obj = nxt
        obj.add_module(leaf, m)
        return True

    def delete_submodule(self, target: str) -> bool:
        """Remove the submodule at dotted ``target``; False if there is none."""
        *path, leaf = target.split(".")
        obj: Any = self
        for part in path:
            obj = getattr(obj, part, None)
            if not isinstance(obj, torch.nn.Module):
                return False
        if not isinstance(getattr(obj, leaf, None), torch.nn.Module):
            return False
        delattr(obj, leaf)
        return True

    def delete_all_unused_submodules(self) -> None:
        """Delete every submodule that no ``call_module``/``get_attr`` node needs."""
        keep = {""}
        for node in self.graph.nodes:
            if node.op not in ("call_module", "get_attr"):
                continue
            parts = node.target.split(".")
            keep.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            if node.op == "call_module":
                sub = self.get_submodule(node.target)
                keep.update(f"{node.target}.{name}" for name, _ in sub.named_modules() if name)
        unused = [name for name, _ in self.named_modules() if name not in keep]
        for name in unused:
            self.delete_submodule(name)

    # --- copying and pickling ------------------------------------------------------------------

    def __deepcopy__(self, memo: Dict[int, Any]) -> "GraphModule":
        base = _user_class(type(self))
        res = base.__new__(base)  # type: ignore[call-overload]
        memo[id(self)] = res
        torch.nn.Module.__init__(res)
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        res.__dict__.update(copy.deepcopy(state, memo))
        type(res).__name__ = type(self).__name__
        res.graph = copy.deepcopy(self.graph, memo)
        return res

    def __copy__(self) -> "GraphModule":
        res = _user_class(type(self))(self, self.graph, type(self).__name__)
        res.meta = copy.copy(getattr(self, "meta", {}))
        for name, value in res.meta.get(_USER_PRESERVED_ATTRIBUTES_KEY, {}).items():
            setattr(res, name, value)
        return res

    def __reduce__(self) -> tuple:
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        return (
            _rebuild_graph_module,
            (_user_class(type(self)), type(self).__name__, state, self.graph),
        )

    # --- showing ---------------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"{super().__str__()}\n\n{self.code}"

    def print_readable(self, print_output: bool = True, **_display_options: Any) -> str:
        """The module as a class definition (nested GraphModules included); printed unless
        ``print_output`` is False. Display options such as ``include_stride``,
        ``include_device`` and ``colored`` are accepted for compatibility."""
        text = _readable_class(self, type(self).__name__)
        if print_output:
            print(text)
        return text

    def to_folder(self, folder: Union[str, os.PathLike], module_name: str = "FxModule") -> None:
        """Write an importable package to ``folder``: ``module.py`` with a ``module_name``
        class and the weights and submodules beside it."""
        from fxkit._to_folder import write_folder

        write_folder(self, pathlib.Path(folder), module_name)


def _user_class(cls: type) -> type:
    while cls.__dict__.get("_fxkit_instance_class", False):
        cls = cls.__bases__[0]
    return cls


def _rebuild_graph_module(
    base: type, class_name: str, state: Dict[str, Any], graph: Graph
) -> GraphModule:
    gm = base.__new__(base)  # type: ignore[call-overload]
    gm.__dict__.update(state)
    type(gm).__name__ = class_name
    gm.graph = graph
    return gm


def _readable_class(gm: GraphModule, name: str, indent: str = "") -> str:
    lines = [f"{indent}class {name}(torch.nn.Module):"]
    for child_name, child in gm.named_children():
        if isinstance(child, GraphModule):
            lines.append(_readable_class(child, child_name, indent + "    "))
            lines.append("")
    for line in gm.code.strip("\n").splitlines():
        lines.append(f"{indent}    {line}" if line else "")
    return "\n".join(lines)


def _note_generated_frame(exc: BaseException, gm: GraphModule) -> None:
    """Add a note naming the node (and the user's source line) whose generated line raised."""
    add_note = getattr(exc, "add_note", None)
    src = gm.__dict__.get("_code")
    filename = generated_filename(src) if src else None
    if add_note is None or filename is None or getattr(exc, "_fxkit_noted", False):
        return
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return
    index = (gm.__dict__.get("_lineno_map") or {}).get(line)
    names = gm.__dict__.get("_node_names") or []
    if index is None or index >= len(names):
        return
    node = gm.graph._by_name.get(names[index])
    if node is None:
        return
    from fxkit.codegen import describe_target

    text = f"while running node {node.name!r} ({node.op} {describe_target(node.target)})"
    trace = node.meta.get("stack_trace")
    if trace:
        text += " created at:\n" + trace.rstrip()
    add_note(text)
    try:
        exc._fxkit_noted = True  # type: ignore[attr-defined]
    except AttributeError:
        pass
