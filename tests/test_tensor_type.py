"""fxkit.tensor_type against torch.fx.tensor_type: the relations on a table of types,
TensorType/Dyn behaviour, and TensorType annotations in traced code."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.fx as tfx
import torch.fx.tensor_type as T
from torch.fx.experimental.unification import Var

import fxkit
import fxkit.tensor_type as K


def table(lib):
    """The same list of types built from ``lib``'s TensorType and Dyn."""
    TT, Dyn = lib.TensorType, lib.Dyn
    return [
        Dyn,
        int,
        float,
        torch.Tensor,
        3,
        TT((1, 2, 3)),
        TT((1, Dyn, 3)),
        TT((Dyn, Dyn, Dyn)),
        TT((1, 2)),
        TT((Dyn,)),
        TT(()),
        TT([1, 2, 3]),  # a list of dims equals the tuple
        TT((TT((1,)), 2)),
        TT((Var("a"), 2, 3)),
        Var("b"),
    ]


PAIRS = list(itertools.product(range(len(table(T))), repeat=2))


@pytest.mark.parametrize("relation", ["is_consistent", "is_more_precise"])
def test_relations_equal_torch_fx(relation):
    theirs, ours = table(T), table(K)
    want = [getattr(T, relation)(theirs[i], theirs[j]) for i, j in PAIRS]
    got = [getattr(K, relation)(ours[i], ours[j]) for i, j in PAIRS]
    assert got == want


def test_relation_examples():
    Dyn, TT = K.Dyn, K.TensorType
    assert K.is_consistent(TT((1, Dyn, 3)), TT((1, 2, 3)))
    assert K.is_consistent(int, Dyn) and K.is_consistent(Dyn, TT((1,)))
    assert not K.is_consistent(TT((1, 2)), TT((1, 2, 3)))
    assert not K.is_consistent(int, float)
    assert K.is_more_precise(TT((1, 2, 3)), TT((1, Dyn, 3)))
    assert not K.is_more_precise(TT((1, Dyn, 3)), TT((1, 2, 3)))
    assert K.is_more_precise(int, Dyn) and not K.is_more_precise(Dyn, int)


def test_tensor_type_behaviour():
    for lib in (T, K):
        t = lib.TensorType((1, lib.Dyn))
        assert t.dims == (1, lib.Dyn) and t.__origin__ is lib.TensorType
        assert t.__args__ == (1, lib.Dyn)
    pairs = [
        (T.TensorType((1, T.Dyn)), K.TensorType((1, K.Dyn))),
        (T.TensorType[1, 2], K.TensorType[1, 2]),
        (T.TensorType[3], K.TensorType[3]),
        (T.TensorType[(4, 5)], K.TensorType[(4, 5)]),
        (T.TensorType([1]), K.TensorType([1])),
    ]
    for theirs, ours in pairs:
        assert repr(ours) == repr(theirs) and str(ours) == str(theirs)
        assert repr(ours.dims) == repr(theirs.dims)
    assert K.TensorType[1, 2] == K.TensorType((1, 2)) != K.TensorType((2, 1))
    assert K.TensorType((1,)) != (1,)
    assert (repr(K.Dyn), str(K.Dyn), K.Dyn.__name__) == (repr(T.Dyn), str(T.Dyn), T.Dyn.__name__)
    assert K.Dyn == K._DynType() and K.Dyn != 1


def test_unhashable_like_torch_fx():
    for obj in (T.TensorType((1,)), T.Dyn):
        with pytest.raises(TypeError):
            hash(obj)
    for obj in (K.TensorType((1,)), K.Dyn):
        with pytest.raises(TypeError):
            hash(obj)


def test_tensor_type_annotation_in_traced_code():
    def make(lib):
        TT, Dyn = lib.TensorType, lib.Dyn

        def f(x, y):
            return x + y

        # Set directly: this file's string annotations would stay strings.
        f.__annotations__ = {"x": TT((2, Dyn)), "y": TT[2, 3]}
        return f

    theirs = tfx.symbolic_trace(make(T))
    ours = fxkit.symbolic_trace(make(K))
    # only the package name differs
    want = theirs.code
    assert ours.code == want.replace("torch.fx.tensor_type.", "fxkit.tensor_type.")
    types = [n.type for n in ours.graph.nodes if n.op == "placeholder"]
    assert types == [K.TensorType((2, K.Dyn)), K.TensorType((2, 3))]
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(ours(x, y), x + y)


def test_public_names():
    assert set(K.__all__) == set(T.__all__)
