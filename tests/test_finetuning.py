import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from foundation_course import finetuning as ft
from foundation_course.core import artifact_dir
from foundation_course.data import TextClassificationDataset, train_tokenizer

TEXTS = [
    "a gorgeous, witty and moving film",
    "flat, dull and far too long",
    "the best film of the year",
    "a tedious mess with no ideas",
    "funny and warm",
    "an utter bore",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=120, kind="wordpiece", min_frequency=1)


def tiny_config(tokenizer, **kw):
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        **kw,
    )


def test_binary_cross_entropy_matches_bce_with_logits_and_two_class_softmax():
    torch.manual_seed(0)
    z, y = torch.randn(500) * 5, torch.randint(0, 2, (500,))
    ours = ft.binary_cross_entropy(z, y)
    assert torch.allclose(ours, nn.BCEWithLogitsLoss()(z, y.float()), atol=1e-6)
    assert torch.allclose(
        ours, F.cross_entropy(torch.stack([torch.zeros_like(z), z], 1), y), atol=1e-6
    )
    extreme = ft.binary_cross_entropy(torch.tensor([1000.0, -1000.0]), torch.tensor([0, 1]))
    assert torch.isfinite(extreme) and extreme.item() == pytest.approx(1000.0)


def test_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, -1.0], [3.0, -5.0], [99.0, 99.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert ft.pool(hidden, mask, "cls").tolist() == [[1.0, -1.0]]
    assert ft.pool(hidden, mask, "mean").tolist() == [[2.0, -3.0]]
    assert ft.pool(hidden, mask, "max").tolist() == [[3.0, -1.0]]
    with pytest.raises(ValueError, match="cls, mean, max"):
        ft.pool(hidden, mask, "first")


def test_cls_pool_pooler_and_linear_equal_bert_sequence_classifier(tokenizer):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2)).eval()
    batch = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state
        ours = model.classifier(
            torch.tanh(model.bert.pooler.dense(ft.pool(hidden, batch["attention_mask"], "cls")))
        )
        assert torch.allclose(ours, model(**batch).logits, atol=1e-6)


def test_encoder_classifier_loss_is_cross_entropy_of_its_logits(tokenizer):
    torch.manual_seed(0)
    from transformers import BertModel

    clf = ft.EncoderClassifier(
        BertModel(tiny_config(tokenizer)), num_labels=3, pooling="max"
    ).eval()
    batch = tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 2, 1, 2])
    out = clf(batch["input_ids"], batch["attention_mask"], labels)
    assert out.logits.shape == (4, 3)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))


@pytest.mark.parametrize(
    "splits, message",
    [
        (dict(train=[0, 1, 2], validation=[0, 3]), "label 3, outside 0..2"),
        (dict(train=[0, 1, -1, 2]), "label -1"),
        (dict(train=[0, 1, 2], test=[]), "'test' split is empty"),
        (dict(train=[0, 0, 2], validation=[1]), r"no example of class\(es\) \[1\]"),
    ],
)
def test_check_splits_refuses_bad_labels(splits, message):
    with pytest.raises(ValueError, match=message):
        ft.check_splits(splits, num_labels=3)


def test_check_splits_accepts_good_labels():
    ft.check_splits(dict(train=np.array([0, 1, 2, 1]), validation=[2]), num_labels=3)


def test_text_splits_checks_before_tokenizing(tokenizer):
    from foundation_course.data import LabeledTexts, SentimentData

    good = LabeledTexts(TEXTS[:4], np.array([0, 1, 1, 0]))
    data = SentimentData("toy", good, good, LabeledTexts([], np.array([], dtype=np.int64)))
    with pytest.raises(ValueError, match="'test' split is empty"):
        ft.text_splits(data, tokenizer)
    data.test = LabeledTexts(TEXTS[:2], np.array([0, 2]))
    with pytest.raises(ValueError, match="label 2, outside 0..1"):
        ft.text_splits(data, tokenizer)


