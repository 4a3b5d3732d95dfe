"""Generate shape constraints for every node of a traced graph.

:class:`ConstraintGenerator` walks the graph in order; placeholders get a tensor variable
bounded by their annotation (``Dyn`` when unannotated), and every other node is handed to
the inference rule registered for its target (a function, a method name, or the class of
the called module). The result is one :class:`~.constraint.Conj` and the variable counter.

The rules live in ``_generator_rules_functions`` and ``_generator_rules_layers`` and are
re-exported here; :func:`register_inference_rule` adds new ones.
"""

from __future__ import annotations

from typing import Any

import torch

from fxkit.experimental.migrate_gradual_types._generator_registry import (
    _INFERENCE_RULES,
    MAX_TENSOR_RANK,
    as_gradual_type,
    register_inference_rule,
)
from fxkit.experimental.migrate_gradual_types._generator_rules_functions import (
    arange_inference_rule,
    assert_inference_rule,
    broadcasting_inference_rule,
    cumsum_inference_rule,
    eq_inference_rule,
    equality_inference_rule,
    full_inference_rule,
    gen_broadcasting_constraints,
    getitem_inference_rule,
    gt_inference_rule,
    lt_inference_rule,
    masked_fill_inference_rule,
    neq_inference_rule,
    range_check,
    size_inference_rule,
    tensor_inference_rule,
    torch_dim_inference_rule,
    type_inference_rule,
)
from fxkit.experimental.migrate_gradual_types._generator_rules_layers import (
    adaptive_inference_rule,
    add_layer_norm_constraints,
    add_linear_constraints,
    batchnorm_inference_rule,
    bmm_inference_rule,
    conv2d_inference_rule,
    embedding_inference_rule,
    embedding_inference_rule_functional,
    expand_inference_rule,
    flatten_inference_rule,
    gen_embedding_rules,
    gen_layer_norm_constraints,
    generate_flatten_constraints,
    get_attr_inference_rule,
    index_select_inference_rule,
    layer_norm_functional,
    layer_norm_inference_rule,
    linear_constraints,
    linear_inference_rule,
    maxpool_inference_rule,
    relu_inference_rule,
    reshape_inference_rule,
    torch_linear_inference_rule,
    transpose_inference_rule,
    view_inference_rule,
)
from fxkit.experimental.migrate_gradual_types.constraint import (
    BinConstraintT,
    Conj,
    Constraint,
)
from fxkit.experimental.migrate_gradual_types.operation import op_eq, op_leq, op_precision
from fxkit.experimental.migrate_gradual_types.util import gen_tvar
from fxkit.tensor_type import Dyn, TensorType

__all__ = [
    # the generator, and the hook for new rules
    "ConstraintGenerator",
    "register_inference_rule",
    # rules for functions and methods (from _generator_rules_functions)
    "arange_inference_rule",
    "assert_inference_rule",
    "broadcasting_inference_rule",
    "cumsum_inference_rule",
    "eq_inference_rule",
    "equality_inference_rule",
    "full_inference_rule",
    "gen_broadcasting_constraints",
    "getitem_inference_rule",
    "gt_inference_rule",
    "lt_inference_rule",
    "masked_fill_inference_rule",
    "neq_inference_rule",
    "range_check",
    "size_inference_rule",
    "tensor_inference_rule",
    "torch_dim_inference_rule",
    "type_inference_rule",
    # rules for modules and layer-like functions (from _generator_rules_layers)
    "adaptive_inference_rule",
    "add_layer_norm_constraints",
    "add_linear_constraints",
    "batchnorm_inference_rule",
    "bmm_inference_rule",
    "conv2d_inference_rule",
    "embedding_inference_rule",
    "embedding_inference_rule_functional",
    "expand_inference_rule",
    "flatten_inference_rule",
    "gen_embedding_rules",
    "gen_layer_norm_constraints",
    "generate_flatten_constraints",
    "get_attr_inference_rule",
    "index_select_inference_rule",
    "layer_norm_functional",
    "layer_norm_inference_rule",
    "linear_constraints",
    "linear_inference_rule",
    "maxpool_inference_rule",
    "relu_inference_rule",
    "reshape_inference_rule",
    "torch_linear_inference_rule",
    "transpose_inference_rule",
    "view_inference_rule",
]

