"""The README's tour is real code: run it."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_tour_runs():
    text = README.read_text()
    tour = text[text.index("## A short tour") :]
    code = re.search(r"```python\n(.*?)```", tour, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    gm = scope["gm"]
    assert "torch.mul(param, x)" in gm.code  # the mul edit, then the rewrite, both landed
