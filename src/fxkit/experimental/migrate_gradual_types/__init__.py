"""Shape inference for traced graphs as a constraint problem.

:mod:`.constraint_generator` turns every node of a graph into constraints over tensor, dimension
and boolean variables; :mod:`.constraint_transformation` rewrites the gradual relations
(precision, consistency, broadcasting, reshape, ...) into plain (in)equalities; and
:mod:`.transform_to_z3` hands the result to the z3 SMT solver, which is optional
(``pip install fxkit[z3]``, i.e. the ``z3-solver`` package). Import the submodule you need.
"""
