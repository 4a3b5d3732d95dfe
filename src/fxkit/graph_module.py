""":class:`GraphModule`: an ``nn.Module`` whose ``forward`` is generated from a :class:`Graph`.

``recompile()`` (and so construction, and assigning ``gm.graph``) fixes ``forward`` as the
graph is at that moment; later edits to the graph change nothing until the next
``recompile()``. Generating the source waits until it is first needed or until just before
the graph's next edit; compiling it waits until first use (a call, or reading ``forward``),
and compiled code is shared by every module with the same source (see :mod:`fxkit._compile`). Each module gets its own class, as in torch.fx, so ``forward`` lives on the
class, and its own linecache file name (``<eval_with_key>.N from <user file>:<line> in
forward``) that stays registered while the module lives.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import pathlib
import pickle
import sys
import types
import weakref
from itertools import chain
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch

# torch.fx's private helpers are importable from here, as code written for it expects
from fxkit._compile import _exec_with_source as _exec_with_source
from fxkit._compile import _forward_from_src as _forward_from_src
from fxkit._compile import _function_from_src, _is_cached
from fxkit._compile import _method_from_src as _method_from_src
from fxkit.codegen import CodeGen, PythonCode
from fxkit.graph import Graph, _PyTreeCodeGen

__all__ = ["GraphModule"]

_USER_PRESERVED_ATTRIBUTES_KEY = "_user_preserved_attributes"

# Per-instance state derived from the graph at recompile(): rebuilt, never copied or pickled.
_DERIVED = ("_graph", "_python_code")


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
        if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
            # As in torch.fx, any tensor that is not a parameter becomes a buffer (a plain
            # tensor attribute too); a non-persistent buffer stays non-persistent.
            hidden = getattr(src, "_non_persistent_buffers_set", ())
            dst.register_buffer(leaf, value, persistent=leaf not in hidden)
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


class _LazyPythonCode(PythonCode):
    """What ``recompile()`` returns while generation is deferred: the module's
    :class:`PythonCode`, generated on first attribute access."""

    def __init__(self, module: "GraphModule") -> None:  # no super(): nothing to hold yet
        object.__setattr__(self, "_fxkit_module", module)

    def __getattribute__(self, name: str) -> Any:
        if name in ("__class__", "__dict__", "_fxkit_module"):
            return object.__getattribute__(self, name)
        module = object.__getattribute__(self, "_fxkit_module")
        return getattr(module._generate_code(), name)

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_fxkit_module")._generate_code())


class _UngeneratedForward:
    """A class's ``forward`` after a ``recompile()`` whose code is not generated yet.

    Generation happens on first use, or earlier: just before the graph's first edit (the
    graph calls :meth:`GraphModule._generate_code`), so ``forward`` always runs the graph as
    it was at ``recompile()``.
    """

    __slots__ = ("module",)

    def __init__(self, module: "GraphModule") -> None:
        self.module = weakref.ref(module)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        module = obj if obj is not None else self.module()
        if module is None:
            raise AttributeError("forward")
        module._generate_code()
        return type(module).__dict__["forward"].__get__(obj, objtype)


class _PendingForward:
    """A class's ``forward`` between code generation and first use.

    It holds the source and globals fixed by ``recompile()``; the first access (through an
    instance or the class) compiles them and puts the function in its place on the class.
    """

    __slots__ = ("src", "globals", "co_fields", "module_paths", "owner", "__weakref__")

    def __init__(
        self, code: PythonCode, co_fields: Any, module_paths: Tuple[str, ...], owner: type
    ) -> None:
        self.src = code.src
        self.globals = code.globals
        self.co_fields = co_fields
        self.module_paths = module_paths
        self.owner = owner

    def compile(self) -> Callable:
        fn = _function_from_src(self.src, self.globals, self.co_fields, self.module_paths)
        owner = self.owner
        if owner.__dict__.get("forward") is self:
            owner.forward = fn  # type: ignore[attr-defined]
        return fn

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        fn = self.compile()
        return fn if obj is None else fn.__get__(obj, objtype)


def _plain_codegen(codegen: Any) -> bool:
    """fxkit's own code generators write valid Python by construction; anything else is
    compiled at ``recompile()`` so that invalid source raises there (as torch.fx does)."""
    return type(codegen) in (CodeGen, _PyTreeCodeGen) and codegen._body_transformer is None


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
            # dict.fromkeys keeps first-use order (a set would reorder children run to run)
            for target in sorted(dict.fromkeys(referenced), key=lambda t: t.count(".")):
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
        # Node hooks (torch.fx's private API, used by export and inductor passes): graph.py
        # and node.py read these lists from the instance dict when nodes are created,
        # erased or replaced; a deep copy gets copies and then runs the deepcopy hooks.
        self._replace_hooks: List[Callable] = []
        self._create_node_hooks: List[Callable] = []
        self._erase_node_hooks: List[Callable] = []
        self._deepcopy_hooks: List[Callable] = []
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
        """Regenerate ``forward`` from the graph as it is now (edits made later take effect
        only at the next ``recompile()``) and return the generated :class:`PythonCode`."""
        graph = self.__dict__["_graph"]
        codegen = graph._codegen
        if isinstance(codegen, _PyTreeCodeGen) and codegen.pytree_info is not None:
            self._in_spec = codegen.pytree_info.in_spec
            self._out_spec = codegen.pytree_info.out_spec
        d = self.__dict__
        d["_python_code"] = None
        if _plain_codegen(codegen):
            # fxkit's own generators write valid code by construction: generate it when it
            # is first needed, or just before the graph's next edit, whichever comes first.
            type(self).forward = _UngeneratedForward(self)  # type: ignore[assignment]
            graph._notify_before_next_edit(self)
            code: PythonCode = _LazyPythonCode(self)
        else:
            code = self._generate_code()
        for child in self._modules.values():
            if isinstance(child, GraphModule):
                child.recompile()
        return code

    def _before_graph_edit(self, graph: Graph) -> None:
        if self.__dict__.get("_graph") is graph:  # not a graph it has since let go of
            self._generate_code()

    def _generate_code(self) -> PythonCode:
        """Generate (and for custom code generators compile) the code ``recompile()`` fixed;
        a no-op once generated."""
        d = self.__dict__
        code = d.get("_python_code")
        if code is not None:
            return code
        graph = d.get("_graph")
        if graph is None:
            raise RuntimeError("GraphModule has no generated code: its graph was never set")
        try:
            code = graph.python_code(root_module="self")
        except AttributeError as e:
            # raised inside `gm.code` or `gm.forward`, an AttributeError would be taken for
            # a missing attribute and replaced by nn.Module's "has no attribute" message
            raise RuntimeError(f"generating code for {type(self).__name__} failed: {e}") from e
        d["_python_code"] = code
        cls = type(self)
        paths = tuple(sorted({n.target for n in graph.nodes if n.op == "call_module"}))
        pending = _PendingForward(code, getattr(graph, "_co_fields", None) or None, paths, cls)
        cls.forward = pending  # type: ignore[assignment]
        if not _plain_codegen(graph._codegen) or _is_cached(code.src, paths):
            pending.compile()  # invalid source raises here, at recompile(), as in torch.fx
        return code

    __jit_unused_properties__ = ["graph", "code", "_code", "_lineno_map", "_prologue_start"]

    @property
    def code(self) -> str:
        """The Python source of ``forward``, as generated by the last ``recompile()``."""
        return self._generate_code().src

    @property
    def _code(self) -> str:
        return self._generate_code().src

    @property
    def _lineno_map(self) -> Optional[Dict[int, Optional[int]]]:
        """torch.fx's meaning: line relative to the ``def`` line (``_prologue_start``) ->
        node index."""
        return self._generate_code()._lineno_map

    @property
    def _prologue_start(self) -> int:
        # A code generator that does not say where its ``def`` is counts from line 1.
        code = self._generate_code()
        return getattr(code, "_prologue_start", 0) or _def_line(code.src)

    def _generated(self) -> Tuple[str, Dict[str, Any]]:
        """(source, globals) of ``forward`` as of the last ``recompile()``."""
        self._generate_code()
        fwd = type(self).__dict__.get("forward")
        if isinstance(fwd, _PendingForward):
            return fwd.src, fwd.globals
        scope = getattr(fwd, "__globals__", {})
        return self.code, {k: v for k, v in scope.items() if not k.startswith("__")}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return torch.nn.Module.__call__(self, *args, **kwargs)
        except Exception as exc:
            _report_generated_frame(exc, self)
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
        for name, value in res.meta.get(_USER_PRESERVED_ATTRIBUTES_KEY, {}).items():
            setattr(res, name, value)
        for hook in self.__dict__.get("_deepcopy_hooks", ()):
            hook(res)
        return res

    def __copy__(self) -> "GraphModule":
        # As torch.fx: a plain GraphModule over the same submodules, sharing ``meta``
        # (a subclass's __init__ may take other arguments).
        res = GraphModule(self, self.graph, type(self).__name__)
        res.meta = getattr(self, "meta", {})
        for name, value in res.meta.get(_USER_PRESERVED_ATTRIBUTES_KEY, {}).items():
            setattr(res, name, value)
        return res

    def __reduce__(self) -> tuple:
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        from fxkit._graph_state import graph_to_state

        graph_state = graph_to_state(self.graph)
        graph_state["nodes"] = _portable_records(graph_state["nodes"])
        return (
            _rebuild_graph_module,
            (_portable_class(type(self)), type(self).__name__, state, graph_state),
        )

    # --- node hooks ------------------------------------------------------------------------------

    def _hook_list(self, kind: str, f: Any, what: str) -> List[Callable]:
        if not callable(f):
            raise AssertionError(f"{what} hook must be a callable.")
        # setdefault: a subclass whose __init__ skipped GraphModule's has no lists yet
        return self.__dict__.setdefault(kind, [])

    def _register_create_node_hook(self, f: Callable) -> None:
        """Call ``f(node)`` for every node created in this module's graph."""
        self._hook_list("_create_node_hooks", f, "create_node").append(f)

    def _unregister_create_node_hook(self, f: Callable) -> None:
        self._hook_list("_create_node_hooks", f, "create_node").remove(f)

    def _register_erase_node_hook(self, f: Callable) -> None:
        """Call ``f(node)`` before a node of this module's graph is erased."""
        self._hook_list("_erase_node_hooks", f, "erase_node").append(f)

    def _unregister_erase_node_hook(self, f: Callable) -> None:
        self._hook_list("_erase_node_hooks", f, "erase_node").remove(f)

    def _register_replace_node_hook(self, f: Callable) -> None:
        """Call ``f(old=node, new=new_name, user=user)`` when a node's use is replaced or a
        node is renamed."""
        # torch.fx's message for this one names create_node too
        self._hook_list("_replace_hooks", f, "create_node").append(f)

    def _unregister_replace_node_hook(self, f: Callable) -> None:
        self._hook_list("_replace_hooks", f, "create_node").remove(f)

    @contextlib.contextmanager
    def _set_replace_hook(self, f: Callable) -> Iterator[None]:
        """A replace hook registered for the length of a ``with`` block."""
        if not callable(f):
            raise AssertionError("Replace hook must be a callable.")
        hooks = self._hook_list("_replace_hooks", f, "create_node")
        hooks.append(f)
        try:
            yield
        finally:
            hooks.remove(f)

    def _register_deepcopy_hook(self, f: Callable) -> None:
        """Call ``f(copy)`` on every deep copy of this module."""
        self._hook_list("_deepcopy_hooks", f, "deepcopy").append(f)

    def _unregister_deepcopy_hook(self, f: Callable) -> None:
        self._hook_list("_deepcopy_hooks", f, "deepcopy").remove(f)

    # --- showing ---------------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"{super().__str__()}\n\n{self.code}"

    # fmt: off
    def print_readable(self, print_output: bool = True, include_stride: bool = False,
                       include_device: bool = False, colored: bool = False,
                       **display_options: Any) -> str:
        # fmt: on
        """The module as a class definition, with each value's dtype/shape (from node meta)
        as an annotation and source lines as comments, nested GraphModules after it; printed
        unless ``print_output`` is False. ``include_stride``/``include_device`` add strides
        and devices to the annotations; ``colored`` adds ANSI colours (with ``rich``, when it
        is installed)."""
        options = dict(
            display_options,
            include_stride=include_stride,
            include_device=include_device,
            colored=colored,
        )
        text = _readable_class(self, type(self).__name__, options)
        if colored:
            text = _highlighted(text)
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


