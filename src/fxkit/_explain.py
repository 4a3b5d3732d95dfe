"""``fxkit.explain(m, *example_inputs)``: why does tracing fail, everywhere at once?

A plain :func:`~fxkit.symbolic_trace` stops at the first construct it cannot follow.
:func:`explain` keeps going, so one report lists every site:

* it traces with fake example values alongside the proxies (shape-aware tracing), so it can
  tell *shape-dependent* code (fixed by passing ``example_inputs``) from *data-dependent*
  code (needs :func:`~fxkit.wrap` or a leaf module) and from control flow on a non-tensor
  input (fixed by ``concrete_args``);
* when ``bool()`` of a traced value cannot be decided it records the site and guesses
  ``True`` to continue;
* when a submodule's body raises anything else, it records the site and makes that
  submodule a leaf (as ``symbolic_trace(on_error="leaf")`` does), then carries on.

The report's graph is a best effort: where it guessed, it may take a branch eager code would
not. Check ``report.exact`` before using it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import linecache
import sys
import types
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from fxkit._auto_leaf import none_defaults_as_concrete
from fxkit._frames import _error_location
from fxkit._shape_trace import _NO_VAL, ShapeAwareTracer
from fxkit._symbolic_trace import Tracer
from fxkit.graph_module import GraphModule
from fxkit.node import Node
from fxkit.proxy import Proxy, TraceError, _inputs_behind, _user_frame

__all__ = ["explain", "ExplainReport", "TraceFailure", "explain_main"]

_FIXES = {
    "input-value": "pass the value as a constant: symbolic_trace(m, concrete_args={{{names}}})",
    "shape-dependent": "trace with example inputs: symbolic_trace(m, example_inputs=(...)) "
    "(shape-aware tracing answers it and records a guard)",
    "data-dependent": "keep it out of the graph: fxkit.wrap() the function that computes it, "
    "or make {module} a leaf module (override Tracer.is_leaf_module, or "
    'symbolic_trace(m, on_error="leaf"))',
    "unknown": "pass example inputs to explain() to learn whether shapes decide it; otherwise "
    "concrete_args, fxkit.wrap or a leaf module",
    "unsupported-call": "fxkit.wrap() the function called there, or make {module} a leaf module "
    '(symbolic_trace(m, on_error="leaf") does that automatically)',
}


class TraceFailure(NamedTuple):
    """One place where plain symbolic tracing cannot continue."""

    where: str  # "file:line" in user code
    source: str  # that line's text
    module: str  # qualified name of the submodule being traced ("" for the root)
    construct: str  # "bool (if/while/and/or/not)", "len()", "iteration", "int()", "call", ...
    kind: str  # input-value | shape-dependent | data-dependent | unknown | unsupported-call
    value: str  # what the value was, or the error
    fix: str
    outcome: str  # how explain went on: "answered from example inputs", "guessed True", ...

    def __str__(self) -> str:
        mod = f" [in {self.module}]" if self.module else " [in the root module]"
        lines = [f"{self.where}{mod}: {self.construct} — {self.kind}"]
        if self.source:
            lines.append(f"    {self.source}")
        lines += [f"    value: {self.value}", f"    fix: {self.fix}", f"    ({self.outcome})"]
        return "\n".join(lines)


class ExplainReport:
    """The result of :func:`explain`: ``failures`` (every site, in trace order), the
    best-effort ``graph_module`` (``None`` if the root itself could not be traced),
    ``leaf_modules`` (qualified names made leaves), ``plain_ok`` (plain
    ``symbolic_trace`` would have worked), ``shape_aware_ok`` (shape-aware tracing with the
    example inputs works; ``None`` without inputs) and ``exact`` (no guessed branch)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures: List[TraceFailure] = []
        self.graph_module: Optional[GraphModule] = None
        self.leaf_modules: List[str] = []
        self.plain_ok = False
        # Whether symbolic_trace(m, example_inputs=...) traces it (None: not tried), and
        # how many guards that needed.
        self.shape_aware_ok: Optional[bool] = None
        self.shape_aware_guards = 0
        self.exact = True
        self.fatal: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        """Nothing stands in the way of plain ``symbolic_trace``."""
        return self.plain_ok and not self.failures

    def __len__(self) -> int:
        return len(self.failures)

    def __iter__(self) -> Any:
        return iter(self.failures)

    def __repr__(self) -> str:
        return f"<ExplainReport {self.name}: {len(self.failures)} failure site(s)>"

    def __str__(self) -> str:
        if self.ok:
            return f"{self.name}: symbolic_trace works as is; nothing to explain."
        head = f"{self.name}: {len(self.failures)} site(s) stop plain symbolic_trace"
        if self.plain_ok:
            head = f"{self.name}: plain symbolic_trace works; notes on what it specialised"
        parts = [head + ":"]
        for i, f in enumerate(self.failures, 1):
            parts.append(f"\n{i}. {f}")
        if self.leaf_modules:
            parts.append("\nmade leaves to continue: " + ", ".join(self.leaf_modules))
        if self.shape_aware_ok:
            parts.append(
                "\nall of the above at once: symbolic_trace(m, example_inputs=...) traces this "
                f"(shape-aware, {self.shape_aware_guards} guard(s))"
            )
        elif self.shape_aware_ok is False:
            parts.append("\nsymbolic_trace(m, example_inputs=...) does not trace this either")
        if self.fatal is not None:
            parts.append(f"\nstopped: the root's own code failed ({type(self.fatal).__name__})")
        elif self.graph_module is not None:
            n = len(self.graph_module.graph.nodes)
            note = "exact" if self.exact else "approximate (guessed branches)"
            parts.append(f"\nbest-effort graph: {n} nodes, {note}")
        return "\n".join(parts)


