"""Turn out-of-place ATen calls of a functional graph back into in-place ones.

``reinplace(gm, *sample_args)`` rewrites ``b = aten.add(a, 1)`` into ``aten.add_(a, 1)`` when
nothing after the call still reads ``a`` (or any tensor sharing its storage), and replaces a
``{view}_scatter(base, src, ...)`` that can be proven to write back into ``base`` with
``{view}(base, ...).copy_(src)``. Decisions, resulting graph and node names are those of
torch.fx's pass; the bookkeeping is organised so that long graphs cost linear time.
"""

from __future__ import annotations

import bisect
import operator
from enum import Enum
from functools import lru_cache
from typing import Any, Dict, Iterable, List, Optional, Set

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree

from fxkit._compatibility import compatibility
from fxkit.interpreter import Interpreter
from fxkit.passes.fake_tensor_prop import FakeTensorProp

__all__ = ["reinplace"]

_OpOverload = torch._ops.OpOverload
_COPY_ = torch.ops.aten.copy_.default


class _ViewType(Enum):
    """How an operator's output aliases its first argument."""

    NonView = 0
    SingleOutputView = 1
    MultiOutputView = 2


def _self_alias_info(target: object) -> Any:
    """The alias annotation of an OpOverload's first argument, or None."""
    if target is None or not isinstance(target, _OpOverload):
        return None
    arguments = target._schema.arguments
    return arguments[0].alias_info if arguments else None


def _is_view_op(target: object) -> Optional[bool]:
    """True for an OpOverload whose output is a read-only alias of its first argument."""
    info = _self_alias_info(target)
    if info is None:
        return None if not isinstance(target, _OpOverload) else False
    return not info.is_write


def _get_view_type(target: object) -> _ViewType:
    """Classify ``target`` as a single-output view, a multi-output view, or no view."""
    info = _self_alias_info(target)
    if info is None or info.is_write:
        return _ViewType.NonView
    return _ViewType.MultiOutputView if "*" in info.after_set else _ViewType.SingleOutputView


def _storage(t: torch.Tensor) -> StorageWeakRef:
    return StorageWeakRef(t._typed_storage())


def _fake_storages(value: Any) -> Set[StorageWeakRef]:
    """Storages of every fake tensor found in ``value`` (a tensor or a container of them)."""
    if isinstance(value, FakeTensor):
        return {_storage(value)}
    return {_storage(x) for x in pytree.tree_leaves(value) if isinstance(x, FakeTensor)}


@compatibility(is_backward_compatible=False)
class _FunctionalizationMetadataProp(FakeTensorProp):
    """Run the graph on fake tensors and note, per node, what reinplacing needs to know.

    Each node gets ``meta["fake_result"]`` (the fake value it produced, not detached, so
    storages can be compared), ``meta["node_idx"]`` (its position) and, for views,
    ``meta["view_of"]`` (the node it is a view of). Unlike :class:`FakeTensorProp`,
    ``meta["val"]`` is left as it was.
    """

    def run_node(self, node: Any) -> Any:
        self.node_counter += 1
        # Skip FakeTensorProp's meta["val"] snapshot: torch's pass leaves "val" alone.
        result = Interpreter.run_node(self, node)
        meta = node.meta
        meta["fake_result"] = result
        meta["node_idx"] = self.node_counter
        if node.op == "call_function":
            base = self._view_base(node)
            if base is not None:
                meta["view_of"] = base
                self._check_same_storage(node, base)
        return result

    def _view_base(self, node: Any) -> Any:
        """The node ``node`` views, recording multi-output views for their getitems."""
        target = node.target
        if target is operator.getitem:
            return self.multi_output_view_nodes.get(node.args[0])
        kind = _get_view_type(target)
        if kind is _ViewType.NonView:
            return None
        base = node.args[0]
        if kind is _ViewType.MultiOutputView:
            self.multi_output_view_nodes[node] = base
            return None
        if not hasattr(base, "meta"):
            raise AssertionError(f"Expected Node, got {type(base)}")
        return base

    @staticmethod
    def _check_same_storage(node: Any, base: Any) -> None:
        view, of = node.meta["fake_result"], base.meta["fake_result"]
        if not isinstance(view, FakeTensor):
            raise AssertionError("Expected FakeTensor in fake_result")
        if not isinstance(of, FakeTensor):
            raise AssertionError("Expected FakeTensor in view_of fake_result")
        if _storage(view) != _storage(of):
            raise AssertionError("view_storage != base_storage")

    def propagate(self, *args: object) -> Any:
        """Propagate fake versions of ``args`` (real tensors are converted)."""
        self.multi_output_view_nodes: Dict[Any, Any] = {}
        self.node_counter = -1
        return super().propagate(*args)