def _portable_class(cls: type) -> type:
    """The class a pickled module is rebuilt as: its own if another process can import it,
    else GraphModule (torch.fx always rebuilds a GraphModule)."""
    base = _user_class(cls)
    if base.__module__ == "__main__" or "<locals>" in base.__qualname__:
        return GraphModule
    return base


def _rebuild_graph_module(
    base: type, class_name: str, state: Dict[str, Any], graph: Union[Graph, Dict[str, Any]]
) -> GraphModule:
    if not isinstance(graph, Graph):
        from fxkit._graph_state import graph_from_state

        state_of_graph = graph
        graph = Graph.__new__(Graph)
        graph_from_state(graph, state_of_graph)
    gm = base.__new__(base)  # type: ignore[call-overload]
    gm.__dict__.update(state)
    type(gm).__name__ = class_name
    gm.graph = graph
    return gm


# --- what a pickled graph keeps -----------------------------------------------------------------
# Node targets that are torch ops are pickled by name. ``node.meta`` values that cannot be
# unpickled in another process (fake tensors, symbolic values, guards, classes local to a
# function or to ``__main__``) are dropped; everything else is kept. (torch.fx keeps no meta
# but ``stack_trace`` across pickling.)

_PLAIN_META = frozenset({str, int, float, bool, type(None), torch.Size, torch.dtype})


