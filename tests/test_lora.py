"""LoRA from scratch: identity at insertion, merge/unmerge, parity with peft (and a mutation that
breaks it), peft-format save, bad input, the causal-LM path and constrained decoding."""

import copy

import pytest
import torch
from conftest import tiny_bert
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from foundation_course.adapters import train_only
from foundation_course.lora import (
    LORA_TARGETS,
    CompletionCollator,
    LoRALinear,
    apply_lora,
    causal_lm_lora,
    check_lora_parameters,
    check_merged_weight,
    completion_pairs,
    constrained_label_decode,
    greedy_continuations,
    label_word_said,
    label_word_scores,
    lora_layers,
    merge_lora,
    peft_lora_config,
    peft_lora_state,
    prompt_ids,
    qlora_unavailable,
    review_prompt,
    save_lora_as_peft,
    unmerge_lora,
)

X = dict(
    input_ids=torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(1)),
    attention_mask=torch.ones(3, 7, dtype=torch.long),
)


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(**X).logits


def trained_like(model, seed=1):
    "Move every B off zero, as training would, so that LoRA changes the outputs."
    torch.manual_seed(seed)
    for layer in lora_layers(model).values():
        nn.init.normal_(layer.lora_B, std=0.1)
    return model


@pytest.mark.parametrize("base", [nn.Linear(10, 6), Conv1D(6, 10)], ids=["linear", "gpt2-conv1d"])
def test_lora_is_identity_at_insertion_then_merge_matches_and_unmerge_restores(base):
    x = torch.randn(4, 10)
    reference, w0 = base(x).detach(), base.weight.detach().clone()
    layer = LoRALinear(base, r=3, alpha=6)
    assert torch.equal(layer(x), reference)
    assert layer.lora_A.abs().sum() > 0 and layer.lora_B.abs().sum() == 0
    nn.init.normal_(layer.lora_B)
    unmerged = layer(x).detach()
    assert not torch.allclose(unmerged, reference)
    assert torch.allclose(
        unmerged, reference + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T), atol=1e-5
    )
    layer.merge()
    assert torch.allclose(layer(x), unmerged, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6)
    assert torch.allclose(layer(x), unmerged, atol=1e-6)


def test_bf16_merge_rounds_once_from_a_float32_sum():
    torch.manual_seed(0)
    base = nn.Linear(64, 32).to(torch.bfloat16)
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, r=4, alpha=8)
    assert layer.lora_A.dtype == torch.bfloat16
    nn.init.normal_(layer.lora_B, std=0.05)
    expected = (w0.float() + 2.0 * (layer.lora_B.float() @ layer.lora_A.float())).to(torch.bfloat16)
    layer.merge()
    assert torch.equal(base.weight, expected)
    x = torch.randn(16, 64).to(torch.bfloat16)
    layer.unmerge()
    unmerged = layer(x).float()
    layer.merge()
    assert (layer(x).float() - unmerged).abs().max() < 0.1  # bf16 rounding, not a wrong update


def test_b_gets_gradient_at_init_and_dropout_only_touches_the_lora_branch():
    layer = LoRALinear(nn.Linear(8, 8), r=2, dropout=0.5)
    layer(torch.randn(5, 8)).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0 and layer.lora_A.grad.abs().sum() == 0
    x = torch.randn(5, 8)
    layer.train()
    assert torch.equal(
        layer(x), layer.base(x)
    )  # B = 0: dropout on the branch input changes nothing


def test_apply_lora_wraps_named_modules_and_keeps_outputs():
    model = tiny_bert()
    before = logits(model)
    names = apply_lora(model, r=4, alpha=8)
    assert len(names) == 2 * len(LORA_TARGETS)
    assert torch.equal(logits(model), before)
    counts = train_only(model, ["lora_", "classifier"])
    assert counts["trainable"] == 2 * 4 * 4 * (16 + 16) + 16 * 2 + 2


