"""What `pip install foundation_course` brings: the library's own needs, the rest in extras; the
wheel's metadata says so; installed versions meet the declared lower bounds; a fresh machine without
root
stops at setup with the one command to run."""

import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# Only the runner, ONNX, QLoRA and online data sets use these: the library must not pull them in.
NOT_BASE = {
    "papermill",
    "nbclient",
    "ipykernel",
    "onnx",
    "onnxruntime",
    "bitsandbytes",
    "datasets",
    "nbdev",
}
LIBRARY = {
    "torch",
    "torchvision",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "safetensors",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "tqdm",
}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower()


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory) -> email.message.Message:
    "The METADATA of a wheel built from a copy of the checkout (the build writes nothing into it)."
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(
        ROOT / "foundation_course",
        src / "foundation_course",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = dist.glob("foundation_course-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
        message = email.message_from_bytes(zf.read(metadata))
    message["X-Files"] = " ".join(names)
    message["X-Entry-Points"] = entry_points.replace("\n", " ")
    return message


def test_base_dependencies_are_what_the_library_needs():
    base = {_name(r) for r in PROJECT["dependencies"]}
    assert base == LIBRARY, f"base dependencies differ from the library's needs: {base ^ LIBRARY}"
    extras = PROJECT["optional-dependencies"]
    assert {_name(r) for r in extras["course"]} >= {"papermill", "nbclient", "ipykernel"}
    assert {_name(r) for r in extras["deploy"]} == {"onnx", "onnxruntime"}
    assert {_name(r) for r in extras["gpu"]} == {"bitsandbytes"}
    assert {_name(r) for r in extras["online"]} == {"datasets"}
    assert "foundation_course[course,deploy,online]" in extras["dev"], (
        "make setup must install what the course runs"
    )


def test_wheel_metadata_has_the_base_dependencies_and_the_extras(wheel_metadata):
    requires = wheel_metadata.get_all("Requires-Dist")
    base = {_name(r) for r in requires if "extra ==" not in r}
    assert base == LIBRARY and not base & NOT_BASE
    assert set(wheel_metadata.get_all("Provides-Extra")) == {
        "course",
        "deploy",
        "gpu",
        "online",
        "dev",
    }
    by_extra = {}
    for r in requires:
        req = Requirement(r)
        for extra in ("course", "deploy", "gpu", "online", "dev"):
            if req.marker and req.marker.evaluate({"extra": extra}):
                by_extra.setdefault(extra, set()).add(req.name.lower())
    assert by_extra["deploy"] == {"onnx", "onnxruntime"} and by_extra["gpu"] == {"bitsandbytes"}
    assert {"papermill", "nbclient", "ipykernel"} <= by_extra["course"]
    assert {"nbdev", "pytest", "ruff", "foundation_course"} <= by_extra["dev"]
    assert wheel_metadata["Requires-Python"] == ">=3.11"
    assert "foundation-course = foundation_course.cli:main" in wheel_metadata["X-Entry-Points"]
    files = wheel_metadata["X-Files"].split()
    assert "foundation_course/cli.py" in files and not [
        f for f in files if f.startswith(("nbs/", "tests/"))
    ]


def _declared() -> list[Requirement]:
    extras = PROJECT["optional-dependencies"]
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    found += [
        Requirement(r) for group in ("course", "deploy", "online", "dev") for r in extras[group]
    ]
    return [r for r in found if r.name != "foundation_course"]


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_installed_version_meets_the_declared_bounds(requirement):
    version = importlib.metadata.version(requirement.name)
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{requirement.name} {version} is installed; pyproject.toml: {requirement.specifier}"
    )


def test_nbdev_bound_allows_only_versions_with_cell_timeout():
    (nbdev,) = [r for r in _declared() if r.name == "nbdev"]
    assert not nbdev.specifier.contains("3.3.10") and nbdev.specifier.contains("3.3.11")


def _fake_non_root(tmp_path: Path) -> dict:
    "PATH with an `id` that answers like an ordinary user's."
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "id").chmod(0o755)
    return dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")


