"""Materialise a ShapeEnv's deferred runtime asserts as nodes of the graph.

While fake tensors propagate, facts about data-dependent sizes (``u0 = x.item()`` must be
``>= 0``, ``u0 + u1 < 100`` ...) cannot be checked and are parked in the ShapeEnv.
:func:`insert_deferred_runtime_asserts` writes them into the graph as
``aten._assert_scalar`` calls on SymInt arithmetic, placed right after the nodes that make
their symbols available, and tidies size arithmetic on the way (same expression, one node).
The nodes inserted, their order, names and messages are those of torch.fx's pass.

The ShapeEnv, its symbols and the sympy helpers belong to torch; they are reached through
:mod:`fxkit.interop`.
"""

from __future__ import annotations

import dis
import functools
import logging
import operator
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import torch
import torch.utils._pytree as pytree
from torch._subclasses.meta_utils import is_sparse_any
from torch.types import py_sym_types

from fxkit import interop
from fxkit._compatibility import compatibility
from fxkit.node import Node
from fxkit.proxy import GraphAppendingTracer, Proxy

__all__ = ["insert_deferred_runtime_asserts"]

log = logging.getLogger(__name__)

_ASSERT_SCALAR = torch.ops.aten._assert_scalar.default
_ASSERT_TARGETS = (torch._check, torch._assert_scalar, _ASSERT_SCALAR)
_CONSTRAIN_TARGETS = (
    torch.ops.aten.sym_constrain_range.default,
    torch.ops.aten.sym_constrain_range_for_size.default,
)
# Marks an aten assert that came from the user (torch._check) rather than from a ShapeEnv.
_USER_ASSERT_KEY = "_fx_runtime_assert_preserve"
# Bytecodes that carry no meaning when reading a constant-returning lambda.
_FILLER_OPNAMES = frozenset({"CACHE", "COPY_FREE_VARS", "EXTENDED_ARG", "NOP", "RESUME"})


def _get_example_value(node: Any) -> Any:
    """The node's example value: dynamo writes ``example_value``, export writes ``val``."""
    meta = node.meta
    if "example_value" in meta:
        return meta["example_value"]
    return meta.get("val")


def _get_sym_val(node: Any) -> Any:
    """The sympy expression of a node producing a SymInt/SymFloat/SymBool, else None."""
    val = _get_example_value(node)
    return val.node.expr if isinstance(val, py_sym_types) else None


def _constant_message(fn: Callable[[], object]) -> Optional[str]:
    """The string a no-argument ``lambda: "text"`` returns, read from its bytecode (the
    message callable of ``torch._check``; running user code here is not an option)."""
    code = getattr(fn, "__code__", None)
    if code is None or code.co_argcount or code.co_posonlyargcount or code.co_kwonlyargcount:
        return None
    ops = [i for i in dis.get_instructions(fn) if i.opname not in _FILLER_OPNAMES]
    names = tuple(i.opname for i in ops)
    if names == ("RETURN_CONST",) and isinstance(ops[0].argval, str):
        return ops[0].argval
    if names == ("LOAD_CONST", "RETURN_VALUE") and isinstance(ops[0].argval, str):
        return ops[0].argval
    return None


def _callable_and_args(node: Any, args: Any) -> tuple:
    """What running ``node`` calls, on ``args`` (a method is looked up on its receiver)."""
    if node.op != "call_method":
        return node.target, args
    if not isinstance(node.target, str):
        raise AssertionError(f"Expected str target, got {type(node.target)}")
    return getattr(args[0], node.target), args[1:]


def _condition(node: Any) -> Any:
    if node.args:
        return node.args[0]
    return node.kwargs.get("cond", node.kwargs.get("self"))


def _is_bound_for_one_symbol(expr: Any) -> bool:
    """``u0 >= 3`` / ``10 >= u0``: facts the ShapeEnv already folded into u0's range."""
    import sympy

    if len(expr.args) != 2 or expr.func not in (sympy.LessThan, sympy.GreaterThan):
        return False
    lhs, rhs = expr.args
    if isinstance(lhs, sympy.Symbol):
        return isinstance(rhs, sympy.Number)
    return isinstance(rhs, sympy.Symbol) and isinstance(lhs, sympy.Number)


