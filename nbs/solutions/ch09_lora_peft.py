"""Reference solutions to chapter 09's exercises (09_lora_peft.ipynb). Try the exercises first."""

CHECKS = "foundation_course.lora"


def lora_parameters(d_in, d_out, r):
    "The number of trainable parameters LoRA adds to one d_out x d_in linear layer."
    return r * d_in + d_out * r  # A is r x d_in, B is d_out x r


def merged_weight(W0, A, B, alpha, r):
    "The one weight matrix of a merged LoRA layer (W0: d_out x d_in, A: r x d_in, B: d_out x r)."
    return W0 + (alpha / r) * (B @ A)


def _lora_parameters_full_matrix(d_in, d_out, r):
    return r * d_in * d_out


def _lora_parameters_square(d_in, d_out, r):
    return 2 * r * d_in  # as if the layer were square


def _merged_weight_unscaled(W0, A, B, alpha, r):
    return W0 + B @ A


def _merged_weight_inverted_scale(W0, A, B, alpha, r):
    return W0 + (r / alpha) * (B @ A)


WRONG = {
    "lora_parameters": [_lora_parameters_full_matrix, _lora_parameters_square],
    "merged_weight": [_merged_weight_unscaled, _merged_weight_inverted_scale],
}
