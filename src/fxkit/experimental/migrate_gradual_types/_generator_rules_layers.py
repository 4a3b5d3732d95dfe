"""Inference rules for layers (``nn.Module`` classes and their functional forms) and for
shape-changing tensor operations (view/reshape, flatten, transpose, expand, index_select,
bmm, embedding, layer norm, linear, conv2d, pooling).

As in :mod:`._generator_rules_functions`, fresh variables are allocated in torch.fx's order.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn.modules.batchnorm import BatchNorm2d
from torch.nn.modules.conv import Conv2d

from fxkit.experimental.migrate_gradual_types import constraint as cons
from fxkit.experimental.migrate_gradual_types._generator_registry import (
    MAX_TENSOR_RANK,
    both_dyn,
    dim_eq,
    dyn_or_per_rank,
    expect,
    expect_node,
    fresh_tensor,
    is_node,
    register_inference_rule,
    tensor_eq,
)
from fxkit.experimental.migrate_gradual_types._generator_rules_functions import (
    gen_broadcasting_constraints,
)
from fxkit.experimental.migrate_gradual_types.operation import (
    op_consistency,
    op_eq,
    op_leq,
    op_matching,
    op_neq,
)
from fxkit.experimental.migrate_gradual_types.util import (
    gen_dvar,
    gen_nat_constraints,
    gen_tensor_dims,
    gen_tvar,
)
from fxkit.tensor_type import Dyn, TensorType

_Rule = tuple[list[cons.Constraint], int]


def _same_shape_per_rank(source: Any, output: Any, counter: int, extra: Any) -> _Rule:
    """Either both ``Dyn``, or for some rank both have the same fresh dimensions, with
    ``extra(dims)`` constraints added to each case."""

    def of_rank(rank: int, counter: int) -> tuple[cons.Constraint, int]:
        dims, counter = gen_tensor_dims(rank, counter)
        parts = [tensor_eq(source, dims), tensor_eq(output, dims), *extra(dims)]
        return cons.Conj(parts + gen_nat_constraints(dims)), counter

    return dyn_or_per_rank(both_dyn(source, output), counter, of_rank)


# --------------------------------------------------------------------------- simple layers


@register_inference_rule(torch.nn.Dropout)
@register_inference_rule(torch.nn.ReLU)
def relu_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """Shape-preserving modules: output = input."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    expect(isinstance(source, cons.TVar), "TVar", source)
    return [tensor_eq(source, output)], counter


@register_inference_rule(getattr)
def get_attr_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``getattr(t, "device")`` keeps ``t``'s type; other attributes are not modelled."""
    expect_node(n.args[0])
    expect(isinstance(n.args[1], str), "str", n.args[1])
    output, counter = fresh_tensor(n, symbols, counter)
    if n.args[1] != "device":
        raise NotImplementedError("Not yet implemented")
    return [tensor_eq(symbols[n.args[0]], output)], counter


# --------------------------------------------------------------------------- layer norm


def add_layer_norm_constraints(
    input_dim: list[cons.DVar], normalized_dim: list[int]
) -> list[cons.Constraint]:
    """The trailing entries of ``input_dim`` must be consistent with ``normalized_dim``;
    :class:`F` if the normalized shape is longer than the input."""
    if len(normalized_dim) > len(input_dim):
        return [cons.F()]
    pairs = zip(reversed(input_dim), reversed(normalized_dim))
    return [cons.BinConstraintD(have, want, op_consistency) for have, want in pairs]


def gen_layer_norm_constraints(
    n: Any, normalized_shape: Sequence[int], symbols: dict, counter: int
) -> _Rule:
    """Layer norm keeps the shape, whose tail must match ``normalized_shape``."""
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    wanted = list(normalized_shape)
    return _same_shape_per_rank(
        source, output, counter, lambda dims: add_layer_norm_constraints(dims, wanted)
    )