def _schemas_match(functional_schema: Any, inplace_schema: Any) -> bool:
    """Whether ``inplace_schema`` is the in-place twin (``foo_``) of ``functional_schema``."""
    inplace_args = inplace_schema.arguments
    first = inplace_args[0].alias_info
    if first is None or not first.is_write:
        raise AssertionError("First argument of inplace op must be mutable")
    if any(a.alias_info is not None for a in inplace_args[1:]):
        raise AssertionError("Remaining arguments of inplace op must not be mutable")
    if inplace_schema.name != functional_schema.name + "_":
        return False
    functional_args = functional_schema.arguments
    if len(functional_args) != len(inplace_args):
        return False
    return all(f.type == i.type for f, i in zip(functional_args, inplace_args))


@lru_cache(maxsize=None)
def _inplace_variant(op: _OpOverload) -> Optional[_OpOverload]:
    namespace = getattr(torch.ops, op.__module__.rsplit(".", 1)[-1])
    packet = getattr(namespace, op.overloadpacket.__name__ + "_", None)
    if packet is None:
        return None
    found = [ov for ov in packet.op_overloads() if _schemas_match(op._schema, ov._schema)]
    # foo and foo_ both existing says nothing about their overloads lining up (pow.Scalar
    # has no in-place twin), so an empty match is normal; two would be ambiguous.
    if len(found) > 1:
        raise AssertionError(f"Expected exactly 1 matching inplace overload, got {len(found)}")
    return found[0] if found else None


def _maybe_get_inplace_op(op: object) -> Optional[_OpOverload]:
    """The in-place overload matching the out-of-place OpOverload ``op``, or None.

    View ops are never turned in-place (``as_strided_`` and friends need special care and
    buy nothing), nor is anything that is not an OpOverload.
    """
    if not isinstance(op, _OpOverload) or _is_view_op(op):
        return None
    return _inplace_variant(op)


_VIEW_INVERSE_MAP: Dict[_OpOverload, _OpOverload] = {
    # each scatter and the view whose result it writes back
    torch.ops.aten.slice_scatter.default: torch.ops.aten.slice.Tensor,
    torch.ops.aten.select_scatter.default: torch.ops.aten.select.int,
    torch.ops.aten.as_strided_scatter.default: torch.ops.aten.as_strided.default,
    torch.ops.aten.diagonal_scatter.default: torch.ops.aten.diagonal.default,
}


def _idx(node: Any) -> int:
    return node.meta.get("node_idx", -1)


def _may_view(node: Any) -> bool:
    target = node.target
    return isinstance(target, _OpOverload) or target is operator.getitem


def _is_view_like(node: Any, aliases: Any) -> bool:
    """A user that merely views an alias matters only through its own users."""
    return _may_view(node) and node in aliases


def _get_all_later_node_usages(tensor_aliases: Set[Any], op_index: int) -> Set[Any]:
    """Nodes after position ``op_index`` that read any node of ``tensor_aliases``
    (views among the aliases themselves are looked through)."""
    return {
        user
        for alias in tensor_aliases
        for user in alias.users
        if _idx(user) > op_index and not _is_view_like(user, tensor_aliases)
    }


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.size() != b.size() or a.stride() != b.stride():
        return False
    return a.storage_offset() == b.storage_offset()