def _op_by_name(qualified: str, overload: Optional[str]) -> Any:
    namespace, _, name = qualified.partition("::")
    packet = getattr(getattr(torch.ops, namespace), name)
    return packet if overload is None else getattr(packet, overload)


class _OpByName:
    """Pickles a torch op as its name; unpickles as the op itself."""

    __slots__ = ("op",)

    def __init__(self, op: Any) -> None:
        self.op = op

    def __reduce__(self) -> tuple:
        op = self.op
        if isinstance(op, torch._ops.OpOverload):
            return (_op_by_name, (op._schema.name, op._overloadname))
        return (_op_by_name, (op._qualified_op_name, None))


def _portable_records(records: list) -> list:
    ops = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)
    seen: Dict[int, bool] = {}
    out = []
    for op, name, target, args, kwargs, type_expr, meta in records:
        if isinstance(target, ops):
            target = _OpByName(target)
        if meta:
            dropped = [k for k, v in meta.items() if not _portable(v, seen)]
            if dropped:
                meta = {k: v for k, v in meta.items() if k not in dropped}
        out.append((op, name, target, args, kwargs, type_expr, meta))
    return out


def _portable(value: Any, seen: Dict[int, bool]) -> bool:
    t = type(value)
    if t in _PLAIN_META:
        return True
    if isinstance(value, (tuple, list, dict)):
        # nn_module_stack is an OrderedDict of (path, class) pairs: look inside containers
        # (a class from __main__ pickles here but cannot be found in another process).
        if t not in (tuple, list, dict) and not _portable(t, seen):
            return False
        items = chain.from_iterable(value.items()) if isinstance(value, dict) else value
        return all(_portable(v, seen) for v in items)
    hit = seen.get(id(value))
    if hit is not None:
        return hit
    if isinstance(value, (type, types.FunctionType)):
        module = getattr(value, "__module__", None)
        ok = module != "__main__" and "<locals>" not in getattr(value, "__qualname__", "<locals>")
    elif isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)) or _is_fake(value):
        ok = False
    else:
        try:
            pickle.dumps(value)
            ok = True
        except Exception:
            ok = False
    seen[id(value)] = ok
    return ok


