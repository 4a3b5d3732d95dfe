"""``fxkit trace``, ``fxkit show`` and ``fxkit diff``: capture a model or open a saved graph
and write one view of it (table, code, DOT, Mermaid, HTML, JSON, or a saved file).

Exit status: 0 on success, 1 when the work itself fails (tracing, shape propagation), 2 on
bad command-line input, always with one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
import json
import sys
from typing import Any, Callable, Dict, List, Optional

import torch

FORMATS = ("table", "code", "dot", "mermaid", "html", "json", "save")


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit status 2."""


def _import_attr(spec: str) -> Any:
    """``pkg.mod:Attr.sub`` (or ``pkg.mod.Attr``) -> the object."""
    module_name, colon, attr = spec.partition(":")
    if not colon:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise UsageError(f"expected module.path:Name, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import {module_name!r}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _input(spec: str) -> torch.Tensor:
    """``2,3`` or ``2,3:int64`` -> a random tensor of that shape and dtype."""
    shape_text, _, dtype_name = spec.partition(":")
    try:
        shape = tuple(int(d) for d in shape_text.split(",") if d.strip())
    except ValueError:
        shape = (-1,)
    if any(d < 0 for d in shape):
        raise UsageError(f"--input {spec!r}: expected a shape like 2,3 or 2,3:int64")
    dtype = getattr(torch, dtype_name or "float32", None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"--input {spec!r}: unknown dtype {dtype_name!r}")
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=dtype)
    return torch.randint(0, 2, shape, dtype=dtype)


def _model(spec: str) -> Any:
    obj = _import_attr(spec)
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        try:
            obj = obj()
        except TypeError as e:
            raise UsageError(f"cannot build {spec} without arguments ({e})") from None
    elif callable(obj) and not isinstance(obj, torch.nn.Module) and spec.endswith("()"):
        obj = obj()
    if not (isinstance(obj, torch.nn.Module) or callable(obj)):
        raise UsageError(f"{spec} is not a module, module class or function")
    if isinstance(obj, torch.nn.Module):
        obj.eval()
    return obj


def _trace(obj: Any, inputs: List[torch.Tensor], leaves: List[type], example: bool) -> Any:
    import fxkit

    if example:
        if not inputs:
            raise UsageError("--example-inputs needs at least one --input")
        return fxkit.symbolic_trace(obj, example_inputs=tuple(inputs))

    class CliTracer(fxkit.Tracer):
        def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
            return isinstance(m, tuple(leaves)) or super().is_leaf_module(m, qualname)

    tracer = CliTracer()
    graph = tracer.trace(obj)
    name = type(obj).__name__ if isinstance(obj, torch.nn.Module) else obj.__name__
    return fxkit.GraphModule(tracer.root, graph, name)


