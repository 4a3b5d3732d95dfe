"""A gradual type checker and a symbolic-shape refiner for traced graphs.

Placeholders annotated with :class:`~fxkit.tensor_type.TensorType` (``Dyn`` for unknown
dimensions) seed the analysis; :class:`GraphTypeChecker` then walks the graph once and gives
every node a type, raising ``TypeError`` where two facts about a value contradict each other::

    class M(torch.nn.Module):
        def forward(self, x: TensorType((1, 2, 3, Dyn))):
            return torch.reshape(x, [2, -1])

    gm = fxkit.symbolic_trace(M())
    GraphTypeChecker({}, gm).type_check()      # reshape's node.type == TensorType([2, Dyn])

:class:`Refine` replaces each remaining ``Dyn`` with a fresh type variable and collects
:class:`~fxkit.experimental.refinement_types.Equality` constraints between input and output
dimensions, which ``fxkit.experimental.unify_refinements`` can solve.

The per-operation knowledge lives in three registries keyed by call target (a function for
``call_function`` nodes, a module class for ``call_module`` nodes): ``_INFERENCE_RULES`` for
type checking, ``_REFINEMENT_RULES`` for constraint generation and ``_RULES`` for algebraic
output expressions. The decorators ``register_*`` add to them.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Callable, Iterator

import sympy
import torch

# The rules and helpers are public here, under torch.fx's module path.
from fxkit.experimental import _gradual_rules
from fxkit.experimental._gradual_rules import *  # noqa: F403
from fxkit.experimental._gradual_rules import _INFERENCE_RULES, _REFINEMENT_RULES, _RULES, _is_node
from fxkit.experimental.unification import Var
from fxkit.node import map_aggregate
from fxkit.tensor_type import Dyn, TensorType, _DynType

__all__ = ["GraphTypeChecker", "Refine", "get_parameter", *_gradual_rules.__all__]


# ---------------------------------------------------------------------------------------------
# Drivers


def _output_types(n: Any) -> Any:
    """The output node's type: its returned structure with every node replaced by its type."""
    return map_aggregate(n.args[0], lambda a: a.type if _is_node(a) else a)


