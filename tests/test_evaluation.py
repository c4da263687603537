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
    assert prf["f1"] == pytest.approx(skm.f1_score(yb, pb)) and prf["precision"] == pytest.approx(skm.precision_score(yb, pb))


def test_undefined_precision_is_zero_like_sklearn():
    y, p = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 2, 2])  # class 1 never predicted
    prf = ev.precision_recall_f1(p, y, 3)
    assert prf["precision"] == pytest.approx(skm.precision_score(y, p, average="macro", zero_division=0))


def test_classification_report_multiclass_auc_is_one_vs_rest_macro():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(200, 3, generator=g), torch.randint(0, 3, (200,), generator=g)
    logits[torch.arange(200), y] += 1.0
    r = ev.classification_report(logits, y)
    assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, logits.softmax(-1).numpy(), multi_class="ovr", average="macro"), abs=1e-6)
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