def int8_values(model):
    "Pretend the value projections are int8 (as a quantized model's would be)."
    for layer in model.bert.encoder.layer:
        v = layer.attention.self.value
        v.weight = nn.Parameter(v.weight.detach().to(torch.int8), requires_grad=False)
    return model


# Bad input: one case per kind, each checking the error type, the argument it names and the fix.
@pytest.mark.parametrize(
    "call, error, names, fix",
    [
        (
            lambda m: apply_lora(m, ["qeury"]),
            ValueError,
            ["targets=['qeury']", "bert.encoder.layer.N.attention.self.query"],
            "Pass targets",
        ),
        (lambda m: apply_lora(m, r=0), ValueError, ["r=0"], "pass e.g. r=8"),
        (lambda m: apply_lora(m, r=-2), ValueError, ["r=-2"], "pass e.g. r=8"),
        (lambda m: apply_lora(m, r=2.5), ValueError, ["r=2.5"], "pass e.g. r=8"),
        (lambda m: apply_lora(m, alpha=0), ValueError, ["alpha=0"], "alpha=2*r"),
        (
            lambda m: apply_lora(m, ["attention.self"]),
            TypeError,
            ["targets=['attention.self']", "BertSelfAttention"],
            "choose targets that name linear layers",
        ),
        (
            lambda m: apply_lora(int8_values(m), ["value"]),
            TypeError,
            ["targets=['value']", "torch.int8"],
            "QLoRA",
        ),
    ],
    ids=["no-match", "r-zero", "r-negative", "r-float", "alpha", "not-linear", "int8-weights"],
)
def test_bad_input_is_refused_naming_the_argument_and_the_fix(call, error, names, fix):
    model = tiny_bert()
    with pytest.raises(error) as e:
        call(model)
    assert all(n in str(e.value) for n in names), str(e.value)
    assert fix in str(e.value), str(e.value)
    assert not lora_layers(model)  # checked before anything changed


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: LoRALinear(nn.Linear(4, 4), r=0), ValueError, r"got r=0; pass e\.g\. r=8"),
        (
            lambda: LoRALinear(nn.Linear(4, 4), dropout=1.0),
            ValueError,
            r"dropout must be in \[0, 1\), got dropout=1\.0",
        ),
        (
            lambda: LoRALinear(nn.Embedding(4, 4)),
            TypeError,
            r"got Embedding; choose targets that name linear layers \(linear_module_names",
        ),
        (lambda: merge_lora(tiny_bert()), ValueError, "no LoRA layers; call apply_lora first"),
        (
            lambda: apply_lora(tiny_bert(), "query"),
            ValueError,
            r"got targets='query'; pass a list such as \['query', 'value'\]",
        ),
    ],
    ids=["rank", "dropout", "not-linear", "merge-without-lora", "string-targets"],
)
def test_layer_and_merge_refuse_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_lora_twice_on_the_same_layer_is_refused_and_nothing_changes():
    model = tiny_bert()
    apply_lora(model, ["query"])
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, ["key", "query"])
    assert isinstance(model.bert.encoder.layer[0].attention.self.key, nn.Linear)
    with pytest.raises(ValueError, match="already has LoRA"):
        LoRALinear(model.bert.encoder.layer[0].attention.self.query)
    with pytest.raises(ValueError, match="inside a LoRALinear"):
        apply_lora(model, ["query.base"])


def test_merging_twice_or_unmerging_unmerged_is_refused():
    model = trained_like(tiny_bert())
    apply_lora(model, r=2)
    with pytest.raises(RuntimeError, match="not"):
        unmerge_lora(model)
    merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_lora(model)
    with pytest.raises(RuntimeError, match="already merged"):
        lora_layers(model)["bert.encoder.layer.0.attention.self.query"].merge()


def test_whole_model_merge_gives_same_outputs_and_unmerge_restores_weights():
    model = tiny_bert()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, r=4)
    trained_like(model)
    unmerged = logits(model)
    merge_lora(model)
    assert torch.allclose(logits(model), unmerged, atol=1e-5)
    unmerge_lora(model)
    restored = {
        k.replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k
    }
    assert restored.keys() == original.keys()
    assert all(torch.allclose(restored[k], original[k], atol=1e-6) for k in original)


