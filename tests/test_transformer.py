"""The from-scratch Transformer: attention and masks against PyTorch, weight parity with transformers' GPT-2 and BERT, bad input."""
import pytest
import torch
import torch.nn.functional as F
from transformers import BertModel

from foundation_course.data import load_text_model, load_tokenizer
from foundation_course.transformer import (Transformer, TransformerConfig, attention, attention_bias, causal_mask,
                                           check_tokenizer_fits, from_hf, padding_mask, to_hf, window_mask)


def small(causal, **kw):
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=300, max_len=32, d_model=64, n_layers=2, n_heads=4, causal=causal, **kw)).eval()


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
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=padding_mask(keep)), atol=1e-6)
    assert w[0, :, :, 4:].max() < 1e-30


def test_fully_masked_rows_stay_finite():
    mask = torch.tensor([[0, 0, 0, 0]])
    bias = attention_bias(mask, causal=True, n=4)
    out, _ = attention(*torch.randn(3, 1, 1, 4, 8).unbind(0), bias)
    assert torch.isfinite(out).all()
    assert attention_bias(torch.ones(2, 4), causal=True, n=4) is None  # nothing masked: the fused causal path is used


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
    # with 2 layers of ±2, position i sees tokens up to 4 away: position 8 can't see position 3, position 6 can
    assert torch.equal(local[:, 8], local_changed[:, 8]) and not torch.allclose(local[:, 6], local_changed[:, 6])
    model.attention_window = None
    assert torch.equal(model(ids).logits, full) and not torch.allclose(local, full)
    with pytest.raises(ValueError, match="window must be >= 0"):
        attention_bias(None, causal, 8, window=-1)


@pytest.mark.parametrize("tie", [True, False])
def test_gpt2_parity_both_directions(tie):
    ours = small(causal=True, tie_embeddings=tie)
    hf = to_hf(ours)
    ids, mask = batch()
    with torch.no_grad():
        a, b = ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits
        assert (a - b)[mask.bool()].abs().max() < 1e-5
        assert torch.allclose(ours(ids, labels=ids).loss, hf(input_ids=ids, labels=ids).loss, atol=1e-5)
        back = from_hf(hf)
        assert (back(ids, mask).logits - b)[mask.bool()].abs().max() < 1e-5


@pytest.mark.parametrize("tie", [True, False])
def test_bert_parity_with_bert_model_and_masked_lm(tie):
    ours = small(causal=False, tie_embeddings=tie)
    with torch.no_grad():
        ours.head_bias.normal_()  # zero at init; trained models have a real output bias
    hf = to_hf(ours)
    ids, mask = batch()
    encoder = BertModel(hf.config, add_pooling_layer=False).eval()
    encoder.load_state_dict(hf.bert.state_dict())
    with torch.no_grad():
        h = ours.encode(ids, mask)[0]
        assert (h - encoder(input_ids=ids, attention_mask=mask).last_hidden_state)[mask.bool()].abs().max() < 1e-5
        assert (ours(ids, mask).logits - hf(input_ids=ids, attention_mask=mask).logits)[mask.bool()].abs().max() < 1e-5
        back = from_hf(hf)
        assert (back(ids, mask).logits - ours(ids, mask).logits).abs().max() < 1e-6


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
