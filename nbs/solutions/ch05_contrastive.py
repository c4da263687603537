"""Reference solutions to chapter 05's exercises (05_contrastive.ipynb). Try the exercises first."""

import torch
import torch.nn.functional as F

CHECKS = "foundation_course.contrastive"


def alignment(z1, z2):
    """The mean squared distance between positive pairs (z1[i], z2[i]) after normalizing each row to
    length 1."""
    return (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).pow(2).sum(1).mean()


def uniformity(z):
    "log of the mean of exp(-2 |zi - zj|^2) over all pairs i != j of normalized rows of z."
    z = F.normalize(z, dim=1)
    squared = (z[:, None] - z[None]).pow(2).sum(-1)
    distinct = ~torch.eye(len(z), dtype=torch.bool)
    return torch.log(torch.exp(-2 * squared[distinct]).mean())


def _alignment_without_normalizing(z1, z2):
    return (z1 - z2).pow(2).sum(1).mean()


def _alignment_of_distances_not_squared(z1, z2):
    return (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).norm(dim=1).mean()


def _uniformity_counting_each_row_with_itself(z):
    z = F.normalize(z, dim=1)
    return torch.log(torch.exp(-2 * (z[:, None] - z[None]).pow(2).sum(-1)).mean())


def _uniformity_of_distances_not_squared(z):
    return torch.log(torch.exp(-2 * torch.pdist(F.normalize(z, dim=1))).mean())


WRONG = {
    "alignment": [_alignment_without_normalizing, _alignment_of_distances_not_squared],
    "uniformity": [_uniformity_counting_each_row_with_itself, _uniformity_of_distances_not_squared],
}