def _is_fake(value: Any) -> bool:
    if not isinstance(value, torch.Tensor):
        return False
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(value, FakeTensor)


def _highlighted(source: str) -> str:
    """``source`` with ANSI syntax colours from ``rich`` when it is installed (the text is
    unchanged otherwise: fxkit needs no extra package to print)."""
    try:
        from rich.console import Console
        from rich.syntax import Syntax
    except ImportError:
        return source
    console = Console(
        file=io.StringIO(), force_terminal=True, color_system="standard", width=1 << 16
    )
    console.print(Syntax(source, "python", theme="ansi_dark", background_color="default"), end="")
    return console.file.getvalue()  # type: ignore[attr-defined]


def _indented(text: str) -> str:
    # every line after the first moves right by four spaces and whitespace-only lines become
    # empty, the way nn.Module's repr nests children: torch.fx's text byte for byte
    first, *rest = text.split("\n")
    return "\n".join([first] + [f"    {line}" if line.strip() else "" for line in rest])


def _readable_class(gm: Any, name: str, options: Dict[str, Any]) -> str:
    body = gm.graph.python_code(root_module="self", verbose=True, **options).src.lstrip("\n")
    text = _indented(f"class {name}(torch.nn.Module):\n{body}")
    nested = [""] + [
        _readable_class(child, child_name, options)
        for child_name, child in gm.named_children()
        if hasattr(child, "graph")
    ]
    return text + _indented("\n".join(nested))


