import json
import os
import re

import numpy as np
import pytest
import torch
from conftest import tiny_minilm_classifier
from torch import nn

from foundation_course import deployment as dep
from foundation_course.data import load_image_backbone


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    model, tok = tiny_minilm_classifier()
    folder = tmp_path_factory.mktemp("text-model")
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from foundation_course.finetuning import save_image_classifier

    folder = tmp_path_factory.mktemp("image-model")
    torch.manual_seed(0)
    backbone = load_image_backbone("efficientnet-lite0", pretrained=False)
    backbone.set_head(3)
    return save_image_classifier(
        backbone, folder, "efficientnet-lite0", ["a", "b", "c"], input_size=32
    )


TEXTS = ["a lovely film", "dull and far too long, with no jokes that land", "fine"]


def lora_model():
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_minilm_classifier()
    peft_model = get_peft_model(
        model,
        LoraConfig(
            task_type="SEQ_CLS",
            r=4,
            lora_alpha=8,
            target_modules=["query", "value"],
            init_lora_weights=False,  # random B, so the merge changes the weights
        ),
    )
    return peft_model.eval(), tok


def test_merge_by_hand_matches_peft_and_reload_is_identical(tmp_path):
    peft_model, tok = lora_model()
    by_hand = dep.merged_lora_weights(peft_model)
    assert len(by_hand) == 4  # 2 layers x (query, value)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        before = peft_model(**enc).logits
    import copy

    merged = copy.deepcopy(peft_model).merge_and_unload()
    for name, w in by_hand.items():
        assert torch.allclose(merged.get_submodule(name).weight, w, atol=1e-6)
        assert not torch.allclose(
            merged.get_submodule(name).weight,
            peft_model.base_model.model.get_submodule(name).base_layer.weight,
        )
    folder = dep.merge_and_save(peft_model, tok, tmp_path / "merged")
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        after, direct = reloaded(**enc).logits, merged(**enc).logits
    assert torch.equal(after, direct) and torch.allclose(after, before, atol=1e-5)
    assert reloaded.config.id2label[1] == "positive"


def test_int8_by_hand_matches_torch_and_quantized_model_is_close():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4)).eval()
    q_model = dep.quantize_int8(model)
    assert type(model[0]) is nn.Linear  # the original is untouched
    packed = q_model[0].weight()
    q, scale = dep.int8_symmetric(model[0].weight)
    assert (
        torch.allclose(scale, packed.q_per_channel_scales().float(), rtol=1e-6)
        and (packed.q_per_channel_zero_points() == 0).all()
    )
    assert (q != packed.int_repr()).float().mean() < 1e-3
    x = torch.randn(16, 64)
    with torch.no_grad():
        ref, got = model(x), q_model(x)
    assert (ref - got).abs().max() < 0.05 * ref.abs().max()
    assert dep.state_dict_mb(q_model) < 0.5 * dep.state_dict_mb(model)


def test_int8_symmetric_all_zero_weight():
    q, scale = dep.int8_symmetric(torch.zeros(3, 3))
    assert (scale > 0).all() and (q == 0).all()


def test_onnx_export_parity_with_dynamic_shapes(tmp_path):
    model, tok = tiny_minilm_classifier()
    session = dep.OnnxClassifier(dep.export_onnx(model, tok, tmp_path / "m.onnx"), threads=1)
    for texts in (TEXTS, TEXTS[:1], TEXTS * 3):
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            ref = model(**enc).logits
        got = session(**enc)
        assert got.shape == ref.shape and (got - ref).abs().max() <= 1e-4


def test_interleaved_latencies_runs_round_robin():
    calls = []
    times = dep.interleaved_latencies(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1
    )
    assert calls == ["a", "b"] * 4 and {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    summary = dep.latency_summary([0.01] * 19 + [1.0], batch_size=8)
    assert summary["p50_ms"] == 10.0 and summary["p95_ms"] > 10 and summary["throughput"] == 800.0


def test_text_predictor_reports_empty_text_and_predicts_the_rest(text_folder):
    predictor = dep.Predictor(text_folder, device="cpu", batch_size=2)
    rows = predictor.predict(
        ["a lovely film", "", "   ", "dull"], ["line 1", "line 2", "line 3", "line 4"]
    )
    assert [r["input"] for r in rows] == ["line 1", "line 2", "line 3", "line 4"]
    assert (
        rows[1]["error"] == "empty text"
        and rows[2]["error"] == "empty text"
        and rows[1]["label"] is None
    )
    for r in (rows[0], rows[3]):
        assert r["error"] is None and r["label"] in ("negative", "positive")
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-5) and r["probability"] == max(
            r["probs"].values()
        )
    big = dep.Predictor(text_folder, device="cpu", batch_size=64).predict(
        ["a lovely film", "", "   ", "dull"]
    )
    assert [r["probs"] for r in big] == [r["probs"] for r in rows]


