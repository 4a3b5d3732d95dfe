"""Read-only list and dict types used for the arguments stored on a :class:`~fxkit.Node`.

Node arguments are shared between the graph and whoever reads them; mutating them in place
would bypass the bookkeeping of users and inputs, so every mutating method raises.
"""

from __future__ import annotations

from typing import Any, NoReturn

from torch.utils import _pytree as pytree

__all__ = ["immutable_list", "immutable_dict"]


# torch.fx's wording comes first, so code matching on it keeps working.
_MUTATION_HELP = (
    "If you are attempting to modify the kwargs or args of a torch.fx.Node object,\n"
    "instead create a new copy of it and assign the copy to the node:\n\n"
    "    new_args = ...  # copy and mutate args\n"
    "    node.args = new_args"
)


def _refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(
        f"{type(self).__name__!r} object does not support mutation. {_MUTATION_HELP}\n"
        "(fxkit: node arguments are frozen so users/inputs stay in sync; node.update_arg(i, v) "
        "and node.update_kwarg(k, v) edit one entry)"
    )


class immutable_list(list):
    """A ``list`` that refuses in-place mutation; hashable so it can key dicts."""

    __slots__ = ()
    __delitem__ = __iadd__ = __imul__ = __setitem__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __reduce__(self) -> tuple:
        return (type(self), (tuple(self),))


class immutable_dict(dict):
    """A ``dict`` that refuses in-place mutation; hashable so it can key dicts."""

    __slots__ = ()
    __delitem__ = __ior__ = __setitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))  # equal dicts hash alike whatever the key order

    def __reduce__(self) -> tuple:
        return (type(self), (tuple(self.items()),))


def _list_flatten(x: immutable_list) -> tuple[list, None]:
    return list(x), None


def _dict_flatten(x: immutable_dict) -> tuple[list, list]:
    return list(x.values()), list(x.keys())


def _list_flatten_with_keys(x: immutable_list) -> tuple[list, None]:
    return [(pytree.SequenceKey(i), v) for i, v in enumerate(x)], None


def _dict_flatten_with_keys(x: immutable_dict) -> tuple[list, list]:
    return [(pytree.MappingKey(k), v) for k, v in x.items()], list(x.keys())


try:
    pytree.register_pytree_node(
        immutable_list,
        _list_flatten,
        lambda values, _ctx: immutable_list(values),
        serialized_type_name="fxkit.immutable_collections.immutable_list",
        flatten_with_keys_fn=_list_flatten_with_keys,
    )
    pytree.register_pytree_node(
        immutable_dict,
        _dict_flatten,
        lambda values, keys: immutable_dict(zip(keys, values)),
        serialized_type_name="fxkit.immutable_collections.immutable_dict",
        flatten_with_keys_fn=_dict_flatten_with_keys,
    )
except ValueError:  # already registered (module reloaded)
    pass
