import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from foundation_course import evaluation as ev


def scores_and_labels(n=400, seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    s = y.double() + torch.randn(n, generator=g, dtype=torch.float64)
    if ties:
        s[: n // 4] = s[: n // 4].round()
    return s, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed):
    s, y = scores_and_labels(seed=seed)
    assert ev.roc_auc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_extremes_and_one_class():
    y = torch.tensor([0, 0, 1, 1])
    assert ev.roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert ev.roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert ev.roc_auc(torch.tensor([0.5, 0.5, 0.5, 0.5]), y) == 0.5
    with pytest.raises(ValueError, match="needs both classes"):
        ev.roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_confusion_and_prf_match_sklearn():
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 4, (300,), generator=g), torch.randint(0, 4, (300,), generator=g)
    assert (ev.confusion_matrix(p, y, 4).numpy() == skm.confusion_matrix(y, p)).all()
    prf = ev.precision_recall_f1(p, y, 4)
    P, R, F1, _ = skm.precision_recall_fscore_support(y, p, average="macro")
    assert (prf["precision"], prf["recall"], prf["f1"]) == pytest.approx((P, R, F1), abs=1e-12)
    s, yb = scores_and_labels()
    pb = (s > 0.5).long()
    prf = ev.precision_recall_f1(pb, yb, 2)
    assert prf["f1"] == pytest.approx(skm.f1_score(yb, pb)) and prf["precision"] == pytest.approx(
        skm.precision_score(yb, pb)
    )


def test_undefined_precision_is_zero_like_sklearn():
    y, p = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 2, 2])  # class 1 never predicted
    prf = ev.precision_recall_f1(p, y, 3)
    assert prf["precision"] == pytest.approx(
        skm.precision_score(y, p, average="macro", zero_division=0)
    )


def test_classification_report_multiclass_auc_is_one_vs_rest_macro():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(200, 3, generator=g), torch.randint(0, 3, (200,), generator=g)
    logits[torch.arange(200), y] += 1.0
    r = ev.classification_report(logits, y)
    assert r["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, logits.softmax(-1).numpy(), multi_class="ovr", average="macro"),
        abs=1e-6,
    )
    assert r["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())


def test_ece_by_hand_example():
    # two bins used: confidences 0.9 (2 examples, 1 right) and 0.6 (2 examples, both right)
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = torch.tensor([0, 0, 0, 1])
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
    assert ev.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected)


def test_ece_near_zero_when_labels_follow_the_probabilities():
    g = torch.Generator().manual_seed(0)
    probs = (torch.randn(50_000, 4, generator=g) * 2).softmax(-1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert ev.expected_calibration_error(probs, labels) < 0.01
    overconfident = (torch.log(probs) * 3).softmax(-1)
    assert ev.expected_calibration_error(overconfident, labels) > 0.05


def test_fit_temperature_finds_the_nll_minimum_and_the_true_temperature():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20_000, 4, generator=g) * 3
    y = torch.multinomial((z / 2.0).softmax(-1), 1, generator=g).squeeze(1)
    t = ev.fit_temperature(z, y)
    assert t == pytest.approx(2.0, abs=0.1)
    tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(z.double() / tt, y).backward()
    assert abs(tt.grad.item()) < 1e-4  # a stationary point of the validation NLL


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20_000, 3, generator=g) * 2
    y = torch.multinomial(z.softmax(-1), 1, generator=g).squeeze(1)
    hot = z * 3  # overconfident
    t = ev.fit_temperature(hot[:10_000], y[:10_000])
    assert t == pytest.approx(3.0, abs=0.2)
    before = ev.expected_calibration_error(hot[10_000:].softmax(-1), y[10_000:])
    after = ev.expected_calibration_error((hot[10_000:] / t).softmax(-1), y[10_000:])
    assert after < before / 3


def test_most_confident_mistakes_order():
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 9.0], [3.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([1, 1, 0, 1, 1])
    assert ev.most_confident_mistakes(logits, labels, k=5) == [2, 0, 3]
    assert ev.most_confident_mistakes(logits, labels, k=1) == [2]
    assert ev.most_confident_mistakes(logits, torch.tensor([0, 1, 1, 0, 1])) == []


def test_plots_draw_without_error():
    import matplotlib

    matplotlib.use("Agg")
    cm = ev.confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
    ax = ev.plot_confusion(cm, ["neg", "pos"])
    assert [t.get_text() for t in ax.texts] == ["1", "1", "0", "1"]
    ax = ev.reliability_diagram(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]))
    assert "ECE" in ax.get_legend().get_texts()[0].get_text()