def test_image_predictor_reports_undecodable_files(image_folder, tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(
            np.random.default_rng(i).integers(0, 255, (28 + 4 * i, 28), dtype=np.uint8)
        ).save(tmp_path / f"img{i}.png")
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "colour.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    items, names = dep.read_inputs(tmp_path)
    rows = dep.Predictor(image_folder, device="cpu", batch_size=2).predict(items, names)
    by_name = {r["input"]: r for r in rows}
    assert set(by_name) == {"img0.png", "img1.png", "img2.png", "colour.jpg", "broken.png"}
    assert by_name["broken.png"]["error"].startswith("cannot decode image: UnidentifiedImageError")
    assert (
        str(tmp_path) not in by_name["broken.png"]["error"]
        and by_name["broken.png"]["label"] is None
    )
    assert all(
        by_name[n]["label"] in ("a", "b", "c") and by_name[n]["error"] is None
        for n in by_name
        if n != "broken.png"
    )


def test_predictor_missing_or_corrupt_folder(tmp_path, text_folder):
    nope, empty = tmp_path / "nope", tmp_path / "empty"
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(nope))} does not exist.*save_pretrained"
    ):
        dep.Predictor(nope)
    empty.mkdir()
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(empty))} has no config.json.*save_pretrained"
    ):
        dep.Predictor(empty)
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        dep.Predictor(bad_json)
    import shutil

    bad_weights = tmp_path / "bad-weights"
    shutil.copytree(text_folder, bad_weights)
    (bad_weights / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(
        ValueError,
        match=rf"Could not load the model in {re.escape(str(bad_weights))}: "
        r"SafetensorError.*corrupt; save the model again \(save_pretrained",
    ):
        dep.Predictor(bad_weights)


def test_write_predictions_csv_json_and_bad_suffix(tmp_path):
    rows = [
        dict(
            input="line 1",
            label="positive",
            probability=0.9,
            probs={"negative": 0.1, "positive": 0.9},
            error=None,
        ),
        dict(input="line 2", label=None, probability=None, probs=None, error="empty text"),
    ]
    csv_text = dep.write_predictions(rows, tmp_path / "p.csv").read_text().splitlines()
    assert csv_text[0] == "input,label,probability,p_negative,p_positive,error"
    assert csv_text[1] == "line 1,positive,0.9,0.1,0.9," and csv_text[2] == "line 2,,,,,empty text"
    assert json.loads(dep.write_predictions(rows, tmp_path / "p.json").read_text()) == rows
    with pytest.raises(ValueError, match="use a .csv or .json"):
        dep.write_predictions(rows, tmp_path / "p.txt")


def test_write_predictions_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    target = tmp_path / "p.json"
    target.write_text("previous")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        dep.write_predictions(
            [dict(input="x", label="a", probability=1.0, probs={"a": 1.0}, error=None)], target
        )
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == [
        "p.json"
    ]


def test_read_inputs_text_lines_and_errors(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("good film\n\nbad film\n")
    assert dep.read_inputs(path) == (["good film", "", "bad film"], ["line 1", "line 2", "line 3"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dep.read_inputs(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        dep.read_inputs(tmp_path / "empty")


def test_predictor_threshold_marks_low_confidence_rows_abstain_and_keeps_probabilities(text_folder):
    texts = ["a lovely film", "dull and far too long, with no jokes that land", "fine"]
    plain = dep.Predictor(text_folder, device="cpu").predict(texts)
    confidences = sorted(r["probability"] for r in plain)
    cut = (confidences[0] + confidences[1]) / 2  # between the least and the next least confident
    rows = dep.Predictor(text_folder, device="cpu", threshold=cut).predict(texts)
    for r, p in zip(rows, plain):
        assert r["probs"] == p["probs"] and r["probability"] == p["probability"]
        assert r["label"] == (dep.ABSTAIN if p["probability"] < cut else p["label"])
    assert [r["label"] for r in rows].count("abstain") == 1
    everything = dep.Predictor(text_folder, device="cpu", threshold=float("inf")).predict(texts)
    assert {r["label"] for r in everything} == {"abstain"}
    assert [
        r["label"] for r in dep.Predictor(text_folder, device="cpu", threshold=0.0).predict(texts)
    ] == [r["label"] for r in plain]
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"threshold is a confidence in \[0, 1\].*got {bad}"):
            dep.Predictor(text_folder, threshold=bad)


def test_predictor_and_adapter_loader_refuse_pickle_checkpoints(tmp_path):
    from safetensors.torch import load_file

    model, tok = tiny_minilm_classifier()
    folder = tmp_path / "pickled"
    model.config.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the old pickle format
    with pytest.raises(
        ValueError, match=r"pytorch_model\.bin is a pickle checkpoint.*save_pretrained"
    ):
        dep.Predictor(folder, device="cpu")
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no .safetensors weights"):
        dep.Predictor(folder, device="cpu")
    peft_model, _ = lora_model()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter))
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), adapter / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match=r"adapter_model\.bin is a pickle checkpoint"):
        dep.load_lora_adapter(adapter, tiny_minilm_classifier()[0])


