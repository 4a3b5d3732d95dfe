"""Debugging aids for generated code: :func:`set_trace` stops in ``pdb`` when a module runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["set_trace"]

# Written as torch.fx writes it, so the generated code text is the same.
_BREAKPOINT_LINE = "import pdb; pdb.set_trace()\n"


def _prepend_breakpoint(inner: Callable[[Sequence[str]], list[str]] | None) -> Callable:
    """A body transformer that runs ``inner`` (if any) and puts the breakpoint first."""

    def transform(body: Sequence[str]) -> list[str]:
        lines = inner(body) if inner else body
        return [_BREAKPOINT_LINE, *lines]

    return transform


def set_trace(gm: Any) -> Any:
    """Recompile ``gm`` so that its ``forward`` starts with ``import pdb; pdb.set_trace()``,
    dropping into the debugger each time the module runs. Returns ``gm`` itself.

    The breakpoint lasts until the next ``recompile()`` (which regenerates plain code).
    """
    with gm.graph.on_generate_code(make_transformer=_prepend_breakpoint):
        gm.recompile()
    return gm