@register_inference_rule(torch.nn.functional.layer_norm)
def layer_norm_functional(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``F.layer_norm(x, normalized_shape, ...)``."""
    expect_node(n.args[0])
    return gen_layer_norm_constraints(n, n.args[1], symbols, counter)


@register_inference_rule(torch.nn.LayerNorm)
def layer_norm_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.LayerNorm``: see :func:`gen_layer_norm_constraints`."""
    expect_node(n.args[0])
    return gen_layer_norm_constraints(n, module_instance.normalized_shape, symbols, counter)


# --------------------------------------------------------------------------- linear


def add_linear_constraints(
    dims1: list[cons.DVar], dims2: list[cons.DVar], in_features: Any, out_features: Any
) -> list[cons.Constraint]:
    """Input dims ``dims1`` and output dims ``dims2`` agree except in the last one, where
    the input is consistent with ``in_features`` and the output equals ``out_features``."""
    if len(dims1) != len(dims2):
        raise AssertionError(f"Expected same length, got {len(dims1)} vs {len(dims2)}")
    out: list[cons.Constraint] = [dim_eq(a, b) for a, b in zip(dims1[:-1], dims2[:-1])]
    if dims1:
        out.append(cons.BinConstraintD(dims1[-1], in_features, op_consistency))
        out.append(dim_eq(dims2[-1], out_features))
    return out


def linear_constraints(
    n: Any, in_features: Any, out_features: Any, symbols: dict, counter: int
) -> _Rule:
    """Constraints of a linear layer with the given feature sizes (ints or variables)."""
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]

    def of_rank(rank: int, counter: int) -> tuple[cons.Constraint, int]:
        dims_in, counter = gen_tensor_dims(rank, counter)
        dims_out, counter = gen_tensor_dims(rank, counter)
        parts = [tensor_eq(source, dims_in), tensor_eq(output, dims_out)]
        parts += add_linear_constraints(dims_in, dims_out, in_features, out_features)
        return cons.Conj(parts + gen_nat_constraints(dims_in + dims_out)), counter

    return dyn_or_per_rank(both_dyn(source, output), counter, of_rank)


@register_inference_rule(torch.nn.Linear)
def linear_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.Linear``: the module's feature sizes are known."""
    expect_node(n.args[0])
    sizes = (module_instance.in_features, module_instance.out_features)
    return linear_constraints(n, *sizes, symbols, counter)


@register_inference_rule(torch._C._nn.linear)
def torch_linear_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``F.linear(x, w, ...)``: the feature sizes come from ``w``, a 2-d tensor."""
    expect_node(n.args[0])
    weight_dims, counter = gen_tensor_dims(2, counter)
    weight_shape = tensor_eq(symbols[n.args[1]], weight_dims)
    rest, counter = linear_constraints(n, weight_dims[1], weight_dims[0], symbols, counter)
    return [weight_shape, *rest], counter


# --------------------------------------------------------------------------- embedding


def gen_embedding_rules(n: Any, symbols: dict, embedding_dim: Any, counter: int) -> _Rule:
    """An embedding appends ``embedding_dim`` to the index tensor's shape (ranks 1-3)."""
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]

    def of_rank(rank: int, counter: int) -> tuple[cons.Constraint, int]:
        dims, counter = gen_tensor_dims(rank, counter)
        parts = [tensor_eq(source, dims), tensor_eq(output, [*dims, embedding_dim])]
        return cons.Conj(parts + gen_nat_constraints(dims)), counter

    return dyn_or_per_rank(both_dyn(source, output), counter, of_rank, range(1, MAX_TENSOR_RANK))