def test_make_without_root_stops_at_setup_naming_the_apt_command(tmp_path):
    venv = tmp_path / "venv"
    done = subprocess.run(
        [
            "make",
            "-s",
            "--no-print-directory",
            f"VENV={venv}",
            "CHROMIUM=/nonexistent/chromium",
            "FASHION_MNIST=/nonexistent/fashion-mnist",
            "test",
        ],
        cwd=ROOT,
        env=_fake_non_root(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (
        "Missing Debian packages. Run: sudo apt-get update && "
        "sudo apt-get install -y dataset-fashion-mnist chromium"
    )
    assert "-m pytest" not in done.stdout + done.stderr and not venv.exists(), (
        "make went on past the missing packages"
    )


def test_data_stamp_depends_on_the_pins():
    done = subprocess.run(
        ["make", "-p", "-n", "-q", ".venv/.stamp-data"], cwd=ROOT, capture_output=True, text=True
    )
    rule = next(line for line in done.stdout.splitlines() if line.startswith(".venv/.stamp-data:"))
    assert "foundation_course/data.py" in rule, (
        "a changed pin in data.py would not reinstall the offline packages"
    )


def test_gpu_carry_parts_fit_one_transfer_and_reassemble(tmp_path):
    "tools/gpu_run.sh packs files into parts under the limit; staged again, they are the same."
    rng = np.random.default_rng(0)
    originals = {
        "wheels/big.whl": 10_000,
        "wheels/small.whl": 3_000,
        "data/pattern/a&b.csv": 5_000,
        "x.gz": 7_000,
    }
    for rel, size in originals.items():
        (tmp_path / "carry" / "all" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "carry" / "all" / rel).write_bytes(rng.bytes(size))
    expected = {rel: (tmp_path / "carry" / "all" / rel).read_bytes() for rel in originals}
    env = dict(
        os.environ,
        FC_GPU_PART_BYTES="8192",
        FC_GPU_CHUNK="4K",
        FC_GPU_STAGE=str(tmp_path / "stage"),
    )
    script = str(ROOT / "tools" / "gpu_run.sh")
    subprocess.run(
        [script, "pack", str(tmp_path / "carry")], env=env, check=True, capture_output=True
    )
    parts = sorted((tmp_path / "carry").glob("part*"))
    assert len(parts) == 4, "25 KB in parts of 8 KiB: four parts when packed largest first"
    for part in parts:
        packed = [f for f in part.rglob("*") if f.is_file() and f.name != "manifest.tsv"]
        assert sum(f.stat().st_size for f in packed) <= 8192, f"{part.name} is over the limit"
        manifest = (part / "manifest.tsv").read_text()
        assert manifest == (parts[0] / "manifest.tsv").read_text(), "parts list different files"
        listed = {tuple(line.split("\t")) for line in manifest.splitlines()}
        assert {
            (part.name, str(f.stat().st_size), f.relative_to(part).as_posix()) for f in packed
        } <= listed, f"the manifest misses files of {part.name}"
        subprocess.run([script, "stage", str(part)], env=env, check=True, capture_output=True)
    subprocess.run([script, "assemble"], env=env, check=True, capture_output=True)
    staged = tmp_path / "stage" / "carry"
    assert {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()} == {
        *originals,
        "manifest.tsv",
    }
    assert all((staged / rel).read_bytes() == data for rel, data in expected.items())


def test_gpu_run_stops_naming_a_part_not_staged(tmp_path):
    "`run` checks the manifest before installing anything: a part not staged is named."
    rng = np.random.default_rng(1)
    for rel in ("wheels/a.whl", "wheels/b.whl", "x.gz"):
        (tmp_path / "carry" / "all" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "carry" / "all" / rel).write_bytes(rng.bytes(6_000))
    env = dict(
        os.environ,
        FC_GPU_PART_BYTES="8192",
        FC_GPU_STAGE=str(tmp_path / "stage"),
        FC_GPU_CARRY=str(tmp_path / "nothing-to-stage"),
    )
    script = str(ROOT / "tools" / "gpu_run.sh")
    subprocess.run(
        [script, "pack", str(tmp_path / "carry")], env=env, check=True, capture_output=True
    )
    for part in ("part1", "part3"):
        subprocess.run(
            [script, "stage", str(tmp_path / "carry" / part)],
            env=env,
            check=True,
            capture_output=True,
        )
    done = subprocess.run(
        [script, "run", str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "not staged (or incomplete): part2;" in done.stdout + done.stderr
    assert not (tmp_path / "stage" / "site").exists(), "it installed before the check"


FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2" = "-m foundation_course.cli" ]; then
    mkdir -p runs/gpu/results runs/gpu/artifacts/model
    echo '{}' >runs/gpu/$4.ipynb
    echo '{}' >runs/gpu/results/$4.json
    head -c 1000 /dev/zero >runs/gpu/artifacts/model/model.safetensors
fi
"""


def test_gpu_run_returns_results_only_within_its_budget(tmp_path):
    "On a stand-in machine: each chapter's limit ends inside the budget; no artefacts come back."
    (tmp_path / "repo" / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "gpu_run.sh", tmp_path / "repo" / "tools")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(FAKE_PYTHON)
    (tmp_path / "bin" / "python3").chmod(0o755)
    for rel in ("wheels/a.whl", "fashion-mnist/train-images-idx3-ubyte.gz"):
        (tmp_path / "carry" / "all" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "carry" / "all" / rel).write_bytes(b"x")
    old = tmp_path / "repo" / "runs" / "gpu" / "results" / "old.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    env = dict(
        os.environ,
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        FC_GPU_STAGE=str(tmp_path / "stage"),
        FC_GPU_CARRY=str(tmp_path / "carry"),
        FC_GPU_TOTAL_S="300",
    )
    script = str(tmp_path / "repo" / "tools" / "gpu_run.sh")
    subprocess.run([script, "pack", str(tmp_path / "carry")], env=env, check=True)
    done = subprocess.run(
        [script, "run", str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    limits = re.findall(r"limit (\d+) s \(at (\d+) s\)", done.stdout)
    assert len(limits) == 4, done.stdout
    for limit, start in limits:
        assert int(start) + int(limit) + 10 <= 300 - 30, "a chapter could outlast the budget"
    with tarfile.open(tmp_path / "out" / "gpu_run.tar.gz") as archive:
        names = set(archive.getnames())
    chapters = ("05_contrastive", "07_finetuning", "08_adapters", "09_lora_peft")
    assert names == {f"gpu/{c}.ipynb" for c in chapters} | {
        f"gpu/results/{c}.json" for c in chapters
    }, "only the executed notebooks and results, from this run alone, come back"
    assert (tmp_path / "stage" / "carry" / "data" / "FashionMNIST" / "raw").is_dir()
