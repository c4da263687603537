"""Every notebook runs headless under papermill with the smoke profile; the nbdev sources are clean and exported."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from conftest import NBS, ROOT

NOTEBOOKS = sorted(p.name for p in NBS.glob("*.ipynb"))
BIN = Path(sys.executable).parent
SMOKE_TIMEOUT = 240  # the budget is 60 s per notebook; this catches a hang, not a slow machine


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    "One output folder for the whole smoke run, so later chapters find earlier chapters' artefacts, as in a real run."
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_smoke_profile(name, smoke_dir, tmp_path):
    has_params = any("parameters" in c["metadata"].get("tags", []) for c in json.loads((NBS / name).read_text())["cells"])
    params = dict(profile="smoke", out_dir=str(smoke_dir)) if has_params else {}
    pm.execute_notebook(str(NBS / name), str(tmp_path / name), parameters=params, kernel_name="python3",
                        cwd=str(NBS), execution_timeout=SMOKE_TIMEOUT, progress_bar=False)
    if has_params:
        record = json.loads((smoke_dir / "results" / f"{Path(name).stem}.json").read_text())
        assert record["profile"] == "smoke", "the injected profile did not take effect"
        assert record["metrics"], "the chapter recorded no results"


def _copy_project(dest: Path) -> Path:
    for part in ("nbs", "foundation_course"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_nbdev_export_leaves_no_diff(tmp_path):
    copy = _copy_project(tmp_path)
    before = _tree(copy / "foundation_course")
    subprocess.run([str(BIN / "nbdev-export")], cwd=copy, check=True, capture_output=True)
    assert _tree(copy / "foundation_course") == before, "foundation_course/ is out of date: run nbdev-export"


def test_nbdev_clean_leaves_no_diff_and_keeps_parameters_tag(tmp_path):
    copy = _copy_project(tmp_path)
    before = _tree(copy / "nbs")
    subprocess.run([str(BIN / "nbdev-clean")], cwd=copy, check=True, capture_output=True)
    after = _tree(copy / "nbs")
    changed = [k for k in before if before[k] != after.get(k)]
    assert not changed, f"notebooks not clean: {changed}; run nbdev-clean"
    for name in NOTEBOOKS:
        nb = json.loads((copy / "nbs" / name).read_text())
        if name[:2].isdigit() and name != "90_cli.ipynb":
            assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"]), f"{name} lost its parameters cell"


def test_auto_profile_is_cpu_without_cuda_and_injection_overrides_it(tmp_path):
    import torch
    nb = tmp_path / "probe.ipynb"
    src = json.loads((NBS / "00_core.ipynb").read_text())
    params = [c for c in src["cells"] if "parameters" in c["metadata"].get("tags", [])][0]
    probe = dict(cell_type="code", metadata={}, execution_count=None, outputs=[],
                 source="from foundation_course.core import resolve_profile\nresolved = resolve_profile(profile)\nprint('RESOLVED', resolved)")
    src["cells"] = [params, probe]
    nb.write_text(json.dumps(src))
    for injected, expected in ((None, "gpu" if torch.cuda.is_available() else "cpu"), ("smoke", "smoke")):
        out = tmp_path / f"out-{injected}.ipynb"
        pm.execute_notebook(str(nb), str(out), parameters={} if injected is None else dict(profile=injected),
                            kernel_name="python3", progress_bar=False)
        outputs = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])]
        text = "".join("".join(o.get("text", [])) for o in outputs)
        assert f"RESOLVED {expected}" in text


def test_nbdev_test_passes():
    done = subprocess.run([str(BIN / "nbdev-test"), "--n-workers", "1", "--timing", "--cell-timeout", "240"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