class _SubmoduleCache:
    """``root.get_submodule`` for every ``call_module`` node of one pass, at a fraction of
    the cost; paths that are not plain chains of submodules go to ``get_submodule`` itself,
    so errors are the same."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._found: dict[str, Any] = {}

    def __call__(self, target: str) -> Any:
        module = self._registered(target)
        # Anything but a chain of registered submodules: get_submodule decides (or raises).
        return module if module is not None else self._root.get_submodule(target)

    def _registered(self, target: str) -> Any:
        # Walks ``_modules`` directly, remembering every prefix: nn.Module.__getattr__ is what
        # dominates get_submodule's cost, and sibling paths share their parents.
        module = self._found.get(target)
        if module is None:
            head, _, atom = target.rpartition(".")
            parent = self._registered(head) if head else self._root
            children = getattr(parent, "_modules", None)
            module = children.get(atom) if children is not None else None
            if module is not None:
                self._found[target] = module
        return module


@contextlib.contextmanager
def _submodules_cached(driver: Any) -> Iterator[None]:
    """Memoise ``driver.traced.get_submodule`` for one pass over the graph."""
    driver._module_cache = _SubmoduleCache(driver.traced)
    try:
        yield
    finally:
        del driver._module_cache


def _module_of(driver: Any, target: str) -> Any:
    cache = getattr(driver, "_module_cache", None)
    return cache(target) if cache is not None else driver.traced.get_submodule(target)


class GraphTypeChecker:
    """Gradual type checking of ``traced.graph``: :meth:`type_check` sets ``node.type`` on
    every node from the placeholder annotations and the registered inference rules.

    ``env`` is kept for API compatibility (the rules read types from the nodes themselves).
    """

    def __init__(self, env: dict[str, Any], traced: Any) -> None:
        self.env = env
        self.traced = traced

    def type_check(self) -> bool:
        """Type every node in order; returns True, or raises ``TypeError`` on the first
        ill-typed node and ``RuntimeError`` on a target without a rule."""
        with _submodules_cached(self):
            for n in self.traced.graph.nodes:
                self.type_check_node(n)
        return True

    def type_check_node(self, n: Any) -> Any:
        """Type one node (its inputs must have been typed already) and return its type.

        Supported: placeholders, parameters, ``getattr(x, "shape")``, add, reshape,
        transpose, flatten and the modules ReLU, Conv2d, BatchNorm2d, MaxPool2d,
        AdaptiveAvgPool2d and Linear, plus whatever is registered with
        :func:`register_inference_rule`.
        """
        if n.type is None:
            n.type = Dyn
        op = n.op
        if op == "call_module":
            module_instance = _module_of(self, n.target)
            rule = _INFERENCE_RULES.get(type(module_instance))
            if rule is None:
                raise RuntimeError(
                    f"No inference rule registered for class {type(module_instance)}!"
                )
            return rule(n, module_instance)
        if op == "call_function":
            target = n.target
            if target is getattr:
                return _INFERENCE_RULES[getattr](n, self.traced)
            rule = _INFERENCE_RULES.get(target)
            if rule is None:
                raise RuntimeError(f"No inference rule registered for target {target}!")
            return rule(n)
        if op == "placeholder":
            return n.type
        if op == "get_attr":
            value = get_parameter(self.traced, n.target)
            if isinstance(value.data, torch.Tensor):
                n.type = TensorType(value.data.shape)
            return n.type
        if op == "output":
            n.type = _output_types(n)
            return n.type
        raise NotImplementedError(f"Method {op} not yet implemented")


class Refine:
    """Symbolic shape inference: :meth:`refine` gives every unknown dimension a fresh type
    variable (``Var(0)``, ``Var(1)``, ...) and collects equality constraints between them in
    :attr:`constraints`; :meth:`symbolic_relations` then turns the variables into sympy
    symbols and rewrites output dimensions as expressions of the inputs'."""

    def __init__(self, traced: Any) -> None:
        self.constraints: list[Any] = []
        self.traced = traced
        self.symbol_iter = itertools.count(start=0, step=1)

    def refine(self) -> bool:
        """Generate the constraints for every node; returns True."""
        with _submodules_cached(self):
            for n in self.traced.graph.nodes:
                self.refine_node(n)
        return True

    def symbolic_relations(self) -> bool:
        """Rewrite every node's type algebraically (see :meth:`infer_symbolic_relations`);
        returns True."""
        with _submodules_cached(self):
            for n in self.traced.graph.nodes:
                self.infer_symbolic_relations(n)
        return True

    def replace_dyn_with_fresh_var(self, typ: Any) -> Any:
        """``typ`` with each ``Dyn`` (also inside TensorTypes, lists and tuples) replaced by a
        new type variable."""
        if type(typ) is TensorType:
            # The hot case, unrolled: variables are numbered in dimension order either way.
            counter = self.symbol_iter
            dims = [
                d
                if type(d) is int
                else Var(next(counter))
                if isinstance(d, _DynType)
                else self.replace_dyn_with_fresh_var(d)
                for d in typ.dims
            ]
            return TensorType(tuple(dims))
        return self._rebuild(typ, _DynType, lambda _: Var(next(self.symbol_iter)))

    def convert_to_sympy_symbols(self, typ: Any) -> Any:
        """``typ`` with each type variable replaced by the sympy symbol of the same name."""
        return self._rebuild(typ, Var, lambda v: sympy.symbols(str(v)))

    @classmethod
    def _rebuild(cls, typ: Any, leaf: type, replace: Callable[[Any], Any]) -> Any:
        if isinstance(typ, leaf):
            return replace(typ)
        if isinstance(typ, TensorType):
            dims = [d if type(d) is int else cls._rebuild(d, leaf, replace) for d in typ.dims]
            return TensorType(tuple(dims))
        if isinstance(typ, list):
            return [cls._rebuild(t, leaf, replace) for t in typ]
        if isinstance(typ, tuple):
            # torch.fx hands back a generator for tuples; a tuple is what callers can use.
            return tuple([cls._rebuild(t, leaf, replace) for t in typ])
        return typ

    def refine_node(self, n: Any) -> Any:
        """Give ``n``'s unknown dimensions fresh variables and add the constraints of its
        operation (from ``_REFINEMENT_RULES``); returns the type of an output node."""
        if n.type is None:
            n.type = Dyn
        n.type = self.replace_dyn_with_fresh_var(n.type)
        op = n.op
        if op == "call_function":
            rule = _REFINEMENT_RULES.get(n.target)
            if rule is not None:
                self.constraints += rule(n)
        elif op == "call_module":
            rule = _REFINEMENT_RULES.get(type(_module_of(self, n.target)))
            if rule is not None:
                self.constraints += rule(n)
        elif op == "output":
            n.type = _output_types(n)
            return n.type
        return None

    def infer_symbolic_relations(self, n: Any) -> Any:
        """Convert ``n``'s type variables to sympy symbols and apply its operation's algebraic
        rule (from ``_RULES``), if any."""
        n.type = self.convert_to_sympy_symbols(n.type)
        op = n.op
        if op == "call_function":
            rule = _RULES.get(n.target)
            return rule(n) if rule is not None else None
        if op == "call_module":
            module_instance = _module_of(self, n.target)
            rule = _RULES.get(type(module_instance))
            return rule(n, module_instance) if rule is not None else None
        if op == "output":
            n.type = _output_types(n)
            return n.type
        return None


def get_parameter(traced: Any, target: str) -> torch.nn.Parameter:
    """The attribute ``target`` (a dotted path such as ``"layer1.conv.weight"``) of
    ``traced``; raises ``AttributeError`` if a module on the path or the attribute is
    missing."""
    owner_path, _, attr = target.rpartition(".")
    owner = traced.get_submodule(owner_path)
    if not hasattr(owner, attr):
        raise AttributeError(f"{owner._get_name()} has no attribute `{attr}`")
    return getattr(owner, attr)
