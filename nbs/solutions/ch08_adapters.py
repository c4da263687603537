"""Reference solutions to chapter 08's exercises (08_adapters.ipynb). Try the exercises first."""

import re

CHECKS = "foundation_course.adapters"


def adapter_parameters(dim, bottleneck):
    "The number of parameters of one BottleneckAdapter(dim, bottleneck)."
    down = dim * bottleneck + bottleneck  # weight and bias of d -> m
    up = bottleneck * dim + dim  # weight and bias of m -> d
    return down + up


def ffn_only_targets(model):
    "Names for add_adapters: the feed-forward output projection of every layer, nothing else."
    return [n for n, _ in model.named_modules() if re.fullmatch(r".*layer\.\d+\.output\.dense", n)]


def _adapter_parameters_without_biases(dim, bottleneck):
    return 2 * dim * bottleneck


def _adapter_parameters_one_bias(dim, bottleneck):
    return 2 * dim * bottleneck + dim


def _ffn_targets_by_suffix(model):
    return ["output.dense"]  # also ends the attention's output projection


def _ffn_targets_intermediate(model):
    return ["intermediate.dense"]  # the feed-forward's first projection, not its output


WRONG = {
    "adapter_parameters": [_adapter_parameters_without_biases, _adapter_parameters_one_bias],
    "ffn_only_targets": [_ffn_targets_by_suffix, _ffn_targets_intermediate],
}