class _Inserter:
    """One run of the pass over ``gm``."""

    def __init__(self, gm: Any, shape_env: Any, export: bool) -> None:
        import sympy
        from torch.utils._sympy.reference import (
            OptimizedPythonReferenceAnalysis,
            PythonReferenceAnalysis,
        )

        self.sympy = sympy
        self.shapes = interop.torch_symbolic_shapes()
        self.sym_node_type = interop.torch_sym_node().SymNode
        self.gm = gm
        self.graph = graph = gm.graph
        self.shape_env = shape_env
        self.analysis = PythonReferenceAnalysis if export else OptimizedPythonReferenceAnalysis
        self.tracer = GraphAppendingTracer(graph)
        self.pending: Dict[Any, List[Any]] = shape_env.deferred_runtime_asserts.copy()
        self.expr_to_proxy: Dict[Any, Any] = {}
        self.added: Set[Any] = set()
        self.constrained: Set[Any] = set()

        nodes = list(graph.nodes)
        self.node_type = type(nodes[0]) if nodes else Node
        self.placeholders: Set[Any] = set()
        self.first_non_placeholder = None
        for n in nodes:
            if n.op != "placeholder":
                self.first_non_placeholder = n
                break
            self.placeholders.add(n)
        self.val_key = "val"
        for n in nodes:
            if "example_value" in n.meta:
                self.val_key = "example_value"
                break
            if "val" in n.meta:
                break
        self.user_exprs: Set[Any] = set()
        for n in nodes:
            if n.target in _ASSERT_TARGETS and self._is_user_assert(n):
                cond = _condition(n)
                expr = _get_sym_val(cond) if self._is_node(cond) else None
                if expr is not None:
                    self.user_exprs.add(expr)

    def _is_node(self, x: Any) -> bool:
        return isinstance(x, (Node, self.node_type))

    def _is_user_assert(self, node: Any) -> bool:
        if node.target is torch._check or node.target is torch._assert_scalar:
            return True
        return node.target is _ASSERT_SCALAR and node.meta.get(_USER_ASSERT_KEY) is True

    # --- metadata of created nodes --------------------------------------------------------

    @contextmanager
    def _stamped_like(self, origin: Any) -> Iterator[None]:
        """Nodes created inside get an example value computed from their inputs, and the
        provenance (stack trace, module stack, custom annotations) of ``origin``."""
        meta = origin.meta
        provenance = {
            key: meta[key]
            for key in ("stack_trace", "nn_module_stack", "custom")
            if meta.get(key) is not None
        }

        def stamp(node: Any) -> None:
            self._compute_value(node)
            node.meta.update(provenance)

        self.gm._register_create_node_hook(stamp)
        try:
            yield
        finally:
            self.gm._unregister_create_node_hook(stamp)

    def _compute_value(self, node: Any) -> None:
        def example(a: Any) -> Any:
            return _get_example_value(a) if self._is_node(a) else a

        fn, args = _callable_and_args(node, pytree.tree_map(example, node.args))
        try:
            node.meta[self.val_key] = fn(*args)
        except NotImplementedError:
            # e.g. sym_size on a nested tensor: such a node is replaced by a SymInt input later.
            pass

    # --- lowering sympy to nodes ----------------------------------------------------------

    def lower(self, expr: Any) -> Any:
        """A Proxy (or a plain number) computing ``expr`` from already available symbols;
        shared subexpressions are built once."""
        from sympy import Integer, Number, Symbol
        from sympy.logic.boolalg import BooleanAtom
        from torch.utils._sympy.interp import _run_sympy_handler, sympy_interp

        known = self.expr_to_proxy.get(expr)
        if known is not None:
            return known
        if isinstance(expr, (Integer, Number, Symbol, BooleanAtom)):
            return sympy_interp(self.analysis, self.expr_to_proxy, expr)
        operands = [self.lower(a) for a in expr.args]
        result = _run_sympy_handler(self.analysis, operands, expr)
        self.expr_to_proxy[expr] = result
        return result

    def _emit_assert(self, expr: Any) -> None:
        cond = self.lower(expr).node
        message = f"Runtime assertion failed for expression {expr} on node '{cond}'"
        self.graph.call_function(_ASSERT_SCALAR, (cond, message))

    # --- the ShapeEnv's asserts -----------------------------------------------------------

    def _skippable(self, expr: Any) -> bool:
        if expr in self.added:
            return True
        symbols = expr.free_symbols
        if len(symbols) == 1 and next(iter(symbols)) in self.constrained:
            if _is_bound_for_one_symbol(expr):
                return True  # the symbol's range asserts already cover it
        return self.shapes._has_uninterpretable_sympy_function(expr)

    def add_runtime_asserts(self, ras: List[Any], origin: Any) -> None:
        for ra in ras:
            expr = ra.expr
            if expr in self.user_exprs:
                self.added.add(expr)
                continue
            if self._skippable(expr):
                continue
            log.debug("inserting runtime assert %s", expr)
            missing = self.shapes.free_symbols(expr) - self.expr_to_proxy.keys()
            if missing:
                # Not all symbols are available yet: retry once the first of them is.
                self.pending.setdefault(min(missing, key=str), []).append(ra)
                continue
            with self._stamped_like(origin):
                self._emit_assert(expr)
            self.added.add(expr)

    # --- per node -------------------------------------------------------------------------

    def _bind(self, symint: Any, node: Any, make: Callable[[], Any]) -> None:
        """If ``symint`` is a plain input symbol not bound yet, bind it to ``make()``."""
        if not isinstance(symint, torch.SymInt) or not isinstance(symint.node, self.sym_node_type):
            return
        symbol = self.shapes._get_placeholder_expr(symint.node)
        if not isinstance(symbol, self.sympy.Symbol) or symbol in self.expr_to_proxy:
            return
        with self._stamped_like(node):
            self.expr_to_proxy[symbol] = Proxy(make(), tracer=self.tracer)
        log.debug("expr_to_proxy[%s] = %s", symbol, self.expr_to_proxy[symbol])

    def bind_placeholder_symbols(self, node: Any) -> None:
        """Symbols of an input (a SymInt input, or a tensor's sizes, strides and offset),
        which make_fx does not always pass as separate inputs."""
        value = _get_example_value(node)
        if value is None:
            return
        graph = self.graph
        queries: List[tuple] = [(value, lambda: node)]
        if isinstance(value, torch.Tensor):
            sizes = enumerate(value.size())
            queries += [(s, functools.partial(_size_node, graph, node, d)) for d, s in sizes]
            if not is_sparse_any(value):
                strides = enumerate(value.stride())
                queries += [
                    (s, functools.partial(_stride_node, graph, node, d)) for d, s in strides
                ]
                queries.append(
                    (value.storage_offset(), functools.partial(_offset_node, graph, node))
                )
        for symint, make in queries:
            self._bind(symint, node, make)

    def _erase_with_unused_arg(self, node: Any, arg: Any) -> None:
        self.graph.erase_node(node)
        if self._is_node(arg) and not arg.users:
            self.graph.erase_node(arg)

    def tidy_assert(self, node: Any) -> None:
        """Drop trivially true and repeated asserts; make user checks aten asserts."""
        cond = _condition(node)
        expr = _get_sym_val(cond) if self._is_node(cond) else None
        if cond == True:  # noqa: E712  (a SymBool or Node compares by ==, not identity)
            self._erase_with_unused_arg(node, cond)
            return
        if self._is_user_assert(node):
            if node.target is not _ASSERT_SCALAR:
                self._to_aten_assert(node, cond, expr)
        elif expr is not None and expr in self.added and expr in self.expr_to_proxy:
            self._erase_with_unused_arg(node, cond)  # the same check is already in place
            return
        if expr is not None:
            self.added.add(expr)

    def _to_aten_assert(self, node: Any, cond: Any, expr: Any) -> None:
        graph = self.graph
        with graph.inserting_before(node):
            new = graph.call_function(_ASSERT_SCALAR, (cond, self._message(node, cond, expr)))
            new.meta.update(node.meta)
            new.meta[_USER_ASSERT_KEY] = True
        node.replace_all_uses_with(new)
        graph.erase_node(node)

    def _message(self, node: Any, cond: Any, expr: Any) -> str:
        """The user's message (a string, or an attribute holding a string or a lambda
        returning one), else a generic one naming the expression."""
        if len(node.args) > 1:
            msg = node.args[1]
        else:
            msg = node.kwargs.get("message" if node.target is torch._check else "assert_msg")
        if self._is_node(msg) and msg.op == "get_attr":
            msg = self._attribute_message(msg)
        if isinstance(msg, str):
            return msg
        return f"Runtime assertion failed for expression {expr} on node '{cond}'"

    def _attribute_message(self, getter: Any) -> Any:
        if not isinstance(getter.target, str):
            raise AssertionError(f"Expected str target, got {type(getter.target)}")
        attr = functools.reduce(getattr, getter.target.split("."), self.gm)
        text = _constant_message(attr) if callable(attr) else None
        return attr if text is None else text

    def reuse_sym_node(self, node: Any, expr: Any) -> None:
        """Replace a node computing an already available SymInt expression (or a size of an
        intermediate tensor computable from input sizes) with that computation."""
        bindings = self.shapes.resolve_unbacked_bindings(
            self.shape_env, node.meta.get("unbacked_bindings", {})
        )
        if bindings is None:
            raise AssertionError("resolved_unbacked_bindings is None")
        known = self.expr_to_proxy
        derivable = self._is_intermediate_size_call(node)
        redundant = expr in known or (derivable and expr.free_symbols <= known.keys())
        if redundant and all(s in known for s in bindings):
            if derivable:
                with self._stamped_like(node):
                    known[expr] = self.lower(expr)
            replacement = known[expr].node
            node.replace_all_uses_with(replacement)
            self.graph.erase_node(node)
            log.debug("CSE node %s -> %s for expr %s", node, replacement, expr)
        elif expr not in known and not isinstance(
            expr, (self.sympy.Number, self.sympy.logic.boolalg.BooleanAtom)
        ):
            known[expr] = Proxy(node, tracer=self.tracer)

    def _is_intermediate_size_call(self, node: Any) -> bool:
        """A size/stride/offset query on a computed tensor (not an input)."""
        expr = _get_sym_val(node)
        if expr is None or isinstance(expr, self.sympy.Number):
            return False
        if self.shapes._has_uninterpretable_sympy_function(expr):
            return False
        return any(
            self._is_node(a)
            and isinstance(_get_example_value(a), (torch.Tensor, torch.Size))
            and a.op != "placeholder"
            for a in node.args
        )

    def bind_unbacked(self, node: Any) -> List[Any]:
        """Bind the unbacked symbols ``node`` creates; returns them."""
        bindings = self.shapes.resolve_unbacked_bindings(
            self.shape_env, node.meta.get("unbacked_bindings")
        )
        if not bindings:
            return []
        for symbol, keypath in bindings.items():
            if symbol in self.expr_to_proxy:
                continue
            with self._stamped_like(node):
                produced = self._follow_keypath(node, tuple(keypath))
                self.expr_to_proxy[symbol] = Proxy(produced, tracer=self.tracer)
            log.debug("expr_to_proxy[%s] = %s", symbol, self.expr_to_proxy[symbol])
        return list(bindings)

    def _follow_keypath(self, producer: Any, keypath: tuple) -> Any:
        """Nodes extracting the value at ``keypath`` of ``producer``'s result."""
        node, i = producer, 0
        while i < len(keypath):
            key = keypath[i]
            after = keypath[i + 1] if i + 1 < len(keypath) else None
            if isinstance(key, self.shapes.CallMethodKey):
                indexed = isinstance(after, pytree.SequenceKey)
                node = self._method_step(key.name, node, after.idx if indexed else None)
                i += 2 if indexed else 1
            else:
                node = self._key_step(key, node)
                i += 1
        return node

    def _method_step(self, method: str, node: Any, index: Optional[int]) -> Any:
        graph = self.graph
        if index is None:
            if method == "storage_offset":
                return _offset_node(graph, node)
            return graph.call_method(method, (node,))
        make = {"size": _size_node, "stride": _stride_node}.get(method)
        if make is None:
            return graph.call_method(method, (node, index))
        return make(graph, node, index)

    def _key_step(self, key: Any, node: Any) -> Any:
        shapes = self.shapes
        if isinstance(key, pytree.SequenceKey):
            target, args = operator.getitem, (node, key.idx)
        elif isinstance(key, shapes.ConvertIntKey):
            target, args = torch.sym_ite, (node, 1, 0)
        elif isinstance(key, shapes.DivideByKey):
            target, args = operator.floordiv, (node, self._divisor(key.divisor))
        elif isinstance(key, shapes.InnerTensorKey):
            target, args = getattr, (node, key.inner_name)
        else:
            raise AssertionError(f"unrecognized keypath component {key}")
        return self.graph.call_function(target, args)

    def _divisor(self, divisor: Any) -> Any:
        if not isinstance(divisor, torch.SymInt):
            return divisor
        lowered = self.lower(divisor.node.expr)
        return lowered.node if isinstance(lowered, Proxy) else lowered

    def constrain(self, symbol: Any, origin: Any) -> None:
        """Range asserts for a newly bound symbol, then the asserts waiting for it.

        The range comes first so that a later retrace refines the symbol before it meets
        any assert that only holds within the range."""
        ras = self.pending.pop(symbol, [])
        if symbol in self.constrained:
            return
        from torch.utils._sympy.numbers import int_oo
        from torch.utils._sympy.value_ranges import ValueRanges

        vr = self.shape_env.var_to_range[symbol]
        if vr.is_int and vr.upper == sys.maxsize - 1:
            vr = ValueRanges(vr.lower, int_oo)  # sys.maxsize - 1 means "unbounded" for ints
        if not self.shape_env._default_unspecified_value_range().issubset(vr):
            with self._stamped_like(origin):
                lower = _bound_value(vr.lower, vr, int_oo)
                if lower is not None:
                    self._range_assert(symbol >= lower)
                upper = _bound_value(vr.upper, vr, int_oo)
                if upper is not None:
                    self._range_assert(symbol <= upper)
        self.constrained.add(symbol)
        self.add_runtime_asserts(ras, origin)

    def _range_assert(self, expr: Any) -> None:
        if expr not in self.user_exprs:
            self._emit_assert(expr)
        self.added.add(expr)

    # --- driver ---------------------------------------------------------------------------

    def run(self) -> None:
        graph = self.graph
        nodes = list(graph.nodes)
        for i, node in enumerate(nodes[:-1]):
            # New nodes for an input go after all inputs; otherwise right after the node.
            is_input = node in self.placeholders
            anchor = self.first_non_placeholder if is_input else nodes[i + 1]
            with graph.inserting_before(anchor):
                self.visit(node, is_input)
        # Symbols bound to a new node (a size query, an .item()) that nothing ended up using.
        for expr, proxy in self.expr_to_proxy.items():
            reified = proxy.node
            if reified.users or reified.op == "placeholder":
                continue
            if isinstance(expr, self.sympy.Symbol):
                log.debug("deleting unused reified symbol for %s", expr)
                graph.erase_node(reified)

    def visit(self, node: Any, is_input: bool) -> None:
        if is_input:
            self.bind_placeholder_symbols(node)
        if node is self.first_non_placeholder:
            # Asserts about no symbol in particular go right after the inputs.
            self.add_runtime_asserts(self.pending.pop(None, []), node)
        if node.target in _ASSERT_TARGETS:
            self.tidy_assert(node)
        if node.op != "placeholder":
            expr = _get_sym_val(node)
            if expr is not None:
                self.reuse_sym_node(node, expr)
        if node.target in _CONSTRAIN_TARGETS:
            # Constraints are re-derived for every symbol from its range below.
            self.graph.erase_node(node)
        for symbol in self.bind_unbacked(node):
            self.constrain(symbol, node)


