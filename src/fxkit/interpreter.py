"""Run a graph node by node (:class:`Interpreter`), or rebuild it as a new graph
(:class:`Transformer`).

Both are meant to be subclassed: override one per-opcode method (``call_function``,
``call_module``, ...) to change what a kind of node does, or :meth:`Interpreter.run_node` to
wrap every node. The default loop is small and does no per-run work beyond the graph itself:
the table of last uses (which values can be freed after which node) is computed once per
interpreter, and the node-meta machinery is only entered while meta preservation is on.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from fxkit import traceback as fx_traceback
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.immutable_collections import immutable_dict, immutable_list
from fxkit.node import Argument, Node, Target, _map_nodes_of_class, map_aggregate, map_arg

__all__ = ["Interpreter", "Transformer"]

_OPS = ("placeholder", "get_attr", "call_function", "call_module", "call_method", "output")
# Argument values that hold no nodes and are passed through untouched.
_ATOMS = frozenset((int, float, str, bool, type(None), torch.dtype, torch.device))


def _node_class(graph: Any) -> type:
    """The class of ``graph``'s nodes: fxkit's :class:`Node`, or for a graph from another
    library with the same API (torch.fx, as torch.export and make_fx produce) its node class."""
    if isinstance(graph, Graph):
        return Node
    for node in graph.nodes:
        return type(node)
    return Node


def _check_graph_like(graph: Any) -> None:
    if not hasattr(graph, "nodes"):
        raise _NotAnInterpreterInput(
            f"'{type(graph).__name__}' object has no attribute 'nodes': expected a Graph "
            "(fxkit or torch.fx)"
        )


def _last_uses(graph: Any) -> Dict[Node, List[Node]]:
    """Map each node to the values whose last reader it is (they can be freed after it)."""
    seen: set = set()
    table: Dict[Node, List[Node]] = {}
    native = isinstance(graph, Graph)
    for node in reversed(graph.nodes):
        for inp in node._input_nodes if native else node.all_input_nodes:
            if inp not in seen:
                seen.add(inp)
                table.setdefault(node, []).append(inp)
    return table


class _MissingValue(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _load(a: Any, env: Dict[Node, Any]) -> Any:
    """``a`` with every node replaced by its value in ``env`` (containers rebuilt)."""
    t = type(a)
    if t is Node:
        try:
            return env[a]
        except KeyError:
            raise _MissingValue(a) from None
    if t in _ATOMS:
        return a
    if t is tuple:
        return tuple([_load(x, env) for x in a])
    # Handlers see the argument's own container kind, as on the general (map_arg) path and
    # in torch.fx: immutable lists and dicts stay immutable.
    if t is immutable_list:
        return immutable_list([_load(x, env) for x in a])
    if t is immutable_dict:
        return immutable_dict({k: _load(v, env) for k, v in a.items()})
    if t is list:
        return [_load(x, env) for x in a]
    if t is dict:
        return {k: _load(v, env) for k, v in a.items()}
    if t is slice:
        return slice(_load(a.start, env), _load(a.stop, env), _load(a.step, env))
    if isinstance(a, (Node, tuple, list, dict)):
        return map_aggregate(a, lambda x: _load(x, env) if isinstance(x, Node) else x)
    return a


def _load_args(args: Tuple[Any, ...], env: Dict[Node, Any]) -> Tuple[Any, ...]:
    out = []
    for a in args:
        if type(a) is Node:
            try:
                out.append(env[a])
            except KeyError:
                raise _MissingValue(a) from None
        else:
            out.append(_load(a, env))
    return tuple(out)


_MODULE_GETATTR = torch.nn.Module.__getattr__


def _registered_child(obj: Any, name: str) -> Any:
    """``getattr(obj, name)`` for a registered submodule, without going through
    ``nn.Module.__getattr__`` (the slow part of resolving ``layers.0.conv``). None when the
    plain lookup could answer differently: a class attribute or instance attribute of that
    name comes first, and so does an overridden ``__getattr__``."""
    cls = type(obj)
    if not isinstance(obj, torch.nn.Module) or cls.__getattr__ is not _MODULE_GETATTR:
        return None
    if hasattr(cls, name) or name in obj.__dict__:
        return None
    modules = obj.__dict__.get("_modules")
    return None if modules is None else modules.get(name)


def _missing_value_error(node: Node, missing: Node) -> RuntimeError:
    # torch.fx's text first, then why it happens.
    return RuntimeError(
        f"Node {node} referenced nonexistent value {missing}! Run Graph.lint() to diagnose "
        "such issues (the value has not been computed yet or was already freed)"
    )


class _NotAnInterpreterInput(TypeError, AttributeError):
    """Bad ``module``/``graph`` given to an Interpreter. torch.fx fails there with an
    AttributeError (the attribute it looks up is missing); fxkit says what it needs."""


def _describe_target(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if name is None:
        return repr(target)
    return f"{module}.{name}" if module and module != "builtins" else name


class Interpreter:
    """Execute a :class:`~fxkit.graph_module.GraphModule`'s graph one node at a time.

    Override the per-opcode methods to change behaviour; the call hierarchy is::

        run()
            run_node()
                placeholder() / get_attr() / call_function() /
                call_method() / call_module() / output()

    Example, swapping ``torch.neg`` and ``torch.sigmoid``::

        class NegSigmSwap(Interpreter):
            def call_function(self, target, args, kwargs):
                if target is torch.sigmoid:
                    return torch.neg(*args, **kwargs)
                return super().call_function(target, args, kwargs)

            def call_method(self, target, args, kwargs):
                if target == "neg":
                    self_obj, *rest = args
                    return self_obj.sigmoid(*rest, **kwargs)
                return super().call_method(target, args, kwargs)

        gm = fxkit.symbolic_trace(lambda x: torch.sigmoid(x).neg())
        NegSigmSwap(gm).run(x)   # == torch.neg(x).sigmoid()

    Args:
        module: the module whose graph runs (its submodules and attributes are used).
        garbage_collect_values: drop each value from :attr:`env` after its last use.
            Turn off to inspect every intermediate value after :meth:`run`.
        graph: run this graph instead of ``module.graph``, using ``module`` for state.

    An exception raised while running a node propagates with its original type and a note
    naming the node (name, op, target) and, when recorded, the user's source line.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        garbage_collect_values: bool = True,
        graph: Optional[Graph] = None,
    ) -> None:
        if not isinstance(module, torch.nn.Module):
            raise _NotAnInterpreterInput(
                f"'{type(module).__name__}' object has no attribute 'named_modules': the "
                "Interpreter expects an nn.Module"
            )
        if graph is None:
            graph = getattr(module, "graph", None)
            if graph is None:
                raise _NotAnInterpreterInput(
                    f"'{type(module).__name__}' object has no attribute 'graph': pass "
                    "graph=... or a GraphModule"
                )
        _check_graph_like(graph)
        # Graphs from torch.fx (torch.export, make_fx) run through the generic, slower path.
        self._node_cls = _node_class(graph)
        self.module = module
        self.submodules: Dict[str, torch.nn.Module] = dict(module.named_modules())
        self.graph = graph
        self.env: Dict[Node, Any] = {}
        self.name = "Interpreter"
        self.garbage_collect_values = garbage_collect_values
        self.extra_traceback = True
        self.args_iter: Iterator[Any] = iter(())
        self.user_to_last_uses: Dict[Node, List[Node]] = (
            _last_uses(graph) if garbage_collect_values else {}
        )

    # --- the loop ----------------------------------------------------------------------------

    def run(
        self,
        *args: Any,
        initial_env: Optional[Dict[Node, Any]] = None,
        enable_io_processing: bool = True,
    ) -> Any:
        """Run the graph on ``args`` and return what its ``output`` node returns.

        Args:
            *args: the inputs, matched to placeholders in order.
            initial_env: pre-computed values for some nodes; those nodes are not run (useful
                for partial evaluation). The dict becomes :attr:`env`.
            enable_io_processing: pass inputs/outputs through the graph's CodeGen
                (``process_inputs``/``process_outputs``), e.g. to flatten pytrees.
        """
        env = self.env = initial_env if initial_env is not None else {}
        if enable_io_processing:
            args = self.graph.process_inputs(*args)
        self.args_iter = iter(args)
        cls = type(self)
        hooks = self._inline_hooks()
        inline = (
            (cls.run_node is Interpreter.run_node or hooks is not None)
            and cls.fetch_args_kwargs_from_env is Interpreter.fetch_args_kwargs_from_env
            and cls.map_nodes_to_values is Interpreter.map_nodes_to_values
            and not fx_traceback.has_preserved_node_meta()
            and self._node_cls is Node
        )
        handlers = {op: getattr(self, op) for op in _OPS} if inline else None
        frees = self.user_to_last_uses if self.garbage_collect_values else {}
        for node in self.graph.nodes:
            if node in env:
                continue  # supplied by the caller
            try:
                if handlers is not None:
                    try:
                        try:
                            args_v = _load_args(node._args, env)
                            kw = node._kwargs
                            kwargs_v = {k: _load(v, env) for k, v in kw.items()} if kw else {}
                        except _MissingValue as missing:
                            raise _missing_value_error(node, missing.node) from None
                        value = handlers[node.op](node._target, args_v, kwargs_v)
                    except Exception as failure:
                        if hooks is None:
                            raise
                        raise hooks[1](node, failure) from failure
                    if hooks is not None:
                        hooks[0](node, value)
                    env[node] = value
                else:
                    env[node] = self.run_node(node)
            except Exception as e:
                if self.extra_traceback:
                    if isinstance(e, KeyError):
                        # torch.fx reports a KeyError from a node as a RuntimeError.
                        err = RuntimeError(*e.args)
                        self._annotate(err, node)
                        raise err from e
                    self._annotate(e, node)
                raise
            dead = frees.get(node)
            if dead is not None:
                for d in dead:
                    env.pop(d, None)
            if node.op == "output":
                out = env[node]
                return self.graph.process_outputs(out) if enable_io_processing else out
        return None

    def _inline_hooks(
        self,
    ) -> Optional[Tuple[Callable[[Node, Any], None], Callable[[Node, Exception], Exception]]]:
        """For subclasses whose ``run_node`` only observes results: ``(after, on_error)`` lets
        :meth:`run` keep its inline loop, calling ``after(node, value)`` once a node has run and
        raising ``on_error(node, exc)`` when it fails. None (the default) means ``run_node``
        must be called for each node. A subclass returns hooks only while its own ``run_node``
        is the one in effect, so a further override is still honoured."""
        return None

    def _annotate(self, e: BaseException, node: Node) -> None:
        """Say which node failed: torch.fx's text in the message, fxkit's detail in a note."""
        try:
            described = node.format_node()
        except Exception:
            described = node.name
        # torch.fx rewrites the first argument (callers match on it); same text here.
        where = f"While executing {described}"
        text = f"{e.args[0]}\n\n{where}" if e.args else where
        text += f"\nOriginal traceback:\n{node.meta.get('stack_trace')}"
        try:
            e.args = (text, *e.args[1:])
        except Exception:
            pass  # an exception type with read-only args keeps its message
        note = (
            f"in {type(self).__name__}: node {node.name!r} "
            f"(op={node.op}, target={_describe_target(node.target)})"
        )
        source = node.meta.get("fxkit_source")
        if source and not node.meta.get("stack_trace"):
            # the user's line that created the node (torch.fx's text above has no trace)
            note += " created at:\n" + source.rstrip()
        if hasattr(e, "add_note"):
            e.add_note(note)
        else:  # Python 3.10: no notes; keep the text on the exception
            notes = getattr(e, "__notes__", None)
            if notes is None:
                try:
                    e.__notes__ = notes = []  # type: ignore[attr-defined]
                except Exception:
                    return
            notes.append(note)

    def boxed_run(self, args_list: List[Any]) -> Any:
        """Run with the "boxed" calling convention: ``args_list`` is emptied before execution,
        so the interpreter holds the only references to the inputs and can free them early."""
        if not isinstance(args_list, list):
            raise TypeError(f"boxed_run expects a list of inputs, got {type(args_list).__name__}")
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(args_list) != len(placeholders):
            raise RuntimeError(_boxed_arity_message(len(placeholders), len(args_list)))
        # Move the inputs into the env: once the caller's list is empty, a value dies as soon
        # as its last reader has run.
        env = dict(zip(placeholders, args_list))
        del args_list[:]
        return self.run(initial_env=env)

    def run_node(self, n: Node) -> Any:
        """Run node ``n``: fetch its argument values and dispatch on ``n.op``."""
        if fx_traceback.has_preserved_node_meta():
            with fx_traceback.set_current_meta(n, f"Interpreter_{type(self).__name__}"):
                return self._dispatch(n)
        # Without meta preservation the context above does nothing; skipping it matters to
        # subclasses that wrap run_node (ShapeProp), which cannot take run()'s inline loop.
        return self._dispatch(n)

    def _dispatch(self, n: Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        # a subclass's fetch may return other containers; the handlers need these two
        for what, value, kind in (("args", args, tuple), ("kwargs", kwargs, dict)):
            if not isinstance(value, kind):
                raise AssertionError(f"Expected {what} to be {kind.__name__}, got {type(value)}")
        handler = getattr(self, n.op)
        return handler(n.target, args, kwargs)

    # --- one method per opcode ---------------------------------------------------------------

    def placeholder(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """The next input passed to :meth:`run` (``*name`` placeholders take all the rest);
        falls back to the placeholder's default value when inputs run out."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        if target.startswith("*"):
            return list(self.args_iter)
        try:
            return next(self.args_iter)
        except StopIteration:
            if args:
                return args[0]
            raise RuntimeError(
                f"Expected positional argument for parameter {target}, but one was not passed in!"
            ) from None

    def get_attr(self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]) -> Any:
        """The attribute ``target`` (a dotted path) of :attr:`module`."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        return self.fetch_attr(target)

    def call_function(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """``target(*args, **kwargs)``."""
        if isinstance(target, str):
            raise AssertionError(
                f"target should not be a string for call_function (got {target!r})"
            )
        return target(*args, **kwargs)

    def call_method(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """``args[0].target(*args[1:], **kwargs)``."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        self_obj, *rest = args
        return getattr(self_obj, target)(*rest, **kwargs)

    def call_module(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Call the submodule at path ``target`` with ``args``/``kwargs``."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        return self.fetch_attr(target)(*args, **kwargs)

    def output(self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]) -> Any:
        """The value the graph returns (``args[0]``)."""
        return args[0]

    # --- helpers -----------------------------------------------------------------------------

    def fetch_attr(self, target: str) -> Any:
        """Resolve a dotted attribute path against :attr:`module`."""
        obj: Any = self.module
        atoms = target.split(".")
        for i, atom in enumerate(atoms):
            child = _registered_child(obj, atom)
            if child is not None:
                obj = child
                continue
            try:
                obj = getattr(obj, atom)
            except AttributeError:
                raise RuntimeError(
                    f"Node referenced nonexistent target {'.'.join(atoms[: i + 1])}"
                ) from None
        return obj

    def fetch_args_kwargs_from_env(self, n: Node) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """``n``'s args and kwargs with every node replaced by its value from :attr:`env`."""
        if (
            self._node_cls is Node
            and not n._kwargs
            and type(self).map_nodes_to_values is Interpreter.map_nodes_to_values
            and all(type(a) is Node or type(a) in _ATOMS for a in n._args)
        ):
            # Flat arguments: no containers to rebuild, so the env lookups are all there is.
            try:
                return _load_args(n._args, self.env), {}
            except _MissingValue as missing:
                raise _missing_value_error(n, missing.node) from None
        args = self.map_nodes_to_values(n.args, n)
        kwargs = self.map_nodes_to_values(n.kwargs, n)
        if not isinstance(args, tuple):
            raise AssertionError(f"Expected args to be tuple, got {type(args)}")
        if not isinstance(kwargs, dict):
            raise AssertionError(f"Expected kwargs to be dict, got {type(kwargs)}")
        return args, kwargs

    def map_nodes_to_values(self, args: Argument, n: Node) -> Argument:
        """``args`` with each node replaced by its value from :attr:`env`; ``n`` (the node
        the arguments belong to) is only used in the error message."""
        env = self.env

        def value_of(a: Node) -> Any:
            try:
                return env[a]
            except KeyError:
                raise _missing_value_error(n, a) from None

        node_cls = getattr(self, "_node_cls", Node)
        if node_cls is Node:
            return map_arg(args, value_of)
        return _map_nodes_of_class(args, value_of, node_cls)


class Transformer(Interpreter):
    """An :class:`Interpreter` that runs the graph on :class:`~fxkit.proxy.Proxy` values,
    recording a new graph; :meth:`transform` returns it as a GraphModule.

    Override the per-opcode methods to rewrite nodes: whatever they compute on the proxies
    they receive lands in the new graph. Example, swapping ``neg`` and ``sigmoid``::

        class NegSigmSwap(Transformer):
            def call_function(self, target, args, kwargs):
                if target is torch.sigmoid:
                    return torch.neg(*args, **kwargs)
                return super().call_function(target, args, kwargs)

        new_gm = NegSigmSwap(gm).transform()

    Node meta (stack traces, module stacks, ...) carries over to the nodes each original
    node turns into, via :func:`fxkit.traceback.preserve_node_meta`.
    """

    def __init__(self, module: GraphModule) -> None:
        super().__init__(module)
        self.new_graph = Graph()
        codegen = _native_codegen(self.graph._codegen)
        if codegen is not None:
            self.new_graph.set_codegen(codegen)
        self.tracer = _make_transformer_tracer(self.new_graph, module)

    def placeholder(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Add a matching placeholder (same name and default) to the new graph."""
        from fxkit.proxy import Proxy

        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        default = args[0] if args else inspect.Signature.empty
        return Proxy(self.new_graph.placeholder(target, default_value=default), self.tracer)

    def get_attr(self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]) -> Any:
        """Add a ``get_attr`` of the same attribute to the new graph."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        return self.tracer.create_proxy("get_attr", target, args, kwargs)

    def call_module(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Record a call of the submodule (through the tracer, so its leaf policy applies)."""
        if not isinstance(target, str):
            raise AssertionError(f"Expected target to be str, got {type(target)}")
        submod = self.fetch_attr(target)
        return self.tracer.call_module(submod, submod.forward, args, kwargs)

    def call_function(
        self, target: Target, args: Tuple[Argument, ...], kwargs: Dict[str, Any]
    ) -> Any:
        """Record the call as is (so wrapped functions stay single nodes)."""
        return self.tracer.create_proxy("call_function", target, args, kwargs)

    def transform(self) -> GraphModule:
        """Run the transformation and return the new GraphModule (sharing ``module``'s state)."""
        from fxkit.proxy import Proxy

        with fx_traceback.preserve_node_meta():
            result = self.run(enable_io_processing=False)
        if result is not None:
            new_out = self.new_graph.output(
                map_aggregate(result, lambda a: a.node if isinstance(a, Proxy) else a)
            )
            old_out = self.graph.output_node()
            new_out.meta.update(old_out.meta)
        return GraphModule(self.module, self.new_graph)


def _native_codegen(codegen: Any) -> Any:
    """``codegen`` as an fxkit CodeGen: itself, or for torch.fx's pytree CodeGen an fxkit one
    with the same calling convention (None: the default CodeGen will do)."""
    from fxkit.codegen import CodeGen, _PyTreeCodeGen, _PyTreeInfo

    if isinstance(codegen, CodeGen):
        return codegen
    info = getattr(codegen, "pytree_info", None)
    if info is None:
        return None
    return _PyTreeCodeGen(_PyTreeInfo(info.orig_args, info.in_spec, info.out_spec))


def _make_transformer_tracer(graph: Graph, root: torch.nn.Module) -> Any:
    """A tracer that appends to ``graph``, treats every module as a leaf, and knows the
    submodule paths of ``root`` up front (no search per call)."""
    from fxkit._symbolic_trace import Tracer

    cls = _TRANSFORMER_TRACER.get(Tracer)
    if cls is None:

        class TransformerTracer(Tracer):  # type: ignore[misc, valid-type]
            # The frames creating nodes here are the transformer's, not the user's model's.
            record_source = False

            def __init__(self, graph: Graph) -> None:
                super().__init__()
                self.graph = graph
                self.tensor_attrs: Dict[torch.Tensor, str] = {}

            def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
                return True

        cls = _TRANSFORMER_TRACER[Tracer] = TransformerTracer
    tracer = cls(graph)
    tracer.root = root
    paths = {}
    for name, mod in root.named_modules():
        paths.setdefault(mod, name)
    tracer.submodule_paths = paths
    return tracer


_TRANSFORMER_TRACER: Dict[type, type] = {}


def _boxed_arity_message(want: int, got: int) -> str:
    # torch.fx's wording, which callers match on.
    which = "extra" if got > want else "missing"
    return (
        f"Interpreter.boxed_run expected {want} arguments for placeholders but received "
        f"{got} ({which} arguments)"
    )
