"""Reference solutions to chapter 10's exercises (10_evaluation.ipynb). Try the exercises first."""

import torch

from foundation_course.evaluation import confusion_matrix

CHECKS = "foundation_course.evaluation"


def balanced_accuracy(preds, labels, num_classes):
    "Mean over classes of each class's recall (hits / examples with that label)."
    cm = confusion_matrix(preds, labels, num_classes).double()
    return (cm.diag() / cm.sum(1)).mean().item()


def same_predictions(logits, t):
    "True when dividing `logits` by `t` leaves every argmax unchanged."
    return bool(((logits / t).argmax(-1) == logits.argmax(-1)).all())


def _plain_accuracy(preds, labels, num_classes):
    return (torch.as_tensor(preds) == torch.as_tensor(labels)).double().mean().item()


def _mean_precision(preds, labels, num_classes):
    cm = confusion_matrix(preds, labels, num_classes).double()
    return (cm.diag() / cm.sum(0).clamp(min=1)).mean().item()  # divides by predictions, not labels


def _same_probabilities(logits, t):
    return torch.allclose((logits / t).softmax(-1), logits.softmax(-1))  # probabilities do change


def _always_same(logits, t):
    return True


def _positive_temperature(logits, t):
    return t > 0  # true for the scores' order, yet rows of tied logits keep their argmax for t < 0


WRONG = {
    "balanced_accuracy": [_plain_accuracy, _mean_precision],
    "same_predictions": [_same_probabilities, _always_same, _positive_temperature],
}
