"""The from-scratch Transformer: attention and masks against PyTorch, weight parity with
transformers' GPT-2 and BERT, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertModel

from foundation_course import transformer
from foundation_course.data import load_text_model, load_tokenizer
from foundation_course.transformer import (
    Transformer,
    TransformerConfig,
    attention,
    attention_bias,
    causal_mask,
    check_tokenizer_fits,
    from_hf,
    padding_mask,
    to_hf,
    window_mask,
)


def small(causal, **kw):
    torch.manual_seed(0)
    return Transformer(
        TransformerConfig(
            vocab_size=300, max_len=32, d_model=64, n_layers=2, n_heads=4, causal=causal, **kw
        )
    ).eval()


def batch(vocab=300, length=20):
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (3, length))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    return ids, mask


def test_attention_matches_torch_sdpa_with_causal_and_padding_masks():
    q, k, v = torch.randn(3, 2, 3, 6, 8).unbind(0)
    ours, w = attention(q, k, v, causal_mask(6))
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 6)) and w[..., 0, 1:].abs().max() == 0
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    ours, w = attention(q, k, v, padding_mask(keep))
    assert torch.allclose(
        ours, F.scaled_dot_product_attention(q, k, v, attn_mask=padding_mask(keep)), atol=1e-6
    )
    assert w[0, :, :, 4:].max() < 1e-30


def test_fully_masked_rows_stay_finite():
    mask = torch.tensor([[0, 0, 0, 0]])
    bias = attention_bias(mask, causal=True, n=4)
    out, _ = attention(*torch.randn(3, 1, 1, 4, 8).unbind(0), bias)
    assert torch.isfinite(out).all()
    assert (
        attention_bias(torch.ones(2, 4), causal=True, n=4) is None
    )  # nothing masked: the fused causal path is used


@pytest.mark.parametrize("causal", [True, False])
def test_attention_window_hides_distant_tokens_and_none_restores_full_attention(causal):
    model, (ids, _) = small(causal), batch()
    assert window_mask(5, 1).int().sum() == 13  # the diagonal and one neighbour on each side
    full = model(ids).logits
    model.attention_window = 2
    local = model(ids).logits
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 300
    local_changed = model(changed).logits
    # with 2 layers of ±2, position i sees tokens up to 4 away: position 8 can't see position 3,
    # position 6 can
    assert torch.equal(local[:, 8], local_changed[:, 8]) and not torch.allclose(
        local[:, 6], local_changed[:, 6]
    )
    model.attention_window = None
    assert torch.equal(model(ids).logits, full) and not torch.allclose(local, full)
    with pytest.raises(ValueError, match="window must be >= 0"):
        attention_bias(None, causal, 8, window=-1)


def assert_gpt2_parity(tie):
    """Our causal model, exported to GPT2LMHeadModel and imported back, gives its logits and loss to
    1e-5."""
    ours = small(causal=True, tie_embeddings=tie)
    hf = to_hf(ours)
    ids, mask = batch()
    with torch.no_grad():
        a, b = ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits
        assert (a - b)[mask.bool()].abs().max() < 1e-5
        assert torch.allclose(
            ours(ids, labels=ids).loss, hf(input_ids=ids, labels=ids).loss, atol=1e-5
        )
        back = from_hf(hf)
        assert (back(ids, mask).logits - b)[mask.bool()].abs().max() < 1e-5


def assert_bert_parity(tie):
    """Our encoder gives BertModel's hidden states and BertForMaskedLM's logits to 1e-5, and
    survives the round trip."""
    ours = small(causal=False, tie_embeddings=tie)
    with torch.no_grad():
        ours.head_bias.normal_()  # zero at init; trained models have a real output bias
    hf = to_hf(ours)
    ids, mask = batch()
    encoder = BertModel(hf.config, add_pooling_layer=False).eval()
    encoder.load_state_dict(hf.bert.state_dict())
    with torch.no_grad():
        h = ours.encode(ids, mask)[0]
        assert (h - encoder(input_ids=ids, attention_mask=mask).last_hidden_state)[
            mask.bool()
        ].abs().max() < 1e-5
        assert (ours(ids, mask).logits - hf(input_ids=ids, attention_mask=mask).logits)[
            mask.bool()
        ].abs().max() < 1e-5
        back = from_hf(hf)
        assert (back(ids, mask).logits - ours(ids, mask).logits).abs().max() < 1e-6


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_parity_both_directions(tie):
    assert_gpt2_parity(tie)


@pytest.mark.parametrize("tie", [True, False])
def test_bert_parity_with_bert_model_and_masked_lm(tie):
    assert_bert_parity(tie)


class _FunctionalWith:
    """torch.nn.functional with some functions replaced: a mutant for the module that imports it as
    F."""

    def __init__(self, **replaced):
        self.replaced = replaced

    def __getattr__(self, name):
        return self.replaced.get(name, getattr(F, name))


def _attention_scaled_by(factor):
    def sdpa(q, k, v, **kw):
        return F.scaled_dot_product_attention(q, k, v, scale=factor / math.sqrt(q.shape[-1]), **kw)

    return sdpa


@pytest.mark.parametrize("assert_parity", [assert_gpt2_parity, assert_bert_parity])
def test_parity_tests_fail_when_attention_scaling_is_perturbed(monkeypatch, assert_parity):
    """A mutation check: scores scaled by 1.02/sqrt(d) instead of 1/sqrt(d) must break GPT-2 and
    BERT parity."""
    monkeypatch.setattr(
        transformer, "F", _FunctionalWith(scaled_dot_product_attention=_attention_scaled_by(1.02))
    )
    with pytest.raises(AssertionError):
        assert_parity(True)
    monkeypatch.undo()
    assert_parity(True)  # and the same check passes unperturbed


@pytest.mark.parametrize("assert_parity", [assert_gpt2_parity, assert_bert_parity])
def test_parity_tests_fail_when_the_mask_value_is_perturbed(monkeypatch, assert_parity):
    """A mutation check: padding masked with -1 instead of the dtype minimum must break parity on
    the padded batch."""
    real_bias = transformer.attention_bias

    def bias_with_minus_one(*args, **kw):
        bias = real_bias(*args, **kw)
        return None if bias is None else bias.clamp(min=-1.0)

    monkeypatch.setattr(transformer, "attention_bias", bias_with_minus_one)
    with pytest.raises(AssertionError):
        assert_parity(True)


def test_pretrained_minilm_runs_identically_in_our_code():
    hf, tok = load_text_model("minilm").eval(), load_tokenizer("minilm")
    ours = from_hf(hf)
    enc = tok(["a gripping, beautifully shot film .", "dull ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        diff = ours.encode(enc["input_ids"], enc["attention_mask"])[0] - hf(**enc).last_hidden_state
    assert diff[enc["attention_mask"].bool()].abs().max() < 1e-5


def test_attention_weights_are_returned_per_layer_and_match_the_fast_path():
    ours = small(causal=True)
    ids, _ = batch()
    with torch.no_grad():
        slow = ours(ids, return_weights=True)
        fast = ours(ids)
    assert len(slow.attentions) == 2 and slow.attentions[0].shape == (3, 4, 20, 20)
    assert torch.allclose(slow.logits, fast.logits, atol=1e-5)
    assert slow.attentions[0][0, 0].triu(1).abs().max() == 0


def test_too_long_sequence_names_length_and_limit():
    with pytest.raises(ValueError, match=r"40 tokens.*max_len=32"):
        small(causal=True)(torch.zeros(1, 40, dtype=torch.long))


def test_token_outside_vocabulary_names_id_and_size():
    with pytest.raises(ValueError, match=r"Token id 300 .*vocab_size=300"):
        small(causal=False)(torch.tensor([[1, 2, 300]]))


def test_tokenizer_vocabulary_mismatch_is_a_clear_error():
    tok = load_tokenizer("minilm")
    with pytest.raises(ValueError, match=r"30,522 tokens.*vocab_size is 300"):
        check_tokenizer_fits(tok, small(causal=True).cfg)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(d_model=100, n_heads=3)