def _bound_value(bound: Any, vr: Any, int_oo: Any) -> Any:
    """A range bound as a Python int/float, or None when infinite or not a number."""
    import sympy

    convert = int if vr.is_int else float if vr.is_float else None
    if convert is None or bound in (sympy.oo, -sympy.oo, int_oo, -int_oo):
        return None
    try:
        return convert(bound)
    except (TypeError, OverflowError):
        return None


def _tensor_val(node: Any) -> tuple:
    meta = node.meta
    if "val" in meta:
        return meta["val"], "val"
    if "example_value" in meta:
        return meta["example_value"], "example_value"
    return None, "val"


def _shape_query(graph: Any, tensor: Any, op: Any, args: tuple, read: Callable) -> Any:
    """A call of the shape query ``op``, its value (``read(example)``) recorded under the
    tensor's meta key when the tensor's example value is known."""
    val, key = _tensor_val(tensor)
    node = graph.call_function(op, (tensor, *args))
    if val is not None:
        node.meta[key] = read(val)
    return node


def _size_node(graph: Any, tensor: Any, dim: int) -> Any:
    """``aten.sym_size.int(tensor, dim)``."""
    return _shape_query(graph, tensor, torch.ops.aten.sym_size.int, (dim,), lambda t: t.size(dim))


