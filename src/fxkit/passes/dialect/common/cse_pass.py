"""Common-subexpression elimination over FX graphs.

:class:`CSEPass` rebuilds a graph keeping only the first of several nodes that compute the
same thing from the same inputs; later duplicates are redirected to it. Unlike torch.fx's
version it never merges nodes whose repetition is observable: random draws (``rand*``,
dropout in training mode, ``bernoulli``, ...), in-place and ``out=`` ops, and anything the
node itself reports as impure. Pure ops computed before a mutation are also not merged with
ones computed after it, since the mutated tensor (or a view of it) may be among their inputs.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Dict, NamedTuple, Optional, Set, Tuple

import torch

from fxkit.passes.infra.pass_base import PassBase, PassResult

__all__ = ["CSEPass", "get_CSE_banned_ops", "rand_ops", "inplace_ops"]

aten = torch.ops.aten

# The same packets torch.fx bans by default, so code that extends the set keeps working.
_RANDOM_PACKETS = (
    "dropout", "_fused_dropout", "_standard_gamma", "bernoulli", "multinomial",
    "native_dropout", "normal", "poisson", "binomial", "rrelu", "rand_like", "rand",
    "randint", "randn", "randperm",
)  # fmt: skip
_INPLACE_PACKETS = ("add_", "sub_", "mul_", "div_", "pow_", "lerp_", "relu_", "sigmoid_", "tanh_")


#: The random aten packets torch.fx's CSE bans (module-level sets, as torch.fx exposes them).
rand_ops: Set[Any] = {getattr(aten, name) for name in _RANDOM_PACKETS}
#: The in-place aten packets torch.fx's CSE bans.
inplace_ops: Set[Any] = {getattr(aten, name) for name in _INPLACE_PACKETS}


def get_CSE_banned_ops() -> Set[Any]:
    """The aten op packets that torch.fx's CSE refuses to merge (random and in-place ones).

    A fresh set each call, so callers may extend it and pass it as ``banned_ops``.
    """
    return rand_ops | inplace_ops


# Ops that draw random numbers whatever their arguments, by base name (functions, methods
# and aten packets alike).
_ALWAYS_RANDOM = frozenset({
    "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm",
    "bernoulli", "normal", "multinomial", "poisson", "binomial", "_standard_gamma",
    "uniform", "exponential", "geometric", "cauchy", "log_normal", "random",
    "native_dropout", "_fused_dropout", "fused_dropout", "native_dropout_backward",
})  # fmt: skip
# Ops that are random only in training mode: name -> (positional index, keyword names,
# default) of the training flag.
_TRAINING_FLAG: Dict[str, Tuple[int, Tuple[str, ...], bool]] = {
    **dict.fromkeys(
        (
            "dropout",
            "alpha_dropout",
            "feature_alpha_dropout",
            "feature_dropout",
            "dropout1d",
            "dropout2d",
            "dropout3d",
        ),
        (2, ("training", "train"), True),
    ),  # fmt: skip
    "rrelu": (3, ("training",), False),
}
# Python's augmented-assignment operators mutate tensors in place.
_INPLACE_OPERATORS = frozenset({
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
    operator.ilshift, operator.irshift, operator.imatmul, operator.setitem, operator.delitem,
})  # fmt: skip
_STATEFUL_MODULES: Tuple[type, ...] = (
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.RReLU,
    torch.nn.modules.batchnorm._NormBase,  # updates running statistics while training
)

_NO_INDEX = -1


def _inplace_index(fn: Callable) -> int:
    """Position of an ``inplace`` parameter in ``fn``'s signature, or ``_NO_INDEX``."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins without a signature
        return _NO_INDEX
    return params.index("inplace") if "inplace" in params else _NO_INDEX


def _base_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    target = getattr(target, "overloadpacket", target)
    name = getattr(target, "__name__", "")
    return name.rsplit(".", 1)[-1] if isinstance(name, str) else ""


