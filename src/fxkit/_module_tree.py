"""Walks over the traced root's module tree, done once per trace: the path of every submodule
and the tensors (and other constants) held as plain module attributes."""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Tuple

import torch
import torch.utils._pytree as pytree

_CONSTANT_TYPES: tuple = (torch.Tensor, torch.ScriptObject, pytree.TreeSpec)
try:  # fake script objects only exist in newer torch builds
    from torch._library.fake_class_registry import FakeScriptObject

    _CONSTANT_TYPES += (FakeScriptObject,)
except ImportError:  # pragma: no cover
    FakeScriptObject = None  # type: ignore[assignment,misc]


# Types that module __dict__s are full of (flags, hook dicts, sizes) and that are never
# constants: a module whose attribute types all come from here has nothing to collect.
_NEVER_CONSTANT = frozenset({bool, int, float, str, dict, set, list, tuple, type(None)})
_NEVER_CONSTANT |= {collections.OrderedDict, torch.dtype, torch.device}
_MODULE_NAMED_CHILDREN = torch.nn.Module.named_children
_MODULE_NAMED_MODULES = torch.nn.Module.named_modules


def _collect_tensor_attrs(m: torch.nn.Module, prefix: str, out: Dict[Any, str]) -> None:
    d = m.__dict__
    if not set(map(type, d.values())) <= _NEVER_CONSTANT:
        for k, v in d.items():
            if isinstance(v, _CONSTANT_TYPES):
                out[v] = prefix + k
    if type(m).named_children is not _MODULE_NAMED_CHILDREN:
        children: Any = m.named_children()
    else:
        # What named_children yields (no None, each child once), without the generator.
        children, seen = [], set()
        for k, child in m._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                children.append((k, child))
    for k, child in children:
        _collect_tensor_attrs(child, f"{prefix}{k}.", out)


def _module_paths(root: torch.nn.Module) -> Dict[torch.nn.Module, str]:
    """module -> the first path ``root.named_modules()`` gives it (a walk of ``_modules``
    without nested generators, unless some module customises ``named_modules``)."""
    paths: Dict[torch.nn.Module, str] = {}
    todo: List[Tuple[str, torch.nn.Module]] = [("", root)]
    while todo:
        prefix, m = todo.pop()
        if m in paths:
            continue
        if type(m).named_modules is not _MODULE_NAMED_MODULES:
            paths = {}
            for name, mod in root.named_modules():
                paths.setdefault(mod, name)
            return paths
        paths[m] = prefix
        dot = prefix + "." if prefix else ""
        # Pushed in reverse so they pop in order: the same preorder as named_modules.
        todo.extend([(dot + name, c) for name, c in reversed(m._modules.items()) if c is not None])
    return paths
