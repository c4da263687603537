"""One style for the library, the notebooks, the tests and the tools: ruff's linter and formatter
(configured in pyproject.toml) find nothing to change. The formatter checks the notebooks, which are
the source, not the modules: those are nbdev-export's output, laid out by nbdev (its `__all__`, one
blank line between cells), and a test elsewhere checks that they match the notebooks."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

RUFF = Path(sys.executable).parent / "ruff"
CHECKS = {
    "lint": ["check", "foundation_course", "nbs", "tests", "tools", "benchmarks"],
    "format": ["format", "--check", "nbs", "tests", "tools", "benchmarks"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_ruff_finds_nothing(name):
    done = subprocess.run([str(RUFF), *CHECKS[name]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff {name}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