def _report_generated_frame(exc: BaseException, gm: GraphModule) -> None:
    """On an exception raised by a line of ``gm``'s generated code: write torch.fx's
    "Call using an FX-traced Module" report to stderr (only when that line is the innermost
    frame, as torch.fx), and add a note naming the node and the user's source line."""
    fn = type(gm).__dict__.get("forward")
    code = getattr(fn, "__code__", None)
    if code is None or getattr(exc, "_fxkit_noted", False):
        return
    filename = code.co_filename
    tb = exc.__traceback__
    line = None
    innermost = None
    while tb is not None:
        innermost = tb.tb_frame.f_code.co_filename
        if innermost == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        return
    if innermost == filename:
        from fxkit._frames import generated_code_report

        print(generated_code_report(exc, filename, line), file=sys.stderr)
    _note_node(exc, gm, line)
    try:
        exc._fxkit_noted = True  # type: ignore[attr-defined]
    except AttributeError:
        pass


def _note_node(exc: BaseException, gm: GraphModule, line: int) -> None:
    add_note = getattr(exc, "add_note", None)
    code = gm.__dict__.get("_python_code")
    if code is None:
        return
    index = (code._lineno_map or {}).get(line - gm._prologue_start)
    names = code._node_names or []
    if add_note is None or index is None or index >= len(names):
        return
    node = gm.graph._by_name.get(names[index])
    if node is None:
        return
    from fxkit.codegen import describe_target

    text = f"while running node {node.name!r} ({node.op} {describe_target(node.target)})"
    trace = node.meta.get("stack_trace") or node.meta.get("fxkit_source")
    if trace:
        text += " created at:\n" + trace.rstrip()
    add_note(text)


def _def_line(src: str) -> int:
    """1-based line of the ``def`` (or its first decorator) in generated source."""
    for i, text in enumerate(src.split("\n"), 1):
        if text.startswith(("def ", "@", "async def ")):
            return i
    return 1
