"""LoRA from scratch: identity at insertion, merge/unmerge, parity with peft, peft-format save, bad input, the causal-LM path."""
import copy

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from conftest import tiny_bert
from foundation_course.adapters import train_only
from foundation_course.core import artifact_dir
from foundation_course.lora import (LORA_TARGETS, LoRALinear, apply_lora, causal_lm_lora, compare_methods, find_artifact,
                                    lora_layers, merge_lora, peft_lora_config, peft_lora_state, qlora_unavailable,
                                    review_prompt, save_lora_as_peft, unmerge_lora)


X = dict(input_ids=torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(1)),
         attention_mask=torch.ones(3, 7, dtype=torch.long))


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
    assert torch.allclose(unmerged, reference + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T), atol=1e-5)
    layer.merge()
    assert torch.allclose(layer(x), unmerged, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6)
    assert torch.allclose(layer(x), unmerged, atol=1e-6)


def test_b_gets_gradient_at_init_and_dropout_only_touches_the_lora_branch():
    layer = LoRALinear(nn.Linear(8, 8), r=2, dropout=0.5)
    layer(torch.randn(5, 8)).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0 and layer.lora_A.grad.abs().sum() == 0
    x = torch.randn(5, 8)
    layer.train()
    assert torch.equal(layer(x), layer.base(x))  # B = 0: dropout on the branch input changes nothing


def test_apply_lora_wraps_named_modules_and_keeps_outputs():
    model = tiny_bert()
    before = logits(model)
    names = apply_lora(model, r=4, alpha=8)
    assert len(names) == 2 * len(LORA_TARGETS)
    assert torch.equal(logits(model), before)
    counts = train_only(model, ["lora_", "classifier"])
    assert counts["trainable"] == 2 * 4 * 4 * (16 + 16) + 16 * 2 + 2


@pytest.mark.parametrize("call, error, message", [
    (lambda m: apply_lora(m, r=0), ValueError, "rank r must be a positive integer"),
    (lambda m: apply_lora(m, r=-2), ValueError, "rank r must be a positive integer"),
    (lambda m: apply_lora(m, alpha=0), ValueError, "alpha must be positive"),
    (lambda m: apply_lora(m, alpha=-1.0), ValueError, "alpha must be positive"),
    (lambda m: LoRALinear(nn.Linear(4, 4), r=0), ValueError, "rank r"),
    (lambda m: LoRALinear(nn.Linear(4, 4), alpha=0), ValueError, "alpha"),
    (lambda m: LoRALinear(nn.Embedding(4, 4)), TypeError, "wraps nn.Linear"),
    (lambda m: merge_lora(m), ValueError, "no LoRA layers"),
])
def test_bad_input_is_refused_before_training(call, error, message):
    with pytest.raises(error, match=message):
        call(tiny_bert())


def test_target_that_matches_nothing_lists_the_available_names():
    with pytest.raises(ValueError, match="matches nothing") as e:
        apply_lora(tiny_bert(), ["qeury"])
    assert "bert.encoder.layer.N.attention.self.query" in str(e.value)


def test_lora_twice_on_the_same_layer_is_refused_and_nothing_changes():
    model = tiny_bert()
    apply_lora(model, ["query"])
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, ["key", "query"])
    assert isinstance(model.bert.encoder.layer[0].attention.self.key, nn.Linear)  # checked before anything changed
    with pytest.raises(ValueError, match="already has LoRA"):
        LoRALinear(model.bert.encoder.layer[0].attention.self.query)


def test_merging_twice_or_unmerging_unmerged_is_refused():
    model = trained_like(tiny_bert())
    with pytest.raises(ValueError):
        merge_lora(model)
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
    restored = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert restored.keys() == original.keys()
    assert all(torch.allclose(restored[k], original[k], atol=1e-6) for k in original)


def peft_twin(model_before_lora, r=4, alpha=8):
    from peft import LoraConfig, get_peft_model
    return get_peft_model(copy.deepcopy(model_before_lora),
                          LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=alpha, target_modules=list(LORA_TARGETS)))