def _inverts_a_view(scatter: Any, aliases: Iterable[Any]) -> bool:
    """Whether the ``{view}_scatter`` node writes back exactly where some alias of self
    was viewed from: the alias's base lays out like the scatter's base, and replaying the
    view on that base with the scatter's arguments lays out like the alias."""
    base, src = scatter.args[0], scatter.args[1]
    if not hasattr(base, "meta") or not isinstance(base.meta["fake_result"], FakeTensor):
        raise AssertionError(f"Expected Node for base, got {type(base)}")
    if not hasattr(src, "meta") or not isinstance(src.meta["fake_result"], FakeTensor):
        raise AssertionError(f"Expected Node for mutated_view, got {type(src)}")
    view_op = _VIEW_INVERSE_MAP[scatter.target]
    base_val = base.meta["fake_result"]
    for alias in aliases:
        alias_base = alias.meta.get("view_of")
        if alias_base is None:
            continue
        alias_base_val = alias_base.meta["fake_result"]
        if not _same_layout(alias_base_val, base_val):
            continue  # cheap test first; replaying the view is a fake-op call
        try:
            # The scatter's arguments may not even be valid for the view op: then this
            # scatter is simply not the inverse of this alias.
            replay = view_op(alias_base_val, *scatter.args[2:], **scatter.kwargs)
            if _same_layout(replay, alias.meta["fake_result"]):
                return True
        except Exception:
            continue
    return False


def _get_view_inverse_node_usages(later_node_usages: Set[Any], self_aliases: Set[Any]) -> Set[Any]:
    """The ``{view}_scatter`` nodes among ``later_node_usages`` that undo a view of one of
    ``self_aliases``: once self is mutated in place they are no-ops and can be deleted."""
    scatters = sorted(
        (n for n in later_node_usages if n.target in _VIEW_INVERSE_MAP), key=lambda n: _idx(n)
    )
    return {n for n in scatters if _inverts_a_view(n, self_aliases)}


# --- alias groups ------------------------------------------------------------------------------
# torch's pass keeps a set of nodes per storage and, when `b = foo(a)` is reinplaced, makes the
# sets of a's and b's storages both equal to their union (other storages that shared a set with
# either keep their old contents). Copying sets that way is quadratic on long chains, so each
# storage points at an immutable _AliasGroup instead: a merge is a new group over two groups.
# The "later users" question only needs nodes that still have users at or after the current
# position; positions only grow, so each group caches its still-live members and prunes them.


class _AliasGroup:
    """An immutable set of nodes: either a leaf list or the union of two groups."""

    __slots__ = ("own", "parts", "_live", "_members")

    def __init__(self, own: List[Any], parts: tuple = ()) -> None:
        self.own = own
        self.parts = parts
        self._live: Optional[List[Any]] = None
        self._members: Optional[Set[Any]] = None

    def _collect(self, cached: Any) -> Dict[Any, None]:
        """Nodes of the group, taking a part's ``cached(part)`` (when not None) instead of
        walking into it. Iterative: merge chains can be as long as the graph."""
        out: Dict[Any, None] = dict.fromkeys(self.own)
        stack = list(self.parts)
        seen: Set[int] = set()
        while stack:
            group = stack.pop()
            if id(group) in seen:
                continue
            seen.add(id(group))
            known = cached(group)
            if known is not None:
                out.update(dict.fromkeys(known))
                continue
            out.update(dict.fromkeys(group.own))
            stack.extend(group.parts)
        return out

    def members(self) -> Set[Any]:
        """Every node of the group."""
        if self._members is None:
            self._members = set(self._collect(lambda g: g._members))
        return self._members

    def live(self, position: int, last_use: Dict[Any, int]) -> List[Any]:
        """Members that may still have a user at or after ``position``."""
        candidates = self._live
        if candidates is None:
            candidates = self._collect(lambda g: g._live)
        self._live = [n for n in candidates if last_use.get(n, -1) >= position]
        return self._live


