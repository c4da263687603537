"""Reference solutions to chapter 09's exercises (09_lora_peft.ipynb). Try the exercises first."""

CHECKS = "foundation_course.lora"


def lora_parameters(d_in, d_out, r):
    "The number of trainable parameters LoRA adds to one d_out x d_in linear layer."
    return r * d_in + d_out * r  # A is r x d_in, B is d_out x r


def merged_weight(W0, A, B, alpha, r):
    "The merged weight of LoRA on a Conv1D (W0: d_in x d_out, A: r x d_in, B: d_out x r)."
    # the branch is x A^T B^T, so in the x W layout the update is (B A)^T = A^T B^T
    return W0 + (alpha / r) * (A.T @ B.T)


def _lora_parameters_full_matrix(d_in, d_out, r):
    return r * d_in * d_out


def _lora_parameters_square(d_in, d_out, r):
    return 2 * r * d_in  # as if the layer were square


def _merged_weight_linear_layout(W0, A, B, alpha, r):
    return W0 + (alpha / r) * (B @ A)  # nn.Linear's layout: not transposed for Conv1D


def _merged_weight_unscaled(W0, A, B, alpha, r):
    return W0 + A.T @ B.T


def _merged_weight_inverted_scale(W0, A, B, alpha, r):
    return W0 + (r / alpha) * (A.T @ B.T)


WRONG = {
    "lora_parameters": [_lora_parameters_full_matrix, _lora_parameters_square],
    "merged_weight": [
        _merged_weight_linear_layout,
        _merged_weight_unscaled,
        _merged_weight_inverted_scale,
    ],
}
