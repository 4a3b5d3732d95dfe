"""Translation validation: prove with the z3 SMT solver that simplified guards are sound.

A ShapeEnv issues guards twice over: as SymPy expressions, which SymPy and the ShapeEnv
simplify (the *target* guards, what runs), and as an FX graph of plain Python operations
recorded alongside, never simplified (the *source* guards, the ground truth). Validation asks
z3 whether some assignment of the symbols makes every target guard true but some source guard
false; if so a simplification was wrong and :class:`ValidationException` shows the model.

The switches (:func:`translation_validation_enabled`, :func:`translation_validation_timeout`)
read torch's ``experimental._config`` (under torch.fx), the config torch's ShapeEnv obeys. The solver
machinery (:class:`TranslationValidator`, :class:`SympyToZ3`, :class:`PopulateValidator`,
:func:`z3op`, :func:`z3str`) needs the optional z3 package (``pip install fxkit[z3]``); without
it this module still imports and those names raise an ImportError naming the extra.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Callable
from typing import Any

import torch

from fxkit import interop
from fxkit.experimental._z3 import HAS_Z3 as _HAS_Z3
from fxkit.experimental._z3 import z3
from fxkit.graph import Graph
from fxkit.graph_module import GraphModule
from fxkit.interpreter import Interpreter

log = logging.getLogger(__name__)

MISSING_Z3_MESSAGE = (
    "translation validation needs the z3 SMT solver: install it with "
    "`pip install fxkit[z3]` (or `pip install z3-solver`)"
)
_Z3_NAMES = ("z3str", "z3op", "PopulateValidator", "SympyToZ3", "TranslationValidator")
_ALWAYS_NAMES = (
    "translation_validation_enabled",
    "translation_validation_timeout",
    "ValidationException",
    "BisectValidationException",
)


__all__ = [*(_Z3_NAMES if _HAS_Z3 else ()), *_ALWAYS_NAMES]

# torch's switches: its ShapeEnv decides from them whether to build a validator at all.
config = interop.torch_fx_experimental("_config")
_torch_validator = interop.torch_fx_experimental("validator")


def translation_validation_enabled() -> bool:
    """Whether translation validation is on: torch's ``translation_validation`` config
    (env ``TORCHDYNAMO_TRANSLATION_VALIDATION=1``) is set and z3 is installed.

    Raises AssertionError when it is set but z3 is missing (checked on every call, since the
    config may change after import).
    """
    _assert_z3_installed_if_tv_set()
    return _HAS_Z3 and config.translation_validation


def translation_validation_timeout() -> int:
    """The z3 time limit per validation, in milliseconds (torch's
    ``translation_validation_timeout`` config)."""
    return config.translation_validation_timeout


def _assert_z3_installed_if_tv_set() -> None:
    if config.translation_validation and not _HAS_Z3:
        raise AssertionError(
            "translation validation requires Z3 package. Please, either install "
            "z3-solver or disable translation validation."
        )


def _bullets(lines: Any) -> str:
    return "\n".join(f"  ==> {line}" for line in sorted(lines))


class ValidationException(_torch_validator.ValidationException):
    """The target guards admit an input the source guards reject.

    ``msg`` is the headline, ``details`` lists the z3 model (the offending symbol values), the
    assertions, the target guards and the source guards the model violates. A subclass of
    torch's ``ValidationException`` (a ``TorchDynamoException``), so torch's handlers catch it.
    """

    def __init__(
        self, model: Any, assertions: Any, target_exprs: Any, failed_source_exprs: Any
    ) -> None:
        if not _HAS_Z3:
            raise AssertionError("Z3 is required")
        sections = (
            ("Model", [f"{symbol}: {model[symbol]}" for symbol in model]),
            ("Assertions", [_z3str(e) for e in assertions]),
            ("Target Expressions", [_z3str(e) for e in target_exprs]),
            ("Failed Source Expressions", [_z3str(e) for e in failed_source_exprs]),
        )
        self.msg = "translation validation failed."
        self.details = "\n\n".join(f"{title}:\n{_bullets(lines)}" for title, lines in sections)

    def __str__(self) -> str:
        return f"{self.msg}\n\n{self.details}"


class BisectValidationException(_torch_validator.BisectValidationException):
    """The first guard (or runtime assert) whose addition made validation fail, found by
    :func:`bisect`; carries the :class:`ValidationException` details and the FX node that
    was being run when the guard was added."""

    def __init__(
        self,
        validation_exc: Any,
        expr: Any,
        failed_action: str,
        traced_node: Any,
    ) -> None:
        self.msg = f"translation validation failed when {failed_action}: {expr}"
        self.details = (
            f"Failure occurred while running node:\n    {traced_node.format_node()}\n\n"
            f"{validation_exc.details}"
        )

    def __str__(self) -> str:
        return f"{self.msg}\n\n{self.details}"


# torch checks this at import as well: a config that asks for validation without z3 is an error.
_assert_z3_installed_if_tv_set()


def __getattr__(name: str) -> Any:
    # Only reached for names not defined: the z3 machinery when z3 is missing.
    if name in _Z3_NAMES:
        raise ImportError(f"cannot use fxkit.experimental.validator.{name}: {MISSING_Z3_MESSAGE}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the z3 machinery ----------------------------------------------------------------------------
# Defined whether or not z3 is installed (it is only touched when called); the public names
# are bound at the end of this section only when it is, as torch.fx does.


def _require_z3() -> Any:
    if z3 is None:
        raise ImportError(MISSING_Z3_MESSAGE)
    return z3


def _z3str(e: Any) -> str:
    """A short, stable, prefix-notation rendering of z3 expression ``e`` (after z3's own
    rewriting): ``(+ s0 s1)``, ``(!= s0 2)``, ``(idiv s0 2)`` for floor division."""
    _require_z3()
    if not z3.is_expr(e):
        raise AssertionError(f"unsupported expression type: {e}")
    e = z3.simplify(e)
    # Everything printable is an application; z3 variables are 0-ary applications.
    if not z3.is_app(e):
        raise ValueError(f"can't print Z3 expression: {e}")
    if z3.is_int_value(e) or z3.is_rational_value(e):
        return e.as_string()
    decl = e.decl()
    kind = decl.kind()
    if kind in (z3.Z3_OP_TO_INT, z3.Z3_OP_TO_REAL):
        _expect_arity(e, 1)
        inner = _z3str(e.arg(0))
        # ToInt(a / b) is how floor division is encoded; other casts are noise.
        return "(idiv" + inner[2:] if inner.startswith("(/") else inner
    if kind == z3.Z3_OP_UNINTERPRETED:
        _expect_arity(e, 0)
        return str(decl)
    head, operands = _z3str_head_and_operands(e, kind)
    return f"({head} {' '.join(operands)}".rstrip() + ")"


def _expect_arity(e: Any, count: int) -> None:
    if e.num_args() != count:
        raise AssertionError(f"Expected {count} arg{'s' if count != 1 else ''}, got {e.num_args()}")


def _z3str_operands(e: Any) -> list[str]:
    return [_z3str(e.arg(i)) for i in range(e.num_args())]


def _z3str_head_and_operands(e: Any, kind: Any) -> tuple[str, list[str]]:
    if kind == z3.Z3_OP_POWER:
        return "pow", _z3str_operands(e)
    if kind in (z3.Z3_OP_ADD, z3.Z3_OP_MUL):
        # + and * are associative: print a nested chain as one flat application.
        flat: list[str] = []
        pending = [e]
        while pending:
            term = pending.pop()
            if z3.is_app(term) and term.decl().kind() == kind:
                pending.extend(term.arg(i) for i in reversed(range(term.num_args())))
            else:
                flat.append(_z3str(term))
        return str(e.decl()), flat
    if kind == z3.Z3_OP_NOT:
        _expect_arity(e, 1)
        negated = e.arg(0)
        if not z3.is_app(negated):
            raise AssertionError("Expected z3 app")
        # z3.simplify turns a != b into Not(a == b) and a < b into Not(b <= a); undo that.
        inverse = {z3.Z3_OP_EQ: "!=", z3.Z3_OP_LE: ">", z3.Z3_OP_GE: "<"}.get(negated.decl().kind())
        if inverse is not None:
            return inverse, _z3str_operands(negated)
    return str(e.decl()), _z3str_operands(e)


class _PythonSemantics:
    """Python's arithmetic as z3 terms.

    z3's integer/real operators differ from Python's (division, rounding, modulo, mixed
    int/real), so each operation is spelled out here; side conditions it relies on (no
    division by zero, no negative square root) are added to the validator as assertions.
    """

    def __init__(self, validator: Any) -> None:
        self.validator = validator

    @staticmethod
    def to_real(x: Any) -> Any:
        return x if x.is_real() else z3.ToReal(x)

    @staticmethod
    def to_int(x: Any) -> Any:
        return x if x.is_int() else z3.ToInt(x)

    def sym_sum(self, args: Any) -> Any:
        return sum(args)

    def div(self, numerator: Any, denominator: Any) -> Any:
        self.validator.add_assertion(denominator != 0)
        return self.to_real(numerator) / self.to_real(denominator)

    def floor(self, number: Any) -> Any:
        return self.to_int(number)  # z3's ToInt rounds towards -inf, like math.floor

    def floordiv(self, numerator: Any, denominator: Any) -> Any:
        quotient = self.to_int(self.div(numerator, denominator))
        # As in Python, a float operand makes the (integral) result a float.
        any_real = numerator.is_real() or denominator.is_real()
        return self.to_real(quotient) if any_real else quotient

    def ceil(self, number: Any) -> Any:
        return z3.If(self.floor(number) < number, self.floor(number + 1), number)

    def trunc(self, number: Any) -> Any:
        return z3.If(number >= 0, self.floor(number), self.ceil(number))

    def max(self, a: Any, b: Any) -> Any:
        return z3.If(a > b, a, b)

    def min(self, a: Any, b: Any) -> Any:
        return z3.If(a < b, a, b)

    def mod(self, p: Any, q: Any) -> Any:
        return p - self.floordiv(p, q) * q  # Python's definition, for ints and reals

    def pow(self, base: Any, exp: Any) -> Any:
        self.validator.add_assertion(z3.Or(base != 0, exp > 0))  # 0 ** -n is no number
        return base**exp

    def sqrt(self, number: Any) -> Any:
        number = self.to_real(number)
        self.validator.add_assertion(number >= 0)  # else z3 answers "unknown"
        return number**0.5

    def abs(self, number: Any) -> Any:
        return z3.Abs(number)

    def round_to_int(self, number: Any) -> Any:
        # Python rounds halves to even. Start from "half up" (floor(x + 0.5)) and send the
        # halves that would land on an odd number (x = 2k + 0.5) the other way.
        lands_on_odd = self.mod(number, z3.IntVal(2)) == 0.5
        return z3.If(lands_on_odd, self.ceil(number - 0.5), self.floor(number + 0.5))

    def _bitwise(self, on_bits: Callable[..., Any], logical: str | None, args: Any) -> Any:
        # All-boolean operands use the logical op; integers go through 64-bit vectors.
        if logical is not None and all(isinstance(a, z3.BoolRef) for a in args):
            return getattr(z3, logical)(*args)
        return z3.BV2Int(on_bits(*(z3.Int2BV(a, 64) for a in args)))

    def bitwise_and(self, *args: Any) -> Any:
        return self._bitwise(operator.and_, "And", args)

    def bitwise_or(self, *args: Any) -> Any:
        return self._bitwise(operator.or_, "Or", args)

    def lshift(self, *args: Any) -> Any:
        return self._bitwise(operator.lshift, None, args)

    def rshift(self, *args: Any) -> Any:
        return self._bitwise(operator.rshift, None, args)


def _to_z3_value(value: Any, ints_are_bools: bool) -> Any:
    import sympy

    if isinstance(value, (z3.ArithRef, z3.BoolRef)):
        return value  # already a z3 term
    # Some FX nodes of boolean operations received 0/1 literals.
    if isinstance(value, bool) or (ints_are_bools and isinstance(value, int)):
        return z3.BoolVal(bool(value))
    numeric_kinds = (
        ((int, sympy.Integer), z3.IntVal, int),
        ((float, sympy.Float), z3.RealVal, float),
    )
    for kinds, make_constant, convert in numeric_kinds:
        if isinstance(value, kinds):
            return make_constant(convert(value))
    raise ValueError(f"can't lift type: {type(value)}")


def _on_z3_values(func: Callable[..., Any], ints_are_bools: bool) -> Callable[..., Any]:
    """``func`` taking Python/SymPy constants or z3 terms, converting the constants first
    (a single list/tuple argument is converted element-wise, for ``sym_sum``)."""

    @functools.wraps(func)
    def call(*args: Any) -> Any:
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            return func(tuple(_to_z3_value(a, ints_are_bools) for a in args[0]))
        return func(*(_to_z3_value(a, ints_are_bools) for a in args))

    return call


# _PythonSemantics method -> the Python functions (FX-node targets) it implements on z3 terms.
_PYTHON_FUNCTIONS_BY_SEMANTICS = {
    "bitwise_and": (operator.and_,),
    "bitwise_or": (operator.or_,),
    "lshift": (operator.lshift,),
    "rshift": (operator.rshift,),
    "div": (operator.truediv,),
    "floordiv": (operator.floordiv,),
    "mod": (operator.mod,),
    "abs": (operator.abs,),
    "round_to_int": (round,),
    "ceil": (math.ceil,),
    "floor": (math.floor,),
    "trunc": (math.trunc,),
    "to_real": (torch.sym_float,),
    "max": (torch.sym_max,),
    "min": (torch.sym_min,),
    "sym_sum": (torch.sym_sum,),
    "sqrt": (torch._sym_sqrt,),
}


def _z3_implementations(ops: _PythonSemantics) -> dict[Any, Callable[..., Any]]:
    """Python function -> the function computing it on z3 terms (Python semantics)."""
    table: dict[Any, Callable[..., Any]] = {
        operator.not_: z3.Not,
        torch.sym_ite: lambda b, t, f: z3.If(b, t, f),
    }
    for method, functions in _PYTHON_FUNCTIONS_BY_SEMANTICS.items():
        table.update(dict.fromkeys(functions, getattr(ops, method)))
    return table


def _z3op(op: Callable[..., Any], validator: Any) -> Callable[..., Any]:
    """The z3 version of FX-node target ``op``: it accepts z3 terms and constants and
    computes ``op`` with Python semantics (``torch._assert`` stays itself: it only marks a
    guard for the validator)."""
    _require_z3()
    if op is torch._assert:
        return op
    implementation = _z3_implementations(_PythonSemantics(validator)).get(op, op)
    return _on_z3_values(implementation, ints_are_bools=op is operator.not_)


class _PopulateValidator(Interpreter):
    """Runs a ShapeEnv's guard graph on z3 terms: each placeholder becomes the z3 variable
    of its ``meta["symbol"]``, each ``torch._assert(cond)`` adds ``cond`` to the validator's
    source expressions. Accepts fxkit and torch.fx graphs."""

    def __init__(self, graph: Any, validator: Any) -> None:
        _require_z3()
        self.validator = validator
        owner = GraphModule({}, graph) if isinstance(graph, Graph) else torch.nn.Module()
        super().__init__(owner, garbage_collect_values=True, graph=graph)

    def run_node(self, n: Any) -> Any:
        # Remembered for placeholder(), which needs the node's meta (torch.fx reads it from
        # the "current meta", only available under preserve_node_meta()).
        self._node_being_run = n
        return super().run_node(n)

    def placeholder(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.validator.z3var(self._node_being_run.meta["symbol"])

    def call_function(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if target is not torch._assert:
            return super().call_function(_z3op(target, self.validator), args, kwargs)
        if len(args) != 1:
            raise AssertionError(f"expected 1 argument on assertion. Got: {len(args)} ")
        self.validator.add_source_expr(args[0])
        return None


# SympyToZ3 handler name -> _PythonSemantics method computing it.
_SYMPY_HANDLER_SEMANTICS = {
    "int_truediv": "div",
    "truediv": "div",
    "floordiv": "floordiv",
    "div": "floordiv",
    "pow": "pow",
    "pow_by_natural": "pow",
    "mod": "mod",
    "python_mod": "mod",
    "bitwise_and": "bitwise_and",
    "bitwise_or": "bitwise_or",
    "lshift": "lshift",
    "rshift": "rshift",
    "floor": "floor",
    "ceil": "ceil",
    "minimum": "min",
    "maximum": "max",
}
# Handlers that also receive the result dtype (ignored: z3 terms carry their sort).
_SYMPY_DTYPE_HANDLER_SEMANTICS = {
    "round_to_int": "round_to_int",
    "ceil_to_int": "ceil",
    "floor_to_int": "floor",
}
_SYMPY_HANDLER_LOGIC = {"and_": "And", "or_": "Or", "not_": "Not"}


class _SympyToZ3:
    """Translates a SymPy expression into z3 (through torch's ``sympy_interp``); every free
    symbol must already have a z3 variable in the validator."""

    #: handlers that are the plain ``operator`` function of the same name
    OPERATOR_HANDLES = {"add", "mul", "eq", "ne", "lt", "gt", "le", "ge"}

    def __init__(self, validator: Any) -> None:
        _require_z3()
        self._validator = validator
        self._ops = _PythonSemantics(validator)

    def constant(self, value: Any, dtype: torch.dtype) -> Any:
        makers = {torch.int64: (z3.IntVal, int), torch.double: (z3.RealVal, float)}
        makers[torch.bool] = (z3.BoolVal, bool)
        if dtype not in makers:
            raise ValueError(f"unsupported dtype (SympyToZ3): {dtype}")
        make, convert = makers[dtype]
        return make(convert(value))

    def to_dtype(self, x: Any, dtype: torch.dtype) -> Any:
        if dtype != torch.float64:
            raise NotImplementedError(f"to_dtype {dtype} NYI")
        return z3.ToReal(x)

    def trunc_to_int(self, x: Any, dtype: torch.dtype) -> Any:
        return z3.ToInt(x)  # as torch.fx does: z3's ToInt, which rounds down

    def __getattr__(self, name: str) -> Any:
        # sympy_interp asks for a handler per SymPy function; unknown ones must be an
        # AttributeError (it probes optional handlers such as ``sym_sum`` with hasattr).
        if not name.startswith("_"):
            if name in _SYMPY_HANDLER_SEMANTICS:
                return getattr(self._ops, _SYMPY_HANDLER_SEMANTICS[name])
            if name in _SYMPY_DTYPE_HANDLER_SEMANTICS:
                implementation = getattr(self._ops, _SYMPY_DTYPE_HANDLER_SEMANTICS[name])
                return lambda x, dtype: implementation(x)  # the dtype is implied by z3
            if name in _SYMPY_HANDLER_LOGIC:
                return getattr(z3, _SYMPY_HANDLER_LOGIC[name])
            if name in self.OPERATOR_HANDLES:
                return getattr(operator, name)
        raise AttributeError(f"unhandled operator: {name}")

    def run(self, expr: Any) -> Any:
        """The z3 term for SymPy expression ``expr``."""
        from torch.utils._sympy.interp import sympy_interp

        return sympy_interp(self, self._validator.symbols, expr)


class _TranslationValidator:
    """Checks that target guards imply source guards: is there an assignment where all
    target expressions hold but not all source expressions do? (``validate`` raises
    :class:`ValidationException` with that assignment if so.)

    Source expressions are z3 terms (from :class:`PopulateValidator`); target expressions
    and assertions may be given as SymPy and are translated with :class:`SympyToZ3`.
    """

    def __init__(self) -> None:
        _require_z3()
        log.debug("new instance")
        self.symbols: dict[Any, Any] = {}  # SymPy symbol -> z3 variable
        self._source_exprs: set[Any] = set()  # guards as recorded, unsimplified
        self._target_exprs: set[Any] = set()  # guards as issued, simplified
        self._assertions: set[Any] = set()  # facts both sides may assume

    def z3var(self, symbol: Any) -> Any:
        """The z3 variable of ``symbol`` (AssertionError if :meth:`add_var` was not called)."""
        if symbol not in self.symbols:
            raise AssertionError(f"Z3 variable not found for: {symbol}")
        return self.symbols[symbol]

    def add_var(self, symbol: Any, type: type) -> Any:
        """The z3 variable for ``symbol``, creating one of ``type`` (int, float or bool) on
        first use; a positive integer symbol also adds ``var > 0`` as a target fact."""
        if symbol in self.symbols:
            return self.symbols[symbol]
        log.debug("new variable: %s (%s)", symbol.name, type.__name__)
        constructors = {int: z3.Int, float: z3.Real, bool: z3.Bool}
        if type not in constructors:
            raise RuntimeError(f"unsupported type for Z3 variable: {type}")
        var = constructors[type](symbol.name)
        if type is int and symbol.is_positive:
            self._target_exprs.add(var > 0)
        self.symbols[symbol] = var
        return var

    def _check_freesymbols(self, e: Any) -> None:
        import sympy

        for s in e.free_symbols:
            if not isinstance(s, sympy.Symbol):
                raise AssertionError(f"Expected sympy.Symbol, got {type(s)}")
            self.z3var(s)  # fails for a symbol without a variable

    def to_z3_boolean_expr(self, e: Any) -> Any:
        """SymPy boolean ``e`` as a z3 boolean term."""
        translated = _SympyToZ3(self).run(e)
        if not isinstance(translated, z3.BoolRef):
            raise AssertionError(f"expected boolean expression. Got: {translated}")
        return translated

    def add_source_expr(self, e: Any) -> None:
        """Add z3 boolean ``e`` to the source (unsimplified) guards."""
        if e not in self._source_exprs:
            log.debug("add source guard: %s", _z3str(e))
        self._source_exprs.add(e)

    def add_target_expr(self, e: Any) -> None:
        """Add SymPy boolean ``e`` to the target (simplified) guards."""
        self._check_freesymbols(e)
        translated = self.to_z3_boolean_expr(e)
        if e not in self._target_exprs:
            log.debug("add target guard: %s", _z3str(translated))
        self._target_exprs.add(translated)

    def add_assertion(self, e: Any) -> None:
        """Add a fact (z3 or SymPy boolean) that both sides may assume."""
        import sympy

        if isinstance(e, sympy.Basic):
            self._check_freesymbols(e)
            e = self.to_z3_boolean_expr(e)
        if not isinstance(e, z3.BoolRef):
            raise AssertionError(f"Expected z3.BoolRef, got {type(e)}")
        if e not in self._assertions:  # re-adding a known fact is a silent no-op
            log.debug("add assertion: %s", _z3str(e))
            self._assertions.add(e)

    def validate(self) -> None:
        """Raise :class:`ValidationException` if some assignment satisfies the assertions and
        every target guard but not every source guard. Nothing to check (no source or no
        target guards) and a z3 "unknown" (timeout) both pass."""
        if not self._source_exprs or not self._target_exprs:
            return
        # Quantifier-free non-linear real arithmetic: works best on guard expressions.
        # Is there an assignment where the assertions and every target guard hold, yet some
        # source guard does not? Such an assignment means the targets are unsound.
        counterexample_query = [
            *self._assertions,
            z3.Not(z3.And(*self._source_exprs)),
            *self._target_exprs,
        ]
        solver = z3.SolverFor("QF_NRA")
        solver.set(timeout=translation_validation_timeout())
        solver.add(*counterexample_query)
        log.debug("translation validation: start")
        verdict = solver.check()
        if verdict == z3.unknown:
            # Undecided (or interrupted): not a failure, but nothing was proven either.
            log.warning("translation validation: could not validate: got z3.unknown")
            return
        if verdict == z3.sat:
            model = solver.model()
            violated = [e for e in self._source_exprs if not model.evaluate(e)]
            raise ValidationException(
                model, self._assertions, self._target_exprs, failed_source_exprs=violated
            )
        if verdict != z3.unsat:
            raise AssertionError(f"Expected z3.unsat, got {verdict}")
        log.debug("translation validation: success")


if _HAS_Z3:
    z3str, z3op = _z3str, _z3op
    PopulateValidator, SympyToZ3 = _PopulateValidator, _SympyToZ3
    TranslationValidator = _TranslationValidator


def bisect(shape_env: Any) -> None:
    """Find the earliest guard of ``shape_env`` that breaks translation validation.

    Replays ``shape_env.events`` up to each ``torch._assert`` node of its guard graph (binary
    search) and runs ``produce_guards`` on the replayed ShapeEnv. Returns quietly when the
    full ShapeEnv validates; raises the :class:`ValidationException` as is when event
    recording or bisection (``translation_validation_no_bisect``) is off; otherwise raises
    :class:`BisectValidationException` for the first failing assert.
    """
    from fxkit.experimental.recording import FakeTensorMeta, replay_shape_env_events

    symbolic_shapes = interop.torch_symbolic_shapes()
    event_key = symbolic_shapes.SHAPEENV_EVENT_KEY
    events = shape_env.events

    def moved(env: Any, fake: Any) -> Any:
        # The same value with its symbols rebound to ``env``: simplifying with a ShapeEnv
        # "from the future" (more replacements) would hide the failure being searched.
        if isinstance(fake, (torch.SymInt, torch.SymFloat)):
            return type(fake)(fake.node.with_shape_env(env))
        if isinstance(fake, int):
            return fake
        if not isinstance(fake, _torch_recording_fake_meta()):
            raise AssertionError(f"Expected FakeTensorMeta, got {type(fake)}")
        sizes, strides = (
            tuple(moved(env, d) for d in dims) for dims in (fake.size(), fake.stride())
        )
        return FakeTensorMeta(sizes, strides, moved(env, fake.storage_offset()), fake.is_nested)

    def failure_of(env: Any, tracked_fakes: Any) -> Any:
        if tracked_fakes is None:
            raise AssertionError("tracked_fakes is None")
        rebound = [moved(env, tracked.fake) for tracked in tracked_fakes]
        sources = [tracked.source for tracked in tracked_fakes]
        contexts = [tracked.symbolic_context for tracked in tracked_fakes]
        try:
            # Best effort: equality constraints between inputs are not reconstructed.
            env.produce_guards(rebound, sources, input_contexts=contexts)
        except _torch_validator.ValidationException as failure:
            return failure
        return None

    def failure_up_to(node: Any) -> Any:
        index = node.meta[event_key]
        env = replay_shape_env_events(events[: index + 1])
        env.graph.lint()
        return failure_of(env, events[index].tracked_fakes)

    final_failure = failure_of(shape_env, shape_env._snapshot_tracked_fakes())
    if not final_failure:
        log.info("translation validation succeeded: no errors found.")
        return
    if not shape_env.should_record_events or config.translation_validation_no_bisect:
        raise final_failure

    asserts = [n for n in shape_env.graph.nodes if n.target is torch._assert]
    # Invariant: asserts before ``low`` validate; the one at ``high`` fails (cached in
    # ``failures``). The last one fails because the whole ShapeEnv does.
    failures = {len(asserts) - 1: failure_up_to(asserts[-1])}
    low, high = 0, len(asserts) - 1
    while low < high:
        middle = (low + high) // 2
        if event_key not in asserts[middle].meta:
            raise AssertionError("SHAPEENV_EVENT_KEY not in node.meta")
        log.debug("bisecting at %s: %s", middle, events[asserts[middle].meta[event_key]])
        failures[middle] = failure_up_to(asserts[middle])
        if failures[middle]:
            high = middle
        else:
            low = middle + 1
    first_failure = failures.get(low)
    if not isinstance(first_failure, _torch_validator.ValidationException):
        raise AssertionError("Expected ValidationException at bisect result")
    _raise_for_failing_assert(asserts[low], events, first_failure)


def _torch_recording_fake_meta() -> type:
    return interop.torch_fx_experimental("recording").FakeTensorMeta


# What the ShapeEnv was doing when it added an assert node, by the name of the event.
_ACTION_OF_EVENT = {
    "evaluate_expr": "evaluating",
    "guard_or_defer_runtime_assert": "adding runtime assert",
}


def _raise_for_failing_assert(node: Any, events: Any, failure: Any) -> None:
    import sympy

    symbolic_shapes = interop.torch_symbolic_shapes()
    if symbolic_shapes.SHAPEENV_EVENT_KEY not in node.meta:
        raise AssertionError("SHAPEENV_EVENT_KEY not in node.meta")
    event = events[node.meta[symbolic_shapes.SHAPEENV_EVENT_KEY]]
    action = _ACTION_OF_EVENT.get(event.name)
    if action is None:
        raise AssertionError(f"unexpected event type: {event}")
    args = event.args
    if args is None:
        raise AssertionError("event.args is None")
    # The guard being added is the event's second positional argument.
    expectation = None
    if len(args) < 2:
        expectation = f"to have at least 2 positional arguments. Got: {len(args)}"
    elif not isinstance(args[1], sympy.Basic):
        expectation = f"to have a SymPy expression as its second argument. Got: {type(args[1])}"
    if expectation is not None:
        raise AssertionError(f"bisecting expects {event.name} {expectation}")
    raise BisectValidationException(
        failure,
        expr=args[1],
        failed_action=action,
        traced_node=node.meta[symbolic_shapes.CURRENT_NODE_KEY],
    )
