import dataclasses
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
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


def test_softmax_regression_grads_match_autograd():
    torch.manual_seed(0)
    W, b = torch.randn(5, 7, requires_grad=True), torch.randn(5, requires_grad=True)
    x, y = torch.randn(20, 7), torch.randint(0, 5, (20,))
    loss, dW, db = training.softmax_regression_grads(W, b, x, y)
    ref = F.cross_entropy(x @ W.T + b, y)
    ref.backward()
    assert (
        torch.allclose(loss, ref)
        and torch.allclose(dW, W.grad, atol=1e-6)
        and torch.allclose(db, b.grad, atol=1e-6)
    )


def test_adamw_step_matches_torch():
    torch.manual_seed(0)
    p, q = torch.randn(10, requires_grad=True), None
    q = p.detach().clone().requires_grad_(True)
    opt, state = torch.optim.AdamW([q], lr=0.05, weight_decay=0.1), {}
    for _ in range(25):
        g = 2 * p.detach() + torch.sin(p.detach())
        training.adamw_step([p], [g], state, lr=0.05, weight_decay=0.1)
        opt.zero_grad()
        q.grad = 2 * q.detach() + torch.sin(q.detach())
        opt.step()
    assert torch.allclose(p, q, atol=1e-6)


def test_warmup_cosine_matches_transformers():
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, 7, 50)
    for t in range(50):
        assert math.isclose(
            training.warmup_cosine(t, 50, 7), opt.param_groups[0]["lr"], abs_tol=1e-9
        )
        opt.step()
        sched.step()


def test_fit_learns_and_early_stops():
    seed_everything(0)
    model = nn.Linear(8, 2)
    data = toy_data()
    result = training.fit(
        model,
        data,
        epochs=30,
        batch_size=16,
        lr=5e-2,
        val_data=toy_data(64, seed=1),
        metrics_fn=training.classification_metrics,
        monitor="val_acc",
        mode="max",
        patience=2,
        progress=False,
    )
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]
    assert result.best["val_acc"] > 0.9
    assert result.stopped_early and len(result.epochs) < 30
    assert training.accuracy(model, toy_data(64, seed=1)) == pytest.approx(
        result.best["val_acc"]
    )  # best weights restored


def test_fit_bad_arguments():
    with pytest.raises(ValueError, match="empty training set"):
        training.fit(
            nn.Linear(2, 2),
            torch.utils.data.TensorDataset(torch.zeros(0, 2), torch.zeros(0).long()),
        )
    with pytest.raises(KeyError, match="val_acc"):
        training.fit(
            nn.Linear(8, 2), toy_data(), val_data=toy_data(), monitor="val_acc", progress=False
        )


def test_bf16_on_cpu_trains_and_hands_back_a_plain_fp32_model():
    seed_everything(0)
    model = nn.Linear(8, 2)
    result = training.fit(
        model, toy_data(), epochs=5, batch_size=16, lr=5e-2, mixed_precision="bf16", progress=False
    )
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]
    assert "_original_forward" not in model.__dict__  # the autocast wrapper is gone
    x = toy_data(16, seed=2).tensors[0]
    out = model(x)
    assert out.dtype == torch.float32 and torch.equal(out, F.linear(x, model.weight, model.bias))


def test_gradient_accumulation_equals_big_batch():
    def run(bs, k):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
        training.fit(
            model, toy_data(), batch_size=bs, grad_accum=k, epochs=2, lr=1e-2, progress=False
        )
        return model

    a, b = run(32, 1), run(8, 4)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def test_checkpoints_are_safetensors_and_ignore_partial_writes(tmp_path):
    model = nn.Linear(8, 2)
    training.fit(
        model,
        toy_data(),
        batch_size=32,
        checkpoint_dir=tmp_path,
        checkpoint_every=1,
        progress=False,
    )
    latest = (tmp_path / "latest").read_text()
    assert (tmp_path / latest / "model.safetensors").exists()
    assert len(list(tmp_path.glob("step-*"))) == 1  # older ones pruned
    (tmp_path / ".tmp-step-9999999-1").mkdir()  # a crash mid-save leaves only a temporary folder
    path, state = training.load_checkpoint(tmp_path, nn.Linear(8, 2))
    assert path.name == latest and state["state"]["step"] == 4


