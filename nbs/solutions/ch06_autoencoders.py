"""Reference solutions to chapter 06's exercises (06_autoencoders.ipynb). Try them first."""

import torch

CHECKS = "foundation_course.autoencoders"


def normalize_patches(patches):
    """Each patch of (N, L, D) `patches` minus its own mean, divided by sqrt(its own variance +
    1e-6)."""
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + 1e-6).sqrt()


def psnr(x, y):
    "The mean over images of 10 log10(1 / MSE(x_i, y_i)), for image batches in [0, 1]."
    mse = (x - y).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse)).mean()


def _normalize_with_unbiased_variance(patches):
    return (patches - patches.mean(-1, keepdim=True)) / (
        patches.var(-1, keepdim=True) + 1e-6
    ).sqrt()


def _normalize_over_patches_not_pixels(patches):
    mean, var = patches.mean(1, keepdim=True), patches.var(1, keepdim=True, unbiased=False)
    return (patches - mean) / (var + 1e-6).sqrt()


def _psnr_of_the_mean_mse(x, y):
    return 10 * torch.log10(1 / (x - y).pow(2).mean())


def _psnr_in_natural_log(x, y):
    return (10 * torch.log(1 / (x - y).pow(2).flatten(1).mean(1))).mean()


WRONG = {
    "normalize_patches": [_normalize_with_unbiased_variance, _normalize_over_patches_not_pixels],
    "psnr": [_psnr_of_the_mean_mse, _psnr_in_natural_log],
}
