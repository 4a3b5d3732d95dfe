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


def test_readme_links_stay_inside_the_repo():
    """Every relative link in the README and docs/ names a file of this repository."""
    root = README.parent
    for page in [README, *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(root), f"{page.name} links outside the repo: {target}"
            assert path.exists(), f"{page.name} links to a missing file: {target}"
    assert "../shared" not in README.read_text()