def _source_line(where: str) -> str:
    path, _, line = where.rpartition(":")
    return linecache.getline(path, int(line)).strip() if line.isdigit() else ""


def _frame_where(frame: Optional[types.FrameType]) -> str:
    f = _user_frame(frame)
    return f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "<unknown>"


def _error_where(e: BaseException) -> str:
    return _error_location(e) or "<unknown>"


_CONSTRUCTS = {
    "bool": "bool (if/while/and/or/not/assert)",
    "len": "len()",
    "iter": "iteration / * unpacking",
    "int": "int()",
    "float": "float()",
    "index": "use as an index (range(), list repeat)",
}


class _ExplainTracer(ShapeAwareTracer):
    """Shape-aware tracer that records every failure instead of stopping at the first."""

    def __init__(self, report: ExplainReport, example_inputs: Any, **kw: Any) -> None:
        super().__init__(example_inputs, on_error="leaf", **kw)
        self.report = report
        self._has_examples = example_inputs is not None

    def _classify(self, node: Node) -> str:
        if "val" in node.meta:
            # An input that is not a tensor (often a defaulted flag or count) decides it.
            inputs = set(_inputs_behind(node))
            for ph in self.graph.find_nodes(op="placeholder"):
                val = ph.meta.get("val", _NO_VAL)
                if ph.name in inputs and val is not _NO_VAL and not isinstance(val, torch.Tensor):
                    return "input-value"
        if not self._has_examples:
            return "unknown"
        if "val" not in node.meta:
            return "data-dependent" if "val_error" in node.meta else "unknown"
        return "shape-dependent"

    def _record(self, node: Node, construct: str, kind: str, where: str, outcome: str) -> None:
        names = ", ".join(f"{n!r}: ..." for n in _inputs_behind(node)) or "..."
        module = self.scope.module_path
        where_to = repr(module) if module else "a submodule holding that code"
        fix = _FIXES[kind].format(names=names, module=where_to)
        value = f"{node.name} = {_short(node)}"
        self.report.failures.append(
            TraceFailure(
                where,
                _source_line(where),
                module,
                _CONSTRUCTS.get(construct, construct),
                kind,
                value,
                fix,
                outcome,
            )  # fmt: skip
        )

    def _concrete(self, proxy: Proxy, construct: str, how: Any, frame: Any) -> Any:
        node = proxy.node
        try:
            answer = super()._concrete(proxy, construct, how, frame)
        except TraceError as e:
            kind = "data-dependent" if isinstance(e.__cause__, Exception) else self._classify(node)
            if construct == "bool":
                self._record(node, construct, kind, _frame_where(frame), "guessed True to go on")
                self.report.exact = False
                return True
            self._record(node, construct, kind, _frame_where(frame), "cannot go on here")
            e._fxkit_recorded = True  # type: ignore[attr-defined]
            raise
        kind = self._classify(node)
        self._record(node, construct, kind, _frame_where(frame), f"answered {answer!r}")
        return answer

    def _should_fall_back(self, m: torch.nn.Module, qualname: str, error: Exception) -> bool:
        if not getattr(error, "_fxkit_recorded", False):
            where = _error_where(error)
            msg = str(error).strip().splitlines()
            self.report.failures.append(
                TraceFailure(
                    where, _source_line(where), qualname, "call",
                    "unsupported-call", f"{type(error).__name__}: {msg[0] if msg else ''}",
                    _FIXES["unsupported-call"].format(module=repr(qualname)),
                    f"made {qualname!r} a leaf",
                )
            )  # fmt: skip
        else:
            last = self.report.failures[-1]
            self.report.failures[-1] = last._replace(outcome=f"made {qualname!r} a leaf")
        return True


