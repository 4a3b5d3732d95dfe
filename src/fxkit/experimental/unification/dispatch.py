"""The ``dispatch`` decorator used by the unification package: multiple dispatch in one shared
namespace, so ``unify``/``reify`` rules registered anywhere in the package (or by users, e.g.
through :func:`~fxkit.experimental.unification.more.unifiable`) extend the same dispatchers."""

from functools import partial

from .multipledispatch import dispatch as _dispatch

namespace: dict = {}

dispatch = partial(_dispatch, namespace=namespace)
