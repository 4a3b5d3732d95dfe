"""Compiling generated source for GraphModules.

Code objects are cached by source text (compiling a 50k-line forward is the expensive part);
each module's function then gets its own ``co_filename``, in torch.fx's format
(``<eval_with_key>.N from <user file>:<line> in forward``), which linecache resolves to that
module's source for as long as the function exists. Calls of submodules are compiled as
``_modules`` lookups at the same source positions (see :func:`fxkit.codegen.module_call_tree`).
"""

from __future__ import annotations

import collections
import functools
import itertools
import linecache
import threading
import types
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from fxkit.codegen import module_call_tree

_CODE_CACHE_LIMIT = 512
_code_cache: "collections.OrderedDict[Tuple[str, Tuple[str, ...]], types.CodeType]" = (
    collections.OrderedDict()
)
_code_cache_lock = threading.Lock()
_key_counter = itertools.count()


def _compile_cached(src: str, module_paths: Tuple[str, ...] = ()) -> types.CodeType:
    """The code object for ``src``. With ``module_paths`` (the graph's call_module targets),
    those calls are compiled as ``_modules`` lookups: same text and positions, but no
    ``nn.Module.__getattr__`` per call, which keeps a traced forward at or below eager cost."""
    key = (src, module_paths)
    with _code_cache_lock:
        code = _code_cache.get(key)
        if code is not None:
            _code_cache.move_to_end(key)
            return code
    tree = module_call_tree(src, module_paths) if module_paths else None
    # dont_inherit: this file's ``from __future__ import annotations`` must not turn the
    # generated annotations into strings (TorchScript reads them as types).
    code = compile(src if tree is None else tree, "<eval_with_key>", "exec", dont_inherit=True)
    with _code_cache_lock:
        _code_cache[key] = code
        while len(_code_cache) > _CODE_CACHE_LIMIT:
            _code_cache.popitem(last=False)
    return code


def _is_cached(src: str, module_paths: Tuple[str, ...] = ()) -> bool:
    return (src, module_paths) in _code_cache


def _source_key(co_fields: Optional[Dict[str, Any]]) -> str:
    """The file name generated code is compiled under, in torch.fx's format."""
    key = f"<eval_with_key>.{next(_key_counter)}"
    if co_fields and "co_filename" in co_fields:
        if "co_firstlineno" in co_fields and "co_name" in co_fields:
            return (
                f"{key} from {co_fields['co_filename']}:{co_fields['co_firstlineno']} "
                f"in {co_fields['co_name']}"
            )
        return str(co_fields["co_filename"])
    return key


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    consts = code.co_consts
    if any(isinstance(c, types.CodeType) for c in consts):
        consts = tuple(
            _renamed(c, filename) if isinstance(c, types.CodeType) else c for c in consts
        )
        return code.replace(co_filename=filename, co_consts=consts)
    return code.replace(co_filename=filename)


def _register_source(key: str, src: str) -> None:
    # A lazy entry: linecache calls the getter the first time the lines are needed. (The key
    # must not be wrapped in <...>, or linecache refuses to resolve it.)
    linecache.cache[key] = (functools.partial(str, src),)  # type: ignore[assignment]


def _forget_source(key: str) -> None:
    linecache.cache.pop(key, None)


def _exec_with_source(
    src: str, globals: Dict[str, Any], co_fields: Optional[Dict[str, Any]] = None
) -> None:
    """Run ``src`` in ``globals`` under a file name that linecache (and so tracebacks,
    ``inspect.getsource`` and TorchScript) resolves to ``src``."""
    key = _source_key(co_fields)
    _register_source(key, src)
    exec(_renamed(_compile_cached(src), key), globals)


def _forward_from_src(
    src: str, globals: Dict[str, Any], co_fields: Optional[Dict[str, Any]] = None
) -> Callable:
    """Compile ``src`` (which defines ``forward``) and return that function; ``globals`` is
    not modified."""
    return _method_from_src("forward", src, globals, co_fields)


def _method_from_src(
    method_name: str, src: str, globals: Dict[str, Any], co_fields: Optional[Dict[str, Any]] = None
) -> Callable:
    scope = dict(globals)
    _exec_with_source(src, scope, co_fields)
    return scope.pop(method_name)


def _function_from_src(
    src: str, globals: Dict[str, Any], co_fields: Any, module_paths: Tuple[str, ...] = ()
) -> Callable:
    """Like ``_forward_from_src``, but the linecache entry lives exactly as long as the
    returned function (GraphModule's own use)."""
    key = _source_key(co_fields)
    scope = dict(globals)
    exec(_renamed(_compile_cached(src, module_paths), key), scope)
    fn = scope.pop("forward")
    _register_source(key, src)
    weakref.finalize(fn, _forget_source, key)
    return fn