def _short(node: Node) -> str:
    text = node.format_node() or ""
    text = text.split(" = ", 1)[-1].strip()
    return text if len(text) <= 120 else text[:117] + "..."


def explain(
    m: Any, *example_inputs: Any, concrete_args: Optional[Dict[str, Any]] = None
) -> ExplainReport:
    """Trace ``m`` (a module or function) as far as possible; report every failure site.

    ``example_inputs`` are ``forward``'s positional inputs; with them the report can say
    whether a site depends on shapes, on tensor data or on a non-tensor input. See the
    module docstring for how tracing continues past each site.
    """
    if not isinstance(m, torch.nn.Module) and not isinstance(m, types.FunctionType):
        raise TypeError(
            f"explain() needs an nn.Module or a Python function, got {type(m).__name__}"
        )
    if concrete_args is not None and not isinstance(concrete_args, dict):
        raise TypeError(f"concrete_args must be a dict, got {type(concrete_args).__name__}")
    name = type(m).__name__ if isinstance(m, torch.nn.Module) else m.__name__
    report = ExplainReport(name)
    plain_error = _plain_trace_error(m, concrete_args)
    report.plain_ok = plain_error is None
    # Inputs defaulting to None are specialised to None below (as shape-aware tracing does);
    # if they are what stops plain tracing, that is the first site.
    nones = _none_defaults(m, len(example_inputs), concrete_args)
    if nones and plain_error is not None:
        _note_none_defaults(report, m, concrete_args, nones, plain_error)
    if example_inputs:
        probe = ShapeAwareTracer(example_inputs)
        try:
            probe.trace(m, concrete_args)
            report.shape_aware_ok, report.shape_aware_guards = True, len(probe.guards)
        except Exception:  # noqa: BLE001
            report.shape_aware_ok = False
    # jit_tracing stays off here: the sites listed are the ones plain symbolic_trace meets.
    # Other defaulted inputs stay inputs, as in plain tracing, but questions about them are
    # answered from their defaults, so the sites they cause are listed and traced past.
    tracer = _ExplainTracer(
        report, example_inputs or None, specialize_defaults=False, defaults_as_values=True,
        jit_tracing=False,
    )  # fmt: skip
    try:
        graph = tracer.trace(m, {**nones, **(concrete_args or {})})
    except Exception as e:  # noqa: BLE001
        report.fatal = e
        if getattr(e, "_fxkit_recorded", False):
            report.failures[-1] = report.failures[-1]._replace(outcome="tracing stopped")
        else:
            where = _error_where(e)
            msg = str(e).strip().splitlines()
            report.failures.append(
                TraceFailure(where, _source_line(where), "", "call", "unsupported-call",
                             f"{type(e).__name__}: {msg[0] if msg else ''}",
                             "fxkit.wrap() the function called there, or pass the value that "
                             "decides it through concrete_args", "tracing stopped")
            )  # fmt: skip
        return report
    report.leaf_modules = [f.qualname for f in tracer.leaf_fallbacks]
    report.graph_module = GraphModule(tracer.root, graph, name)
    if report.plain_ok:
        # Sites answered from example values only matter when plain tracing fails.
        report.failures = [f for f in report.failures if not f.outcome.startswith("answered")]
    return report


def _plain_trace_error(m: Any, concrete_args: Optional[Dict[str, Any]]) -> Optional[Exception]:
    try:
        Tracer().trace(m, concrete_args)
    except Exception as e:  # noqa: BLE001  (the detailed pass says what went wrong)
        return e
    return None


def _none_defaults(m: Any, n_given: int, concrete_args: Optional[Dict[str, Any]]) -> Dict:
    """Inputs after the ``n_given`` positional example inputs that default to None."""
    found = none_defaults_as_concrete(m, concrete_args) or {}
    fn = type(m).forward if isinstance(m, torch.nn.Module) else m
    names = list(inspect.signature(inspect.unwrap(fn)).parameters)
    positional = set(names[int(isinstance(m, torch.nn.Module)) :][:n_given])
    given = set(concrete_args or ())
    return {k: v for k, v in found.items() if k not in given and k not in positional}