def test_tokenizer_that_does_not_match_the_model_is_refused(tokenizer):
    small = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2))
    ft.check_tokenizer(tokenizer, small)
    big_vocab = BertForSequenceClassification(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with pytest.raises(ValueError, match="does not match the model"):
        ft.check_tokenizer(tokenizer, big_vocab)
    too_small = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tokenizer) - 10,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with pytest.raises(ValueError, match="vocab_size"):
        ft.check_tokenizer(tokenizer, too_small)


def test_course_mlm_folder_loads_as_classifier(tokenizer, tmp_path):
    folder = artifact_dir("mlm-general", "smoke", tmp_path)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_config(tokenizer))
    mlm.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    model, tok = ft.load_classifier(str(folder), num_labels=2)
    assert isinstance(model, BertForSequenceClassification) and model.config.num_labels == 2
    mlm_state = mlm.state_dict()
    for name in (
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.1.output.dense.weight",
    ):
        assert torch.equal(model.state_dict()[name], mlm_state[name])  # the pretrained encoder


def test_train_classifier_keeps_the_best_validation_epoch(tokenizer):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2))
    data = ft.TextClassificationDataset(TEXTS, [i % 2 for i in range(len(TEXTS))], tokenizer)
    batched = ft.BucketedBatches(data, 8, tokenizer.pad_token_id)
    result = ft.train_classifier(model, batched, batched, epochs=3, lr=1e-3, progress=False)
    assert len(result.epochs) == 3
    assert result.best["val_acc"] == max(r["val_acc"] for r in result.epochs)
    # the model handed back is the best epoch's: evaluating it gives that epoch's accuracy
    assert ft.evaluate_classifier(model, batched)["acc"] == pytest.approx(result.best["val_acc"])


def test_evaluate_classifier_gives_known_accuracy_loss_and_hits(tokenizer):
    model = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2)).eval()
    with (
        torch.no_grad()
    ):  # a head that ignores its input and always says class 1 with logit margin 2
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 2.0]))
    labels = [1, 1, 1, 0] * 6  # 18 of 24 are class 1
    data = ft.BucketedBatches(
        ft.TextClassificationDataset(TEXTS, labels, tokenizer), 5, tokenizer.pad_token_id
    )
    out = ft.evaluate_classifier(model, data)
    assert out["acc"] == pytest.approx(0.75)
    want_loss = F.cross_entropy(torch.tensor([[0.0, 2.0]] * 24), torch.tensor(labels)).item()
    assert out["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert out["correct"].tolist() == [y == 1 for y in labels]  # in the examples' own order


def test_saved_classifier_with_other_head_size_names_layer_and_shapes(tokenizer, tmp_path):
    model = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2))
    ft.save_text_classifier(model, tokenizer, tmp_path / "clf", ["negative", "positive"])
    again, _ = ft.load_classifier(str(tmp_path / "clf"), num_labels=2)
    assert again.config.id2label == {0: "negative", 1: "positive"}
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    with pytest.raises(
        ValueError, match=r"classifier\.weight: checkpoint \(2, 32\) vs model \(3, 32\)"
    ):
        ft.load_classifier(str(tmp_path / "clf"), num_labels=3)
    fresh, _ = ft.load_classifier(str(tmp_path / "clf"), num_labels=3, new_head=True)
    assert fresh.classifier.weight.shape == (3, 32)


def test_load_state_checked_names_every_mismatched_layer():
    small, other = (
        nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)),
        nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 5)),
    )
    with pytest.raises(
        ValueError,
        match=r"1\.weight: checkpoint \(5, 8\) vs model \(3, 8\); "
        r"1\.bias: checkpoint \(5,\) vs model \(3,\)",
    ):
        ft.load_state_checked(small, other.state_dict())
    twin = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    ft.load_state_checked(twin, small.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(twin.state_dict().values(), small.state_dict().values())
    )