def _run_script(*args, env=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True, env=env
    )


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    _run_script("--out", str(tmp_path / "straight.safetensors"))
    ck = tmp_path / "ck"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--out",
            str(tmp_path / "never.safetensors"),
            "--checkpoint-dir",
            str(ck),
            "--sleep",
            "0.15",
        ]
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if (ck / "latest").exists() and int((ck / "latest").read_text().split("-")[1]) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "never.safetensors").exists(), "the run finished before it was killed"
    killed_at = int((ck / "latest").read_text().split("-")[1])
    assert 6 <= killed_at < 24
    _run_script(
        "--out", str(tmp_path / "resumed.safetensors"), "--checkpoint-dir", str(ck), "--resume"
    )
    straight, resumed = (
        load_file(tmp_path / "straight.safetensors"),
        load_file(tmp_path / "resumed.safetensors"),
    )
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_two_cpu_processes_match_one_with_the_same_effective_batch(tmp_path):
    _run_script(
        "--out", str(tmp_path / "single.safetensors"), "--batch-size", "8", "--dropout", "0"
    )
    done = launch_two_cpu_processes(
        "--out", str(tmp_path / "multi.safetensors"), "--batch-size", "4", "--dropout", "0"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "world_size=2" in done.stdout
    single, multi = (
        load_file(tmp_path / "single.safetensors"),
        load_file(tmp_path / "multi.safetensors"),
    )
    for k in single:
        assert torch.allclose(single[k], multi[k], atol=1e-5), (
            k,
            (single[k] - multi[k]).abs().max(),
        )


class Examples(torch.utils.data.Dataset):
    "A dataset whose examples are whatever `make(i)` returns."

    def __init__(self, make, n=32):
        self.make, self.n = make, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i)


IMAGES = torch.zeros(32, 28, 28)  # no channel axis
BAD_INPUTS = [  # (model, data, error type, what the message must say)
    (
        nn.Linear(8, 2),
        torch.utils.data.TensorDataset(torch.randn(32, 8), torch.rand(32)),
        TypeError,
        ["labels are (32,) float32", "integer class", "y.long()"],
    ),
    (
        training.small_cnn(width=4),
        torch.utils.data.TensorDataset(IMAGES, torch.zeros(32).long()),
        ValueError,
        ["inputs (32, 28, 28) float32", "(batch, 1, height, width)", "Fix the dataset"],
    ),
    (
        nn.Linear(8, 2),
        torch.utils.data.TensorDataset(torch.randn(32, 4), torch.zeros(32).long()),
        ValueError,
        ["inputs (32, 4) float32", "shaped (batch, 8)"],
    ),
    (
        nn.Linear(8, 2),
        Examples(lambda i: ("some text", 0)),
        TypeError,
        ["inputs are a tuple of str, not a tensor", "torch.as_tensor", "collate_fn"],
    ),
    (
        nn.Linear(8, 2),
        Examples(lambda i: (object(), 0)),
        TypeError,
        ["could not make a batch", "must return tensors or numbers", "collate_fn"],
    ),
    (
        nn.Linear(8, 2),
        Examples(lambda i: torch.zeros(8)),
        ValueError,
        ["(inputs, labels) pairs", "(32, 8) float32", "pass loss_fn"],
    ),
]


@pytest.mark.parametrize("model, data, error, says", BAD_INPUTS)
def test_a_bad_first_batch_names_what_fit_expected(model, data, error, says):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error) as err:
        training.fit(model, data, batch_size=32, progress=False)
    assert all(part in str(err.value) for part in says), str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained


def test_a_loss_fn_must_return_a_scalar():
    with pytest.raises(ValueError, match=r"0-d tensor; it returned \(32,\) float32"):
        training.fit(
            nn.Linear(8, 2),
            toy_data(32),
            batch_size=32,
            progress=False,
            loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"),
        )


def test_mode_and_schedule_are_checked_before_training():
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'best'"):
        training.fit(nn.Linear(8, 2), toy_data(), mode="best")
    with pytest.raises(ValueError, match="schedule must be 'cosine' or 'constant', got 'linear'"):
        training.fit(nn.Linear(8, 2), toy_data(), schedule="linear")


def test_fit_result_declares_every_field_set_on_it():
    assert {f.name for f in dataclasses.fields(training.FitResult)} >= {
        "tokens_per_second",
        "samples_seen",
    }
    assert training.FitResult().tokens_per_second is None


