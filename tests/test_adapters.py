"""Bottleneck adapters: identity at insertion, placement in a BERT sublayer, freezing, bad input,
the shared model surgery (match, parent, wrap) and the checkpoint size."""

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from conftest import tiny_bert
from torch import nn

from foundation_course.adapters import (
    BottleneckAdapter,
    WithAdapter,
    add_adapters,
    check_adapter_parameters,
    check_ffn_only_targets,
    checkpoint_size_mb,
    match_modules,
    parent_of,
    replace_module,
    train_only,
)


def inputs(batch=3, length=7, vocab=100):
    g = torch.Generator().manual_seed(1)
    return dict(
        input_ids=torch.randint(0, vocab, (batch, length), generator=g),
        attention_mask=torch.ones(batch, length, dtype=torch.long),
    )


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
    assert names == [
        f"bert.encoder.layer.{i}.{s}"
        for i in range(2)
        for s in ("attention.output.dense", "output.dense")
    ]


def test_adapter_sits_before_the_residual_and_layernorm_of_the_sublayer():
    model = tiny_bert()
    add_adapters(model, bottleneck=4)
    block = model.bert.encoder.layer[0].attention.output  # LayerNorm(dropout(dense(h)) + input)
    nn.init.normal_(block.dense.adapter.up.weight)
    h, residual = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    dense, adapter = block.dense.layer, block.dense.adapter
    z = h @ dense.weight.T + dense.bias
    z = (
        z
        + F.gelu(z @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T
        + adapter.up.bias
    )
    ln = block.LayerNorm
    expected = F.layer_norm(z + residual, (16,), ln.weight, ln.bias, ln.eps)
    assert torch.allclose(block(h, residual), expected, atol=1e-5)


def test_train_only_freezes_everything_but_adapters_and_head():
    model = tiny_bert()
    add_adapters(model, bottleneck=4)
    counts = train_only(model, ["adapter", "classifier"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("adapter" in n or "classifier" in n for n in trainable)
    per_adapter = 2 * 16 * 4 + 16 + 4
    assert counts["trainable"] == 4 * per_adapter + 16 * 2 + 2


def test_parent_of_and_replace_module_find_the_holder_of_a_dotted_name():
    model = tiny_bert()
    parent, child = parent_of(model, "bert.encoder.layer.1.attention.self.query")
    assert parent is model.bert.encoder.layer[1].attention.self and child == "query"
    assert parent_of(model, "classifier") == (model, "classifier")
    new = nn.Linear(16, 2)
    old = replace_module(model, "classifier", new)
    assert model.classifier is new and isinstance(old, nn.Linear) and old is not new


def test_adapters_follow_the_dtype_of_a_bf16_model():
    model = tiny_bert().to(torch.bfloat16)
    add_adapters(model, bottleneck=4)
    adapter = model.bert.encoder.layer[0].output.dense.adapter
    assert adapter.down.weight.dtype == torch.bfloat16
    assert model(**inputs()).logits.dtype == torch.bfloat16  # no dtype mismatch in forward


# Bad input: one case per kind, each checking the error type, the argument it names and the fix.
def quantized_layer(model):
    "Pretend the feed-forward projections are int8 (as a quantized model's would be)."
    for layer in model.bert.encoder.layer:
        dense = layer.output.dense
        dense.weight = nn.Parameter(dense.weight.detach().to(torch.int8), requires_grad=False)
    return model


@pytest.mark.parametrize(
    "call, error, names, fix",
    [
        (
            lambda m: add_adapters(m, targets=["ouptut.dense"]),
            ValueError,
            ["targets=['ouptut.dense']", "bert.encoder.layer.N.output.dense"],
            "Pass targets",
        ),
        (lambda m: add_adapters(m, bottleneck=0), ValueError, ["bottleneck=0"], "bottleneck=16"),
        (
            lambda m: add_adapters(m, targets=["attention"]),
            TypeError,
            ["targets=['attention']", "BertAttention"],
            "choose targets that name linear layers",
        ),
        (
            lambda m: add_adapters(quantized_layer(m), targets=["layer.0.output.dense"]),
            TypeError,
            ["targets=['layer.0.output.dense']", "torch.int8"],
            "float32 or bfloat16",
        ),
        (
            lambda m: add_adapters(m, targets="output.dense"),
            ValueError,
            ["targets='output.dense'"],
            "pass a list",
        ),
        (
            lambda m: train_only(m, ["nonexistent"]),
            ValueError,
            ["['nonexistent']"],
            "pass keywords",
        ),
    ],
    ids=["no-match", "bottleneck", "not-linear", "int8-weights", "string-targets", "keywords"],
)
def test_bad_input_is_refused_naming_the_argument_and_the_fix(call, error, names, fix):
    model = tiny_bert()
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(error) as e:
        call(model)
    assert all(n in str(e.value) for n in names), str(e.value)
    assert fix in str(e.value), str(e.value)
    assert {n: type(m) for n, m in model.named_modules()} == before  # nothing was wrapped


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
    with pytest.raises(ValueError, match="inside a WithAdapter"):
        add_adapters(model, targets=["output.dense.layer"])


def test_checkpoint_size_counts_only_trainable_tensors():
    model = tiny_bert()
    add_adapters(model, bottleneck=4)
    counts = train_only(model, ["adapter", "classifier"])
    size = checkpoint_size_mb(model)
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(t.numel() for t in trainable.values()) == counts["trainable"]
    assert size == len(safetensors.torch.save(trainable)) / 2**20  # the file, header included
    train_only(model, ["classifier"])
    assert checkpoint_size_mb(model) < size / 10  # the head alone: 34 floats


def test_exercise_checks_pass_the_right_answer_and_fail_wrong_ones():
    import re

    assert check_adapter_parameters(lambda d, m: 2 * d * m + d + m) is True
    with pytest.raises(AssertionError):
        check_adapter_parameters(lambda d, m: 2 * d * m)

    def right(model):
        return [
            n for n, _ in model.named_modules() if re.fullmatch(r".*layer\.\d+\.output\.dense", n)
        ]

    assert check_ffn_only_targets(right) is True
    with pytest.raises(AssertionError):
        check_ffn_only_targets(lambda model: ["output.dense"])
    with pytest.raises(AssertionError):
        check_ffn_only_targets(lambda model: ["intermediate.dense"])
