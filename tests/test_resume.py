"""Checkpoints under failure: corrupt, missing or foreign files, a nan loss, a full or unwritable
disk, a kill in the middle of a write, and every random state restored on resume."""

import errno
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import launch_two_cpu_processes
from safetensors.torch import load_file
from torch import nn

from foundation_course import training
from foundation_course.core import seed_everything

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
BIN = Path(sys.executable).parent


def toy_data(n=128, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long())


def mlp(width=16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, 2))


def train(
    checkpoint_dir=None, model=None, resume=False, batch_size=16, loss_fn=training.default_loss
):
    "One epoch of 8 steps, a checkpoint every 2; returns the model."
    model = mlp() if model is None else model
    training.fit(
        model,
        toy_data(),
        batch_size=batch_size,
        lr=1e-2,
        loss_fn=loss_fn,
        seed=0,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        resume=resume,
        progress=False,
    )
    return model


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def latest(folder):
    return Path(folder) / (Path(folder) / "latest").read_text().strip()


def crash_after(n_batches, loss_fn=training.default_loss):
    "A loss that dies like a killed process after `n_batches` batches."
    seen = 0

    def loss(model, batch):
        nonlocal seen
        seen += 1
        if seen > n_batches:
            raise KeyboardInterrupt("simulated crash")
        return loss_fn(model, batch)

    return loss


@pytest.fixture
def finished_run(tmp_path):
    "A checkpoint folder from a finished run (step 8)."
    train(tmp_path / "ck")
    return tmp_path / "ck"


def test_truncated_model_safetensors_names_the_file_and_the_fix(finished_run):
    file = latest(finished_run) / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    before = mlp().state_dict()
    model = mlp()
    for load in (
        lambda: training.load_checkpoint(finished_run, model),
        lambda: train(finished_run, model, resume=True),
    ):
        with pytest.raises(training.CheckpointError) as err:
            load()
        message = str(err.value)
        assert str(file) in message and "corrupt or truncated" in message
        assert f"delete {finished_run}" in message and "resume=False" in message
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # nothing was loaded


def test_corrupt_header_and_corrupt_trainer_state(finished_run):
    folder = latest(finished_run)
    weights, state = folder / "model.safetensors", folder / "trainer_state.pt"
    fix = rf"delete {re.escape(str(finished_run))} to start over, or call fit with resume=False"
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(
        training.CheckpointError, match=rf"{re.escape(str(weights))} is corrupt or truncated.*{fix}"
    ):
        training.load_checkpoint(finished_run, mlp())
    state.write_bytes(state.read_bytes()[: len(state.read_bytes()) // 2])
    with pytest.raises(
        training.CheckpointError, match=rf"{re.escape(str(state))} is corrupt or truncated.*{fix}"
    ):
        training.load_checkpoint(finished_run)


@pytest.mark.parametrize("missing", ["model.safetensors", "trainer_state.pt"])
def test_checkpoint_folder_missing_a_file(finished_run, missing):
    (latest(finished_run) / missing).unlink()
    with pytest.raises(training.CheckpointError) as err:
        train(finished_run, resume=True)
    message = str(err.value)
    assert f"{latest(finished_run) / missing} is missing" in message
    assert f"delete {finished_run}" in message and "resume=False" in message


def test_resume_with_another_model_shape_fails_before_loading_anything(finished_run):
    wider = mlp(width=32)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError) as err:
        train(finished_run, wider, resume=True)
    message = str(err.value)
    assert "model.safetensors holds another model's weights" in message
    assert "0.weight is [16, 8] there and [32, 8] here" in message and "resume=False" in message
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())


def test_resume_with_another_batch_size_names_both(finished_run):
    with pytest.raises(ValueError) as err:
        train(finished_run, resume=True, batch_size=32)
    message = str(err.value)
    assert "batch_size=16 there, 32 now" in message and "resume=False" in message
    assert "another checkpoint_dir" in message


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    calls = 0

    def nan_at_7(model, batch):
        nonlocal calls
        calls += 1
        loss = training.default_loss(model, batch)
        return loss * float("nan") if calls == 7 else loss

    model = mlp()
    with pytest.raises(FloatingPointError) as err:
        train(tmp_path, model, loss_fn=nan_at_7)
    message = str(err.value)
    assert "[nan] at optimizer step 7 (epoch 1)" in message
    assert f"the last good checkpoint is {tmp_path / 'step-0000006'}" in message
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before the update
    path, state = training.load_checkpoint(tmp_path, mlp())
    assert path.name == "step-0000006" and state["state"]["step"] == 6
    resumed = train(tmp_path, mlp(), resume=True)
    assert same_weights(
        resumed, train()
    )  # the checkpoint was intact: resuming gives the straight run


def test_a_fresh_run_in_a_used_folder_keeps_its_own_checkpoint(finished_run):
    "A run that got further (step 8) left its checkpoint; a fresh run's newer ones replace it."
    with pytest.raises(KeyboardInterrupt):
        train(
            finished_run, loss_fn=crash_after(5)
        )  # resume=False: starts over, checkpoint at step 4
    assert sorted(p.name for p in finished_run.iterdir()) == ["latest", "step-0000004"]
    path, state = training.load_checkpoint(finished_run)
    assert path.name == "step-0000004" and state["state"]["step"] == 4


def test_nan_loss_without_checkpoints_says_so():
    with pytest.raises(
        FloatingPointError, match=r"\[inf\] at optimizer step 1 .*pass checkpoint_dir"
    ):
        train(loss_fn=lambda m, b: training.default_loss(m, b) * float("inf"))


