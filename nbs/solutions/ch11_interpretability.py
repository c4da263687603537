"""Reference solutions to chapter 11's exercises (11_interpretability.ipynb).

Try the exercises first."""

import torch

CHECKS = "foundation_course.interpretability"


def ig_left_riemann(f, x, baseline, steps):
    "IG of `f` at `x` (1, ...) from `baseline`, averaging the gradient at α = 0, 1/m, ..., (m-1)/m."
    alphas = torch.arange(steps).float().div(steps).view(-1, *[1] * (x.ndim - 1))
    points = (baseline + alphas * (x - baseline)).requires_grad_(True)
    (grads,) = torch.autograd.grad(f(points).sum(), points)
    return ((x - baseline)[0] * grads.mean(0)).detach()


def top_k_tokens(tokens, scores, k):
    "The `k` ordinary tokens (not [CLS] or [SEP]) with the highest scores, highest first."
    ordinary = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
    ranked = sorted(ordinary, key=lambda i: -float(scores[i]))
    return [tokens[i] for i in ranked[:k]]


def _ig_right_riemann(f, x, baseline, steps):
    alphas = torch.arange(1, steps + 1).float().div(steps).view(-1, *[1] * (x.ndim - 1))
    points = (baseline + alphas * (x - baseline)).requires_grad_(True)
    (grads,) = torch.autograd.grad(f(points).sum(), points)
    return ((x - baseline)[0] * grads.mean(0)).detach()


def _ig_without_the_input_difference(f, x, baseline, steps):
    alphas = torch.arange(steps).float().div(steps).view(-1, *[1] * (x.ndim - 1))
    points = (baseline + alphas * (x - baseline)).requires_grad_(True)
    (grads,) = torch.autograd.grad(f(points).sum(), points)
    return grads.mean(0).detach()


def _top_k_with_special_tokens(tokens, scores, k):
    ranked = sorted(range(len(tokens)), key=lambda i: -float(scores[i]))
    return [tokens[i] for i in ranked[:k]]


def _top_k_lowest_first(tokens, scores, k):
    ordinary = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
    return [tokens[i] for i in sorted(ordinary, key=lambda i: float(scores[i]))[:k]]


WRONG = {
    "ig_left_riemann": [_ig_right_riemann, _ig_without_the_input_difference],
    "top_k_tokens": [_top_k_with_special_tokens, _top_k_lowest_first],
}
