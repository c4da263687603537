"""Reference solutions to chapter 07's exercises (07_finetuning.ipynb). Try the exercises first."""

CHECKS = "foundation_course.finetuning"


def max_pool(hidden, mask):
    "hidden (B, T, d), mask (B, T) of 1 for real tokens and 0 for padding -> (B, d)."
    padding = mask.unsqueeze(-1) == 0
    return hidden.masked_fill(padding, float("-inf")).max(1).values


def freeze_all_but(model, names):
    "Train only the parameters whose name starts with one of `names`; return how many train."
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(tuple(names))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _max_pool_with_padding(hidden, mask):
    return hidden.max(1).values  # lets padding win


def _max_pool_zero_fill(hidden, mask):
    return (hidden * mask.unsqueeze(-1)).max(1).values  # a zero beats negative real values


def _freeze_counting_everything(model, names):
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(tuple(names))
    return sum(p.numel() for p in model.parameters())


def _freeze_never_unfreezing(model, names):
    for name, p in model.named_parameters():
        if not name.startswith(tuple(names)):
            p.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


WRONG = {
    "max_pool": [_max_pool_with_padding, _max_pool_zero_fill],
    "freeze_all_but": [_freeze_counting_everything, _freeze_never_unfreezing],
}
