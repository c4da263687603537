"""README.md is generated from nbs/index.ipynb and stays in sync: the project's front door."""

import json
import re

import pytest
from conftest import NBS, ROOT, load_module

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def build_site():
    return load_module(ROOT / "tools" / "build_site.py")


def test_readme_is_generated_from_index(build_site):
    nb = build_site.execute(NBS / "index.ipynb")
    expected = build_site.readme_text(nb)
    assert README == expected, (
        "README.md is out of sync with nbs/index.ipynb (or the results files): run `make readme`"
    )
    figures = build_site.readme_figures(nb)
    assert figures, "the chapter map is missing from the landing page"
    for path in figures:
        assert f"]({path})" in README
        assert (ROOT / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (
            f"{path} is not a committed PNG: run `make readme`"
        )


def test_index_has_a_committed_chapter_map():
    "GitHub shows the notebook as committed: the chapter map must be an output there too."
    cells = json.loads((NBS / "index.ipynb").read_text())["cells"]
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", [])), (
        "nbs/index.ipynb has no committed figure: execute it (tools/build_site.py) and commit"
    )


def test_readme_starts_with_the_two_commands_and_what_they_produce():
    top = README[: README.index("\n## ", README.index("## Two commands") + 1)]
    assert "make course" in top and "make test" in top
    assert "runs/<profile>/results/NN_name.json" in top, "what make course produces is missing"
    assert README.index("make course") < 600, "the two commands must stay at the very top"


def _results_table() -> list[list[str]]:
    section = README[README.index("## Results") :]
    section = section[: section.index("\n## ", 1)]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_readme_has_every_chapter_and_a_headline_table():
    for path in NBS.glob("[0-9][0-9]_*.ipynb"):
        assert f"](nbs/{path.name})" in README, f"{path.name} is missing from the chapter table"
    for link in re.findall(r"\]\((nbs/[^)]+\.(?:ipynb|png))\)", README):
        assert (ROOT / link).exists(), f"README links to a missing {link}"
    header, *rows = _results_table()
    assert header[:6] == ["chapter", "data set", "method", "metric", "baseline", "cpu"]
    assert ("gpu" in header) == (NBS / "results" / "gpu").is_dir(), (
        "the gpu column must follow nbs/results/gpu/"
    )
    assert len(README.split("## Results")[1].split("\n## ")[0]) < 6000, (
        "the results section is a dump again"
    )
    for row in rows:
        assert "-" not in row[5:] and not row[4].endswith(": -"), (
            f"a headline result is not in its results file: {row}"
        )
    experiments = {row[0] for row in rows}
    with_results = {p.stem for p in (NBS / "results" / "cpu").glob("*.json")} - {
        "00_core",
        "01_data",
        "03_transformer",
    }
    assert with_results <= experiments, (
        f"chapters with results but no headline row: {with_results - experiments}"
    )


def test_readme_names_the_capstone_and_the_glossary():
    capstone = [p.name for p in NBS.glob("13_*.ipynb")]
    assert capstone, "chapter 13 (the end-to-end capstone) is missing"
    assert re.search(rf"\]\(nbs/{capstone[0]}\) \(the capstone", README)
    assert "](nbs/glossary.ipynb)" in README


def test_readme_says_what_setup_needs():
    for needed in (
        "Python 3.11 or newer",
        "Debian or Ubuntu",
        "sudo apt-get install",
        "GB of disk",
        "setup took",
        "pip install 'foundation_course[...]'",
        "[course]",
        "[deploy]",
        "[gpu]",
        "[dev]",
    ):
        assert needed in README, f"README.md lacks {needed!r}"


def test_readme_says_how_to_read_run_and_contribute():
    for needed in (
        "make docs",
        "_site/html/index.html",
        "make lab",
        "--profile smoke",
        "--profile gpu",
        "## For contributors",
        "nbdev 3",
        "[tool.nbdev]",
        "nbdev-export",
        "nbdev-clean",
        "make outputs",
        "### Measured budgets",
    ):
        assert needed in README, f"README.md lacks {needed!r}"
