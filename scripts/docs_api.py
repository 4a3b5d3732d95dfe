"""Generate fxkit's API reference and its torch.fx compatibility table from the code.

The documentation never lists modules by hand: this script walks the installed ``fxkit``
package, so a module added later gets a page (and is held to the docstring rule) on the
next build. ``docs/conf.py`` calls :func:`generate` at build time; the test suite calls
:func:`missing_docstrings` and :func:`page_gaps`.

Usage::

    python scripts/docs_api.py            # write docs/api/*.rst and docs/api/_generated/*.md
    python scripts/docs_api.py --check    # list public names without a docstring, exit 1 if any

This script (unlike ``src/fxkit``) may import torch.fx: it needs torch.fx's public names to
build the compatibility table.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import json
import pkgutil
import sys
import textwrap
import warnings
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"

#: Module trees that are part of the package but not of its API.
EXCLUDED_TREES = ("fxkit.passes.tests",)

#: Values that count as public "data" in a module without ``__all__`` (config flags and the
#: like); anything else without ``__all__`` must be a class or function defined there.
_PLAIN_DATA = (bool, int, float, str, bytes, tuple, list, dict, set, frozenset, type(None))


# --------------------------------------------------------------------------- discovery


def _is_excluded(modname: str, root: str) -> bool:
    """Private modules (any ``_`` component below the root) and test trees are skipped."""
    tail = modname[len(root) :].lstrip(".")
    if any(part.startswith("_") for part in tail.split(".") if part):
        return True
    return any(modname == t or modname.startswith(t + ".") for t in EXCLUDED_TREES)


def walk_modules(root: str = "fxkit") -> tuple[list[str], dict[str, str]]:
    """Return the public module names under ``root`` (root first) and the import failures
    (cached: a build asks several times, and the package does not change meanwhile)."""
    if root not in _WALKS:
        _WALKS[root] = _walk(root)
    modules, failures = _WALKS[root]
    return list(modules), dict(failures)


_WALKS: dict[str, tuple[list[str], dict[str, str]]] = {}


def _walk(root: str) -> tuple[list[str], dict[str, str]]:
    """Return the public module names under ``root`` (root first) and the import failures.

    Failures map a module name to ``"ExcType: message"``; a module that cannot be imported
    cannot be documented, and the caller decides whether that is fatal.
    """
    failures: dict[str, str] = {}
    package = importlib.import_module(root)
    names = [root]

    def on_error(name: str) -> None:
        exc = sys.exc_info()[1]
        failures[name] = f"{type(exc).__name__}: {exc}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = pkgutil.walk_packages(package.__path__, root + ".", onerror=on_error)
        for info in found:
            if not _is_excluded(info.name, root):
                names.append(info.name)
        importable = []
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:  # reported, not raised: one broken module != no docs
                failures[name] = f"{type(exc).__name__}: {exc}"
            else:
                importable.append(name)
    failures = {k: v for k, v in failures.items() if not _is_excluded(k, root)}
    return sorted(importable, key=_page_order), failures


def _page_order(modname: str) -> tuple:
    # The root package first, then alphabetical: "fxkit" < "fxkit.annotate" < ...
    return (modname.count(".") > 0, modname)


def public_names(module: ModuleType) -> list[str]:
    """The public names of ``module``: ``__all__``, else its own classes, functions and flags."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return list(dict.fromkeys(declared))
    own = []
    assigned = None
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if inspect.isclass(value) or inspect.isroutine(value):
            if getattr(value, "__module__", None) == module.__name__:
                own.append(name)
        elif isinstance(value, _PLAIN_DATA):
            # A flag counts only if the module assigns it (not `from typing import TYPE_CHECKING`).
            assigned = _assigned_names(module) if assigned is None else assigned
            if name in assigned:
                own.append(name)
    return own


