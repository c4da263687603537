"""Reference solutions to chapter 03's exercises (03_transformer.ipynb). Try the exercises first."""

import torch

CHECKS = "foundation_course.transformer"


def sliding_window_mask(n, w):
    "An (n, n) boolean mask, True where position i may attend to position j: i - w < j <= i."
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return (j <= i) & (j > i - w)


def n_parameters(V, T, d, L):
    """The number of parameters of our causal Transformer with vocabulary V, context T, width d and
    L blocks."""
    qkv, out = 3 * d * d + 3 * d, d * d + d
    mlp = (4 * d * d + 4 * d) + (4 * d * d + d)
    layer_norms = 2 * 2 * d  # two per block, a weight and a bias each
    return V * d + T * d + L * (qkv + out + mlp + layer_norms) + 2 * d  # + the final LayerNorm


def _window_one_too_wide(n, w):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return (j <= i) & (j >= i - w)  # sees w + 1 positions


def _window_looking_both_ways(n, w):
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    return (i - j).abs() < w  # a band: position i also sees the future


def _n_parameters_without_layer_norms(V, T, d, L):
    return V * d + T * d + L * (3 * d * d + 3 * d + d * d + d + 8 * d * d + 5 * d)


def _n_parameters_with_untied_output(V, T, d, L):
    return (
        n_parameters(V, T, d, L) + V * d
    )  # the output layer reuses the embedding: no extra matrix


WRONG = {
    "sliding_window_mask": [_window_one_too_wide, _window_looking_both_ways],
    "n_parameters": [_n_parameters_without_layer_norms, _n_parameters_with_untied_output],
}
