"""Reference solutions to chapter 04's exercises (04_pretraining.ipynb). Try the exercises first."""

import numpy as np

CHECKS = "foundation_course.pretraining"


def ppl_from_probs(probs):
    "The perplexity of a text whose true tokens got the probabilities `probs` (a 1-D array)."
    return float(np.exp(-np.mean(np.log(probs))))


def top_p_filter(logits, p):
    """2-D logits with every token outside the smallest set whose probabilities reach `p` set to
    -inf."""
    sorted_logits, order = logits.sort(-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p  # the mass before this token already reaches p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def _ppl_inverse_mean_probability(probs):
    return float(1 / np.mean(probs))  # right for a uniform guess only


def _ppl_of_the_total_nll(probs):
    return float(np.exp(-np.sum(np.log(probs))))  # the whole text's NLL, not per token


def _top_p_dropping_the_token_that_crosses_p(logits, p):
    sorted_logits, order = logits.sort(-1, descending=True)
    drop = sorted_logits.softmax(-1).cumsum(-1) > p  # the kept mass stays below p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


WRONG = {
    "ppl_from_probs": [_ppl_inverse_mean_probability, _ppl_of_the_total_nll],
    "top_p_filter": [_top_p_dropping_the_token_that_crosses_p],
}