def test_param_groups_split_decay_per_module_or_stage():
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2, bias=False))
    decay, no_decay = training.param_groups(net, 0.1)
    assert [tuple(p.shape) for p in decay["params"]] == [(8, 4), (2, 8)]
    assert [tuple(p.shape) for p in no_decay["params"]] == [(8,)] * 3
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    stage = training.param_groups([net[2]], 0.1, lr=1e-4)  # one stage, with its own rate
    assert len(stage) == 1 and stage[0]["lr"] == 1e-4  # no empty group for the missing bias
    net[0].weight.requires_grad = False
    assert sum(len(g["params"]) for g in training.param_groups(net, 0.1)) == 4


def test_early_stopping_keeps_the_best_weights_and_counts_patience():
    stopper, net = training.EarlyStopping("val_acc", mode="max", patience=2), nn.Linear(2, 2)
    flags = []
    for acc in (0.5, 0.7, 0.7, 0.6, 0.8):
        with torch.no_grad():
            net.weight.fill_(acc)
        flags.append((stopper.update(dict(val_acc=acc), net), stopper.should_stop))
    assert flags == [(True, False), (True, False), (False, False), (False, True), (True, False)]
    stopper.update(dict(val_acc=float("nan")), net)  # a nan is never an improvement
    stopper.restore(net)
    assert stopper.best == 0.8 and torch.all(net.weight == 0.8)


def test_evaluate_weighs_every_example_once():
    data = toy_data(10)
    model = nn.Linear(8, 2)
    by_batches = training.evaluate(
        model, torch.utils.data.DataLoader(data, batch_size=4), training.classification_metrics
    )
    whole = training.classification_metrics(model, data.tensors)
    assert by_batches["val_loss"] == pytest.approx(whole["loss"].mean().item())
    assert by_batches["val_acc"] == pytest.approx(whole["acc"].mean().item())
    assert model.training  # evaluation leaves the mode it found


def test_grouped_sampler_is_a_permutation_of_similar_lengths_set_by_seed_and_epoch():
    lengths = [(i * 37) % 61 for i in range(1000)]
    sampler = training.EpochShuffleSampler(1000, seed=3, lengths=lengths, batch_size=32)
    order = list(sampler)
    assert sorted(order) == list(range(1000)) and order == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != order
    batches = [order[i : i + 32] for i in range(0, 1000, 32)]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches[:-1]]
    assert max(spread) <= 6  # within a window of 50 batches, neighbours in length order
    assert len(batches[-1]) == 1000 % 32  # the short batch stays last
    with pytest.raises(ValueError, match="one length per example"):
        training.EpochShuffleSampler(10, lengths=[1] * 9, batch_size=2)


def test_fit_groups_texts_by_length_and_refuses_examples_without_input_ids():
    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            n = 1 + i % 16
            return dict(input_ids=torch.ones(n, dtype=torch.long), labels=torch.tensor(i % 2))

    seen = []

    def collate(examples):
        seen.append([len(e["input_ids"]) for e in examples])
        width = max(len(e["input_ids"]) for e in examples)
        x = torch.zeros(len(examples), width)
        return x.sum(1, keepdim=True), torch.stack([e["labels"] for e in examples])

    training.fit(
        nn.Linear(1, 2),
        Texts(),
        batch_size=8,
        collate_fn=collate,
        group_by_length=True,
        progress=False,
    )
    assert all(max(b) - min(b) <= 2 for b in seen)
    with pytest.raises(ValueError, match="dicts with input_ids"):
        training.fit(
            nn.Linear(1, 2),
            torch.utils.data.TensorDataset(torch.ones(4, 1), torch.zeros(4).long()),
            group_by_length=True,
            progress=False,
        )


def test_grouping_the_review_snippets_halves_their_padding():
    "The figures chapter 02 quotes: batches of 32 snippets padded to about 52 tokens, grouped 28."
    from foundation_course.data import load_sentiment, load_tokenizer

    texts = load_sentiment("rt-snippets").train.texts
    lengths = [min(len(ids), 64) for ids in load_tokenizer("minilm")(texts)["input_ids"]]

    def mean_padded(order):
        batches = [order[i : i + 32] for i in range(0, len(order), 32)]
        return sum(max(lengths[i] for i in b) for b in batches) / len(batches)

    shuffled = training.EpochShuffleSampler(len(lengths), seed=0)
    grouped = training.EpochShuffleSampler(len(lengths), seed=0, lengths=lengths, batch_size=32)
    assert round(mean_padded(list(shuffled))) == 52
    assert round(mean_padded(list(grouped))) == 28