def test_image_classifier_round_trip_and_wrong_head(tmp_path):
    from foundation_course.data import load_image_backbone

    bb = load_image_backbone("efficientnet-lite0", pretrained=False)
    bb.set_head(10)
    folder = ft.save_image_classifier(
        bb, tmp_path / "img", "efficientnet-lite0", [str(i) for i in range(10)], 64
    )
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["num_classes"] == 10
        and config["input_size"] == 64
        and config["mean"] == [0.5, 0.5, 0.5]
    )
    again, loaded_config = ft.load_image_classifier(folder)
    assert isinstance(again, nn.Module) and not again.training and loaded_config == config
    x = torch.randn(2, 3, 64, 64)
    bb.model.eval()
    with torch.no_grad():
        assert torch.allclose(bb.model(x), again(x), atol=1e-6)
    config["num_classes"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"_fc\.weight: checkpoint \(10, 1280\) vs model \(4, 1280\)"
    ):
        ft.load_image_classifier(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match="model.safetensors is missing .*save_image_classifier"
    ):
        ft.load_image_classifier(folder)
    with pytest.raises(ValueError, match="3 class names for a 10-class head"):
        ft.save_image_classifier(bb, tmp_path / "other", "efficientnet-lite0", ["a", "b", "c"], 64)


def test_bucketed_batches_cover_every_example_once_with_little_padding(tokenizer):
    labels = list(range(len(TEXTS)))  # labels identify the examples
    data = TextClassificationDataset(TEXTS, [y % 2 for y in labels], tokenizer)
    data.labels = labels
    batches = ft.BucketedBatches(data, 5, tokenizer.pad_token_id)
    seen = [int(y) for b in batches.batches for y in b["labels"]]
    assert sorted(seen) == labels
    assert seen == batches.example_order.tolist()  # example_order says which example is where
    widths = [b["input_ids"].shape[1] for b in batches.batches]
    assert widths == sorted(widths)  # sorted by length, so each batch pads to nearly its own length
    assert ft.collate_prebatched([batches[0]]) is batches[0]


IMAGE_CONFIG = dict(input_size=16, mean=[0.5] * 3, std=[0.5] * 3)


def test_image_batcher_resizes_and_normalises_once():
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    items = [(im, torch.tensor(i)) for i, im in enumerate(images)]
    x, y = ft.ImageBatcher(dict(IMAGE_CONFIG, input_size=64))(items)
    assert x.shape == (3, 3, 64, 64) and y.tolist() == [0, 1, 2]
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-5)  # white -> 1.0 -> (1 - 0.5) / 0.5


def test_preprocess_images_grey_and_colour():
    grey = ft.preprocess_images(torch.full((2, 28, 28), 255, dtype=torch.uint8), IMAGE_CONFIG)
    colour = torch.zeros((1, 20, 30, 3), dtype=torch.uint8)
    colour[..., 0] = 255  # pure red: the channels must stay apart
    out = ft.preprocess_images(colour, IMAGE_CONFIG)
    assert grey.shape == (2, 3, 16, 16) and torch.allclose(grey, torch.ones_like(grey))
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[:, 0], torch.ones(1, 16, 16), atol=1e-5)
    assert torch.allclose(out[:, 1:], -torch.ones(1, 2, 16, 16), atol=1e-5)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(2, 28, 28), "needs uint8 pixels 0..255, got torch.float32"),
        (torch.zeros(28, 28, dtype=torch.uint8)[None, None], r"got shape \(1, 1, 28, 28\)"),
        (torch.zeros(28, dtype=torch.uint8), "images\\[None\\]"),
    ],
)
def test_preprocess_images_refuses_wrong_dtype_and_shape(images, message):
    with pytest.raises(ValueError, match=message):
        ft.preprocess_images(images, IMAGE_CONFIG)


