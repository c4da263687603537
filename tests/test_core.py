import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from foundation_course import core


def test_resolve_profile(monkeypatch):
    monkeypatch.delenv("IN_TEST", raising=False)
    assert core.resolve_profile("smoke") == "smoke"
    assert core.resolve_profile("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("IN_TEST", "1")
    assert core.resolve_profile("auto") == "smoke"
    with pytest.raises(ValueError, match="auto, smoke, cpu, gpu"):
        core.resolve_profile("laptop")


def test_by_profile_needs_resolved_profile():
    assert core.by_profile("cpu", smoke=1, cpu=2, gpu=3) == 2
    with pytest.raises(ValueError, match="resolve_profile"):
        core.by_profile("auto", smoke=1, cpu=2, gpu=3)


def test_device_choice_and_override(monkeypatch):
    monkeypatch.delenv("FC_DEVICE", raising=False)
    assert core.get_device().type == core.available_devices()[0]
    monkeypatch.setenv("FC_DEVICE", "cpu")
    assert core.get_device() == torch.device("cpu")
    monkeypatch.setenv("FC_DEVICE", "tpu")
    with pytest.raises(ValueError, match="FC_DEVICE"):
        core.get_device()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            core.get_device("cuda")


def test_cpu_has_bf16_reads_the_cpu_flags():
    assert core.cpu_has_bf16("flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert core.cpu_has_bf16("flags : fpu amx_bf16 amx_tile\n")
    assert not core.cpu_has_bf16("flags : fpu sse avx2 avx512f avx512_vnni\n")
    assert isinstance(core.cpu_has_bf16(), bool)


def test_mixed_precision_for_asks_for_bf16_only_on_a_native_cpu_outside_the_gpu_profile(
    monkeypatch,
):
    monkeypatch.setattr(core, "cpu_has_bf16", lambda: True)
    assert core.mixed_precision_for("cpu") == "bf16" and core.mixed_precision_for("smoke") == "bf16"
    assert core.mixed_precision_for("gpu") == "auto"
    monkeypatch.setattr(core, "cpu_has_bf16", lambda: False)
    assert core.mixed_precision_for("cpu") == "auto"


def test_seed_everything_repeats_every_generator():
    import random

    import numpy as np

    draws = []
    for _ in range(2):
        core.seed_everything(7)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_count_parameters_matches_transformers_and_counts_tied_once():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
    )
    counts = core.count_parameters(model)
    assert counts["total"] == model.num_parameters()
    model.transformer.wte.requires_grad_(False)
    counts = core.count_parameters(model)
    assert counts["trainable"] == counts["total"] - 100 * 32
    assert 0 < counts["trainable_pct"] < 100


def test_peak_memory_sees_a_large_allocation():
    core.reset_peak_memory()
    before = core.peak_memory_mb()["rss_mb"]
    block = torch.ones(32, 2**20)  # 128 MiB
    assert core.peak_memory_mb()["rss_mb"] - before > 100
    del block


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    core.atomic_write_text(target, "old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(
        core.os, "fsync", crash
    )  # fail after the new bytes were written, before the rename
    with pytest.raises(OSError, match="disk full"):
        core.atomic_write_text(target, "new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_results_roundtrip(runs_dir):
    results = core.Results("99_demo", "smoke")
    results.log(acc=torch.tensor(0.5), curve=[1.0, float("nan")], nested={"a": 1})
    path = results.save()
    assert path == runs_dir / "smoke" / "results" / "99_demo.json"
    record = core.load_results(path.parent)["99_demo"]
    assert record["metrics"] == {"acc": 0.5, "curve": [1.0, None], "nested": {"a": 1}}
    assert record["profile"] == "smoke" and record["device"].split(":")[0] in ("cpu", "cuda", "mps")


class FakeClock:
    "A perf_counter that moves on by `step` seconds at every call: every timed span lasts `step`."

    def __init__(self, step: float):
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("n,step", [(64, 0.25), (32, 0.5), (100, 1.0)])
def test_matmul_flops_is_2n_cubed_over_the_timed_run(monkeypatch, n, step):
    monkeypatch.setattr(core.time, "perf_counter", FakeClock(step))
    assert core.measure_matmul_flops(n, repeats=2, device="cpu") == 2 * n**3 / step


def test_matmul_flops_keeps_the_fastest_run(monkeypatch):
    times = iter(
        [0.0, 10.0, 10.5, 20.0, 20.2, 30.0, 30.3]
    )  # warm-up start, then 3 (start, end) pairs
    monkeypatch.setattr(core.time, "perf_counter", lambda: next(times))
    assert core.measure_matmul_flops(64, repeats=3, device="cpu") == pytest.approx(2 * 64**3 / 0.2)


def test_results_record_the_runs_provenance(runs_dir, monkeypatch):
    monkeypatch.delenv("FC_RUN_ID", raising=False)
    monkeypatch.setattr(core, "_measured", {})
    first = json.loads(core.Results("98_a", "smoke").save().read_text())
    assert re.fullmatch(r"[0-9a-f]{12}", first["run_id"]) and first["run_id"] == core.run_id()
    assert "matmul_gflops" not in first
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=core.project_root(),
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert first["git_commit"] == (head or "unknown")
    assert (
        first["cpu_cores"] == len(os.sched_getaffinity(0)) and first["torch"] == torch.__version__
    )
    assert first["started_at"] <= first["saved_at"] and first["started_at"].endswith("+00:00")
    monkeypatch.setenv("FC_RUN_ID", "course-run-7")
    monkeypatch.setattr(core.time, "perf_counter", FakeClock(1.0))
    core.measure_matmul_flops(100, repeats=1, device="cpu")  # 2e6 FLOPs in 1 s
    second = json.loads(core.Results("98_b", "smoke").save().read_text())
    assert second["run_id"] == "course-run-7" and second["matmul_gflops"] == 0.002


def test_git_commit_is_unknown_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert core.git_commit() == "unknown"
    monkeypatch.chdir(core.Path(__file__).parents[1])

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(core.subprocess, "run", no_git)
    assert core.git_commit() == "unknown"


@core.exercise
def check_double(fn) -> None:
    "Exercise check used by the tests below."
    assert fn(3) == 6, f"double(3) should be 6, got {fn(3)}"


def test_exercise_says_not_implemented_for_a_stub(capsys):
    def double(x):
        raise NotImplementedError("Hint: add x to itself.")

    assert check_double(double) is False
    assert capsys.readouterr().out == "double: not implemented yet. Hint: add x to itself.\n"


def test_exercise_says_correct_for_a_right_answer(capsys):
    def double(x):
        return x + x

    assert check_double(double) is True
    assert capsys.readouterr().out == "double: correct\n"
    assert check_double.__name__ == "check_double" and "Exercise check" in check_double.__doc__


def test_exercise_lets_a_wrong_answers_assertion_through(capsys):
    def double(x):
        return x * x

    with pytest.raises(AssertionError, match="should be 6, got 9"):
        check_double(double)
    assert "correct" not in capsys.readouterr().out


def test_find_artifact_returns_a_filled_folder(tmp_path, recwarn):
    folder = core.artifact_dir("mlm-domain", "smoke", tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert core.find_artifact("mlm-domain", "smoke", tmp_path) == folder
    assert not recwarn.list


@pytest.mark.parametrize(
    "name,chapter,expected",
    [
        (
            "mlm-domain",
            None,
            "run chapter 04_pretraining first (foundation-course run 04 --profile smoke)",
        ),
        ("my-model", "12_deployment", "run chapter 12_deployment first"),
        ("my-model", None, "run the chapter that saves it first"),
    ],
)
def test_find_artifact_warns_with_the_chapter_to_run(tmp_path, capsys, name, chapter, expected):
    (core.artifact_dir(name, "smoke", tmp_path)).mkdir(parents=True)  # empty: an interrupted save
    with pytest.warns(UserWarning, match=re.escape(expected)) as caught:
        assert core.find_artifact(name, "smoke", tmp_path, chapter=chapter) is None
    assert name in str(caught[0].message)
    assert capsys.readouterr() == ("", "")


def test_relative_path_is_relative_to_the_project():
    root = core.project_root()
    assert core.relative_path(root / "runs" / "cpu") == Path("runs/cpu")
    assert core.relative_path("/") == Path("/")


LIBRARY_NOISE = (
    "LOAD REPORT",
    "newly initialized",
    "Loading weights",
    "FutureWarning",
    "DeprecationWarning",
    "TqdmWarning",
    "IProgress",
    "No CUDA runtime",
)


def _run_noisy_libraries(when: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in core.QUIET_ENV}  # as in a fresh shell
    script = Path(__file__).parent / "scripts" / "noisy_libraries.py"
    done = subprocess.run(
        [sys.executable, str(script), when],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return done.stdout + done.stderr


def test_the_script_is_noisy_without_the_course():
    out = _run_noisy_libraries("never")
    assert "LOAD REPORT" in out and "FutureWarning" in out and "TqdmWarning" in out


@pytest.mark.parametrize("when", ["course-first", "transformers-first"])
def test_importing_the_course_quiets_the_libraries_but_not_its_own_warnings(when):
    out = _run_noisy_libraries(when)
    assert not [noise for noise in LIBRARY_NOISE if noise in out], out
    assert "The artefact 'lora-adapter' is missing" in out


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_usual_file_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = core.atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_full_disk_names_the_file_and_the_fix_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "results" / "00_core.json"
    core.atomic_write_text(target, "old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(core.os, "fsync", no_space)
    with pytest.raises(
        OSError,
        match=r"Could not write .*00_core\.json \(No space left on device\): "
        r"free some disk space there, or .*out_dir",
    ) as caught:
        core.atomic_write_text(target, "new" * 1000)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == [
        "00_core.json"
    ]


def test_unwritable_out_dir_names_the_folder_and_the_fix(tmp_path, monkeypatch):
    def denied(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(
        core.tempfile, "mkstemp", denied
    )  # what a read-only folder does, even as root
    with pytest.raises(
        PermissionError,
        match=r"Could not write .*results/99_demo\.json "
        r"\(Permission denied\): make the folder writable, or .*out_dir",
    ):
        core.Results("99_demo", "smoke", out_dir=tmp_path).save()
    assert list((tmp_path / "results").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir_fails_clearly_and_leaves_nothing(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(
            PermissionError,
            match=r"Could not write .*run/results/99_demo\.json.*make the folder writable",
        ):
            core.Results("99_demo", "smoke", out_dir=tmp_path / "run").save()
        assert list(tmp_path.iterdir()) == []
    finally:
        tmp_path.chmod(0o755)