def _assigned_names(module: ModuleType) -> set[str]:
    """Names bound by top-level assignments in ``module``'s source."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return set()
    names = set()
    for statement in tree.body:
        targets = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
            targets = [statement.target]
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def kind_of(value: object) -> str:
    """Which autodoc directive documents ``value``: class, function, module or data."""
    if inspect.ismodule(value):
        return "module"
    if inspect.isclass(value):
        return "class"
    if inspect.isroutine(value):
        return "function"
    return "data"


def source_docstring(value: object) -> str | None:
    """The docstring as written in the source, for classes whose ``__doc__`` is a property.

    (``Dispatcher`` objects carry per-instance docs, so the class attribute is a descriptor
    and the class's own docstring is only in the source.)
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(value)))  # type: ignore[arg-type]
    except (OSError, TypeError, SyntaxError):
        return None
    node = tree.body[0] if tree.body else None
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return ast.get_docstring(node)
    return None


def docstring_of(value: object) -> str | None:
    """``value``'s own docstring, or None when the author wrote none."""
    doc = value.__doc__ if inspect.isclass(value) else getattr(value, "__doc__", None)
    if inspect.isclass(value) and not isinstance(doc, str):
        doc = source_docstring(value)
    if not isinstance(doc, str) or not doc.strip():
        return None
    invented = doc.strip()
    # dataclasses and namedtuples invent a one-line "Name(field, ...)" when none was written.
    if (
        inspect.isclass(value)
        and "\n" not in invented
        and invented.startswith(value.__name__ + "(")
    ):
        return None
    return doc


def _has_docstring(value: object) -> bool:
    return docstring_of(value) is not None


@dataclasses.dataclass(frozen=True)
class ApiEntry:
    """One public name as the reference shows it."""

    module: str
    name: str
    kind: str
    value: object = dataclasses.field(compare=False, repr=False)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


def collect(modules: list[str]) -> tuple[dict[str, list[ApiEntry]], list[str]]:
    """Map each module to its entries; also return names listed in ``__all__`` but absent."""
    entries: dict[str, list[ApiEntry]] = {}
    dangling = []
    for modname in modules:
        module = sys.modules[modname]
        rows = []
        for name in public_names(module):
            try:
                value = getattr(module, name)
            except ImportError:
                continue  # needs an optional extra that is not installed: nothing to show
            except AttributeError:
                dangling.append(f"{modname}.{name} (in __all__, not defined)")
                continue
            rows.append(ApiEntry(modname, name, kind_of(value), value))
        entries[modname] = rows
    return entries, dangling


def missing_docstrings(modules: list[str] | None = None) -> list[str]:
    """Public modules, classes and functions whose docstring is missing or empty."""
    if modules is None:
        modules, _ = walk_modules()
    entries, dangling = collect(modules)
    missing = list(dangling)
    for modname, rows in entries.items():
        if not _has_docstring(sys.modules[modname]):
            missing.append(f"{modname} (module)")
        for entry in rows:
            if entry.kind in ("class", "function") and not _has_docstring(entry.value):
                missing.append(entry.qualname)
    return missing


def rest_warnings(modules: list[str] | None = None) -> list[str]:
    """Docstrings that are not valid reStructuredText (the docs show them verbatim).

    Needs Sphinx (the check lives in ``docs/_ext/fxkit_docs.py``); empty without it.
    """
    try:
        sys.path.insert(0, str(DOCS / "_ext"))
        from fxkit_docs import napoleon_lines, rest_problems
    except ImportError:
        return []
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    if modules is None:
        modules, _ = walk_modules()
    entries, _ = collect(modules)
    found = []
    for modname, rows in entries.items():
        subjects = [(modname, sys.modules[modname], "module")]
        subjects += [(e.qualname, e.value, e.kind) for e in rows if e.kind in ("class", "function")]
        for name, value, kind in subjects:
            doc = docstring_of(value)
            text = "\n".join(napoleon_lines(doc, kind, name, value)) if doc else ""
            problems = rest_problems(text) if text else []
            if problems:
                found.append(f"{name}: {problems[0]}")
    return found


# --------------------------------------------------------------------------- API pages


