"""Reference solutions to chapter 01's exercises (01_data.ipynb). Try the exercises first."""

import numpy as np

from foundation_course.data import hash_fraction

CHECKS = "foundation_course.data"


def split_by_group(groups, test_frac):
    "A boolean array, True where the item is in the test split; each group is wholly in one split."
    return np.array([hash_fraction(g) < test_frac for g in groups])


def mask_fraction(mlm_probability, mask_prob):
    "The expected share of ordinary tokens that become [MASK]."
    return mlm_probability * mask_prob  # selected, then replaced by [MASK]


def _split_each_item_at_random(groups, test_frac):
    return (
        np.random.default_rng(0).random(len(groups)) < test_frac
    )  # a movie's reviews land on both sides


def _split_with_the_share_reversed(groups, test_frac):
    return np.array([hash_fraction(g) >= test_frac for g in groups])


def _mask_fraction_of_selected_only(mlm_probability, mask_prob):
    return mask_prob


def _mask_fraction_of_all_changed(mlm_probability, mask_prob):
    return mlm_probability  # every selected token, whether masked, replaced or kept


WRONG = {
    "split_by_group": [_split_each_item_at_random, _split_with_the_share_reversed],
    "mask_fraction": [_mask_fraction_of_selected_only, _mask_fraction_of_all_changed],
}
