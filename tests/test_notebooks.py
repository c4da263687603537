"""Every notebook runs headless under papermill at the smoke profile; nbdev sources clean."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest
from conftest import NBS, NOISE, ROOT, output_text

NOTEBOOKS = sorted(p.name for p in NBS.glob("*.ipynb"))
BIN = Path(sys.executable).parent
SMOKE_TIMEOUT = 240  # the budget is 60 s per notebook; this catches a hang, not a slow machine


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    "One output folder for the smoke run: later chapters find earlier ones' artefacts."
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_smoke_profile(name, smoke_dir):
    has_params = any(
        "parameters" in c["metadata"].get("tags", [])
        for c in json.loads((NBS / name).read_text())["cells"]
    )
    params = dict(profile="smoke", out_dir=str(smoke_dir)) if has_params else {}
    executed = smoke_dir / "executed" / name
    executed.parent.mkdir(exist_ok=True)
    pm.execute_notebook(
        str(NBS / name),
        str(executed),
        parameters=params,
        kernel_name="python3",
        cwd=str(NBS),
        execution_timeout=SMOKE_TIMEOUT,
        progress_bar=False,
    )
    if has_params:
        record = json.loads((smoke_dir / "results" / f"{Path(name).stem}.json").read_text())
        assert record["profile"] == "smoke", "the injected profile did not take effect"
        assert record["metrics"], "the chapter recorded no results"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_smoke_outputs_are_quiet_and_portable(name, smoke_dir):
    executed = smoke_dir / "executed" / name
    if not executed.exists():
        pytest.skip(f"{name} did not run at the smoke profile in this session")
    text = output_text(executed)
    found = [noise for noise in NOISE if noise in text]
    assert not found, f"{name}'s outputs show {found}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_are_quiet_and_portable(name):
    "What GitHub, the site and JupyterLab show: the outputs committed in nbs/."
    found = [noise for noise in NOISE if noise in output_text(NBS / name)]
    assert not found, f"nbs/{name}'s committed outputs show {found}"


GPU_CHAPTERS = ["05_contrastive", "07_finetuning", "08_adapters", "09_lora_peft"]
GPU_DRY_RUN = dict(profile="gpu", max_steps=1, max_examples=32)
GPU_DRY_RUN_TIMEOUT = 600


def _parameter_names(name: str) -> set[str]:
    cells = json.loads((NBS / f"{name}.ipynb").read_text())["cells"]
    source = "\n".join(
        "".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", [])
    )
    return set(re.findall(r"^(\w+)\s*=", source, re.M))


@pytest.fixture(scope="session")
def gpu_dry_run_dir(tmp_path_factory):
    "One folder for the dry run of the gpu chapters, in order, as tools/gpu_run.sh runs them."
    return tmp_path_factory.mktemp("gpu-dry-run")


@pytest.mark.parametrize("name", GPU_CHAPTERS)
def test_gpu_profile_runs_one_step_on_the_cpu(name, gpu_dry_run_dir, monkeypatch):
    "Each GPU chapter's gpu configuration, one step on 32 examples: a gpu-branch typo fails."
    missing = {"max_steps", "max_examples"} - _parameter_names(name)
    if missing:
        pytest.skip(f"{name}'s parameters cell has no {', '.join(sorted(missing))} yet")
    monkeypatch.setenv("FC_DEVICE", "cpu")  # the kernel inherits it
    executed = gpu_dry_run_dir / f"{name}.ipynb"
    pm.execute_notebook(
        str(NBS / f"{name}.ipynb"),
        str(executed),
        parameters=dict(GPU_DRY_RUN, out_dir=str(gpu_dry_run_dir)),
        kernel_name="python3",
        cwd=str(NBS),
        execution_timeout=GPU_DRY_RUN_TIMEOUT,
        progress_bar=False,
    )
    record = json.loads((gpu_dry_run_dir / "results" / f"{name}.json").read_text())
    assert record["profile"] == "gpu" and record["device"] == "cpu" and record["metrics"]


def _copy_project(dest: Path) -> Path:
    for part in ("nbs", "foundation_course"):
        shutil.copytree(
            ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "results")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _tree(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_nbdev_export_leaves_no_diff(tmp_path):
    copy = _copy_project(tmp_path)
    before = _tree(copy / "foundation_course")
    subprocess.run([str(BIN / "nbdev-export")], cwd=copy, check=True, capture_output=True)
    assert _tree(copy / "foundation_course") == before, (
        "foundation_course/ is out of date: run nbdev-export"
    )


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
            assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"]), (
                f"{name} lost its parameters cell"
            )


def test_auto_profile_is_cpu_without_cuda_and_injection_overrides_it(tmp_path):
    import torch

    nb = tmp_path / "probe.ipynb"
    src = json.loads((NBS / "00_core.ipynb").read_text())
    params = [c for c in src["cells"] if "parameters" in c["metadata"].get("tags", [])][0]
    probe = dict(
        cell_type="code",
        metadata={},
        execution_count=None,
        outputs=[],
        source="from foundation_course.core import resolve_profile\n"
        "resolved = resolve_profile(profile)\nprint('RESOLVED', resolved)",
    )
    src["cells"] = [params, probe]
    nb.write_text(json.dumps(src))
    for injected, expected in (
        (None, "gpu" if torch.cuda.is_available() else "cpu"),
        ("smoke", "smoke"),
    ):
        out = tmp_path / f"out-{injected}.ipynb"
        pm.execute_notebook(
            str(nb),
            str(out),
            parameters={} if injected is None else dict(profile=injected),
            kernel_name="python3",
            progress_bar=False,
        )
        outputs = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])]
        text = "".join("".join(o.get("text", [])) for o in outputs)
        assert f"RESOLVED {expected}" in text


def _listing(folder: Path) -> dict:
    return (
        {
            p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
        }
        if folder.exists()
        else {}
    )


def test_nbdev_test_passes_and_writes_nothing_into_the_checkout(tmp_path):
    before = _listing(ROOT / "runs")
    env = dict(os.environ, FC_RUNS_DIR=str(tmp_path / "runs"))
    done = subprocess.run(
        [str(BIN / "nbdev-test"), "--n-workers", "1", "--timing", "--cell-timeout", "240"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _listing(ROOT / "runs") == before, "nbdev-test wrote into the checkout's runs/"
    assert any((tmp_path / "runs").rglob("*.json")), (
        "the chapters wrote no results into FC_RUNS_DIR"
    )


# Keys that hold a time, a rate, an identity or a moment: they differ between two identical runs.
VARYING = re.compile(r"(_s|_ms|per_s|_at|gflops|throughput|latency|run_id|commit)$|time")
DETERMINISM_CHAPTER = (
    "02_training"  # trains a CNN: the cheapest chapter whose numbers depend on every seed
)


def _stable(record):
    if isinstance(record, dict):
        return {k: _stable(v) for k, v in record.items() if not VARYING.search(k)}
    return record


def test_a_chapter_run_twice_gives_identical_results(tmp_path):
    records = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        out.mkdir()
        pm.execute_notebook(
            str(NBS / f"{DETERMINISM_CHAPTER}.ipynb"),
            str(out / "executed.ipynb"),
            parameters=dict(profile="smoke", out_dir=str(out)),
            kernel_name="python3",
            cwd=str(NBS),
            execution_timeout=SMOKE_TIMEOUT,
            progress_bar=False,
        )
        records.append(json.loads((out / "results" / f"{DETERMINISM_CHAPTER}.json").read_text()))
    first, second = (_stable(r) for r in records)
    assert first["metrics"], "nothing left to compare"
    assert first == second, (
        "two runs of the same chapter into fresh folders recorded different results"
    )