def peft_twin(model_before_lora, r=4, alpha=8):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        copy.deepcopy(model_before_lora),
        LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS)),
    )


def assert_ours_matches_peft():
    "Our LoRA and peft's, holding the same A, B and head: same logits, updates and merged weights."
    from peft import set_peft_model_state_dict

    base = tiny_bert()
    ours = copy.deepcopy(base)
    names = apply_lora(ours, r=4, alpha=8)
    trained_like(ours)
    theirs = peft_twin(base)
    result = set_peft_model_state_dict(theirs, peft_lora_state(ours, ["classifier"]))
    assert not result.unexpected_keys
    assert torch.allclose(logits(ours), logits(theirs), atol=1e-6)
    for name in names:
        peft_layer = theirs.base_model.model.get_submodule(name)
        assert torch.allclose(
            lora_layers(ours)[name].delta_weight(),
            peft_layer.get_delta_weight("default"),
            atol=1e-7,
        )
    merge_lora(ours)
    merged = theirs.merge_and_unload()
    for name in names:
        assert torch.allclose(
            ours.get_submodule(name).base.weight, merged.get_submodule(name).weight, atol=1e-6
        )


def test_peft_with_our_a_and_b_gives_the_same_outputs_and_merged_weights():
    assert_ours_matches_peft()


def test_parity_check_fails_when_our_scaling_is_wrong(monkeypatch):
    "Mutation check: scale the update by alpha/(r+1) instead of alpha/r, and parity must fail."
    init = LoRALinear.__init__

    def wrong_scaling(self, base, r=8, alpha=16, dropout=0.0):
        init(self, base, r, alpha, dropout)
        self.scaling = alpha / (r + 1)

    monkeypatch.setattr(LoRALinear, "__init__", wrong_scaling)
    with pytest.raises(AssertionError):
        assert_ours_matches_peft()


