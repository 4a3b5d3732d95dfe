"""Collect the attributes a lowering backend needs from each leaf module a graph calls.

:data:`module_fetch_book` lists, per supported ``nn.Module`` class, which attributes to read
(weights, strides, flags, ...), the class version the list was written against, and how to
map an attribute name to the module's current version. :func:`lift_lowering_attrs_to_nodes`
stores the result on every ``call_module`` node as ``node.attrs_for_lowering``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn as nn

from fxkit.graph_module import GraphModule

__all__ = [
    "default_matching",
    "extract_attrs_for_lowering",
    "lift_lowering_attrs_to_nodes",
]


def default_matching(name: str, target_version: int) -> str:
    """The attribute name to read for ``name`` on a module of ``target_version``: the same
    name (no renames have happened in the supported classes)."""
    return name


_FetchEntry = Tuple[int, List[str], Callable[[str, int], str]]


def _entry(version: int, attrs: str) -> _FetchEntry:
    return (version, attrs.split(), default_matching)


module_fetch_book: Dict[type, _FetchEntry] = {
    nn.Linear: _entry(1, "weight bias"),
    nn.Conv2d: _entry(1, "weight bias kernel_size stride padding dilation groups padding_mode"),
    nn.BatchNorm2d: _entry(2, "weight bias running_mean running_var eps"),
    nn.AdaptiveAvgPool2d: _entry(1, ""),
    nn.MaxPool2d: _entry(1, "kernel_size stride padding dilation return_indices ceil_mode"),
    nn.ReLU: _entry(1, "inplace"),
}
"""Supported module classes -> (version the entry was written for, attribute names to fetch,
name-matching function). Add entries here to support more classes."""

# Said in both errors, as torch.fx says it (callers may match on the text).
_WHERE_TO_REPORT = "open an issue and @842974287 or report a bug to AIACC team directly."


def extract_attrs_for_lowering(mod: nn.Module) -> Dict[str, Any]:
    """``{"name": <qualified class name>, <attr>: <value>, ...}`` for a module whose class is
    in :data:`module_fetch_book`.

    Raises ``RuntimeError`` if the class is not in the book, or if the module is of a newer
    version than its entry was written for (its attribute names may have changed).
    """
    typename = torch.typename(mod)
    entry = module_fetch_book.get(type(mod))
    if entry is None:
        raise RuntimeError(
            f"{typename} is not in the module_fetch_book yet, please add it to the "
            f"module_fetch_book, {_WHERE_TO_REPORT}"
        )
    book_version, names, match = entry
    mod_version = mod._version
    if book_version < mod_version:
        raise RuntimeError(
            f"Fetcher version {book_version} try to fetch {typename} version {mod_version}, "
            f"please upgrade the module_fetch_book, {_WHERE_TO_REPORT}"
        )
    attrs: Dict[str, Any] = {"name": typename}
    for name in names:
        attrs[name] = getattr(mod, match(name, mod_version))
    return attrs


def _is_graph_module(mod: Any) -> bool:
    # fxkit's GraphModule, or another library's (torch.fx) recognised by its graph.
    if isinstance(mod, GraphModule):
        return True
    return hasattr(getattr(mod, "graph", None), "nodes") and hasattr(mod, "named_modules")


def lift_lowering_attrs_to_nodes(fx_module: Any) -> None:
    """Set ``node.attrs_for_lowering`` on every ``call_module`` node of ``fx_module``, from
    :func:`extract_attrs_for_lowering`; graph-module children are handled recursively (their
    own nodes get the attributes; the node calling them gets none)."""
    submodules = dict(fx_module.named_modules())
    for node in fx_module.graph.nodes:
        if node.op != "call_module":
            continue
        sub = submodules[node.target]
        if _is_graph_module(sub):
            lift_lowering_attrs_to_nodes(sub)
        else:
            node.attrs_for_lowering = extract_attrs_for_lowering(sub)