def _table(gm: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        gm.graph.print_tabular()
    return out.getvalue()


def _json(gm: Any) -> str:
    from fxkit.serialize import graph_document

    return json.dumps(graph_document(gm), indent=1)


def _view(gm: Any, fmt: str) -> str:
    if fmt == "table":
        return _table(gm)
    if fmt == "code":
        return gm.code
    if fmt == "json":
        return _json(gm)
    from fxkit import drawing

    render: Dict[str, Callable[[Any], str]] = {
        "dot": lambda g: drawing.to_dot(g).to_string(),
        "mermaid": drawing.to_mermaid,
        "html": drawing.to_html,
    }
    return render[fmt](gm)


def _emit(gm: Any, fmt: str, output: Optional[str]) -> None:
    if fmt == "save":
        if not output:
            raise UsageError("--format save needs -o FILE")
        import fxkit

        fxkit.save(gm, output)
        return
    text = _view(gm, fmt)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _progress(steps: List[str]) -> Any:
    """An iterator over ``steps`` with a progress bar when tqdm is installed and stderr is a
    terminal; otherwise the steps as they are."""
    if not sys.stderr.isatty():
        return steps
    try:
        from tqdm import tqdm
    except ImportError:
        return steps
    return tqdm(steps, desc="fxkit", leave=False)


def run_trace(args: argparse.Namespace) -> int:
    """``fxkit trace``: import, trace, shape-propagate (with inputs), write the view."""
    try:
        obj = _model(args.target)
        inputs = [_input(s) for s in args.input]
        leaves = [_import_attr(s) for s in args.leaf]
        if not all(isinstance(c, type) and issubclass(c, torch.nn.Module) for c in leaves):
            raise UsageError("--leaf takes nn.Module classes (module.path:Class)")
    except UsageError as e:
        print(f"fxkit trace: {e}", file=sys.stderr)
        return 2
    gm = None
    try:
        for step in _progress(["trace", "shapes", "write"]):
            if step == "trace":
                gm = _trace(obj, inputs, leaves, args.example_inputs)
            elif step == "shapes" and inputs:
                from fxkit.passes.shape_prop import ShapeProp

                with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                    ShapeProp(gm).propagate(*inputs)
            elif step == "write":
                _emit(gm, args.format, args.output)
    except UsageError as e:
        print(f"fxkit trace: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the command reports any failure in one line
        first = str(e).strip().splitlines()
        print(f"fxkit trace: {type(e).__name__}: {first[0] if first else ''}", file=sys.stderr)
        return 1
    return 0


def _open_saved(path: str) -> Any:
    from fxkit.serialize import FormatError, _load_for_display

    try:
        return _load_for_display(path)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except FormatError as e:
        raise UsageError(f"{path}: {e}") from None


def run_show(args: argparse.Namespace) -> int:
    """``fxkit show FILE``: a graph saved with ``fxkit.save`` in the chosen view."""
    try:
        gm = _open_saved(args.file)
        _emit(gm, args.format, args.output)
    except UsageError as e:
        print(f"fxkit show: {e}", file=sys.stderr)
        return 2
    return 0


def _graph_lines(gm: Any) -> List[str]:
    return str(gm.graph).splitlines()


def run_diff(args: argparse.Namespace) -> int:
    """``fxkit diff A B``: what changed between two saved graphs (exit 1 if they differ)."""
    try:
        before, after = _open_saved(args.before), _open_saved(args.after)
    except UsageError as e:
        print(f"fxkit diff: {e}", file=sys.stderr)
        return 2
    old, new = _graph_lines(before), _graph_lines(after)
    if args.format == "html":
        from fxkit import drawing

        text = drawing.diff_html(before, after)
    else:
        text = "".join(
            line + "\n"
            for line in difflib.unified_diff(old, new, args.before, args.after, lineterm="")
        )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0 if old == new else 1


def add_view_commands(sub: Any) -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Register ``trace``, ``show`` and ``diff`` on an argparse subparsers object."""
    trace = sub.add_parser(
        "trace", help="trace module.path:Model and print or write a view of its graph"
    )
    trace.add_argument("target", help="module.path:Class (built with no arguments) or :function")
    trace.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="SHAPE[:DTYPE]",
        help="an input shape, e.g. 2,3 or 8:int64 (repeat per input); shapes are propagated",
    )
    trace.add_argument(
        "--leaf", action="append", default=[], metavar="CLASS", help="keep CLASS as a call"
    )
    trace.add_argument(
        "--example-inputs", action="store_true", help="shape-aware tracing with the inputs"
    )
    trace.add_argument("--format", choices=FORMATS, default="table")
    trace.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    show = sub.add_parser("show", help="print or write a view of a graph saved by fxkit.save")
    show.add_argument("file")
    show.add_argument("--format", choices=FORMATS[:-1], default="table")
    show.add_argument("-o", "--output", metavar="FILE")
    diff = sub.add_parser("diff", help="compare two saved graphs (text or HTML)")
    diff.add_argument("before")
    diff.add_argument("after")
    diff.add_argument("--format", choices=("text", "html"), default="text")
    diff.add_argument("-o", "--output", metavar="FILE")
    return {"trace": run_trace, "show": run_show, "diff": run_diff}
