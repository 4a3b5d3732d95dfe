"""``annotate(value, type)``: attach a type to a traced value, like a local annotation."""

from __future__ import annotations

from typing import Any, TypeVar

from fxkit.proxy import Proxy

__all__ = ["annotate"]

T = TypeVar("T")


def annotate(val: T, type: Any) -> T:
    """Record ``type`` as the node type of the traced value ``val`` and return ``val``.

    Outside tracing (``val`` is not a Proxy) this returns ``val`` unchanged, so the same code
    runs eagerly. A value whose node already has a type cannot be re-annotated.
    """
    if isinstance(val, Proxy):
        node = val.node
        if node.type is not None:
            raise RuntimeError(
                f"Tried to annotate a value that already had a type on it! Existing type is "
                f"{node.type} and new type is {type}. (node {node.name!r}: annotate each "
                "traced value at most once)"
            )
        node.type = type
    return val