def test_wrong_shapes_get_clear_errors(tokenizer):
    with pytest.raises(ValueError, match=r"logits \(4, 1\) and targets \(4,\) differ"):
        ft.binary_cross_entropy(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match=r"hidden states \(B, T, d\) and a mask \(B, T\)"):
        ft.pool(torch.zeros(2, 5, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"one task id per example, shape \(3,\)"):
        ft.MultiTaskModel(nn.Linear(4, 6), 6, [2])(torch.zeros(3, 4), torch.zeros(3, 1).long())
    with pytest.raises(ValueError, match="the same d"):
        ft.train_probe(torch.zeros(4, 3), [0, 1, 0, 1], torch.zeros(2, 5), [0, 1], 2)
    with pytest.raises(ValueError, match="4 training rows but 3 labels"):
        ft.train_probe(torch.zeros(4, 3), [0, 1, 0], torch.zeros(2, 3), [0, 1], 2)
    model = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2))
    with pytest.raises(ValueError, match="3 label names for a 2-class head"):
        ft.save_text_classifier(model, tokenizer, "unused", ["a", "b", "c"])


def test_train_probe_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(200, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()  # a linear rule: a linear probe can reach 100%
    probe = ft.train_probe(x[:150], y[:150], x[150:], y[150:], 2, epochs=60, lr=5e-2)
    assert (probe(x[150:]).argmax(-1) == y[150:]).float().mean().item() >= 0.96


def test_discriminative_groups_halve_the_rate_per_stage_down():
    stages = [[nn.Linear(2, 2)], [nn.Linear(2, 2), nn.LayerNorm(2)], [nn.Linear(2, 3)]]
    groups = ft.discriminative_groups(stages, lr=1e-2, decay=0.5, weight_decay=0.1)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_param[id(stages[2][0].weight)] == (1e-2, 0.1)
    assert by_param[id(stages[1][0].weight)] == (5e-3, 0.1)
    assert by_param[id(stages[1][1].weight)] == (5e-3, 0.0)  # norm parameters get no decay
    assert by_param[id(stages[0][0].bias)] == (2.5e-3, 0.0)
    assert len(by_param) == sum(p.numel() > 0 for s in stages for m in s for p in m.parameters())


def test_efficientnet_stages_cover_all_parameters():
    from foundation_course.data import load_image_backbone

    model = load_image_backbone("efficientnet-lite0", pretrained=False).model
    in_stages = {
        id(p) for stage in ft.efficientnet_stages(model) for m in stage for p in m.parameters()
    }
    assert in_stages == {id(p) for p in model.parameters()}


def test_multitask_model_uses_each_examples_own_head():
    torch.manual_seed(0)
    model = ft.MultiTaskModel(nn.Linear(4, 6), 6, [2, 3])
    x, task = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    out = model(x, task)
    h = model.encoder(x)
    assert torch.allclose(out[task == 0, :2], model.heads[0](h[task == 0]))
    assert torch.isinf(out[task == 0, 2]).all()
    assert torch.allclose(out[task == 1], model.heads[1](h[task == 1]))
    y = torch.tensor([1, 2, 0, 0, 1])
    expected = (
        torch.cat(
            [
                F.cross_entropy(
                    model.heads[0](h[task == 0]), y[task == 0], reduction="sum"
                ).unsqueeze(0),
                F.cross_entropy(
                    model.heads[1](h[task == 1]), y[task == 1], reduction="sum"
                ).unsqueeze(0),
            ]
        ).sum()
        / 5
    )
    assert torch.allclose(ft.multitask_loss(model, (x, task, y)), expected)


def test_encode_texts_keeps_input_order(tokenizer):
    from transformers import BertModel

    torch.manual_seed(0)
    encoder = BertModel(tiny_config(tokenizer))
    texts = TEXTS[:6]
    feats = ft.encode_texts(encoder, tokenizer, texts, batch_size=2)
    for i in (0, 3, 5):
        one = tokenizer([texts[i]], return_tensors="pt")
        with torch.no_grad():
            ref = ft.pool(encoder(**one).last_hidden_state, one["attention_mask"], "mean")[0]
        assert torch.allclose(feats[i], ref, atol=1e-5)