def _canonical_homes(entries: dict[str, list[ApiEntry]]) -> dict[tuple[int, str], str]:
    """Pick the one page that documents each class/function; others link to it.

    Documenting a re-exported object twice would make Sphinx warn about duplicate
    descriptions, so the defining module wins when it is public and exports the name,
    else the shortest public path that exports it.
    """
    exporters: dict[tuple[int, str], list[str]] = {}
    defining: dict[tuple[int, str], str] = {}
    for modname, rows in entries.items():
        for entry in rows:
            if entry.kind in ("class", "function"):
                key = (id(entry.value), entry.name)
                exporters.setdefault(key, []).append(modname)
                defining[key] = getattr(entry.value, "__module__", "") or ""
    homes = {}
    for key, mods in exporters.items():
        home = defining[key]
        homes[key] = home if home in mods else min(mods, key=lambda m: (m.count("."), m))
    return homes


def _rst_heading(text: str, underline: str = "=") -> str:
    return f"{text}\n{underline * len(text)}\n"


def _explicit_signature(func: object) -> str:
    """A signature string built from the code object, for functions ``inspect`` rejects.

    ``def placeholder(self, name, type_expr=None, default_value=inspect.Signature.empty)``
    is valid Python, but ``inspect.signature`` reads that default as "no default" and
    refuses the signature; autodoc would then warn and fail the build.
    """
    code = getattr(func, "__code__", None)
    if code is None:
        return "(...)"
    positional = list(code.co_varnames[: code.co_argcount])
    keyword_only = list(
        code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    )
    defaults = list(getattr(func, "__defaults__", None) or ())
    kw_defaults = getattr(func, "__kwdefaults__", None) or {}

    def shown(value: object) -> str:
        return "inspect.Signature.empty" if value is inspect.Parameter.empty else repr(value)

    first_default = len(positional) - len(defaults)
    parts = [
        name if i < first_default else f"{name}={shown(defaults[i - first_default])}"
        for i, name in enumerate(positional)
    ]
    extra = code.co_argcount + code.co_kwonlyargcount
    if code.co_flags & inspect.CO_VARARGS:
        parts.append("*" + code.co_varnames[extra])
        extra += 1
    elif keyword_only:
        parts.append("*")
    parts += [f"{n}={shown(kw_defaults[n])}" if n in kw_defaults else n for n in keyword_only]
    if code.co_flags & inspect.CO_VARKEYWORDS:
        parts.append("**" + code.co_varnames[extra])
    if parts and parts[0] in ("self", "cls"):
        parts = parts[1:]
    return "(" + ", ".join(parts) + ")"


def _unsignable_methods(cls: type) -> dict[str, str]:
    """Documented methods of ``cls`` whose signature ``inspect`` cannot build."""
    found = {}
    for name, attr in vars(cls).items():
        func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if name.startswith("_") or not inspect.isfunction(func) or not func.__doc__:
            continue
        try:
            # Rebuilding validates parameter order, as autodoc does with preserved defaults.
            inspect.Signature(list(inspect.signature(func).parameters.values()))
        except ValueError:
            found[name] = _explicit_signature(func)
    return found


def _data_doc(modname: str, name: str) -> list[str]:
    """The ``#:`` comment or string literal documenting a module-level value, if any."""
    try:
        from sphinx.pycode import ModuleAnalyzer
    except ImportError:  # sphinx is only needed to build, not to list names
        return []
    try:
        docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    except Exception:  # no source (compiled module) or unparsable: nothing to show
        return []
    return [line for line in docs.get(("", name), []) if line.strip()]


def _render_entry(entry: ApiEntry) -> str:
    if entry.kind == "function":
        return f".. autofunction:: {entry.qualname}\n"
    if entry.kind == "class":
        lines = [f".. autoclass:: {entry.qualname}", "   :members:", "   :show-inheritance:"]
        awkward = _unsignable_methods(entry.value)  # type: ignore[arg-type]
        if awkward:
            lines.append(f"   :exclude-members: {', '.join(awkward)}")
            lines.append("")
            lines += [f"   .. automethod:: {name}{sig}" for name, sig in awkward.items()]
        return "\n".join(lines) + "\n"
    # Values are described without autodoc: their repr may be huge or unstable, and some
    # (z3 declarations) cannot even be compared, which autodoc tries.
    type_name = f"{type(entry.value).__module__}.{type(entry.value).__qualname__}"
    type_name = type_name.removeprefix("builtins.")
    lines = [f".. py:data:: {entry.qualname}", f"   :type: {type_name}", ""]
    lines += [f"   {line}" for line in _data_doc(entry.module, entry.name)]
    return "\n".join(lines) + "\n"