class _Reinplacer:
    """State of one reinplacing run over a propagated graph."""

    def __init__(self, gm: Any) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.groups: Dict[StorageWeakRef, _AliasGroup] = {}
        # Each node's positioned users, sorted by position: a "who reads this later" query
        # walks only the tail. Users moved away by a redirect are dropped when met.
        self.users_by_position: Dict[Any, List[Any]] = {}
        # Upper bound of the position of each node's last user (the tail of the list above).
        self.last_use: Dict[Any, int] = {}
        self.input_storages: Set[StorageWeakRef] = set()
        self.to_delete: Dict[Any, None] = {}

    def index(self) -> None:
        members: Dict[StorageWeakRef, List[Any]] = {}
        for n in self.graph.nodes:
            meta = n.meta
            ordered = sorted(n.users, key=_idx)
            self.users_by_position[n] = ordered
            self.last_use[n] = _idx(ordered[-1]) if ordered else -1
            if "fake_result" not in meta:
                continue
            value = meta["fake_result"]
            if n.op == "placeholder" and isinstance(value, torch.Tensor):
                self.input_storages.add(_storage(value))
            for ref in _fake_storages(value):
                members.setdefault(ref, []).append(n)
        self.groups = {ref: _AliasGroup(nodes) for ref, nodes in members.items()}

    def group(self, ref: StorageWeakRef) -> _AliasGroup:
        found = self.groups.get(ref)
        if found is None:
            found = self.groups[ref] = _AliasGroup([])
        return found

    def merge(self, a: StorageWeakRef, b: StorageWeakRef) -> None:
        """Give storages ``a`` and ``b`` both the union of their alias sets."""
        ga, gb = self.group(a), self.group(b)
        if ga is not gb:
            self.groups[a] = self.groups[b] = _AliasGroup([], (ga, gb))

    def later_usages(self, group: _AliasGroup, position: int) -> Set[Any]:
        """What torch's ``_get_all_later_node_usages`` returns for ``group``."""
        found: Set[Any] = set()
        last_use = self.last_use
        for alias in group.live(position, last_use):
            if last_use[alias] <= position:
                continue
            ordered = self.users_by_position[alias]
            cut = len(ordered)
            while cut and _idx(ordered[cut - 1]) > position:
                cut -= 1
            current = alias.users
            ordered[cut:] = later = [u for u in ordered[cut:] if u in current]
            for user in later:
                if not (_may_view(user) and user in group.members()):
                    found.add(user)
            last_use[alias] = _idx(ordered[-1]) if ordered else -1
        return found

    # --- per node --------------------------------------------------------------------------

    def visit(self, node: Any) -> None:
        target = node.target
        if not isinstance(target, _OpOverload):
            return
        schema_args = target._schema.arguments
        if not schema_args or type(schema_args[0].type) is not torch.TensorType:
            return
        self_arg = node.args[0]
        self_val = self_arg.meta["fake_result"]
        if _resizes_or_overlaps(self_val, node.meta["fake_result"]):
            # resize is optimistically assumed fine: users never call functional resize.
            if target != torch.ops.aten.resize.default:
                return
        self_ref = _storage(self_val)
        if self_ref in self.input_storages:
            return
        if sum(1 for a in node.args if a is self_arg) > 1:
            return  # mul_(a, a) and the like are not guaranteed sound
        position = node.meta["node_idx"]
        aliases = self.group(self_ref)
        later = self.later_usages(aliases, position)
        # Only scatters can be excused, so any other later reader decides it cheaply.
        if any(n.target not in _VIEW_INVERSE_MAP for n in later):
            return
        removable = _get_view_inverse_node_usages(later, aliases.members()) if later else set()
        if later - removable:
            return
        if target in _VIEW_INVERSE_MAP and node not in self.to_delete:
            self._scatter_to_copy(node, self_arg)
        else:
            inplace = _maybe_get_inplace_op(target)
            if inplace is None:
                return
            node.target = inplace
        self.merge(self_ref, _storage(node.meta["fake_result"]))
        self.to_delete.update(dict.fromkeys(sorted(removable, key=_idx)))
        self._redirect_users(node, position)
        for scatter in sorted(removable, key=_idx):
            self._redirect_users(scatter, position)

    def _scatter_to_copy(self, node: Any, self_arg: Any) -> None:
        """``x = view_scatter(base, src, *a)`` becomes ``view(base, *a).copy_(src)``; the
        scatter node itself is deleted at the end."""
        graph = self.graph
        with graph.inserting_before(node):
            view = graph.create_node(
                "call_function",
                _VIEW_INVERSE_MAP[node.target],
                (self_arg, *node.args[2:]),
                node.kwargs,
            )
            graph.create_node("call_function", _COPY_, (view, node.args[1]), {})
        self.to_delete[node] = None

    def _redirect_users(self, old: Any, position: int) -> None:
        """Point the users of ``old`` after ``position`` at ``old.args[0]``, which now holds
        the same data, and merge storages where a redirected view now views the new base."""
        new = old.args[0]
        if not hasattr(new, "users"):
            raise AssertionError(f"Expected Node, got {type(new)}")
        movers = [u for u in old.users if _idx(u) > position]
        if not movers:
            return
        old_refs = _fake_storages(old.meta["fake_result"])
        for user in movers:
            user.args = _swap(user.args, old, new)
            user.kwargs = _swap(user.kwargs, old, new)
            user_refs = _fake_storages(user.meta["fake_result"])
            # A view of old (one storage each, the same one) is now a view of new.
            if len(old_refs) == 1 and user_refs == old_refs:
                new_refs = _fake_storages(new.meta["fake_result"])
                if len(new_refs) != 1:
                    raise AssertionError(f"Expected 1 storage, got {len(new_refs)}")
                self.merge(next(iter(user_refs)), next(iter(new_refs)))
        ordered = self.users_by_position.setdefault(new, [])
        for user in movers:
            bisect.insort(ordered, user, key=_idx)
        self.last_use[new] = _idx(ordered[-1])

    def run(self) -> None:
        self.index()
        # New nodes go in before the visited one, so a snapshot visits the same nodes.
        for node in list(self.graph.nodes):
            if node.op == "call_function":
                self.visit(node)
        for node in self.to_delete:
            self.graph.erase_node(node)