class _Profile(NamedTuple):
    """What a call target alone says about merging it; arguments can add to it."""

    always_mutates: bool
    always_random: bool
    training_flag: Optional[Tuple[int, Tuple[str, ...], bool]]
    inplace_index: int


def _profile(op: str, target: Any) -> _Profile:
    name = _base_name(target)
    schema = getattr(target, "_schema", None)
    mutates = name.endswith("_") and not name.endswith("__")
    inplace_index = _NO_INDEX
    if op == "call_function":
        mutates = mutates or target in _INPLACE_OPERATORS
        if schema is not None:
            mutates = mutates or bool(schema.is_mutable)
        elif not mutates:
            inplace_index = _inplace_index(target)
    training_flag = _TRAINING_FLAG.get(name)
    random = name in _ALWAYS_RANDOM or name.rstrip("_") in _ALWAYS_RANDOM
    if not random and training_flag is None:
        random = torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())
    return _Profile(mutates, random, training_flag, inplace_index)


def _flag(node: Any, index: int, names: Tuple[str, ...], default: bool) -> Any:
    # For methods the tensor is args[0] too, so positions line up with the functional form.
    for name in names:
        if name in node.kwargs:
            return node.kwargs[name]
    return node.args[index] if len(node.args) > index else default


def _module_effect(node: Any) -> Tuple[bool, bool]:
    """(never merge, writes memory) for a ``call_module`` node, from its submodule's kind."""
    root = node.graph.owning_module
    try:
        module = root.get_submodule(node.target)
    except AttributeError:
        return False, False
    if not (isinstance(module, _STATEFUL_MODULES) and module.training):
        return False, False
    # Norm layers update running statistics while training; dropout only draws numbers.
    return True, isinstance(module, torch.nn.modules.batchnorm._NormBase)


def _key(value: Any, env: Dict[Any, Any]) -> Any:
    """A hashable description of an argument, with old-graph nodes replaced by their new
    counterparts; values of different types never compare equal (``1`` vs ``1.0``)."""
    if hasattr(value, "op") and hasattr(value, "users") and hasattr(value, "graph"):
        return env[value]
    cls = type(value)
    if cls is tuple or cls is list:
        return (cls, tuple([_key(v, env) for v in value]))
    if cls is dict:
        return (dict, tuple([(k, _key(v, env)) for k, v in value.items()]))
    if cls is slice:
        return (slice, _key(value.start, env), _key(value.stop, env), _key(value.step, env))
    if isinstance(value, tuple):  # named tuples and other tuple subclasses
        return (cls, tuple([_key(v, env) for v in value]))
    return (cls, value)


def _may_alias_inputs(node: Any) -> bool:
    # aten schemas say which results are views; anything else may return a view, to be safe.
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return True
    return any(r.alias_info is not None for r in schema.returns)


def _written_nodes(nodes: list, verdicts: Dict[Any, Tuple[bool, bool]]) -> Set[Any]:
    """Nodes whose value (or a value sharing its memory) some later op writes to.

    Two such nodes must stay distinct even when computed alike: ``empty_like(x)`` twice, each
    then filled by an in-place ``bernoulli_``, are two buffers, not one.
    """
    written: Set[Any] = set()
    for node in reversed(nodes):
        verdict = verdicts.get(node)
        if (verdict is not None and verdict[1]) or (node in written and _may_alias_inputs(node)):
            written.update(node.all_input_nodes)
    return written


def _graph_module_class(gm: Any) -> type:
    # GraphModule instances belong to a per-instance subclass; build results from the base.
    for cls in type(gm).__mro__:
        if cls.__name__ == "GraphModule":
            return cls
    return type(gm)


