"""One style for the library and the notebooks: ruff's linter and formatter (configured in
pyproject.toml) find nothing to change. The formatter checks the notebooks, which are the source:
the modules are nbdev-export's output, laid out by nbdev (its `__all__`, one blank line between
cells), and a test elsewhere checks that they match the notebooks."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

RUFF = Path(sys.executable).parent / "ruff"
CHECKS = {
    "lint": ["check", "foundation_course", "nbs"],
    "format": ["format", "--check", "nbs"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_ruff_finds_nothing(name):
    done = subprocess.run([str(RUFF), *CHECKS[name]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff {name}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
