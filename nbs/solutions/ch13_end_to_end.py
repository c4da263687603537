"""Reference solutions to chapter 13's exercises (13_end_to_end.ipynb). Try the exercises first."""

import re

CHECKS = "foundation_course.pipeline"


def _normalise(text):
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def shingle_jaccard(a, b, n=5):
    "Jaccard similarity of the character n-gram sets of the normalised texts `a` and `b`."
    sets = []
    for text in (_normalise(a), _normalise(b)):
        sets.append({text[i : i + n] for i in range(max(len(text) - n + 1, 1))})
    first, second = sets
    return len(first & second) / len(first | second) if first or second else 1.0


def _jaccard_raw_text(a, b, n=5):
    first = {
        a[i : i + n] for i in range(len(a) - n + 1)
    }  # "Hello, World!" and "hello world" differ
    second = {b[i : i + n] for i in range(len(b) - n + 1)}
    return len(first & second) / len(first | second)


def _jaccard_of_words(a, b, n=5):
    first, second = set(_normalise(a).split()), set(_normalise(b).split())  # words, not n-grams
    return len(first & second) / len(first | second)


def _overlap_over_smaller(a, b, n=5):
    first = {_normalise(a)[i : i + n] for i in range(len(_normalise(a)) - n + 1)}
    second = {_normalise(b)[i : i + n] for i in range(len(_normalise(b)) - n + 1)}
    return len(first & second) / min(len(first), len(second))  # overlap coefficient, not Jaccard


WRONG = {"shingle_jaccard": [_jaccard_raw_text, _jaccard_of_words, _overlap_over_smaller]}


def answer_or_abstain(probs, threshold, label_names):
    "A label name per row of `probs`, or 'abstain' where the top probability is below `threshold`."
    top, index = probs.max(-1)
    return [
        label_names[i] if p >= threshold else "abstain"
        for p, i in zip(top.tolist(), index.tolist())
    ]


def _abstain_strictly_below(probs, threshold, label_names):
    top, index = probs.max(-1)  # '>' abstains on a confidence exactly at the threshold
    return [
        label_names[i] if p > threshold else "abstain" for p, i in zip(top.tolist(), index.tolist())
    ]


def _always_answer(probs, threshold, label_names):
    return [label_names[i] for i in probs.argmax(-1).tolist()]


def _abstain_when_confident(probs, threshold, label_names):
    top, index = probs.max(-1)
    return [
        "abstain" if p >= threshold else label_names[i]
        for p, i in zip(top.tolist(), index.tolist())
    ]


WRONG["answer_or_abstain"] = [_abstain_strictly_below, _always_answer, _abstain_when_confident]