# BinConstraintT and MAX_TENSOR_RANK are importable from here, as from torch.fx's module.
_REEXPORTED = (BinConstraintT, MAX_TENSOR_RANK)


def _rule_for_target(target: Any) -> Any:
    rule = _INFERENCE_RULES.get(target) if _is_hashable(target) else None
    if rule is None and getattr(target, "__name__", None) == "_assert_is_none":
        # torch.fx's own ``_assert_is_none`` (graphs traced by torch.fx) behaves like ours.
        rule = assert_inference_rule
    return rule


def _is_hashable(x: object) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _placeholder_type(n: Any) -> Any:
    """The gradual type a placeholder is bounded by: its tensor annotation, the example's
    static shape for a parameter passed as input, and ``Dyn`` for anything else."""
    declared = as_gradual_type(n.type)
    if declared == Dyn or isinstance(declared, TensorType):
        return declared
    if declared != torch.nn.parameter.Parameter:
        return Dyn
    if "example_value" in n.meta:
        return TensorType(n.meta["example_value"].size())
    raise AssertionError("example_value not in n.meta")


class ConstraintGenerator:
    """Generates the constraints of ``traced`` (a GraphModule, or the root module of a
    tracer together with the ``graph`` traced so far)."""

    def __init__(self, traced: torch.nn.Module, graph: Any = None) -> None:
        self.traced = traced
        self.traced_params = dict(traced.named_parameters())
        self.constraints: list[Constraint] = []
        self.symbol_dict: dict[Any, Any] = {}
        self.graph = traced.graph if hasattr(traced, "graph") else graph

    def generate_constraints(self, counter: int = 0) -> tuple[Conj, int]:
        """Constraints for all nodes, in graph order, as one conjunction; returns it with
        the updated counter."""
        collected: list[Constraint] = []
        for node in self.graph.nodes:
            produced, counter = self.generate_constraints_node(node, counter)
            collected.extend(produced)
        return Conj(collected), counter

    def generate_constraints_node(self, n: Any, counter: int) -> tuple[list[Constraint], int]:
        """Constraints for one node (and the updated counter); records the node's variable in
        ``self.symbol_dict``."""
        handler = getattr(self, f"_node_{n.op}", None)
        if handler is None:
            raise NotImplementedError(f"Method {n.op} not yet implemented")
        return handler(n, counter)

    # One method per opcode.

    def _node_placeholder(self, n: Any, counter: int) -> tuple[list[Constraint], int]:
        var, counter = gen_tvar(counter)
        self.symbol_dict[n] = var
        rank_bound = BinConstraintT(var, MAX_TENSOR_RANK, op_leq)
        return [BinConstraintT(_placeholder_type(n), var, op_precision), rank_bound], counter

    def _node_call_function(self, n: Any, counter: int) -> tuple[list[Constraint], int]:
        rule = _rule_for_target(n.target)
        if rule is None:
            raise RuntimeError(f"No inference rule registered for target {n.target}!")
        return rule(n, self.symbol_dict, self.constraints, counter)

    _node_call_method = _node_call_function

    def _node_call_module(self, n: Any, counter: int) -> tuple[list[Constraint], int]:
        module = self.traced.get_submodule(n.target)
        rule = _INFERENCE_RULES.get(type(module))
        if rule is None:
            raise RuntimeError(f"No inference rule registered for class {type(module)}!")
        return rule(n, module, self.symbol_dict, self.constraints, counter)

    def _node_get_attr(self, n: Any, counter: int) -> tuple[list[Constraint], int]:
        value = self.traced_params.get(n.target, None)
        # Only parameters with a shape are modelled (buffers and scalars add nothing).
        if not isinstance(value, torch.Tensor) or len(value.shape) == 0:
            return [], counter
        var, counter = gen_tvar(counter)
        self.symbol_dict[n] = var
        return [BinConstraintT(var, TensorType(list(value.shape)), op_eq)], counter

    def _node_output(self, n: Any, counter: int) -> tuple[list[Constraint], int]:
        return [], counter
