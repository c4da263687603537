"""Pretraining: the objective by hand against F.cross_entropy, the n-gram baselines, sampling,
HF export, bad input."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foundation_course import pretraining
from foundation_course.data import CausalLMCollator, MLMCollator, pack_tokens, train_tokenizer
from foundation_course.pretraining import (
    RoundRobinBlocks,
    bigram_nll,
    evaluate_lm,
    lm_metrics,
    perplexity,
    pretrain,
    sample,
    save_pretrained_lm,
    token_nll,
    top_k_filter,
    two_sided_bigram_nll,
    unigram_nll,
    window_schedule,
)
from foundation_course.transformer import Transformer, TransformerConfig

TEXTS = [
    "the cat sat on the mat and the dog sat on the log .",
    "a bird flew over the house and sang a song .",
    "the river runs to the sea , and the sea is wide .",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300, min_frequency=1)


def model_for(tokenizer, causal=True, max_len=16):
    torch.manual_seed(0)
    return Transformer(
        TransformerConfig(
            vocab_size=len(tokenizer),
            max_len=max_len,
            d_model=32,
            n_layers=1,
            n_heads=2,
            dropout=0.0,
            causal=causal,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def test_token_nll_equals_cross_entropy_with_ignored_positions():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 9, 40) * 4, torch.randint(0, 40, (3, 9))
    labels[0, :4] = labels[2, 7:] = -100
    want = F.cross_entropy(logits.view(-1, 40), labels.view(-1), ignore_index=-100)
    assert torch.allclose(token_nll(logits, labels), want, atol=1e-6)
    per_token = token_nll(logits, labels, reduction="none")
    assert per_token.shape == (27 - 6,)
    assert torch.allclose(
        per_token,
        F.cross_entropy(logits.view(-1, 40), labels.view(-1), ignore_index=-100, reduction="none")[
            labels.view(-1) != -100
        ],
        atol=1e-5,
    )


def test_token_nll_is_stable_for_huge_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]])
    assert (
        torch.isfinite(token_nll(logits, torch.tensor([1])))
        and token_nll(logits, torch.tensor([0])) == 0
    )


def test_perplexity_bounds():
    labels = torch.randint(0, 64, (5, 6))
    assert perplexity(token_nll(torch.zeros(5, 6, 64), labels)) == pytest.approx(64)
    assert perplexity(token_nll(F.one_hot(labels, 64).float() * 100, labels)) == pytest.approx(1.0)


def test_ngram_baselines_match_direct_counting():
    train = torch.tensor([[0, 1, 2, 1, 2], [2, 1, 0, 1, 2]])
    val = torch.tensor([[0, 1, 2], [1, 0, 3]])
    V, a = 4, 0.5
    targets = [1, 2, 0, 3]
    uni = np.array(
        [1, 4, 3, 0]
    )  # counts of the predicted positions in train (all but the first token of each block)
    want_uni = -np.mean([np.log((uni[t] + a) / (8 + a * V)) for t in targets])
    assert unigram_nll(train, val, V, a) == pytest.approx(want_uni)
    pairs = {(0, 1): 2, (1, 2): 3, (2, 1): 2, (1, 0): 1}
    context = {0: 2, 1: 4, 2: 2, 3: 0}
    want_bi = -np.mean(
        [
            np.log((pairs.get((p, t), 0) + a) / (context[p] + a * V))
            for p, t in [(0, 1), (1, 2), (1, 0), (0, 3)]
        ]
    )
    assert bigram_nll(train, val, V, a) == pytest.approx(want_bi)


def test_two_sided_bigram_matches_direct_counting():
    torch.manual_seed(0)
    V, MASK, alpha = 7, 6, 0.1
    train, ids = torch.randint(0, 6, (50, 10)), torch.randint(0, 6, (4, 10))
    labels = torch.full_like(ids, -100)
    for b, i in [
        (0, 0),
        (0, 3),
        (1, 9),
        (2, 4),
        (2, 5),
        (3, 7),
    ]:  # first and last positions, and two masks side by side
        labels[b, i], ids[b, i] = ids[b, i], MASK
    counts = np.zeros((V, V))
    for row in train.numpy():
        for a, c in zip(row[:-1], row[1:]):
            counts[a, c] += 1
    nxt = (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * V)
    unigram = (counts.sum(0) + alpha) / (counts.sum() + alpha * V)
    nll = []
    for b, i in zip(*np.nonzero(labels.numpy() != -100)):
        left = ids[b, i - 1].item() if i > 0 else MASK
        right = ids[b, i + 1].item() if i < 9 else MASK
        p = (nxt[left] if left != MASK else unigram) * (nxt[:, right] if right != MASK else 1)
        nll.append(-np.log(p[labels[b, i]] / p.sum()))
    assert two_sided_bigram_nll(train, ids, labels, V, alpha, hidden_ids=[MASK]) == pytest.approx(
        np.mean(nll), rel=1e-5
    )
    with pytest.raises(ValueError, match="no masked position"):
        two_sided_bigram_nll(train, ids, torch.full_like(ids, -100), V)


def test_lm_metrics_match_the_models_own_loss(tokenizer):
    blocks = pack_tokens(TEXTS, tokenizer, 16)[:4]
    for causal, collate in (
        (True, CausalLMCollator(tokenizer.pad_token_id)),
        (False, MLMCollator(tokenizer, seed=0)),
    ):
        model = model_for(tokenizer, causal).eval()
        batch = collate(list(blocks))
        with torch.no_grad():
            m = lm_metrics(model, batch)
            assert torch.allclose(m["loss"].mean(), model(**batch).loss, atol=1e-5)
        assert m["acc"].shape == m["loss"].shape


def test_round_robin_blocks_serve_fresh_slices_and_wrap():
    blocks = torch.arange(10)[:, None].repeat(1, 3)
    data = RoundRobinBlocks(blocks, round_size=4)
    first = {int(data[i][0]) for i in range(4)}
    data.set_round(1)
    second = {int(data[i][0]) for i in range(4)}
    assert not first & second
    data.set_round(2)
    assert len({int(data[i][0]) for i in range(4)}) == 4  # wraps around the 10 blocks


def test_pretraining_lowers_held_out_loss_and_beats_a_uniform_guess(tokenizer, monkeypatch):
    blocks = pack_tokens(TEXTS, tokenizer, 16)
    model = model_for(tokenizer)
    collate = CausalLMCollator(tokenizer.pad_token_id)
    before = evaluate_lm(model, blocks[-4:], collate)
    eval_seconds = [0.0]

    def timed_lm_metrics(m, batch):
        start = time.perf_counter()
        out = lm_metrics(m, batch)
        eval_seconds[0] += time.perf_counter() - start
        return out

    monkeypatch.setattr(pretraining, "lm_metrics", timed_lm_metrics)
    result = pretrain(
        model,
        blocks[:-4],
        blocks[-4:],
        collate,
        tokenizer=tokenizer,
        rounds=2,
        steps=40,
        batch_size=8,
        lr=1e-2,
        progress=False,
    )
    validation_seconds = eval_seconds[0]
    after = evaluate_lm(model, blocks[-4:], collate)
    assert len(result.epochs) == 2 and result.epochs[-1]["step"] == 40
    assert after["ppl"] < before["ppl"] / 3 and after["ppl"] < len(tokenizer) / 10
    # throughput counts training time only: the validation passes are left out
    tokens = result.samples_seen * blocks.shape[1]
    assert result.tokens_per_second == pytest.approx(
        tokens / (result.train_seconds - validation_seconds), rel=1e-2
    )
    assert result.tokens_per_second > tokens / result.train_seconds


def test_window_schedule_doubles_then_ends_in_full_attention():
    assert window_schedule(6, 64) == [2, 4, 8, 16, 32, None]
    assert window_schedule(10, 256) == [2, 4, 8, 16, 32, 64, 128, None, None, None]
    assert window_schedule(2, 32) == [2, None] and window_schedule(1, 64) == [None]


def test_window_warmup_sets_each_rounds_window_and_leaves_full_attention(tokenizer):
    blocks = pack_tokens(TEXTS, tokenizer, 16)
    model = model_for(tokenizer, causal=False)
    seen = []
    pretrain(
        model,
        blocks[:-4],
        blocks[-4:],
        MLMCollator(tokenizer, seed=0),
        rounds=3,
        steps=6,
        batch_size=4,
        windows=[1, 4, None],
        on_round_end=lambda epoch, m, row: seen.append(model.attention_window),
        progress=False,
    )
    assert (
        seen == [4, None, None] and model.attention_window is None
    )  # the window of the round that comes next
    with pytest.raises(ValueError, match="end with None"):
        pretrain(
            model,
            blocks[:-4],
            blocks[-4:],
            MLMCollator(tokenizer),
            rounds=2,
            steps=2,
            windows=[1, 2],
            progress=False,
        )
    with pytest.raises(ValueError, match="one attention window per round"):
        pretrain(
            model,
            blocks[:-4],
            blocks[-4:],
            MLMCollator(tokenizer),
            rounds=3,
            steps=2,
            windows=[1, None],
            progress=False,
        )


def test_top_k_and_greedy_sampling_agree_with_transformers(tokenizer, tmp_path):
    logits = torch.tensor([[1.0, 5.0, 3.0, 2.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, False, True]]
    model = model_for(tokenizer, max_len=64)
    pretrain(
        model,
        pack_tokens(TEXTS, tokenizer, 16),
        pack_tokens(TEXTS, tokenizer, 16)[:2],
        CausalLMCollator(tokenizer.pad_token_id),
        rounds=1,
        steps=30,
        batch_size=8,
        lr=1e-2,
        progress=False,
    )
    ours = sample(model, tokenizer, "the cat", max_new_tokens=8, temperature=0)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        save_pretrained_lm(model, tokenizer, tmp_path / "lm")
    ).eval()
    prompt = torch.tensor(
        [[tokenizer.eos_token_id, *tokenizer("the cat", add_special_tokens=False)["input_ids"]]]
    )
    out = hf.generate(
        prompt,
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert ours == "the cat" + tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


def test_saved_models_load_with_auto_classes(tokenizer, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    model = model_for(tokenizer, causal=False).eval()
    path = save_pretrained_lm(model, tokenizer, tmp_path / "mlm")
    ids = pack_tokens(TEXTS, tokenizer, 16)[:2]
    with torch.no_grad():
        assert torch.allclose(
            AutoModelForMaskedLM.from_pretrained(path)(input_ids=ids).logits,
            model(ids).logits,
            atol=1e-5,
        )
    clf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert clf(
        **AutoTokenizer.from_pretrained(path)(["the cat"], return_tensors="pt")
    ).logits.shape == (1, 2)
    assert not list(tmp_path.glob(".mlm.tmp-*"))


def test_bad_input_gives_clear_errors(tokenizer):
    model = model_for(tokenizer)
    collate = CausalLMCollator(tokenizer.pad_token_id)
    with pytest.raises(ValueError, match=r"fewer than one block of 16"):
        pack_tokens([], tokenizer, 16)
    with pytest.raises(ValueError, match=r"got 0 training"):
        pretrain(
            model,
            torch.zeros(0, 16, dtype=torch.long),
            torch.zeros(2, 16, dtype=torch.long),
            collate,
        )
    long_blocks = pack_tokens(TEXTS, tokenizer, 32)
    with pytest.raises(ValueError, match=r"32 tokens .*max_len=16"):
        pretrain(model, long_blocks, long_blocks, collate)
    small = Transformer(
        TransformerConfig(vocab_size=100, max_len=16, d_model=32, n_layers=1, n_heads=2)
    )
    with pytest.raises(
        ValueError, match=rf"{len(tokenizer)} tokens but the model's vocab_size is 100"
    ):
        pretrain(
            small,
            pack_tokens(TEXTS, tokenizer, 16),
            pack_tokens(TEXTS, tokenizer, 16),
            collate,
            tokenizer=tokenizer,
        )
    with pytest.raises(ValueError, match="causal model"):
        sample(model_for(tokenizer, causal=False), tokenizer, "the")
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        top_k_filter(torch.randn(1, 5), 0)