def test_mean_std_is_the_sample_std_and_skips_missing_runs():
    assert ev.mean_std([0.8, None, 0.9]) == pytest.approx((0.85, np.std([0.8, 0.9], ddof=1)))
    assert ev.mean_std([None]) == (None, None) and ev.mean_std([0.5]) == (0.5, None)
    assert ev.format_acc(0.8312, None) == "83.1%" and ev.format_acc(0.8, 0.01) == "80.0 ± 1.0%"
    assert ev.format_acc(None, None) == "not run"


def test_paired_bootstrap_degenerate_cases():
    same = [1, 0, 1, 1, 0]
    assert ev.paired_bootstrap(same, same) == dict(diff=0.0, low=0.0, high=0.0)
    assert ev.paired_bootstrap([1] * 50, [0] * 50) == dict(diff=1.0, low=1.0, high=1.0)
    # A is right wherever B is, plus on 10 of 100 more: never worse in any resample
    a, b = [1] * 60 + [0] * 40, [1] * 50 + [0] * 50
    ci = ev.paired_bootstrap(a, b)
    assert ci["diff"] == pytest.approx(0.10) and 0.04 <= ci["low"] < 0.10 < ci["high"] <= 0.16


def test_paired_bootstrap_matches_resampling_the_examples():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.8
    # correlated, as paired models are
    b = np.where(rng.random(400) < 0.7, a, rng.random(400) < 0.75)
    idx = rng.integers(0, 400, size=(20_000, 400))
    naive = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    ci = ev.paired_bootstrap(a, b, n=20_000, seed=1)
    assert ci["diff"] == pytest.approx(a.mean() - b.mean())
    assert (ci["low"], ci["high"]) == pytest.approx(tuple(naive), abs=0.004)
    d = a.astype(float) - b
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 * d.std() / np.sqrt(400), rel=0.1)


def test_paired_bootstrap_rejects_unpaired_or_non_binary_input():
    with pytest.raises(ValueError, match="same test examples"):
        ev.paired_bootstrap([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0/1 or bool"):
        ev.paired_bootstrap([0.9, 0.2], [1, 0])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ev.paired_bootstrap([], [])


def test_compare_verdicts_on_one_test_set():
    a, b = [1] * 80 + [0] * 20, [1] * 60 + [0] * 40  # A right wherever B is, and on 20 more
    v = ev.compare("LoRA", "probe", correct_a=a, correct_b=b)
    assert v.startswith("LoRA beats probe by 20.0 points (95% CI of LoRA − probe: +")
    assert v.endswith("; paired bootstrap)")
    assert ev.compare("probe", "LoRA", correct_a=b, correct_b=a).startswith(
        "LoRA beats probe by 20.0"
    )
    rng = np.random.default_rng(0)
    x, y = rng.random(200) < 0.8, rng.random(200) < 0.8  # two models of the same skill
    v = ev.compare("A", "B", correct_a=x, correct_b=y)
    ci = ev.paired_bootstrap(x, y)
    assert ci["low"] < 0 < ci["high"] and v.startswith("tie (A − B = ")


def test_compare_seed_lists_use_welchs_t_interval():
    from scipy import stats

    a, b = [0.84, 0.85, 0.83, 0.86], [0.80, 0.79, 0.82]
    want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    ci = ev.welch_interval(a, b)
    assert (ci["low"], ci["high"]) == pytest.approx((want.low, want.high), abs=1e-12)
    assert ev.compare("full", "LoRA", seeds_a=a, seeds_b=b).startswith(
        "full beats LoRA by 4.2 points (95% CI of full − LoRA: +"
    )
    assert ev.compare("a", "b", seeds_a=[0.80, 0.84], seeds_b=[0.81, 0.83]).startswith(
        "tie (a − b = +0.0"
    )
    with pytest.raises(ValueError, match="at least 2 runs"):
        ev.compare("a", "b", seeds_a=[0.8], seeds_b=[0.7, 0.75])
    with pytest.raises(ValueError, match="not a mix"):
        ev.compare("a", "b", correct_a=[1, 0], seeds_b=[0.7, 0.75])


def probs_with(conf, correct):
    "Two-class probabilities with top-class confidence `conf`; labels right where `correct` is 1."
    conf = torch.tensor(conf, dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], 1)  # class 0 is always predicted
    return probs, torch.tensor([0 if c else 1 for c in correct])


def test_coverage_accuracy_curve_by_hand_with_ties():
    probs, labels = probs_with([0.6, 0.8, 0.9, 0.8], [0, 0, 1, 1])
    curve = ev.coverage_accuracy_curve(probs, labels)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.6]  # the tied 0.8s come in together
    assert curve["coverage"].tolist() == [0.25, 0.75, 1.0]
    assert curve["accuracy"] == pytest.approx([1.0, 2 / 3, 0.5])
    with pytest.raises(ValueError, match="n_examples"):
        ev.coverage_accuracy_curve(probs[:, 0], labels)


