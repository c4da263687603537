import pytest
import torch
from conftest import tiny_minilm_classifier

from foundation_course.interpretability import (
    _embeddings,
    _target_logit,
    attention_maps,
    class_activation_map,
    colour_tokens,
    deletion_drop,
    grad_cam,
    gradient_x_input,
    integrated_gradients,
    layer0_attention_by_hand,
    pad_baseline,
    token_attributions,
)
from foundation_course.training import small_cnn


@pytest.fixture(scope="module")
def tiny():
    return tiny_minilm_classifier(attn_implementation="eager")


TEXT = "the plot is thin but the cast is charming"


def test_ig_is_exact_for_a_linear_function():
    w, x, base = torch.randn(6), torch.randn(1, 6), torch.randn(1, 6)
    attr, gap = integrated_gradients(lambda z: z @ w, x, base, steps=2)
    assert torch.allclose(attr, (x - base)[0] * w, atol=1e-6) and gap < 1e-5


def test_ig_completeness_gap_shrinks_with_steps_on_a_transformer(tiny):
    model, tok = tiny
    enc = tok(TEXT, return_tensors="pt")
    f = _target_logit(model, enc["attention_mask"], 1)
    x, base = _embeddings(model, enc["input_ids"]), pad_baseline(model, tok, enc["input_ids"])
    with torch.no_grad():
        delta = (f(x) - f(base)).item()
    gaps = {m: integrated_gradients(f, x, base, m)[1] for m in (1, 4, 16, 64)}
    assert gaps[64] < gaps[4] and gaps[64] < 1e-3 * max(abs(delta), 1e-3) + 1e-5, (gaps, delta)
    attr, _ = integrated_gradients(f, x, base, 64)
    assert abs(attr.sum().item() - delta) == pytest.approx(gaps[64], abs=1e-6)


def test_ig_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        integrated_gradients(lambda z: z.sum(-1), torch.ones(1, 3), torch.zeros(1, 3), steps=0)


def test_pad_baseline_keeps_special_tokens(tiny):
    model, tok = tiny
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    base, emb = pad_baseline(model, tok, ids), _embeddings(model, ids)
    assert torch.equal(base[0, 0], emb[0, 0]) and torch.equal(base[0, -1], emb[0, -1])
    pad = model.get_input_embeddings().weight[tok.pad_token_id]
    assert torch.equal(base[0, 1], pad) and not torch.equal(emb[0, 1], pad)


def test_gradient_x_input_matches_a_finite_difference_along_x(tiny):
    model, tok = tiny
    enc = tok(TEXT, return_tensors="pt")
    gxi = gradient_x_input(model, enc["input_ids"], enc["attention_mask"], 0)
    f, x = _target_logit(model, enc["attention_mask"], 0), _embeddings(model, enc["input_ids"])
    eps = 1e-3
    with torch.no_grad():  # d/dt f((1+t) x) at t=0 equals the sum of gradient x input
        directional = (f(x * (1 + eps)) - f(x * (1 - eps))).item() / (2 * eps)
    assert gxi.shape == (enc["input_ids"].shape[1],)
    assert gxi.sum().item() == pytest.approx(directional, rel=1e-2, abs=1e-4)


def test_token_attributions_explain_the_predicted_class_unless_told_otherwise(tiny):
    model, tok = tiny
    enc = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        p = model(**enc).logits.softmax(-1)[0]
    a = token_attributions(model, tok, TEXT, steps=8)
    n = len(a["tokens"])
    assert a["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert a["integrated_gradients"].shape == (n,) and a["grad_x_input"].shape == (n,)
    assert a["target"] == int(p.argmax()) and a["probability"] == pytest.approx(
        p.max().item(), abs=1e-6
    )
    assert a["integrated_gradients"][0] == 0  # [CLS] is kept in the baseline: no attribution
    other = token_attributions(model, tok, TEXT, steps=8, target=1 - a["target"])
    assert other["target"] == 1 - a["target"]
    assert other["probability"] == pytest.approx(1 - a["probability"], abs=1e-6)


def test_attention_maps_match_the_hand_computation(tiny):
    model, tok = tiny
    tokens, maps = attention_maps(model, tok, TEXT)
    assert maps.shape == (2, 4, len(tokens), len(tokens))
    assert torch.allclose(maps.sum(-1), torch.ones(2, 4, len(tokens)), atol=1e-5)
    assert torch.allclose(layer0_attention_by_hand(model, tok, TEXT), maps[0], atol=1e-5)


def test_deletion_never_removes_special_tokens(tiny):
    model, tok = tiny
    enc = tok(TEXT, return_tensors="pt")
    n = enc["input_ids"].shape[1]
    scores = torch.zeros(n)
    scores[0] = scores[-1] = 100.0  # specials ranked first must be skipped
    with torch.no_grad():
        p = model(**enc).logits.softmax(-1)[0, 1]
        only_specials = model(input_ids=enc["input_ids"][:, [0, -1]]).logits.softmax(-1)[0, 1]
    assert deletion_drop(model, tok, TEXT, scores, k=100, target=1) == pytest.approx(
        (p - only_specials).item(), abs=1e-6
    )
    assert deletion_drop(model, tok, TEXT, scores, k=0, target=1) == pytest.approx(0.0, abs=1e-6)


def test_grad_cam_equals_cam_for_pooling_and_linear_head():
    torch.manual_seed(0)
    net = small_cnn(width=8).eval()
    x = torch.randn(3, 1, 28, 28)
    feats = {}
    net[3].register_forward_pre_hook(lambda m, i: feats.update(a=i[0].detach()))
    cams, logits = grad_cam(net, net[3], x)
    assert cams.shape == (3, 3, 3) and (cams >= 0).all()
    assert torch.allclose(
        cams, class_activation_map(feats["a"], net[-1], logits.argmax(-1)), atol=1e-6
    )
    target = torch.tensor([1, 2, 3])
    assert not torch.allclose(grad_cam(net, net[3], x, target)[0], cams)


def test_colour_tokens_escapes_and_skips_specials():
    out = colour_tokens(["[CLS]", "<b>", "bad", "[SEP]"], [5.0, 1.0, -0.5, 5.0])
    assert "&lt;b&gt;" in out and "[CLS]" not in out
    assert "rgba(220,40,40,1.00)" in out and "rgba(40,90,220,0.50)" in out