def render_module_page(
    modname: str, rows: list[ApiEntry], homes: dict[tuple[int, str], str], modules: list[str]
) -> str:
    """reStructuredText for one module: its docstring, then every public name."""
    out = [_rst_heading(f"``{modname}``"), f".. automodule:: {modname}\n"]
    children = [m for m in modules if m.rpartition(".")[0] == modname]
    if children:
        out.append(_rst_heading("Submodules", "-"))
        out.extend(f"* :mod:`{child}`" for child in children)
        out.append("")
    documented, linked = [], []
    for entry in rows:
        home = homes.get((id(entry.value), entry.name), modname)
        if entry.kind == "module":
            linked.append(f"* ``{entry.name}``: the module :mod:`{entry.value.__name__}`")
        elif home != modname:
            role = "class" if entry.kind == "class" else "func"
            linked.append(f"* :{role}:`{entry.name} <{home}.{entry.name}>` (from :mod:`{home}`)")
        else:
            documented.append(entry)
    if documented:
        out.append(_rst_heading("Reference", "-"))
        out.extend(_render_entry(entry) for entry in documented)
    if linked:
        out.append(_rst_heading("Also available here", "-"))
        out.extend(linked)
        out.append("")
    return "\n".join(out)


def render_index(modules: list[str], failures: dict[str, str]) -> str:
    """The API landing page: a toctree over every module page."""
    lines = [
        _rst_heading("API reference"),
        "Generated from the code at build time: one page per public module of ``fxkit``,",
        "under the same paths as ``torch.fx``. Private modules (``_name``) are not part of",
        "the API.\n",
        ".. toctree::\n   :maxdepth: 1\n",
    ]
    lines.extend(f"   {m}" for m in modules)
    lines.append("")
    if failures:
        # Kept visible on the page: a module that cannot be imported has no reference.
        lines.append(_rst_heading("Modules that failed to import", "-"))
        for modname, message in failures.items():
            # A literal block: exception text may contain anything reST would interpret.
            first = message.splitlines()[0] if message else "(no message)"
            lines += [f"* ``{modname}``::", "", f"      {first}", ""]
    return "\n".join(lines)


def page_gaps(api_dir: Path, modules: list[str]) -> list[str]:
    """Public modules without a generated page under ``api_dir``."""
    return [m for m in modules if not (api_dir / f"{m}.rst").is_file()]


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting an unchanged page would make Sphinx rebuild it; keep incremental builds fast.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_api_pages(api_dir: Path) -> list[str]:
    """Write ``index.rst`` and one ``<module>.rst`` per public module; return the modules."""
    modules, failures = walk_modules()
    entries, _ = collect(modules)
    homes = _canonical_homes(entries)
    api_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f"{m}.rst" for m in modules} | {"index.rst"}
    for stale in api_dir.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for modname in modules:
        page = render_module_page(modname, entries[modname], homes, modules)
        _write_if_changed(api_dir / f"{modname}.rst", page)
    _write_if_changed(api_dir / "index.rst", render_index(modules, failures))
    return modules


# --------------------------------------------------------------------------- compatibility


@dataclasses.dataclass
class CompatRow:
    """One torch.fx module path and how much of it fxkit provides under the same path."""

    torch_module: str
    fxkit_module: str
    torch_names: list[str]
    missing: list[str]
    module_present: bool
    has_page: bool = False

    @property
    def implemented(self) -> int:
        return len(self.torch_names) - len(self.missing)


def _provides(module: ModuleType, name: str) -> bool:
    try:
        getattr(module, name)
    except ImportError:  # present, but behind an optional extra (z3): still implemented
        return True
    except AttributeError:
        return False
    return True