def test_our_adapter_saved_in_peft_format_reloads_with_the_same_predictions(tmp_path):
    from peft import PeftModel

    base = tiny_bert()
    ours = copy.deepcopy(base)
    apply_lora(ours, r=4, alpha=8)
    trained_like(ours)
    nn.init.normal_(ours.classifier.weight)  # the head is trained too, and must travel with it
    folder = save_lora_as_peft(ours, tmp_path / "adapter", modules_to_save=["classifier"])
    assert {p.name for p in folder.iterdir()} == {
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
    assert torch.allclose(logits(reloaded), logits(ours), atol=1e-6)
    assert torch.allclose(logits(reloaded.merge_and_unload()), logits(ours), atol=1e-5)


def test_peft_config_needs_one_rank_for_all_layers():
    model = tiny_bert()
    apply_lora(model, ["query"], r=2)
    apply_lora(model, ["value"], r=4)
    with pytest.raises(ValueError, match="share r, alpha"):
        peft_lora_config(model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_qlora_says_plainly_why_it_is_skipped_without_cuda():
    assert "CUDA" in qlora_unavailable()


def test_exercise_checks_pass_the_right_answer_and_fail_wrong_ones():
    assert check_lora_parameters(lambda d_in, d_out, r: r * (d_in + d_out)) is True
    with pytest.raises(AssertionError):
        check_lora_parameters(lambda d_in, d_out, r: r * d_in * d_out)
    # the exercise merges into GPT-2's Conv1D layout (x W), the transpose of nn.Linear's
    assert check_merged_weight(lambda W0, A, B, alpha, r: W0 + (alpha / r) * A.T @ B.T) is True
    with pytest.raises(AssertionError):
        check_merged_weight(lambda W0, A, B, alpha, r: W0 + (alpha / r) * B @ A)
    with pytest.raises(AssertionError):
        check_merged_weight(lambda W0, A, B, alpha, r: W0 + A.T @ B.T)


# The causal-LM path: a tiny GPT-2 with a tokenizer trained on the reviews.
@pytest.fixture(scope="module")
def tiny_lm():
    from foundation_course.data import load_sentiment, train_tokenizer

    reviews = load_sentiment("rt-snippets")
    texts = reviews.train.texts[:400]
    answers = [review_prompt("x", w) for w in ("positive", "negative")] * 100  # one token each
    tokenizer = train_tokenizer(texts + answers, vocab_size=400)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=40,
            n_embd=32,
            n_layer=2,
            n_head=2,
            initializer_range=0.2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    return model, tokenizer, reviews


def test_prompts_are_cut_from_the_left_so_the_question_and_answer_fit(tiny_lm):
    _, tokenizer, reviews = tiny_lm
    prompt = review_prompt(" ".join(reviews.train.texts[:5]))
    ids = prompt_ids(tokenizer, prompt, 20)
    assert len(ids) == 20 and tokenizer.decode(ids).endswith("Sentiment:")
    [(p, c)] = completion_pairs(tokenizer, [prompt], ["positive"], context=40)
    assert len(p) + len(c) == 40 and c[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(c[:-1]).strip() == "positive"
    with pytest.raises(ValueError, match="room=0"):
        prompt_ids(tokenizer, prompt, 0)


def test_completion_collator_puts_the_loss_on_completions_only():
    batch = CompletionCollator(pad_token_id=0)([([5, 6, 7], [8, 9]), ([5], [8])])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, 8, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]


def test_label_word_scores_are_the_log_probability_of_each_word(tiny_lm):
    model, tokenizer, reviews = tiny_lm
    prompts = [review_prompt(t) for t in reviews.test.texts[:3]]
    words = ["positive", "mediocre"]  # one token, and several
    scores = label_word_scores(model, tokenizer, prompts, words, batch_size=2)
    assert scores.shape == (3, 2) and (scores < 0).all()
    word = tokenizer(" mediocre", add_special_tokens=False)["input_ids"]
    assert len(word) > 1
    ids = prompt_ids(tokenizer, prompts[1], 40 - len(word)) + word
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    n = len(word)
    by_hand = sum(logp[len(ids) - n - 1 + i, t] for i, t in enumerate(word))
    assert scores[1, 1].item() == pytest.approx(by_hand.item(), abs=1e-4)
    picked = constrained_label_decode(model, tokenizer, prompts, words)
    assert picked == [words[i] for i in scores.argmax(-1)]
    with pytest.raises(ValueError, match="two or more distinct"):
        constrained_label_decode(model, tokenizer, prompts, ["positive"])


def test_label_word_said_reads_the_first_word_only():
    words = ["positive", "negative"]
    assert label_word_said("Positive.", words) == "positive"
    assert label_word_said(" negative review", words) == "negative"
    assert label_word_said("the film is positive", words) is None
    assert label_word_said("", words) is None


def test_lora_teaches_a_small_causal_lm_to_answer_with_a_label_word(tiny_lm):
    model, tokenizer, reviews = tiny_lm
    model = copy.deepcopy(model)
    words = ["positive", "negative"]
    texts, labels = reviews.train.texts[:64], reviews.train.labels[:64]
    prompts = [review_prompt(t) for t in texts]
    pairs = completion_pairs(tokenizer, prompts, [words[y] for y in labels], context=40)
    held_out = [review_prompt(t) for t in reviews.test.texts[:16]]
    before = [label_word_said(c, words) for c in greedy_continuations(model, tokenizer, held_out)]
    torch.manual_seed(0)
    out = causal_lm_lora(model, pairs, tokenizer.pad_token_id, epochs=6, lr=2e-2, batch_size=16)
    after = [label_word_said(c, words) for c in greedy_continuations(model, tokenizer, held_out)]
    assert sum(s is not None for s in before) <= 4  # a random model rarely says one
    assert all(s is not None for s in after), after
    assert out["steps"] == 6 * 4 and 0 < out["trainable_pct"] < 100
    assert lora_layers(model) and all(m.merged for m in lora_layers(model).values())