def test_choose_threshold_takes_the_lowest_threshold_within_the_error_budget():
    probs, labels = probs_with([0.6, 0.8, 0.9, 0.8], [0, 0, 1, 1])
    assert ev.choose_threshold(probs, labels, max_error=0.05) == dict(
        threshold=0.9, coverage=0.25, error=0.0
    )
    got = ev.choose_threshold(probs, labels, max_error=0.4)
    assert (got["threshold"], got["coverage"]) == (0.8, 0.75) and got["error"] == pytest.approx(
        1 / 3
    )
    assert ev.choose_threshold(probs, labels, max_error=0.5)["coverage"] == 1.0
    # error is not monotone in the threshold: the most confident answer is wrong, the rest right
    probs, labels = probs_with([0.9, 0.8, 0.7, 0.6], [0, 1, 1, 1])
    assert ev.choose_threshold(probs, labels, max_error=0.3) == dict(
        threshold=0.6, coverage=1.0, error=0.25
    )


def test_choose_threshold_abstains_on_everything_when_no_threshold_qualifies():
    probs, labels = probs_with([0.9, 0.7], [0, 0])
    with pytest.warns(UserWarning, match="abstains on everything"):
        got = ev.choose_threshold(probs, labels)
    assert got["threshold"] == float("inf") and got["coverage"] == 0.0
    assert ev.selective_report(probs, labels, got["threshold"])["answered"] == 0
    with pytest.raises(ValueError, match="error rate"):
        ev.choose_threshold(probs, labels, max_error=5)


def test_selective_report_on_new_data():
    probs, labels = probs_with([0.95, 0.9, 0.7, 0.55], [1, 0, 1, 0])
    r = ev.selective_report(probs, labels, threshold=0.8)
    assert r == dict(coverage=0.5, error=0.5, answered=2)


def test_bootstrap_interval():
    out = ev.bootstrap_interval(np.r_[np.ones(80), np.zeros(20)], n=20_000, seed=0)
    assert out["acc"] == 0.8
    # the normal approximation: 0.8 ± 1.96 · sqrt(0.8 · 0.2 / 100) = 0.8 ± 0.078
    assert out["low"] == pytest.approx(0.72, abs=0.015)
    assert out["high"] == pytest.approx(0.88, abs=0.015)
    assert ev.bootstrap_interval(np.ones(50)) == dict(acc=1.0, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="0/1"):
        ev.bootstrap_interval([0.3, 0.9])


def test_binomial_half_width_matches_the_bootstrap_and_takes_arrays():
    assert ev.binomial_half_width(0.8, 100) == pytest.approx(1.96 * 0.04, rel=1e-3)
    assert ev.binomial_half_width(0.8, 100, level=0.99) == pytest.approx(2.576 * 0.04, rel=1e-3)
    boot = ev.bootstrap_interval(np.r_[np.ones(800), np.zeros(200)], n=20_000, seed=0)
    half = (boot["high"] - boot["low"]) / 2
    assert ev.binomial_half_width(0.8, 1000) == pytest.approx(half, rel=0.05)
    widths = ev.binomial_half_width(np.array([0.0, 0.5, 1.0]), 400)
    assert widths.tolist() == pytest.approx([0.0, 1.96 * 0.025, 0.0], rel=1e-3)
    with pytest.raises(ValueError, match="n >= 1"):
        ev.binomial_half_width(0.5, 0)


def test_correct_on_marks_each_right_prediction():
    class Fixed(torch.nn.Module):
        "Predicts class 1 exactly when the input's first feature is positive."

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.stack([-x[:, 0], x[:, 0]], -1) + self.w

    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0]])
    y = torch.tensor([1, 1, 0, 0])
    got = ev.correct_on(Fixed(), torch.utils.data.TensorDataset(x, y), batch_size=3)
    assert got.tolist() == [1, 0, 0, 1]
