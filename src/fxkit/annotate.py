"""``annotate(value, type)``: attach a type to a traced value, like a local annotation."""

from __future__ import annotations

from typing import Any, TypeVar

from fxkit.proxy import Proxy

__all__ = ["annotate"]

T = TypeVar("T")


def annotate(val: T, type: Any) -> T:
    """Record ``type`` as the node type of the traced value ``val`` and return ``val``.

    Outside tracing (``val`` is not a Proxy) this returns ``val`` unchanged, so the same code
    runs eagerly. A value whose node already has a type cannot be re-annotated
    (``RuntimeError``); parameters get their type from the signature instead.
    """
    if not isinstance(val, Proxy):
        return val
    node = val.node
    # A falsy existing type counts as none, as torch.fx does.
    if node.type:
        raise RuntimeError(
            "Tried to annotate a value that already had a type on it! Existing type is "
            f"{node.type} and new type is {type}. This could happen if you tried to annotate "
            "a function parameter value (in which case you should use the type slot on the "
            "function signature) or you called annotate on the same value twice"
            f" (node {node.name!r})"
        )
    node.type = type
    return val
