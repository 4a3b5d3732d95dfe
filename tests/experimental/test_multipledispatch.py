"""fxkit.experimental.unification.multipledispatch against torch.fx's vendored copy: the most
specific implementation is called, ambiguities warn with the same category and text, variadic
signatures, MethodDispatcher, the conflict relations and orderings on tables and on random
signature sets, and the error messages."""

from __future__ import annotations

import itertools
import pickle
import warnings

import pytest
import torch.fx.experimental.unification.multipledispatch as T
import torch.fx.experimental.unification.multipledispatch.conflict as TC
import torch.fx.experimental.unification.multipledispatch.core as TCore
import torch.fx.experimental.unification.multipledispatch.dispatcher as TD
import torch.fx.experimental.unification.multipledispatch.utils as TU
import torch.fx.experimental.unification.multipledispatch.variadic as TV
from hypothesis import given, settings
from hypothesis import strategies as st

import fxkit.experimental.unification.multipledispatch as K
import fxkit.experimental.unification.multipledispatch.conflict as KC
import fxkit.experimental.unification.multipledispatch.core as KCore
import fxkit.experimental.unification.multipledispatch.dispatcher as KD
import fxkit.experimental.unification.multipledispatch.utils as KU
import fxkit.experimental.unification.multipledispatch.variadic as KV

LIBS = {"torch.fx": (T, TC, TD, TU, TV), "fxkit": (K, KC, KD, KU, KV)}


class A:
    pass


class B(A):
    pass


class C(B):
    pass


class D(A):
    pass


CLASSES = [object, A, B, C, D, int, bool, float]


def outcome(thunk):
    """The value of ``thunk()``, or the exception's type name and message."""
    try:
        return ("ok", thunk())
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return (type(exc).__name__, str(exc))


