"""Reference solutions to chapter 00's exercises (00_core.ipynb). Try the exercises first."""

import torch
from torch import nn

from foundation_course.core import seed_everything

CHECKS = "foundation_course.core"


def bert_layer_params(d):
    "The number of parameters of a BERT layer with hidden size d and feed-forward size 4d."
    attention = 4 * (d * d + d)  # Q, K, V and the output projection
    layer_norms = 2 * (2 * d)  # a scale and a shift per feature, twice
    feed_forward = (d * 4 * d + 4 * d) + (4 * d * d + d)
    return attention + layer_norms + feed_forward


def same_dropout_mask(seed):
    "Two boolean dropout masks (p=0.5, 10 elements), equal because both start from `seed`."
    masks = []
    for _ in range(2):
        seed_everything(seed)
        masks.append(nn.functional.dropout(torch.ones(10), p=0.5) > 0)
    return masks[0], masks[1]


def _params_without_biases(d):
    return 4 * d * d + 2 * (2 * d) + 2 * (4 * d * d)


def _params_with_one_number_per_layer_norm_feature(d):
    return bert_layer_params(d) - 2 * d  # a LayerNorm has a scale and a shift


def _mask_seeded_once(seed):
    seed_everything(seed)  # the second draw continues from where the first left off
    return (
        nn.functional.dropout(torch.ones(10), p=0.5) > 0,
        nn.functional.dropout(torch.ones(10), p=0.5) > 0,
    )


def _mask_ignoring_the_seed(seed):
    return same_dropout_mask(0)


WRONG = {
    "bert_layer_params": [_params_without_biases, _params_with_one_number_per_layer_norm_feature],
    "same_dropout_mask": [_mask_seeded_once, _mask_ignoring_the_seed],
}
