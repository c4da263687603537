"""README.md is generated from nbs/index.ipynb and stays in sync with it; it is the project's front door."""
import importlib.util
import json
import re

import pytest

from conftest import NBS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def build_site():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "tools" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_generated_from_index(build_site):
    expected = build_site.readme_text(build_site.execute(NBS / "index.ipynb"))
    assert README == expected, "README.md is out of sync with nbs/index.ipynb (or the results files): run `make readme`"


def test_readme_starts_with_the_two_commands_and_what_they_produce():
    top = README[:README.index("\n## ", README.index("## Two commands") + 1)]
    assert "make course" in top and "make test" in top
    assert "runs/<profile>/results/NN_name.json" in top, "what make course produces is missing"
    assert README.index("make course") < 600, "the two commands must stay at the very top"


def test_readme_has_every_chapter_and_its_results():
    for path in NBS.glob("[0-9][0-9]_*.ipynb"):
        assert f"](nbs/{path.name})" in README, f"{path.name} is missing from the chapter table"
    for link in re.findall(r"\]\((nbs/[^)]+\.ipynb)\)", README):
        assert (ROOT / link).exists(), f"README links to a missing {link}"
    for result in (NBS / "results" / "cpu").glob("*.json"):
        record = json.loads(result.read_text())
        assert f"{record['chapter']}  [cpu profile" in README, f"the results table lacks {record['chapter']}"


def test_readme_says_how_to_read_run_and_contribute():
    for needed in ("make docs", "_site/html/index.html", "make lab", "--profile smoke", "--profile gpu",
                   "## For contributors", "nbdev 3", "[tool.nbdev]", "nbdev-export", "nbdev-clean", "make outputs",
                   "### Measured budgets"):
        assert needed in README, f"README.md lacks {needed!r}"