def _stride_node(graph: Any, tensor: Any, dim: int) -> Any:
    """``aten.sym_stride.int(tensor, dim)``."""
    op = torch.ops.aten.sym_stride.int
    return _shape_query(graph, tensor, op, (dim,), lambda t: t.stride(dim))


def _offset_node(graph: Any, tensor: Any) -> Any:
    """``aten.sym_storage_offset(tensor)``."""
    op = torch.ops.aten.sym_storage_offset.default
    return _shape_query(graph, tensor, op, (), lambda t: t.storage_offset())


@compatibility(is_backward_compatible=True)
def insert_deferred_runtime_asserts(
    gm: Any, shape_env: Any, name: str, export: bool = False
) -> None:
    """Insert the runtime asserts ``shape_env`` deferred while tracing ``gm``.

    For each symbol, as soon as the graph makes it available (an input, an input's size,
    an ``.item()`` call named by ``meta["unbacked_bindings"]``), the pass adds
    ``aten._assert_scalar`` nodes for the symbol's value range (when narrower than the
    default) and for every deferred assert whose symbols are then all available. Along the
    way it reuses nodes computing the same SymInt expression, recomputes sizes of
    intermediate tensors from input sizes, turns ``torch._check`` calls into aten asserts,
    drops duplicate or trivially true asserts and explicit ``sym_constrain_range*`` calls.
    ``gm`` (fxkit or torch.fx) is edited in place; call ``gm.recompile()`` afterwards.

    Args:
        gm: the traced module, with ``meta["val"]`` (or ``meta["example_value"]``) values.
        shape_env: the torch ``ShapeEnv`` the values' symbols belong to.
        name: a label for the graph, used in debug logs.
        export: lower expressions with plain Python operators (for export) instead of the
            optimised forms (``torch.sym_sum``).

    Example::

        mode = FakeTensorMode(shape_env=ShapeEnv())
        with mode:
            gm = make_fx(f)(mode.from_tensor(x))
        insert_deferred_runtime_asserts(gm, mode.shape_env, "f")
        gm.recompile()
    """
    log.debug("insert_deferred_runtime_asserts on %s", name)
    _Inserter(gm, shape_env, export).run()