# fmt: off
def _note_none_defaults(report: ExplainReport, m: Any, concrete_args: Optional[Dict[str, Any]],
                        nones: Dict[str, Any], plain_error: Exception) -> None:
    # fmt: on
    where = _error_where(plain_error)
    after = _plain_trace_error(m, {**nones, **(concrete_args or {})})
    if after is not None and _error_where(after) == where:
        return  # plain tracing stops at the same place with them specialised: not their doing
    names = ", ".join(f"{n!r}: None" for n in nones)
    msg = str(plain_error).strip().splitlines()
    report.failures.append(
        TraceFailure(
            where, _source_line(where), "", "inputs defaulting to None", "input-value",
            f"{', '.join(nones)} are Proxies, not None, in plain tracing "
            f"({type(plain_error).__name__}: {msg[0] if msg else ''})",
            f"pass the defaults as constants: symbolic_trace(m, concrete_args={{{names}}})",
            "specialised to None to go on",
        )
    )  # fmt: skip


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected module.path:ClassName, got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


EXPLAIN_HELP = "why tracing fails, every site at once: fxkit explain pkg.mod:Class --input-shape 2,3"


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``fxkit explain`` (shared by :func:`explain_main` and ``fxkit``)."""
    parser.add_argument("target", help="module.path:ClassName (or :function, or :instance)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="D0,D1,...",
                        help="shape of one positional input (repeat for more)")  # fmt: skip
    parser.add_argument("--dtype", default="float32", help="dtype of the inputs")


def _parse_shape(text: str) -> Tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.split(",") if d.strip())
    except ValueError:
        dims = (-1,)
    if any(d < 0 for d in dims):
        raise ValueError(
            f"--input-shape {text!r} is not a shape: expected non-negative integers separated "
            "by commas, e.g. --input-shape 2,3"
        )
    return dims


class _UsageError(Exception):
    """Bad command-line input: one line on stderr, exit status 2."""


def _build(obj: Any, target: str) -> Any:
    if not isinstance(obj, type):
        return obj
    try:
        return obj()
    except TypeError as e:
        raise _UsageError(
            f"cannot build {target} without arguments ({e}); point to a module instance "
            "instead (module.path:instance_name)"
        ) from e


def _check_runs(obj: Any, inputs: List[torch.Tensor], shapes: List[Tuple[int, ...]]) -> None:
    # Explain is for code that runs but does not trace: inputs it cannot even run on are a
    # usage error, said in one line rather than as a report full of unrelated sites.
    try:
        with torch.no_grad():
            obj(*inputs)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()
        given = ", ".join(str(s) for s in shapes) or "no inputs"
        raise _UsageError(
            f"the model does not run on inputs of shape {given}: {type(e).__name__}: "
            f"{first[0] if first else ''}; check --input-shape"
        ) from e


def run_explain(args: argparse.Namespace) -> int:
    """Run ``fxkit explain`` for parsed arguments (see :func:`explain_main`)."""
    try:
        obj = _load(args.target)
        shapes = [_parse_shape(s) for s in args.input_shape]
        dtype = getattr(torch, args.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {args.dtype!r}")
        obj = _build(obj, args.target)
        if isinstance(obj, str) or not callable(obj):
            raise ValueError(f"{args.target} is not a module or function")
        inputs = [
            torch.randn(s, dtype=dtype) if dtype.is_floating_point else torch.zeros(s, dtype=dtype)
            for s in shapes
        ]
        _check_runs(obj, inputs, shapes)
    except (ImportError, AttributeError, ValueError, _UsageError) as e:
        print(f"fxkit explain: {e}", file=sys.stderr)
        return 2
    if not isinstance(obj, (torch.nn.Module, types.FunctionType)):
        print(f"fxkit explain: {args.target} is not an nn.Module or a function", file=sys.stderr)
        return 2
    report = explain(obj, *inputs)
    print(report)
    return 0 if report.plain_ok else 1


def explain_main(argv: Optional[Sequence[str]] = None) -> int:
    """``fxkit explain module.path:ClassName --input-shape 2,3 [--input-shape ...]``.

    Builds the module with no arguments (a class) or uses it as is (an instance/function),
    makes random inputs of the given shapes, prints the report. Exit status 0 when plain
    tracing works, 1 when it does not, 2 on bad arguments (one line on stderr).
    """
    parser = argparse.ArgumentParser(prog="fxkit explain", description=explain_main.__doc__)
    add_explain_arguments(parser)
    return run_explain(parser.parse_args(list(argv) if argv is not None else None))