@register_inference_rule(torch.nn.functional.embedding)
def embedding_inference_rule_functional(
    n: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``F.embedding(idx, weight)``: the embedding size is the weight's second dimension."""
    expect_node(n.args[0])
    weights = symbols[n.args[1]]
    weight_dims, counter = gen_tensor_dims(2, counter)
    weight_shape = tensor_eq(weights, weight_dims)
    rest, counter = gen_embedding_rules(n, symbols, weight_dims[1], counter)
    return [weight_shape, *rest], counter


@register_inference_rule(torch.nn.modules.sparse.Embedding)
def embedding_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.Embedding``: the module's embedding size is known."""
    expect_node(n.args[0])
    return gen_embedding_rules(n, symbols, module_instance.embedding_dim, counter)


# --------------------------------------------------------------------------- 4-d layers


def _four_dims_matching(source: Any, counter: int) -> tuple[list[cons.DVar], cons.Constraint, int]:
    dims, counter = gen_tensor_dims(4, counter)
    return dims, cons.BinConstraintT(source, TensorType(dims), op_matching), counter


@register_inference_rule(BatchNorm2d)
def batchnorm_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.BatchNorm2d``: a 4-d (or Dyn) input, output = input."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    dims, matching, counter = _four_dims_matching(source, counter)
    return [matching, tensor_eq(source, output), *gen_nat_constraints(dims)], counter


@register_inference_rule(torch.nn.AdaptiveAvgPool2d)
def adaptive_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.AdaptiveAvgPool2d``: batch and channels kept, spatial dims = output size."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    dims, matching, counter = _four_dims_matching(symbols[n.args[0]], counter)
    size = module_instance.output_size
    pooled = tensor_eq(output, [dims[0], dims[1], size[0], size[1]])
    return [matching, pooled, *gen_nat_constraints(dims)], counter


@register_inference_rule(Conv2d)
def conv2d_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.Conv2d``: a 4-d input whose channels are consistent with the module's; the output
    follows the convolution arithmetic (:class:`CalcConv`)."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    dims, matching, counter = _four_dims_matching(source, counter)
    m = module_instance
    channels = cons.BinConstraintD(m.in_channels, dims[1], op_consistency)
    geometry = (m.kernel_size, m.padding, m.stride, m.dilation)
    conv = cons.CalcConv(output, source, m.out_channels, *geometry, dims)
    return [matching, channels, conv, *gen_nat_constraints(dims)], counter


@register_inference_rule(torch.nn.MaxPool2d)
def maxpool_inference_rule(
    n: Any, module_instance: Any, symbols: dict, constraints: list, counter: int
) -> _Rule:
    """``nn.MaxPool2d``: a 4-d input; the output follows :class:`CalcMaxPool`."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    dims, matching, counter = _four_dims_matching(source, counter)
    m = module_instance
    pool = cons.CalcMaxPool(output, source, m.kernel_size, m.padding, m.stride, m.dilation, dims)
    return [matching, pool, *gen_nat_constraints(dims)], counter


# --------------------------------------------------------------------------- shape changes


def generate_flatten_constraints(
    start_dim: int, end_dim: int, input: cons.TVar, flattened: cons.TVar, n: int, counter: int
) -> tuple[cons.Conj, int]:
    """The flatten case for an input of rank ``n``: the input gets ``n`` fresh dims and the
    output is their product over ``[start_dim, end_dim]`` (:class:`CalcProduct`)."""
    dims, counter = gen_tensor_dims(n, counter)
    start = n if start_dim == -1 else abs(start_dim)
    stop = n + end_dim + 1 if end_dim < 0 else end_dim + 1
    product = cons.CalcProduct(start, stop, flattened, dims)
    return cons.Conj([tensor_eq(input, dims), product, *gen_nat_constraints(dims)]), counter


@register_inference_rule(torch.flatten)
def flatten_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``torch.flatten(x, start_dim=1, end_dim=-1)`` (positional bounds only, as torch.fx)."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    bounds = [1, -1]
    for position in (1, 2):
        if len(n.args) > position:
            expect(isinstance(n.args[position], int), "int", n.args[position])
            bounds[position - 1] = n.args[position]
    cases: list[cons.Constraint] = [both_dyn(source, output)]
    for rank in range(1, MAX_TENSOR_RANK + 1):
        case, counter = generate_flatten_constraints(*bounds, source, output, rank, counter)
        cases.append(case)
    return [cons.Disj(cases)], counter


@register_inference_rule("reshape")
@register_inference_rule("view")
def view_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.view(*sizes)``/``t.reshape(*sizes)``: sizes may be traced dimensions; a -1 becomes a
    fresh dimension. The input must be reshapeable to the result."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    sizes = [symbols[a] if is_node(a) else a for a in n.args[1:]]
    target: list[Any] = []
    known: list[cons.Constraint] = []
    for size in sizes:
        if size == -1:
            size, counter = gen_dvar(counter)
        target.append(size)
        known.append(cons.BinConstraintD(size, Dyn, op_neq))
    target_type = TensorType(target)
    return [tensor_eq(output, target_type), cons.CanReshape(source, target_type), *known], counter


@register_inference_rule(torch.reshape)
def reshape_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``torch.reshape(x, shape)`` with a literal shape; -1 is ``Dyn``."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    target_type = TensorType([Dyn if size == -1 else size for size in n.args[1]])
    return [
        tensor_eq(output, target_type),
        cons.CanReshape(symbols[n.args[0]], target_type),
    ], counter


@register_inference_rule("transpose")
def transpose_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.transpose(i, j)``: both Dyn, or one :class:`Transpose` case per rank."""
    expect_node(n.args[0])
    expect(isinstance(n.args[1], int), "int", n.args[1])
    expect(isinstance(n.args[2], int), "int", n.args[2])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    expect(isinstance(source, cons.TVar), "TVar", source)
    by_rank = [
        cons.Transpose(rank, source, n.args[1], n.args[2], output)
        for rank in range(1, MAX_TENSOR_RANK + 1)
    ]
    return [cons.Disj([both_dyn(source, output), cons.Disj(by_rank)])], counter


@register_inference_rule("index_select")
def index_select_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.index_select(dim, index)``: ``index`` is a vector (or Dyn) whose length replaces
    dimension ``dim`` of ``t``."""
    expect_node(n.args[0])
    expect(isinstance(n.args[1], int), "int", n.args[1])
    expect_node(n.args[2])
    output, counter = fresh_tensor(n, symbols, counter)
    (length,), counter = gen_tensor_dims(1, counter)
    index_var, source, axis = symbols[n.args[2]], symbols[n.args[0]], n.args[1]

    def per_rank(replacement: Any) -> cons.Disj:
        ranks = range(1, MAX_TENSOR_RANK + 1)
        return cons.Disj([cons.IndexSelect(r, source, replacement, axis, output) for r in ranks])

    vector = cons.Conj([tensor_eq(index_var, [length]), per_rank(length)])
    unknown = cons.Conj([cons.BinConstraintT(index_var, Dyn, op_eq), per_rank(Dyn)])
    return [cons.Disj([vector, unknown])], counter


@register_inference_rule("expand")
def expand_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``t.expand(*sizes)``: broadcasting against a tensor of the given sizes, with the
    result's rank fixed to ``len(sizes)``."""
    expect_node(n.args[0])
    output, counter = fresh_tensor(n, symbols, counter)
    source = symbols[n.args[0]]
    sizes_var, counter = gen_tvar(counter)
    sizes_nat: list[cons.Constraint] = []
    for size in n.args[1:]:
        expect(is_node(size) or isinstance(size, int), "Node or int", size)
        if is_node(size):
            expect(isinstance(symbols[size], cons.DVar), "DVar", symbols[size])
            sizes_nat.append(cons.BinConstraintD(0, symbols[size], op_leq))
    sizes_type = tensor_eq(sizes_var, [s if isinstance(s, int) else symbols[s] for s in n.args[1:]])
    result, counter = gen_broadcasting_constraints(source, sizes_var, symbols, counter, output)
    dims, counter = gen_tensor_dims(len(n.args[1:]), counter)
    result += [tensor_eq(output, dims), *gen_nat_constraints(dims), sizes_type, *sizes_nat]
    return result, counter


@register_inference_rule(torch.bmm)
def bmm_inference_rule(n: Any, symbols: dict, constraints: list, counter: int) -> _Rule:
    """``torch.bmm(a, b)``: rank-3 inputs with consistent batch sizes; ``(b, n, m) @ (b, m,
    p) -> (b, n, p)``, with Dyn propagated from a Dyn input."""
    expect_node(n.args[0])
    expect_node(n.args[1])
    output, counter = fresh_tensor(n, symbols, counter)
    lhs, rhs = symbols[n.args[0]], symbols[n.args[1]]
    dims_l, counter = gen_tensor_dims(3, counter)
    dims_r, counter = gen_tensor_dims(3, counter)
    is_dyn = [cons.BinConstraintT(v, Dyn, op_eq) for v in (lhs, rhs, output)]
    all_dyn = cons.Conj(is_dyn)
    lhs_dyn = cons.Conj(
        [is_dyn[0], tensor_eq(rhs, dims_r), tensor_eq(output, [dims_r[0], Dyn, dims_r[2]])]
    )
    rhs_dyn = cons.Conj(
        [is_dyn[1], tensor_eq(lhs, dims_l), tensor_eq(output, [dims_l[0], dims_l[1], Dyn])]
    )
    batch, counter = gen_dvar(counter)
    tensors = cons.Conj(
        [
            tensor_eq(lhs, dims_l),
            tensor_eq(rhs, dims_r),
            tensor_eq(output, [batch, dims_l[1], dims_r[2]]),
            cons.BinConstraintD(dims_l[0], dims_r[0], op_consistency),
            cons.DGreatestUpperBound(batch, dims_l[0], dims_r[0]),
        ]
    )
    return [cons.Disj([all_dyn, lhs_dyn, rhs_dyn, tensors])], counter


__all__ = [
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