def test_unwritable_checkpoint_dir_fails_before_training_and_writes_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    model = mlp()
    with pytest.raises(training.CheckpointError) as err:
        train(blocker / "ck", model)
    assert f"Can't write checkpoints to {blocker / 'ck'}" in str(err.value)
    assert "writable checkpoint_dir" in str(err.value) and "checkpoint_dir=None" in str(err.value)
    assert same_weights(model, mlp())  # no training happened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    if os.geteuid() != 0:  # permissions don't bind root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(training.CheckpointError, match="Permission denied"):
            train(locked)
        assert list(locked.iterdir()) == []


def test_full_disk_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save_model, calls = training.save_model, 0

    def disk_fills_on_third(model, filename, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:
            Path(filename).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_model(model, filename, *args, **kwargs)

    monkeypatch.setattr(training, "save_model", disk_fills_on_third)
    with pytest.raises(training.CheckpointError) as err:
        train(tmp_path)
    message = str(err.value)
    assert "Could not write checkpoint step-0000006" in message and "No space left" in message
    assert "previous checkpoint is untouched" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest",
        "step-0000004",
    ]  # no partial folder
    monkeypatch.setattr(training, "save_model", real_save_model)
    assert same_weights(train(tmp_path, mlp(), resume=True), train())


KILL_IN_WRITE = """
import os, runpy, signal, sys
from pathlib import Path
from foundation_course import training
real_save_model, calls = training.save_model, 0
def killed_on_third_write(model, filename, *args, **kwargs):
    global calls
    calls += 1
    if calls == 3:  # checkpoint step 6: half a file, then the process dies
        Path(filename).write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save_model(model, filename, *args, **kwargs)
training.save_model = killed_on_third_write
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_during_a_checkpoint_write_then_resume(tmp_path):
    ck = tmp_path / "ck"
    run = [sys.executable, str(SCRIPT), "--out"]
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_IN_WRITE,
            *run[1:],
            str(tmp_path / "never.safetensors"),
            "--checkpoint-dir",
            str(ck),
        ],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (ck / "latest").read_text() == "step-0000004"
    torn = [p.name.rsplit("-", 1)[0] for p in ck.iterdir() if p.name.startswith(".tmp-")]
    assert torn == [".tmp-step-0000006"]
    path, state = training.load_checkpoint(ck)
    assert path.name == "step-0000004" and state["state"]["step"] == 4
    subprocess.run([*run, str(tmp_path / "straight.safetensors")], check=True, capture_output=True)
    subprocess.run(
        [*run, str(tmp_path / "resumed.safetensors"), "--checkpoint-dir", str(ck), "--resume"],
        check=True,
        capture_output=True,
    )
    straight, resumed = (
        load_file(tmp_path / "straight.safetensors"),
        load_file(tmp_path / "resumed.safetensors"),
    )
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not [p for p in ck.iterdir() if p.name.startswith(".tmp-")]  # the resumed run cleared it


def test_rng_states_round_trip():
    generator = torch.Generator().manual_seed(5)
    saved = training.rng_states(generator)

    def draws():
        return (
            torch.rand(3).tolist(),
            np.random.rand(3).tolist(),
            [random.random() for _ in range(3)],
            torch.rand(3, generator=generator).tolist(),
        )

    first = draws()
    assert draws() != first
    training.set_rng_states(saved, generator)
    assert draws() == first


def test_resume_restores_numpy_and_python_random(tmp_path):
    "A loss that draws from NumPy and Python's random: after a resume, the draws go on unchanged."

    def recorded(draws):
        def loss(model, batch):
            draws.append((np.random.rand(), random.random(), torch.rand(1).item()))
            return training.default_loss(model, batch)

        return loss

    seed_everything(0)
    straight = []
    train(loss_fn=recorded(straight))
    seed_everything(0)
    before = []
    with pytest.raises(KeyboardInterrupt):
        train(
            tmp_path, loss_fn=crash_after(5, recorded(before))
        )  # dies in step 6; checkpoint at step 4
    assert before == straight[:5]
    seed_everything(123)  # other states: the resume must bring back its own
    after = []
    train(tmp_path, mlp(), resume=True, loss_fn=recorded(after))
    assert after == straight[4:]


def test_two_processes_save_one_random_state_each(tmp_path):
    done = launch_two_cpu_processes(
        "--out",
        str(tmp_path / "multi.safetensors"),
        "--batch-size",
        "4",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--epochs",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, state = training.load_checkpoint(tmp_path / "ck")
    assert len(state["rng"]) == 2 and state["settings"]["processes"] == 2
    assert all(set(states) >= {"torch", "numpy", "python", "generator"} for states in state["rng"])


def test_cuda_states_of_every_device_are_saved_and_restored(monkeypatch):
    "On a machine with GPUs, each device's generator goes into the checkpoint and comes back."
    devices = [torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in devices])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    saved = training.rng_states()
    assert [t.item() for t in saved["cuda"]] == [1, 2]
    training.set_rng_states(saved)
    assert [t.item() for t in restored] == [1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_matches_an_uninterrupted_run(tmp_path):
    def run(loss_fn=training.default_loss, resume=False):
        model = mlp()
        training.fit(
            model,
            toy_data(),
            batch_size=16,
            lr=1e-2,
            loss_fn=loss_fn,
            device="cuda",
            mixed_precision="no",
            checkpoint_dir=tmp_path / "ck",
            checkpoint_every=2,
            resume=resume,
            progress=False,
        )
        return model

    straight = run()
    shutil.rmtree(tmp_path / "ck")
    with pytest.raises(KeyboardInterrupt):
        run(crash_after(5))
    torch.cuda.manual_seed_all(
        123
    )  # dropout on the GPU draws from CUDA's generator: resume restores it
    assert same_weights(run(resume=True), straight)