def test_image_predictor_refuses_a_pickled_model_file(image_folder, tmp_path):
    import shutil

    folder = tmp_path / "pt"
    shutil.copytree(image_folder, folder)
    (folder / "model.safetensors").rename(folder / "model.pt")
    with pytest.raises(ValueError, match=r"model\.pt is a pickle checkpoint"):
        dep.Predictor(folder, device="cpu")


def test_predictor_rejects_wrong_input_types_and_shapes_with_the_fix(text_folder, image_folder):
    text = dep.Predictor(text_folder, device="cpu")
    with pytest.raises(TypeError, match=r"pass \[item\]"):
        text.predict("a lovely film")
    with pytest.raises(TypeError, match=r"items\[1\] is a int.*pass strings"):
        text.predict(["fine", 3])
    with pytest.raises(ValueError, match="2 items but 1 names"):
        text.predict(["fine", "good"], ["only one"])
    image = dep.Predictor(image_folder, device="cpu")
    with pytest.raises(ValueError, match=r"items\[0\] is a torch.float32 tensor.*must be uint8"):
        image.predict([torch.rand(28, 28)])
    with pytest.raises(ValueError, match=r"shape \(3, 28, 28\).*\(H, W, 3\)"):
        image.predict([torch.zeros(3, 28, 28, dtype=torch.uint8)])
    with pytest.raises(TypeError, match="image file paths or uint8 tensors"):
        image.predict([np.zeros((28, 28), dtype=np.uint8)])
    grey, colour = torch.zeros(28, 28, dtype=torch.uint8), torch.zeros(20, 24, 3, dtype=torch.uint8)
    rows = image.predict([grey, colour], ["grey", "colour"])
    assert all(r["error"] is None and r["label"] in ("a", "b", "c") for r in rows)


class Doubler(nn.Module):
    def forward(self, x):
        if x.shape[-1] != 4:
            raise ValueError("Doubler needs 4 features")
        return 2 * x


def test_try_compile_reports_a_failing_compiler_and_passes_other_errors_through(monkeypatch):
    import torch._dynamo

    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    torch._dynamo.reset()
    compiled, reason = dep.try_compile(Doubler(), dict(x=torch.ones(2, 4)), backend=no_compiler)
    assert compiled is None
    assert reason.startswith("BackendCompilerFailed (RuntimeError: no C++ compiler found")
    torch._dynamo.reset()
    compiled, reason = dep.try_compile(Doubler(), dict(x=torch.ones(2, 4)), backend="eager")
    assert reason == "ok" and torch.equal(compiled(torch.ones(1, 4)), 2 * torch.ones(1, 4))
    # the model's own bug is not swallowed
    with pytest.raises(ValueError, match="needs 4 features"):
        dep.try_compile(Doubler(), dict(x=torch.ones(2, 3)), backend="eager")

    def unsupported_platform(model, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", unsupported_platform)
    assert dep.try_compile(Doubler(), dict(x=torch.ones(2, 4))) == (
        None,
        "RuntimeError: torch.compile is not supported on this platform",
    )


def test_onnx_pieces_name_the_deploy_extra_when_missing(monkeypatch, tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'foundation_course\[deploy\]'"):
        dep.import_deploy_extra("onnx_not_installed_here")
    real = dep.importlib.import_module
    monkeypatch.setattr(
        dep.importlib,
        "import_module",
        lambda name: real("onnx_missing") if name == "onnxruntime" else real(name),
    )
    with pytest.raises(ImportError, match=r"onnxruntime is not installed.*\[deploy\]"):
        dep.OnnxClassifier(tmp_path / "m.onnx")
