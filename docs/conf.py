"""Sphinx configuration for fxkit's documentation.

Build with ``make docs`` (or ``sphinx-build -W --keep-going docs docs/_build``). The API
reference and the compatibility/benchmark tables are generated from the code each time
the configuration is read, so they can't drift from the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Prefer the checkout's sources over an installed copy; scripts/ holds the generator.
sys.path[:0] = [str(REPO / "src"), str(REPO / "scripts"), str(HERE / "_ext")]

import docs_api  # noqa: E402

import fxkit  # noqa: E402

project = "fxkit"
author = "the fxkit authors"
copyright = "the fxkit authors"
release = version = fxkit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "fxkit_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "api/_generated", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False
# Defaults are shown as their repr; preserving source text costs a parse per function.
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "furo"
html_title = f"fxkit {release}"
html_static_path: list[str] = []

docs_api.generate(HERE)
