"""Reference solutions to chapter 02's exercises (02_training.ipynb). Try the exercises first."""

import math

import torch

CHECKS = "foundation_course.training"


def momentum_step(params, grads, velocities, lr, mu):
    "One SGD-with-momentum update of `params`, in place; `velocities` (one per parameter) too."
    with torch.no_grad():
        for p, g, v in zip(params, grads, velocities):
            v.mul_(mu).add_(g)
            p -= lr * v


def optimizer_steps(n, b, k, e):
    "Optimizer steps `fit` takes for n examples, batch size b, accumulation k and e epochs."
    batches = math.ceil(n / b)  # the last, smaller batch counts
    return e * math.ceil(batches / k)  # so does the last, shorter group of accumulated batches


def _momentum_forgetting_velocity(params, grads, velocities, lr, mu):
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g  # plain SGD


def _momentum_dampened(params, grads, velocities, lr, mu):
    with torch.no_grad():
        for p, g, v in zip(params, grads, velocities):
            v.mul_(mu).add_(g, alpha=1 - mu)  # a running average: torch's dampening=mu
            p -= lr * v


def _steps_dropping_the_last_batch(n, b, k, e):
    return e * math.ceil((n // b) / k)


def _steps_ignoring_accumulation(n, b, k, e):
    return e * math.ceil(n / b)


def _steps_dropping_the_last_group(n, b, k, e):
    return e * (math.ceil(n / b) // k)


WRONG = {
    "momentum_step": [_momentum_forgetting_velocity, _momentum_dampened],
    "optimizer_steps": [
        _steps_dropping_the_last_batch,
        _steps_ignoring_accumulation,
        _steps_dropping_the_last_group,
    ],
}
