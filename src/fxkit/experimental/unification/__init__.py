"""Term unification with logic variables (a vendored ``unification`` library, as in
torch.fx's ``experimental.unification``): ``unify(a, b)`` finds the variable bindings that make two
terms equal, ``reify(term, bindings)`` applies them.

>>> x = Var("x")
>>> unify((1, x), (1, 2))
{~x: 2}
>>> reify((x, 3), {x: 2})
(2, 3)
"""

from .core import reify, unify
from .more import unifiable
from .variable import Var, isvar, var, variables, vars

__all__ = ["reify", "unify", "unifiable", "Var", "isvar", "var", "variables", "vars"]