class CSEPass(PassBase):
    """Merge nodes that compute the same value, returning a new GraphModule.

    ``banned_ops`` is a set of targets (aten packets match all their overloads) that are
    never merged, on top of the random, in-place and impure ops this pass always keeps.
    Works on fxkit and torch.fx GraphModules alike; the input module is not changed.
    """

    def __init__(self, banned_ops: Optional[Set[Any]] = None) -> None:
        self.banned_ops: Set[Any] = set() if banned_ops is None else banned_ops
        super().__init__()

    def _keep_every_copy(self, node: Any, profiles: Dict[Any, Any]) -> Tuple[bool, bool]:
        """(never merge this node, it may write memory) for a call node."""
        op, target = node.op, node.target
        banned = self.banned_ops
        if banned and (getattr(target, "overloadpacket", target) in banned or target in banned):
            return True, False
        try:
            profile = profiles.get((op, target))
            if profile is None:
                profile = profiles[(op, target)] = _profile(op, target)
        except TypeError:  # an unhashable target
            profile = _profile(op, target)
        if op == "call_module":
            effect = _module_effect(node)
            if effect[0]:
                return effect
        else:
            if profile.always_mutates:
                return True, True
            kwargs = node.kwargs
            if kwargs and ("out" in kwargs or kwargs.get("inplace") is True):
                return True, True
            index = profile.inplace_index
            if index != _NO_INDEX and len(node.args) > index and node.args[index] is True:
                return True, True
        if profile.always_random:
            return True, False
        flag = profile.training_flag
        if flag is not None and _flag(node, *flag) is not False:
            return True, False
        if op == "call_function" and not isinstance(target, torch._ops.HigherOrderOperator):
            # for a plain function or operator the answer depends on the target alone, and
            # the effect registries do not change during one run of the pass
            try:
                key = ("is_impure", target)
                impure = profiles.get(key)
                if impure is None:
                    impure = profiles[key] = bool(node.is_impure())
                return impure, False
            except TypeError:  # an unhashable target
                pass
        try:
            return bool(node.is_impure()), False
        except RuntimeError:  # a call_module in a graph without an owning module
            return False, False

    def call(self, graph_module: Any) -> PassResult:
        """Return ``PassResult(new_module, True)`` if anything merged, else the input module
        with ``False``."""
        graph = graph_module.graph
        nodes = list(graph.nodes)
        verdicts: Dict[Any, Tuple[bool, bool]] = {}
        profiles: Dict[Any, Any] = {}  # (op, target) -> _Profile; ("is_impure", f) -> bool
        for node in nodes:
            op = node.op
            if op != "placeholder" and op != "output" and op != "get_attr":
                verdicts[node] = self._keep_every_copy(node, profiles)
        written = _written_nodes(nodes, verdicts)
        new_graph = type(graph)()
        env: Dict[Any, Any] = {}
        seen: Dict[Any, Any] = {}
        # Bumped by every op that may write memory: a pure op's value may differ on either
        # side of a mutation (through aliasing, too), so its key includes the epoch.
        epoch = 0
        merged = False
        copy = new_graph.node_copy
        lookup = env.__getitem__
        for node in nodes:
            op = node.op
            if op == "placeholder" or op == "output" or op == "get_attr":
                env[node] = copy(node, lookup)
                continue
            keep, mutates = verdicts[node]
            if keep or node in written:
                env[node] = copy(node, lookup)
                epoch += mutates
                continue
            try:
                # Ops reading no other node cannot see a mutation: leave the epoch out.
                stamp = epoch if node.all_input_nodes else 0
                key = (op, node.target, _key(node.args, env), _key(node.kwargs, env), stamp)
                hash(key)
            except TypeError:  # an unhashable constant: keep the node as it is
                env[node] = copy(node, lookup)
                continue
            first = seen.get(key)
            if first is not None:
                env[node] = first
                merged = True
                continue
            env[node] = seen[key] = copy(node, lookup)
        if not merged:
            return PassResult(graph_module, False)
        return PassResult(_graph_module_class(graph_module)(graph_module, new_graph), True)