def warned(thunk):
    """``thunk()``'s outcome and the (category name, text) of each warning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = outcome(thunk)
    return result, [(w.category.__name__, str(w.message)) for w in caught]


def build_shapes(lib):
    """A dispatcher with overlapping signatures, registered through ``lib.dispatch``."""
    ns = {}
    dispatch = lib.dispatch

    @dispatch(A, namespace=ns)
    def f(x):
        return "A"

    @dispatch(B, namespace=ns)
    def f(x):  # noqa: F811
        return "B"

    @dispatch((int, float), namespace=ns)
    def f(x):  # noqa: F811
        return "number"

    @dispatch(bool, namespace=ns)
    def f(x):  # noqa: F811
        return "bool"

    @dispatch(A, A, namespace=ns)
    def f(x, y):  # noqa: F811
        return "AA"

    @dispatch(C, A, namespace=ns)
    def f(x, y):  # noqa: F811
        return "CA"

    @dispatch([int], namespace=ns)
    def f(*xs):  # noqa: F811
        return f"ints{len(xs)}"

    @dispatch(str, [(int, str)], namespace=ns)
    def f(*xs):  # noqa: F811
        return f"str+{len(xs) - 1}"

    return ns["f"]


CALLS = {
    "A": (A(),),
    "B": (B(),),
    "C": (C(),),
    "D": (D(),),
    "int": (1,),
    "float": (1.5,),
    "bool": (True,),
    "AA": (A(), A()),
    "CC": (C(), C()),
    "DC": (D(), C()),
    "no-args": (),
    "ints": (1, 2, 3),
    "str-mix": ("a", 1, "b"),
    "str-bad": ("a", 1.0),
    "unknown": ("x", "y", 3.0),
    "object": (object(),),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_most_specific_implementation_is_called(call):
    results = [warned(lambda: build_shapes(lib[0])(*CALLS[call])) for lib in LIBS.values()]
    assert results[0] == results[1]


def test_examples():
    f = build_shapes(K)
    assert f(C()) == "B" and f(D()) == "A" and f(3) == "number" and f(True) == "bool"
    assert f(C(), B()) == "CA" and f() == "ints0" and f("s", 1, "t") == "str+2"
    with pytest.raises(NotImplementedError, match="Could not find signature for f: <str, float>"):
        f("a", 1.0)
    assert f.dispatch(C) is f.dispatch(B) and f.dispatch(float, str) is None


def ambiguous_dispatcher(lib):
    ns = {}

    @lib.dispatch(A, B, namespace=ns)
    def g(x, y):
        return "AB"

    @lib.dispatch(B, A, namespace=ns)
    def g(x, y):  # noqa: F811
        return "BA"

    @lib.dispatch(object, namespace=ns)
    def g(x):  # noqa: F811
        return "obj"

    return ns["g"]


def test_ambiguity_warns_like_torch_fx():
    theirs = warned(lambda: ambiguous_dispatcher(T)(B(), B()))
    ours = warned(lambda: ambiguous_dispatcher(K)(B(), B()))
    assert ours == theirs
    ((category, text),) = ours[1]
    assert category == "AmbiguityWarning"
    assert "Ambiguities exist in dispatched function g" in text and "@dispatch(B, B)" in text
    # The warning comes on first use, not at registration, and names fxkit's own class.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = ambiguous_dispatcher(K)
        assert not caught
        g.reorder()
    assert [w.category for w in caught] == [KC.AmbiguityWarning]
    assert issubclass(KC.AmbiguityWarning, Warning)


def test_reorder_on_ambiguity_callback_and_resolution():
    g = ambiguous_dispatcher(K)
    seen = []
    g.reorder(on_ambiguity=lambda d, amb: seen.append((d, amb)))
    assert seen == [(g, {((A, B), (B, A))} if hash((A, B)) < hash((B, A)) else {((B, A), (A, B))})]
    g.add((B, B), lambda x, y: "BB")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert g(B(), B()) == "BB"


def method_class(lib):
    class Shape:
        @lib.dispatch(int)
        def area(self, x):
            return ("int", x, self.tag)

        @lib.dispatch(str)
        def area(self, x):  # noqa: F811
            return ("str", x, self.tag)

        @lib.dispatch([float])
        def area(self, *xs):  # noqa: F811
            return ("floats", xs, self.tag)

        def __init__(self, tag):
            self.tag = tag

    return Shape


@pytest.mark.parametrize("args", [(3,), ("s",), (), (1.0, 2.0), (None,)], ids=str)
def test_method_dispatcher(args):
    results = [outcome(lambda: method_class(lib[0])("t").area(*args)) for lib in LIBS.values()]
    assert results[0] == results[1]
    assert isinstance(method_class(K).__dict__["area"], KD.MethodDispatcher)


def test_signature_from_annotations():
    m = KD.MethodDispatcher("m")

    def method(self, x):
        return ("int", x)

    method.__annotations__ = {"x": int}  # real types (this module's annotations are strings)

    m.add((), method)
    assert list(m.funcs) == [(int,)]  # ``self`` is not part of a method's signature
    d = KD.Dispatcher("h")

    def annotated(x, y):
        return (x, y)

    annotated.__annotations__ = {"x": int, "y": str}

    d.add((), annotated)
    assert list(d.funcs) == [(int, str)] and d(1, "a") == (1, "a")


def test_md_not_implemented_falls_through():
    for lib, _, disp, *_ in LIBS.values():
        ns = {}

        @lib.dispatch(A, namespace=ns)
        def h(x):
            return "A"

        @lib.dispatch(B, namespace=ns)
        def h(x):  # noqa: F811
            if isinstance(x, C):
                raise disp.MDNotImplementedError()
            return "B"

        assert ns["h"](C()) == "A" and ns["h"](B()) == "B"

    def refusals(lib, disp):
        ns = {}

        @lib.dispatch(A, namespace=ns)
        def k(x):
            raise disp.MDNotImplementedError()

        return outcome(lambda: ns["k"](A()))

    assert refusals(K, KD) == refusals(T, TD)
    assert (
        refusals(K, KD)[1] == "Matching functions for k: <A> found, but none completed successfully"
    )


BAD_SIGNATURES = {
    "non-type": (int, 3),
    "non-type-string": ("x",),
    "variadic-not-last": ([int], str),
    "variadic-two": ([int, str],),
    "union-with-non-type": ((int, 2),),
}


@pytest.mark.parametrize("name", sorted(BAD_SIGNATURES))
def test_bad_signatures_raise_like_torch_fx(name):
    sig = BAD_SIGNATURES[name]
    theirs = outcome(lambda: TD.Dispatcher("f").add(sig, lambda *a: None))
    ours = outcome(lambda: KD.Dispatcher("f").add(sig, lambda *a: None))
    assert ours == theirs and ours[0] == "TypeError"


def test_deprecated_functions_warn():
    pairs = [(T.halt_ordering, K.halt_ordering), (T.restart_ordering, K.restart_ordering)]
    for theirs, ours in pairs:
        assert warned(ours) == warned(theirs)
        assert warned(ours)[1][0][0] == "FutureWarning"
    d_t, d_k = TD.Dispatcher("f"), KD.Dispatcher("f")
    d_t.add((int,), str)
    d_k.add((int,), str)
    assert warned(lambda: d_k.resolve((int,))) == warned(lambda: d_t.resolve((int,)))


def documented(lib):
    d = lib.Dispatcher("doc", doc="Top level doc.")

    @d.register(int)
    def one(x):
        """One int."""
        return x

    @d.register(float)
    @d.register(str)
    def other(x):
        return x

    return d


def test_doc_str_help_and_source(capsys):
    theirs, ours = documented(TD), documented(KD)
    assert ours.__doc__ == theirs.__doc__
    assert str(ours) == repr(ours) == "<dispatched doc>" == str(theirs)
    ours.help(1)
    assert capsys.readouterr().out.strip() == "One int."
    assert "def one(x):" in ours._source(1) and ours._source(1).startswith("File: ")
    with pytest.raises(TypeError, match="No function found"):
        ours._source(b"bytes")
    assert ours.name == ours.__name__ == "doc"


def test_getstate_setstate_and_pickle():
    d = KD.Dispatcher("p")
    d.add((int,), str)
    d.add((float,), repr)
    state = d.__getstate__()
    assert state == {"name": "p", "funcs": d.funcs}
    clone = pickle.loads(pickle.dumps(d))
    assert clone(3) == "3" and clone(1.5) == "1.5" and clone.ordering == d.ordering


# ---- variadic -------------------------------------------------------------------------------


def test_variadic_types():
    for lib in (TV, KV):
        assert issubclass(int, lib.Variadic[int]) and issubclass(str, lib.Variadic[(int, str)])
        assert not issubclass(float, lib.Variadic[(int, str)])
        assert issubclass(bool, lib.Variadic[int])
        assert lib.isvariadic(lib.Variadic[int]) and not lib.isvariadic(int)
        assert lib.Variadic[(int, str)] == lib.Variadic[(str, int)] != lib.Variadic[int]
        assert hash(lib.Variadic[(int, str)]) == hash(lib.Variadic[(str, int)])
        assert issubclass(lib.Variadic[bool], lib.Variadic[int])
    assert KV.Variadic[int].__name__ == TV.Variadic[int].__name__ == "Variadic[int]"
    assert KV.Variadic[(int, str)].__name__ == "Variadic[(int, str)]"
    assert not (KV.Variadic[int] == int)  # noqa: E721 - metaclass __eq__ under test
    assert outcome(lambda: KV.Variadic[3])[0] == outcome(lambda: TV.Variadic[3])[0]


@pytest.mark.parametrize(
    "types,sig",
    [
        ((), (int,)),
        ((int, int), (int,)),
        ((int, str), (int, [str])),
        ((int,), (int, [str])),
        ((int, str, str), (int, [str])),
        ((int, float), (int, [str])),
        ((str,), (int, [str])),
        ((), ([int],)),
    ],
    ids=lambda v: str(v).replace("<class ", "").replace(">", ""),
)
def test_variadic_signature_matches(types, sig):
    def convert(lib, s):
        return tuple(lib.Variadic[t[0]] if isinstance(t, list) else t for t in s)

    theirs = outcome(lambda: TD.variadic_signature_matches(types, convert(TV, sig)))
    ours = outcome(lambda: KD.variadic_signature_matches(types, convert(KV, sig)))
    assert ours == theirs
    assert outcome(lambda: KD.variadic_signature_matches(types, ()))[0] == "AssertionError"


# ---- conflict relations ---------------------------------------------------------------------


def signature_table(variadic):
    V = variadic.Variadic
    return [
        (),
        (A,),
        (B,),
        (C,),
        (D,),
        (object,),
        (A, A),
        (B, A),
        (A, B),
        (C, C),
        (V[A],),
        (V[B],),
        (V[(C, D)],),
        (A, V[A]),
        (B, V[B]),
        (A, B, V[C]),
        (int, float),
    ]


@pytest.mark.parametrize("relation", ["supercedes", "consistent", "ambiguous"])
def test_relations_match_torch_fx(relation):
    theirs, ours = signature_table(TV), signature_table(KV)
    want = [outcome(lambda: getattr(TC, relation)(a, b)) for a in theirs for b in theirs]
    got = [outcome(lambda: getattr(KC, relation)(a, b)) for a in ours for b in ours]
    assert got == want


def names(sigs):
    """Signatures as tuples of type names (to compare the two libraries' variadic types)."""
    return [tuple(t.__name__ for t in sig) for sig in sigs]


def test_ordering_and_ambiguities_match_torch_fx():
    theirs, ours = signature_table(TV), signature_table(KV)
    assert names(KC.ordering(ours)) == names(TC.ordering(theirs))

    # Pairs are oriented by hash, and the two libraries' variadic types hash differently.
    def unordered(pairs):
        return {frozenset(names(pair)) for pair in pairs}

    assert unordered(KC.ambiguities(ours)) == unordered(TC.ambiguities(theirs))
    plain = [s for s in theirs if not any(map(TV.isvariadic, s))]
    assert KC.ordering(plain) == TC.ordering(plain)
    assert KC.ambiguities(plain) == TC.ambiguities(plain)


def test_super_signature_and_edge():
    assert KC.super_signature([(A, B), (B, A)]) == [B, B] == TC.super_signature([(A, B), (B, A)])
    assert KC.super_signature([(C, D), (A, A)]) == [C, D]
    with pytest.raises(AssertionError, match="All signatures must have the same length"):
        KC.super_signature([(A,), (A, A)])
    assert KC.edge((B,), (A,)) and not KC.edge((A,), (B,))
    assert KC.edge((A,), (A,), tie_breaker=lambda s: 1) is False


sig_strategy = st.lists(st.sampled_from(CLASSES), min_size=0, max_size=3).map(tuple)


@settings(max_examples=30, deadline=None)
@given(st.lists(sig_strategy, min_size=1, max_size=7, unique=True))
def test_random_signature_sets_match_torch_fx(sigs):
    assert KC.ordering(sigs) == TC.ordering(sigs)
    assert KC.ambiguities(sigs) == TC.ambiguities(sigs)
    d_t, d_k = TD.Dispatcher("r"), KD.Dispatcher("r")
    for i, sig in enumerate(sigs):
        d_t.add(sig, lambda *a, i=i: i)
        d_k.add(sig, lambda *a, i=i: i)
    assert warned(d_k.reorder)[1] == warned(d_t.reorder)[1]
    samples = [(), (C(),), (True, 1.0), (D(), B()), (object(), 2, C())]
    for args in samples:
        assert outcome(lambda: d_k(*args)) == outcome(lambda: d_t(*args))


# ---- utils ----------------------------------------------------------------------------------


def test_utils_match_torch_fx():
    for L in ([], [1, 2], [1, (2, 3)], [(1, 2), 3, (4, 5, 6)], [(1,), ()]):
        assert KU.expand_tuples(L) == TU.expand_tuples(L)
    for edges in ({1: (2, 3), 2: (3,)}, {"a": [], "b": ["a"], "c": ["a", "b"]}, {}):
        assert KU._toposort(edges) == TU._toposort(edges)
        assert KU.reverse_dict(edges) == TU.reverse_dict(edges)
    for lib in (KU, TU):
        with pytest.raises(ValueError, match="Input has cycles"):
            lib._toposort({1: [2], 2: [1], 3: [1]})
    assert KU.groupby(len, ["a", "bb", "c"]) == TU.groupby(len, ["a", "bb", "c"])
    for t in (int, (int, float), (int,), ((int, str), float)):
        assert KU.typename(t) == TU.typename(t)
    assert KU.raises(ZeroDivisionError, lambda: 1 / 0) and not KU.raises(KeyError, lambda: 1)
    with pytest.raises(ZeroDivisionError):
        KU.raises(KeyError, lambda: 1 / 0)
    assert KD.str_signature((int, float)) == "int, float"
    assert KCore.ismethod(lambda self, x: 0) and not KCore.ismethod(lambda x: 0)
    assert TCore.ismethod(lambda self, x: 0)


def test_dispatch_uses_global_namespace_by_default():
    @K.dispatch(complex)
    def _fxkit_test_global_namespace(x):
        return "complex"

    assert KCore.global_namespace["_fxkit_test_global_namespace"](1j) == "complex"
    assert "_fxkit_test_global_namespace" not in TCore.global_namespace
    del KCore.global_namespace["_fxkit_test_global_namespace"]


def test_register_returns_function_and_stacks():
    d = KD.Dispatcher("stack")

    @d.register(list)
    @d.register(tuple)
    def reverse(x):
        return x[::-1]

    assert callable(reverse) and not isinstance(reverse, KD.Dispatcher)
    assert d([1, 2]) == [2, 1] and d((1, 2)) == (2, 1)
    assert sorted(map(KD.str_signature, itertools.chain(d.funcs))) == ["list", "tuple"]