def test_peft_with_our_a_and_b_gives_the_same_outputs_and_merged_weights():
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
        assert torch.allclose(lora_layers(ours)[name].delta_weight(), peft_layer.get_delta_weight("default"), atol=1e-7)
    merge_lora(ours)
    merged = theirs.merge_and_unload()
    for name in names:
        assert torch.allclose(ours.get_submodule(name).base.weight, merged.get_submodule(name).weight, atol=1e-6)


def test_our_adapter_saved_in_peft_format_reloads_with_the_same_predictions(tmp_path):
    from peft import PeftModel
    base = tiny_bert()
    ours = copy.deepcopy(base)
    apply_lora(ours, r=4, alpha=8)
    trained_like(ours)
    nn.init.normal_(ours.classifier.weight)  # the head is trained too, and must travel with the adapter
    folder = save_lora_as_peft(ours, tmp_path / "adapter", modules_to_save=["classifier"])
    assert {p.name for p in folder.iterdir()} == {"adapter_model.safetensors", "adapter_config.json"}
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
    assert torch.allclose(logits(reloaded), logits(ours), atol=1e-6)
    assert torch.allclose(logits(reloaded.merge_and_unload()), logits(ours), atol=1e-5)


def test_peft_config_needs_one_rank_for_all_layers():
    model = tiny_bert()
    apply_lora(model, ["query"], r=2)
    apply_lora(model, ["value"], r=4)
    with pytest.raises(ValueError, match="share r, alpha"):
        peft_lora_config(model)


def test_compare_methods_trains_ours_and_peft_with_the_same_trainable_count(tmp_path):
    from foundation_course.adapters import sentiment_task
    from foundation_course.data import load_tokenizer
    folder = tmp_path / "tiny-bert"
    tiny_bert(vocab_size=load_tokenizer("minilm").vocab_size).save_pretrained(folder)
    task = sentiment_task(n_train=16, n_test=16)
    rows, kept = compare_methods(task, str(folder), epochs=1, batch_size=8,
                                 methods=["linear probe", "our LoRA r=8", "peft LoRA r=8"], keep=["our LoRA r=8"])
    by = {r["method"]: r for r in rows}
    assert by["our LoRA r=8"]["trainable"] == by["peft LoRA r=8"]["trainable"]
    assert by["linear probe"]["trainable"] == 16 * 2 + 2
    assert set(kept) == {"our LoRA r=8"} and lora_layers(kept["our LoRA r=8"])
    with pytest.raises(ValueError, match="Unknown methods"):
        compare_methods(task, str(folder), epochs=1, methods=["lora"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_qlora_says_plainly_why_it_is_skipped_without_cuda():
    assert "CUDA" in qlora_unavailable()


def test_missing_causal_lm_names_the_chapter_to_run(tmp_path, capsys):
    assert find_artifact("causal-lm", "04_pretraining", "smoke", tmp_path) is None
    assert "04_pretraining" in capsys.readouterr().out


def test_lora_fine_tunes_a_saved_gpt2_style_causal_lm(tmp_path):
    from foundation_course.data import load_sentiment, train_tokenizer
    reviews = load_sentiment("rt-snippets")
    texts = [review_prompt(t, "positive" if y else "negative") for t, y in zip(reviews.train.texts[:48], reviews.train.labels)]
    folder = artifact_dir("causal-lm", "smoke", tmp_path)
    tokenizer = train_tokenizer(reviews.train.texts[:500] + texts, vocab_size=400, save_dir=folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)).save_pretrained(folder)
    assert find_artifact("causal-lm", "04_pretraining", "smoke", tmp_path) == folder
    out = causal_lm_lora(folder, texts, texts[:16], [review_prompt(reviews.test.texts[0])], epochs=4, lr=1e-2,
                         batch_size=8, max_new_tokens=3)
    assert out["loss_after"] < out["loss_before"]
    assert len(out["samples_before"]) == len(out["samples_after"]) == 1
    assert 0 < out["trainable_pct"] < 100 and out["steps"] == 4 * 6
