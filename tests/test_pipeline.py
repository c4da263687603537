"""Chapter 13's pipeline pieces: near-duplicate search, label-noise candidates, the step
log and the pipeline picture."""

from types import SimpleNamespace

import numpy as np
import pytest

from foundation_course import pipeline
from foundation_course.pipeline import (
    StepLog,
    duplicate_pairs,
    jaccard,
    label_noise_candidates,
    minhash_signatures,
    near_duplicate_pairs,
    normalize_text,
    plot_pipeline,
    shingles,
)


def test_normalize_text_and_shingles():
    assert normalize_text("  A Great,  FILM!! ") == "a great film"
    assert shingles("abcd", 3) == {"abc", "bcd"}
    assert shingles("Ab!", 5) == {"ab"}  # shorter than n: the whole normalised text
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0


def test_minhash_agreement_estimates_jaccard():
    a, b = {str(i) for i in range(100)}, {str(i) for i in range(50, 150)}  # J = 50 / 150
    sig = minhash_signatures([a, b], num_perm=1024, seed=0)
    assert sig.shape == (2, 1024)
    assert (sig[0] == sig[1]).mean() == pytest.approx(1 / 3, abs=0.05)
    same = minhash_signatures([a, set(a)], num_perm=64)
    assert (same[0] == same[1]).all()


def test_near_duplicate_pairs_finds_edits_not_strangers():
    texts = [
        "A pretentious mess.",
        "a pretentious mess",
        "Will warm your heart without making you feel guilty about it.",
        "About a Boy will warm your heart without making you feel guilty about it.",
        "A quiet, patient film about grief and the sea.",
    ]
    pairs = near_duplicate_pairs(texts, threshold=0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (2, 3)]
    assert pairs[0][2] == 1.0 and 0.8 <= pairs[1][2] < 1.0
    assert near_duplicate_pairs(texts, threshold=0.95) == [(0, 1, 1.0)]


def test_near_duplicate_pairs_rejects_bad_settings():
    with pytest.raises(ValueError, match="Jaccard"):
        near_duplicate_pairs(["a", "b"], threshold=0)
    with pytest.raises(ValueError, match="multiple of bands"):
        near_duplicate_pairs(["a", "b"], num_perm=60, bands=16)


def test_duplicate_pairs_reports_leakage_across_splits():
    splits = {
        "train": ["An absolute joy.", "Dull and long."],
        "test": ["Something else entirely.", "an absolute joy"],
    }
    pairs = duplicate_pairs(splits)
    assert len(pairs) == 1
    p = pairs[0]
    assert (p["split_a"], p["index_a"], p["split_b"], p["index_b"]) == ("train", 0, "test", 1)
    assert p["exact"] and p["jaccard"] == 1.0


def test_label_noise_candidates_ranks_flipped_labels_first():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    features = rng.normal(size=(200, 5)) + 4.0 * labels[:, None]  # two well-separated clusters
    noisy = labels.copy()
    flipped = np.array([3, 40, 120, 150, 199])
    noisy[flipped] = 1 - noisy[flipped]
    order, p_own = label_noise_candidates(features, noisy, folds=5, seed=0)
    assert set(order[:5]) == set(flipped)
    assert (p_own[flipped] < 0.1).all() and np.median(p_own) > 0.9
    with pytest.raises(ValueError, match="one label per row"):
        label_noise_candidates(features, noisy[:-1])


def test_step_log_times_steps_and_refuses_misuse(monkeypatch):
    clock = iter([100.0, 102.26])  # a fake clock: a busy machine can't make the step look slower
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    log = StepLog()
    log.start("a")
    row = log.finish("folder", 1.234, "loss 2 -> 1")
    assert row["step"] == "a" and row["wall_s"] == 2.3 and row["rss_mb"] > 0
    monkeypatch.undo()
    assert (row["artefact"], row["artefact_mb"], row["metric"]) == ("folder", 1.23, "loss 2 -> 1")
    with pytest.raises(RuntimeError, match="start"):
        log.finish("x", 0, "y")
    log.start("b")
    with pytest.raises(RuntimeError, match="still open"):
        log.start("c")
    log.finish("x", 0, "y")
    assert [r["step"] for r in log.rows] == ["a", "b"]


def test_plot_pipeline_draws_one_box_per_step():
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_pipeline([("1 data", "splits"), ("2 model", "weights"), ("3 deploy", "a service")])
    assert len(ax.patches) == 3
    labels = [t.get_text() for t in ax.texts if t.get_text()]  # the arrows are empty annotations
    assert labels == ["1 data", "splits", "2 model", "weights", "3 deploy", "a service"]
