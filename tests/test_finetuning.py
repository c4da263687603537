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

TEXTS = ["a gorgeous, witty and moving film", "flat, dull and far too long", "the best film of the year",
         "a tedious mess with no ideas", "funny and warm", "an utter bore"] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=120, kind="wordpiece", min_frequency=1)


def tiny_config(tokenizer, **kw):
    return BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, **kw)


def test_binary_cross_entropy_matches_bce_with_logits_and_two_class_softmax():
    torch.manual_seed(0)
    z, y = torch.randn(500) * 5, torch.randint(0, 2, (500,))
    ours = ft.binary_cross_entropy(z, y)
    assert torch.allclose(ours, nn.BCEWithLogitsLoss()(z, y.float()), atol=1e-6)
    assert torch.allclose(ours, F.cross_entropy(torch.stack([torch.zeros_like(z), z], 1), y), atol=1e-6)
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
        ours = model.classifier(torch.tanh(model.bert.pooler.dense(ft.pool(hidden, batch["attention_mask"], "cls"))))
        assert torch.allclose(ours, model(**batch).logits, atol=1e-6)


def test_encoder_classifier_loss_is_cross_entropy_of_its_logits(tokenizer):
    torch.manual_seed(0)
    from transformers import BertModel
    clf = ft.EncoderClassifier(BertModel(tiny_config(tokenizer)), num_labels=3, pooling="max").eval()
    batch = tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 2, 1, 2])
    out = clf(batch["input_ids"], batch["attention_mask"], labels)
    assert out.logits.shape == (4, 3)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))


@pytest.mark.parametrize("splits, message", [
    (dict(train=[0, 1, 2], validation=[0, 3]), "label 3, outside 0..2"),
    (dict(train=[0, 1, -1, 2]), "label -1"),
    (dict(train=[0, 1, 2], test=[]), "'test' split is empty"),
    (dict(train=[0, 0, 2], validation=[1]), r"no example of class\(es\) \[1\]"),
])
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
    big_vocab = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match="does not match the model"):
        ft.check_tokenizer(tokenizer, big_vocab)
    too_small = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer) - 10, hidden_size=32, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match="vocab_size"):
        ft.check_tokenizer(tokenizer, too_small)


def test_course_mlm_folder_loads_as_classifier(tokenizer, tmp_path, capsys):
    assert ft.course_model_dir("mlm-general", "smoke", tmp_path) is None
    assert "run 04_pretraining first" in capsys.readouterr().out
    folder = artifact_dir("mlm-general", "smoke", tmp_path)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_config(tokenizer))
    mlm.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    found = ft.course_model_dir("mlm-general", "smoke", tmp_path)
    assert found == folder
    model, tok = ft.load_classifier(str(found), num_labels=2)
    assert isinstance(model, BertForSequenceClassification) and model.config.num_labels == 2
    mlm_state = mlm.state_dict()
    for name in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.1.output.dense.weight"):
        assert torch.equal(model.state_dict()[name], mlm_state[name])  # the encoder is the pretrained one
    sets = ft.TextClassificationDataset(TEXTS, [i % 2 for i in range(len(TEXTS))], tok)
    batched = ft.BucketedBatches(sets, 8, tok.pad_token_id)
    result = ft.train_classifier(model, batched, batched, epochs=1, lr=1e-3, progress=False)
    assert result.best is not None and 0 <= ft.evaluate_classifier(model, batched)["acc"] <= 1


def test_saved_classifier_with_other_head_size_names_layer_and_shapes(tokenizer, tmp_path):
    model = BertForSequenceClassification(tiny_config(tokenizer, num_labels=2))
    ft.save_text_classifier(model, tokenizer, tmp_path / "clf", ["negative", "positive"])
    again, _ = ft.load_classifier(str(tmp_path / "clf"), num_labels=2)
    assert again.config.id2label == {0: "negative", 1: "positive"}
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    with pytest.raises(ValueError, match=r"classifier\.weight: checkpoint \(2, 32\) vs model \(3, 32\)"):
        ft.load_classifier(str(tmp_path / "clf"), num_labels=3)
    fresh, _ = ft.load_classifier(str(tmp_path / "clf"), num_labels=3, new_head=True)
    assert fresh.classifier.weight.shape == (3, 32)


def test_load_state_checked_names_every_mismatched_layer():
    small, other = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)), nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 5))
    with pytest.raises(ValueError, match=r"1\.weight: checkpoint \(5, 8\) vs model \(3, 8\); 1\.bias: checkpoint \(5,\) vs model \(3,\)"):
        ft.load_state_checked(small, other.state_dict())
    twin = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    ft.load_state_checked(twin, small.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), small.state_dict().values()))


def test_image_classifier_round_trip_and_wrong_head(tmp_path):
    from foundation_course.data import load_image_backbone
    bb = load_image_backbone("efficientnet-lite0", pretrained=False)
    bb.set_head(10)
    folder = ft.save_image_classifier(bb, tmp_path / "img", "efficientnet-lite0", [str(i) for i in range(10)], 64)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_classes"] == 10 and config["input_size"] == 64 and config["mean"] == [0.5, 0.5, 0.5]
    again, _ = ft.load_image_classifier(folder)
    x = torch.randn(2, 3, 64, 64)
    bb.model.eval(); again.model.eval()
    with torch.no_grad():
        assert torch.allclose(bb.model(x), again.model(x), atol=1e-6)
    config["num_classes"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"_fc\.weight: checkpoint \(10, 1280\) vs model \(4, 1280\)"):
        ft.load_image_classifier(folder)


def test_bucketed_batches_cover_every_example_once_with_little_padding(tokenizer):
    labels = list(range(len(TEXTS)))  # labels identify the examples
    data = TextClassificationDataset(TEXTS, [l % 2 for l in labels], tokenizer)
    data.labels = labels
    batches = ft.BucketedBatches(data, 5, tokenizer.pad_token_id)
    seen = sorted(int(l) for b in batches.batches for l in b["labels"])
    assert seen == labels
    widths = [b["input_ids"].shape[1] for b in batches.batches]
    assert widths == sorted(widths)  # sorted by length, so each batch pads to nearly its own length
    assert ft.first_item([batches[0]]) is batches[0]


def test_image_batcher_resizes_and_normalises_once():
    images = torch.full((3, 28, 28), 255, dtype=torch.uint8)
    x, y = ft.ImageBatcher(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))([(im, torch.tensor(i)) for i, im in enumerate(images)])
    assert x.shape == (3, 3, 64, 64) and y.tolist() == [0, 1, 2]
    assert torch.allclose(x, torch.ones_like(x), atol=1e-5)  # white -> 1.0 -> (1 - 0.5) / 0.5


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
    in_stages = {id(p) for stage in ft.efficientnet_stages(model) for m in stage for p in m.parameters()}
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
    expected = torch.cat([F.cross_entropy(model.heads[0](h[task == 0]), y[task == 0], reduction="sum").unsqueeze(0),
                          F.cross_entropy(model.heads[1](h[task == 1]), y[task == 1], reduction="sum").unsqueeze(0)]).sum() / 5
    assert torch.allclose(ft.multitask_loss(model, (x, task, y)), expected)


def test_mean_std_and_format():
    assert ft.mean_std([0.8, None, 0.9]) == pytest.approx((0.85, np.std([0.8, 0.9], ddof=1)))
    assert ft.mean_std([None]) == (None, None) and ft.mean_std([0.5]) == (0.5, None)
    assert ft.format_acc(0.8312, None) == "83.1%" and ft.format_acc(0.8, 0.01) == "80.0 ± 1.0%"
    assert ft.format_acc(None, None) == "not run"


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
