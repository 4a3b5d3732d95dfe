"""Source rewriting before tracing: ``assert`` statements become ``torch._assert`` calls.

A plain ``assert cond`` cannot be traced when ``cond`` is a Proxy: Python asks for its truth
value. :class:`RewritingTracer` first rewrites the ``forward`` being traced (its source,
through :class:`AST_Rewriter`) so that every ``assert cond, msg`` reads
``torch._assert(cond, msg)``, which records a ``call_function`` node instead, and every
annotated assignment ``y: T = v`` reads ``y = annotate(v, T)``, as torch.fx does.

Beyond torch.fx (which fails on these programs): an ``assert`` on a traced value inside a
function or submodule ``forward`` that the trace runs through is recorded the same way, as
``torch._assert(cond, msg)``, when its truth value is asked for. Nothing changes for
programs torch.fx already traces.
"""

from __future__ import annotations
import __future__

import ast
import copy
import functools
import inspect
import linecache
import sys
import textwrap
import types
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch._sources import normalize_source_lines

from fxkit._symbolic_trace import Tracer
from fxkit.graph import Graph
from fxkit.proxy import Proxy, _inside_assert

__all__ = ["AST_Rewriter", "RewritingTracer"]


class AST_Rewriter(ast.NodeTransformer):
    """Rewrites the source of a function so that it traces: ``assert`` statements become
    ``torch._assert(test, msg)`` calls and ``y: T = v`` becomes ``y = annotate(v, T)``.

    ``AST_Rewriter().rewrite(fn)`` returns a new function with ``fn``'s globals, defaults
    and closure. Add ``visit_<Node>`` methods in a subclass to rewrite more statements.
    """

    def rewrite(self, fn: types.FunctionType) -> types.FunctionType:
        """The function ``fn`` recompiled from its rewritten source."""
        tree, filename = _function_ast(fn)
        tree = ast.fix_missing_locations(self.visit(tree))
        return _compile_like(fn, tree, filename)

    def visit_Assert(self, node: ast.Assert) -> ast.Expr:
        """``assert test, msg`` -> ``torch._assert(test, msg)`` (``msg`` defaults to "")."""
        callee = ast.Attribute(value=ast.Name(id="torch", ctx=ast.Load()), attr="_assert")
        callee.ctx = ast.Load()
        message = node.msg if node.msg is not None else ast.Constant(value="")
        call = ast.Call(func=callee, args=[node.test, message], keywords=[])
        return ast.copy_location(ast.Expr(value=call), node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Union[ast.Assign, ast.AnnAssign]:
        """``y: T = v`` -> ``y = annotate(v, T)``; a bare ``y: T`` is left alone."""
        if node.value is None:
            return node  # nothing is assigned: there is no value to annotate
        call = ast.Call(
            func=ast.Name(id="annotate", ctx=ast.Load()),
            args=[node.value, node.annotation],
            keywords=[],
        )
        return ast.copy_location(ast.Assign(targets=[node.target], value=call), node)


def _function_ast(fn: types.FunctionType) -> Tuple[ast.Module, str]:
    """``fn``'s source as a module holding just its ``def``, at its real line numbers."""
    lines, first_line = inspect.getsourcelines(fn)
    source = textwrap.dedent("".join(normalize_source_lines(lines)))
    tree = ast.parse(source)
    # Same file and lines as the original, so stack traces and errors point at the user's
    # code rather than at an anonymous string.
    ast.increment_lineno(tree, max(first_line, 1) - 1)
    return tree, fn.__code__.co_filename


def _compile_like(fn: types.FunctionType, tree: ast.Module, filename: str) -> Any:
    """Compile ``tree`` (a module defining ``fn`` again) into a function that shares ``fn``'s
    globals, defaults and closure cells."""
    fn = inspect.unwrap(fn)  # the source is the innermost function's; its decorators re-apply
    name = fn.__code__.co_name
    free = fn.__code__.co_freevars
    defined = tree.body
    if free:
        # A nested function reads its enclosing variables through cells: compile it inside
        # a maker that has those variables, so the new code expects the same cells.
        maker = ast.parse(f"def __fxkit_cells__():\n    {'; '.join(f'{v} = None' for v in free)}")
        maker.body[0].body.extend(defined)  # type: ignore[attr-defined]
        maker.body[0].body.append(ast.Return(value=ast.Name(id=name, ctx=ast.Load())))  # type: ignore[attr-defined]
        tree = ast.fix_missing_locations(maker)
    made = _define(tree, filename, fn, name, bool(free))
    if not isinstance(made, types.FunctionType):
        raise AssertionError(
            f"Expected 1 new key, got 0\n  (fxkit) rewriting {fn.__qualname__} did not define "
            f"a function named {name!r}"
        )
    if made.__code__.co_name != name:
        return made  # a decorator replaced it: keep what the decorator made, as defined
    cells = fn.__closure__ or ()
    by_name = dict(zip(free, cells))
    closure = tuple(by_name[v] for v in made.__code__.co_freevars) if free else None
    # The original globals (not the copy the source ran in), so later global edits show.
    new = types.FunctionType(made.__code__, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    # Name, doc and annotations of the rewritten definition (annotations evaluated there).
    new = functools.update_wrapper(new, made)
    del new.__wrapped__  # a replacement, not a wrapper: its own signature is the real one
    new.__kwdefaults__ = copy.copy(fn.__kwdefaults__)
    return new


_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


def _define(tree: ast.Module, filename: str, fn: types.FunctionType, name: str, cells: bool) -> Any:
    """Run the rewritten definition in a copy of ``fn``'s globals and return what it defines.

    As in torch.fx, without ``from __future__`` features: annotations are evaluated, so the
    generated code shows the same types. If that fails (a name only imported for type
    checking), the original's future features are used instead of failing.
    """
    for flags in (0, fn.__code__.co_flags & _FUTURE_FLAGS):
        namespace: Dict[str, Any] = dict(fn.__globals__)
        try:
            exec(compile(tree, filename, "exec", flags=flags, dont_inherit=True), namespace)
        except NameError:
            if flags == fn.__code__.co_flags & _FUTURE_FLAGS:
                raise
            continue
        return namespace["__fxkit_cells__"]() if cells else namespace.get(name)
    return None


def _rewrite_module(m: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``m`` whose ``forward`` is rewritten (and that of modules it holds directly
    in its ``__dict__``); parameters, buffers and registered submodules are shared."""
    bound = m.forward
    forward = AST_Rewriter().rewrite(getattr(bound, "__func__", bound))

    def __init__(self: torch.nn.Module, orig: torch.nn.Module) -> None:
        torch.nn.Module.__init__(self)
        for key, value in orig.__dict__.items():
            fresh = _rewrite_module(value) if isinstance(value, torch.nn.Module) else value
            self.__dict__[key] = copy.copy(fresh)

    # Derived from the original class so its other methods and properties stay usable from
    # the rewritten forward; named as torch.fx does.
    rewritten = type("RewrittenModule", (type(m),), {"__init__": __init__, "forward": forward})
    rewritten.__qualname__ = "RewrittenModule"
    return rewritten(m)


def _rewrite(fn: Union[torch.nn.Module, Callable[..., Any]]) -> Any:
    """``fn`` with its source rewritten: a module becomes a ``RewrittenModule`` copy (see
    :func:`_rewrite_module`), a function a recompiled function."""
    if isinstance(fn, torch.nn.Module):
        return _rewrite_module(fn)
    return AST_Rewriter().rewrite(fn)  # type: ignore[arg-type]


class RewritingTracer(Tracer):
    """A :class:`~fxkit.Tracer` that rewrites ``assert`` statements into ``torch._assert``
    calls (and annotated assignments into :func:`~fxkit.annotate` calls) before tracing.

    The rewritten root is ``tracer.root`` after :meth:`trace`: build the module with
    ``GraphModule(tracer.root, graph)``. Asserts on traced values in functions and submodules
    that the trace runs through are recorded as ``torch._assert`` calls too.
    """

    def trace(
        self,
        root: Union[torch.nn.Module, Callable[..., Any]],
        concrete_args: Optional[Dict[str, Any]] = None,
    ) -> Graph:
        """Rewrite ``root``'s source (see :class:`AST_Rewriter`), then trace it."""
        return super().trace(_rewrite(root), concrete_args)

    def to_bool(self, obj: Proxy) -> bool:
        """``bool(proxy)`` evaluated by an ``assert`` statement (in code the source rewrite did
        not reach) records ``torch._assert(proxy, msg)`` and passes; elsewhere an error."""
        frame = sys._getframe(1)
        if frame.f_code is _PROXY_BOOL:
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None or not _inside_assert(frame):
            return super().to_bool(obj)
        torch._assert(obj, _assert_message(frame))
        return True


_PROXY_BOOL = Proxy.__bool__.__code__


def _assert_message(frame: types.FrameType) -> Any:
    """The message of the ``assert`` statement running in ``frame`` ("" without one),
    evaluated there, as the rewritten ``torch._assert(test, msg)`` would evaluate it."""
    statement = _assert_at(frame.f_code, frame.f_lineno)
    if statement is None or statement.msg is None:
        return ""
    if isinstance(statement.msg, ast.Constant):
        return statement.msg.value
    expr = ast.fix_missing_locations(ast.Expression(body=statement.msg))
    return eval(compile(expr, frame.f_code.co_filename, "eval"), frame.f_globals, frame.f_locals)


@functools.lru_cache(maxsize=256)
def _assert_at(code: types.CodeType, line: int) -> Optional[ast.Assert]:
    # The innermost assert statement of ``code``'s source that spans ``line``.
    try:
        lines, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        lines, first = linecache.getlines(code.co_filename), 1
        if not lines:
            return None
    try:
        tree = ast.parse(textwrap.dedent("".join(normalize_source_lines(lines))))
    except SyntaxError:
        return None
    ast.increment_lineno(tree, max(first, 1) - 1)
    found = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.lineno <= line <= (node.end_lineno or line):
            if found is None or node.lineno >= found.lineno:
                found = node
    return found
