"""Bottleneck adapters: identity at insertion, placement inside a BERT sublayer, freezing, bad input, and the shared task glue."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_bert
from foundation_course.adapters import (BottleneckAdapter, WithAdapter, add_adapters, checkpoint_size_mb, match_modules,
                                        sentiment_task, train_and_measure, train_only)


def inputs(batch=3, length=7, vocab=100):
    g = torch.Generator().manual_seed(1)
    return dict(input_ids=torch.randint(0, vocab, (batch, length), generator=g), attention_mask=torch.ones(batch, length, dtype=torch.long))


def test_fresh_adapter_is_identity_and_has_2dm_plus_d_plus_m_parameters():
    adapter = BottleneckAdapter(12, bottleneck=3)
    h = torch.randn(4, 5, 12)
    assert torch.equal(adapter(h), h)
    assert sum(p.numel() for p in adapter.parameters()) == 2 * 12 * 3 + 12 + 3


def test_adapter_gets_gradients_at_zero_init():
    adapter = BottleneckAdapter(8, bottleneck=2)
    adapter(torch.randn(5, 8)).pow(2).sum().backward()
    assert adapter.up.weight.grad.abs().sum() > 0


def test_inserting_adapters_leaves_outputs_unchanged():
    model, x = tiny_bert(), inputs()
    with torch.no_grad():
        before = model(**x).logits
    names = add_adapters(model, bottleneck=4)
    with torch.no_grad():
        after = model(**x).logits
    assert torch.equal(before, after)
    assert names == [f"bert.encoder.layer.{i}.{s}" for i in range(2) for s in ("attention.output.dense", "output.dense")]


def test_adapter_sits_before_the_residual_and_layernorm_of_the_sublayer():
    model = tiny_bert()
    add_adapters(model, bottleneck=4)
    block = model.bert.encoder.layer[0].attention.output  # BertSelfOutput: LayerNorm(dropout(dense(h)) + input)
    nn.init.normal_(block.dense.adapter.up.weight)
    h, residual = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    dense, adapter = block.dense.layer, block.dense.adapter
    z = h @ dense.weight.T + dense.bias
    z = z + F.gelu(z @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias
    expected = F.layer_norm(z + residual, (16,), block.LayerNorm.weight, block.LayerNorm.bias, block.LayerNorm.eps)
    assert torch.allclose(block(h, residual), expected, atol=1e-5)


def test_train_only_freezes_everything_but_adapters_and_head():
    model = tiny_bert()
    add_adapters(model, bottleneck=4)
    counts = train_only(model, ["adapter", "classifier"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("adapter" in n or "classifier" in n for n in trainable)
    per_adapter = 2 * 16 * 4 + 16 + 4
    assert counts["trainable"] == 4 * per_adapter + 16 * 2 + 2


@pytest.mark.parametrize("call, message", [
    (lambda m: add_adapters(m, bottleneck=0), "bottleneck must be a positive integer"),
    (lambda m: add_adapters(m, targets=["ouptut.dense"]), "matches nothing"),
    (lambda m: train_only(m, ["nonexistent"]), "No parameter name contains"),
    (lambda m: add_adapters(m, targets=["attention"]), "not nn.Linear"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_bert())


def test_unmatched_target_error_lists_the_available_names():
    with pytest.raises(ValueError) as e:
        match_modules(tiny_bert(), ["qeury"])
    assert "bert.encoder.layer.N.attention.self.query" in str(e.value)


def test_adapters_twice_on_the_same_layer_is_refused():
    model = tiny_bert()
    add_adapters(model, bottleneck=4)
    with pytest.raises(ValueError, match="already has an adapter"):
        add_adapters(model, bottleneck=4)
    assert isinstance(model.bert.encoder.layer[0].output.dense, WithAdapter)
    assert not isinstance(model.bert.encoder.layer[0].output.dense.layer, WithAdapter)


def test_sentiment_task_subsample_is_balanced_and_the_test_split_is_whole():
    task = sentiment_task(n_train=40)
    assert task.n_train == len(task.train) == 40
    assert sum(task.train.labels) == 20
    from foundation_course.data import load_sentiment
    assert len(task.test) == len(load_sentiment("rt-snippets").test)
    lengths = [len(ids) for ids in task.test.encodings]
    assert max(lengths) <= 64


def test_train_and_measure_reports_accuracy_size_memory_and_speed():
    from foundation_course.data import load_tokenizer
    task = sentiment_task(n_train=16, n_test=16)
    model = tiny_bert(vocab_size=load_tokenizer("minilm").vocab_size)
    add_adapters(model, bottleneck=4)
    counts = train_only(model, ["adapter", "classifier"])
    row = train_and_measure("adapters", model, task, epochs=1, lr=1e-3, batch_size=8)
    assert row["trainable"] == counts["trainable"] and 0 <= row["test_acc"] <= 1
    assert row["step_s"] > 0 and row["peak_rss_mb"] > 0
    assert row["checkpoint_mb"] == pytest.approx(counts["trainable"] * 4 / 2**20, rel=0.05, abs=0.01)
    assert checkpoint_size_mb(model) == pytest.approx(row["checkpoint_mb"], abs=1e-3)