def _resizes_or_overlaps(self_val: Any, out_val: Any) -> bool:
    """Whether writing the result into self would need a resize or a dtype change, or self
    has internal overlap (``ones(1).expand(4, 4)``)."""
    self_leaves = pytree.tree_leaves(self_val)
    out_leaves = pytree.tree_leaves(out_val)
    if len(self_leaves) != len(out_leaves):
        return False
    for s, o in zip(self_leaves, out_leaves):
        if s.numel() != o.numel() or s.dtype != o.dtype:
            return True
        if torch._debug_has_internal_overlap(s) == 1:
            return True
    return False


def _swap(value: Any, old: Any, new: Any) -> Any:
    """``value`` with every occurrence of node ``old`` replaced by ``new``."""
    if value is old:
        return new
    if isinstance(value, tuple):
        return tuple(_swap(v, old, new) for v in value)
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, old, new) for k, v in value.items()}
    return value


@compatibility(is_backward_compatible=True)
def reinplace(gm: Any, *sample_args: Any) -> Any:
    """Make out-of-place ATen calls of ``gm`` in-place where that cannot be observed.

    ``gm`` should be a functional ATen graph (``make_fx(functionalize(f))``), fxkit's or
    torch.fx's; ``sample_args`` are example inputs, used (as fake tensors) to learn which
    values share storage. The graph is edited in place, recompiled and returned.

    * ``b = foo(a, ...)`` becomes ``foo_(a, ...)`` (later users of ``b`` read ``a``) when
      ``foo_`` exists with a matching schema, ``a`` is not a graph input or a view of one,
      has the output's numel and dtype and no internal overlap, appears once among the
      arguments, and neither ``a`` nor anything aliasing it is read after the call.
    * ``b = {slice,select,diagonal,as_strided}_scatter(a, src, ...)`` under the same
      conditions becomes ``{view}(a, ...).copy_(src)``.
    * A later ``{view}_scatter`` that only writes a mutated view back into its base does not
      count as a reader; it is deleted, since the mutation already landed in the base.

    Example::

        def f(x):
            a = x.clone()
            return a.add(1).mul(2)

        gm = make_fx(f)(torch.randn(3))
        reinplace(gm, torch.randn(3))   # clone, then add_ and mul_ on the clone
    """
    _FunctionalizationMetadataProp(gm).propagate(*sample_args)
    _Reinplacer(gm).run()
    gm.recompile()
    return gm