def compat_rows() -> tuple[list[CompatRow], list[str]]:
    """Compare every public torch.fx module with fxkit's module of the same path.

    A torch.fx name counts as implemented when ``from fxkit.<path> import <name>`` works,
    which is what code migrated with ``import fxkit as fx`` needs. Also returns the fxkit
    modules with no torch.fx counterpart.
    """
    torch_modules, _ = walk_modules("torch.fx")
    fxkit_modules, _ = walk_modules("fxkit")
    rows = []
    for tmod in torch_modules:
        fmod = "fxkit" + tmod[len("torch.fx") :]
        names = public_names(sys.modules[tmod])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours: ModuleType | None = importlib.import_module(fmod)
        except ImportError:
            ours = None
        missing = [n for n in names if ours is None or not _provides(ours, n)]
        has_page = fmod in fxkit_modules
        rows.append(CompatRow(tmod, fmod, names, missing, ours is not None, has_page))
    counterparts = {"fxkit" + t[len("torch.fx") :] for t in torch_modules}
    extras = [m for m in fxkit_modules if m not in counterparts]
    return rows, extras


def compat_table_markdown() -> str:
    """The migration guide's table, as Markdown."""
    rows, extras = compat_rows()
    total = sum(len(r.torch_names) for r in rows)
    done = sum(r.implemented for r in rows)
    present = sum(r.module_present for r in rows)
    out = [
        f"fxkit provides {present} of torch.fx's {len(rows)} public module paths and "
        f"{done} of their {total} public names. A path `p` below is `torch.fx.p` in torch.fx "
        "and `fxkit.p` in fxkit.\n",
        "| module path | names | not in fxkit |",
        "|---|---:|---|",
    ]
    for r in rows:
        path = r.torch_module[len("torch.fx.") :] or "(the package)"
        if r.has_page:
            where = f"{{py:mod}}`{path} <{r.fxkit_module}>`"
        else:
            where = f"`{path}`" if r.module_present else f"`{path}` (not in fxkit)"
        gaps = ", ".join(f"`{n}`" for n in r.missing) if r.module_present else "(whole module)"
        count = f"{r.implemented} / {len(r.torch_names)}"
        out.append(f"| {where} | {count} | {gaps or '—'} |")
    out.append("\nModules that only fxkit has:\n")
    out.extend(f"- {{py:mod}}`{m}`" for m in extras)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- benchmarks


def bench_table_markdown(results: Path = REPO / "benchmarks" / "results" / "latest.json") -> str:
    """The performance page's table from the last ``make bench`` run, or how to get one."""
    if not results.is_file():
        return "No results yet: run `make bench` to produce `benchmarks/results/latest.json`.\n"
    data = json.loads(results.read_text())
    out = [
        f"Last run: {data.get('header', 'unknown machine')}. "
        "Ratio = fxkit time / torch.fx time (lower is better).\n",
        "| benchmark | fxkit (ms) | torch.fx (ms) | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in data.get("rows", []):
        target = row.get("target")
        ratio = row.get("ratio", float("nan"))
        short = target is not None and ratio > target
        name = str(row.get("name", "")).replace("|", "\\|")
        out.append(
            f"| {name} | {row['fxkit_s'] * 1e3:.2f} | {row['torch_fx_s'] * 1e3:.2f} | "
            f"{ratio:.3f}{' (short of target)' if short else ''} | "
            f"{'≤ %g' % target if target is not None else '—'} |"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- entry points


def generate(docs_dir: Path = DOCS) -> list[str]:
    """Everything the Sphinx build needs that comes from the code; returns the modules."""
    api_dir = docs_dir / "api"
    modules = write_api_pages(api_dir)
    fragments = api_dir / "_generated"
    fragments.mkdir(exist_ok=True)
    _write_if_changed(fragments / "compat_table.md", compat_table_markdown())
    _write_if_changed(fragments / "bench_table.md", bench_table_markdown())
    return modules


def main(argv: list[str] | None = None) -> int:
    """Command line: write the generated pages, or ``--check`` docstring coverage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report missing docstrings")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs source directory")
    args = parser.parse_args(argv)
    if args.check:
        modules, failures = walk_modules()
        problems = [f"{m}: import failed: {msg}" for m, msg in failures.items()]
        problems += missing_docstrings(modules)
        print("\n".join(problems) or "every public name has a docstring")
        for note in rest_warnings(modules):
            print(f"note: not valid reST, shown verbatim: {note}")
        return 1 if problems else 0
    modules = generate(args.docs)
    print(f"wrote {len(modules)} module pages under {args.docs / 'api'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
