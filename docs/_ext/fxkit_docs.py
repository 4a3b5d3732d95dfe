"""A small Sphinx extension for fxkit's docs.

Three fixes to what autodoc would otherwise print, all at ``autodoc-process-docstring``:

* a class that defines ``__doc__`` as a property (``Dispatcher`` gives each instance its own
  doc) has no class docstring at run time; the one in the source is used instead;
* a module-level value without its own doc (a ``dict``, a z3 declaration) would show its
  *type's* docstring; it shows nothing instead;
* a docstring that is not valid reStructuredText would fail the ``-W`` build for a page the
  docs don't own; it is shown verbatim as a literal block and listed in the build log, so
  the build stays strict for the docs' own pages.

It also makes the hand-written pages strict about Python cross-references: an unresolved
``{py:func}`...``` there is a warning (so ``-W`` fails), while docstrings keep Sphinx's
default of rendering an unknown name as plain text (they name torch and typing objects
that have no page here).
"""

from __future__ import annotations

import inspect
import io
from typing import Any

import docutils.frontend
import docutils.nodes
import docutils.parsers.rst
import docutils.utils
from docs_api import source_docstring
from docutils.parsers.rst import directives, roles
from sphinx.util import logging

logger = logging.getLogger(__name__)

# docutils' own lookups, captured before Sphinx swaps in its domain-aware ones while reading:
# the validity check below must not run Sphinx roles, which need a build environment.
_PLAIN_ROLE = roles.role
_PLAIN_DIRECTIVE = directives.directive

# Sphinx-only markup is fine in a docstring; plain docutils just doesn't know it.
_UNKNOWN_MARKUP = ("Unknown interpreted text role", "Unknown directive type", "No role entry")


_SETTINGS: Any = None


def _quiet_settings() -> Any:
    # Building docutils' option parser is the expensive part of a parse; do it once.
    global _SETTINGS
    if _SETTINGS is None:
        _SETTINGS = docutils.frontend.get_default_settings(docutils.parsers.rst.Parser)
        _SETTINGS.report_level = 5
        _SETTINGS.halt_level = 5
        _SETTINGS.warning_stream = io.StringIO()
        _SETTINGS.file_insertion_enabled = False
        _SETTINGS.raw_enabled = False
    return _SETTINGS


def rest_problems(text: str) -> list[str]:
    """docutils' warnings and errors for ``text``, ignoring Sphinx-only roles/directives."""
    document = docutils.utils.new_document("<docstring>", _quiet_settings())
    saved = roles.role, directives.directive
    roles.role, directives.directive = _PLAIN_ROLE, _PLAIN_DIRECTIVE
    try:
        docutils.parsers.rst.Parser().parse(text, document)
    except Exception:  # a Sphinx-registered role that needs an environment: can't tell
        return []
    finally:
        roles.role, directives.directive = saved
    problems = []
    for message in document.findall(docutils.nodes.system_message):
        text_of = message.astext()
        if message["level"] >= 2 and not any(s in text_of for s in _UNKNOWN_MARKUP):
            problems.append(text_of.splitlines()[0] if text_of else "")
    return problems


def napoleon_lines(doc: str, what: str, name: str, obj: Any) -> list[str]:
    """``doc`` as napoleon turns it into reST during the build (NumPy, then Google style)."""
    from sphinx.ext.napoleon import Config
    from sphinx.ext.napoleon.docstring import GoogleDocstring, NumpyDocstring

    config = Config(napoleon_google_docstring=True, napoleon_numpy_docstring=True)
    lines = inspect.cleandoc(doc).splitlines()
    lines = NumpyDocstring(lines, config, None, what, name, obj).lines()
    return GoogleDocstring(lines, config, None, what, name, obj).lines()


def _process_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what == "class" and not lines and not isinstance(getattr(obj, "__doc__", None), str):
        doc = source_docstring(obj)
        if doc:
            lines.extend(inspect.cleandoc(doc).splitlines())
    if what in ("data", "attribute") and lines:
        type_doc = inspect.getdoc(type(obj)) or ""
        if inspect.cleandoc("\n".join(lines)) == type_doc.strip():
            lines.clear()
    if lines and rest_problems("\n".join(lines)):
        logger.info("fxkit_docs: the docstring of %s is not valid reST; shown verbatim", name)
        verbatim = ["   " + line if line.strip() else "" for line in lines]
        lines[:] = ["::", "", *verbatim, ""]


def _strict_guide_references(app: Any, env: Any, node: Any, contnode: Any) -> None:
    if node.get("refdomain") != "py" or str(node.get("refdoc", "")).startswith("api/"):
        return None
    logger.warning(
        "fxkit_docs: unresolved Python reference %r", node.get("reftarget"), location=node
    )
    return None


def setup(app: Any) -> dict:
    """Register the hook (after napoleon's, so it sees the reST napoleon produced)."""
    app.connect("autodoc-process-docstring", _process_docstring, priority=900)
    app.connect("missing-reference", _strict_guide_references, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
