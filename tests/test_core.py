import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

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


def test_mixed_precision_for_asks_for_bf16_only_on_a_native_cpu_outside_the_gpu_profile(monkeypatch):
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
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16))
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

    monkeypatch.setattr(core.os, "fsync", crash)  # fail after the new bytes were written, before the rename
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


def test_matmul_flops_is_positive_and_plausible():
    rate = core.measure_matmul_flops(256, repeats=2, device="cpu")
    assert 1e8 < rate < 1e14


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


@pytest.mark.parametrize("name,chapter,expected", [
    ("mlm-domain", None, "run chapter 04_pretraining first (foundation-course run 04 --profile smoke)"),
    ("my-model", "12_deployment", "run chapter 12_deployment first"),
    ("my-model", None, "run the chapter that saves it first"),
])
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


LIBRARY_NOISE = ("LOAD REPORT", "newly initialized", "Loading weights", "FutureWarning", "DeprecationWarning",
                 "TqdmWarning", "IProgress", "No CUDA runtime")


def _run_noisy_libraries(when: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in core.QUIET_ENV}  # as in a fresh shell
    script = Path(__file__).parent / "scripts" / "noisy_libraries.py"
    done = subprocess.run([sys.executable, str(script), when], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    return done.stdout + done.stderr


def test_the_script_is_noisy_without_the_course():
    out = _run_noisy_libraries("never")
    assert "LOAD REPORT" in out and "FutureWarning" in out and "TqdmWarning" in out


@pytest.mark.parametrize("when", ["course-first", "transformers-first"])
def test_importing_the_course_quiets_the_libraries_but_not_its_own_warnings(when):
    out = _run_noisy_libraries(when)
    assert not [noise for noise in LIBRARY_NOISE if noise in out], out
    assert "The artefact 'lora-adapter' is missing" in out
