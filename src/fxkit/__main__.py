"""``python -m fxkit``: the fxkit command line (see :mod:`fxkit.cli`)."""

from fxkit.cli import main

raise SystemExit(main())
