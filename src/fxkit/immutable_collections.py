"""Read-only list and dict types used for the arguments stored on a :class:`~fxkit.Node`.

Node arguments are shared between the graph and whoever reads them; mutating them in place
would bypass the bookkeeping of users and inputs, so every mutating method raises.
"""

from __future__ import annotations

from typing import Any, NoReturn

from torch.utils import _pytree as pytree

__all__ = ["immutable_list", "immutable_dict"]


def _refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(
        f"'{type(self).__name__}' is immutable: node arguments cannot be edited in place; "
        "build a new value and assign it (e.g. node.args = new_args or node.update_arg(i, v))"
    )


class immutable_list(list):
    """A ``list`` that refuses in-place mutation; hashable so it can key dicts."""

    __slots__ = ()
    __delitem__ = __iadd__ = __imul__ = __setitem__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __reduce__(self) -> tuple:
        return (immutable_list, (list(self),))


class immutable_dict(dict):
    """A ``dict`` that refuses in-place mutation; hashable so it can key dicts."""

    __slots__ = ()
    __delitem__ = __ior__ = __setitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __reduce__(self) -> tuple:
        return (immutable_dict, (dict(self),))


def _list_flatten(x: immutable_list) -> tuple[list, None]:
    return list(x), None


def _dict_flatten(x: immutable_dict) -> tuple[list, list]:
    return list(x.values()), list(x.keys())


try:
    pytree.register_pytree_node(
        immutable_list,
        _list_flatten,
        lambda values, _ctx: immutable_list(values),
        serialized_type_name="fxkit.immutable_collections.immutable_list",
    )
    pytree.register_pytree_node(
        immutable_dict,
        _dict_flatten,
        lambda values, keys: immutable_dict(zip(keys, values)),
        serialized_type_name="fxkit.immutable_collections.immutable_dict",
    )
except ValueError:  # already registered (module reloaded)
    pass
