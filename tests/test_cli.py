import json
import shutil

import pytest

from foundation_course import cli
from foundation_course.core import atomic_write_text

from conftest import NBS


def test_chapters_are_numbered_notebooks_with_parameters():
    names = cli.chapters()
    assert names[:3] == ["00_core", "01_data", "02_training"]
    assert "90_cli" not in names and "index" not in names


def test_resolve_chapters_by_number_or_name():
    assert cli.resolve_chapters(["02", "data"]) == ["02_training", "01_data"]
    with pytest.raises(SystemExit, match="Unknown chapter 'lora'; chapters: 00_core"):
        cli.resolve_chapters(["lora"])


def test_results_table_names_missing_chapters(tmp_path):
    atomic_write_text(tmp_path / "00_core.json", json.dumps(dict(
        chapter="00_core", profile="cpu", device="cpu", elapsed_s=1.0, saved_at="now",
        metrics={"matmul_gflops": 123.456, "sizes": [1, 2], "nested": {"a": 0.5}})))
    table = cli.results_table(tmp_path, ["00_core", "02_training"])
    assert "matmul_gflops  123.5" in table and "nested.a" in table
    assert "No results yet for: 02_training" in table


def test_committed_outputs_settle_progress_bars():
    outputs = [dict(output_type="stream", name="stderr", text="\rfit:   0%|\rfit:  50%|"),
               dict(output_type="stream", name="stderr", text="\rfit: 100%|\n"),
               dict(output_type="stream", name="stdout", text=["done\n"]),
               dict(output_type="display_data", data={}, metadata={})]
    merged = cli._merge_streams(outputs)
    assert [o["output_type"] for o in merged] == ["stream", "stream", "display_data"]
    assert merged[0]["text"] == ["fit: 100%|\n"] and merged[1]["text"] == ["done\n"]


def _failing_notebook(folder):
    nb = json.loads((NBS / "00_core.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    cells.append(dict(cell_type="code", metadata={}, execution_count=None, outputs=[], source="raise ValueError('broken on purpose')"))
    nb["cells"] = cells
    (folder / "50_broken.ipynb").write_text(json.dumps(nb))


def test_run_failure_names_chapter_cell_and_error(tmp_path, capsys, monkeypatch):
    _failing_notebook(tmp_path)
    monkeypatch.setattr(cli, "nbs_dir", lambda: tmp_path)
    code = cli.main(["run", "50", "--profile", "smoke", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1
    assert "50_broken failed in cell 2" in err and "starts `raise ValueError" in err  # cell 1 is papermill's injected one
    assert "ValueError: broken on purpose" in err


def test_main_list(capsys):
    assert cli.main(["list"]) == 0
    assert "01_data" in capsys.readouterr().out


def _tiny_text_model(folder):
    from transformers import BertConfig, BertForSequenceClassification
    from foundation_course.data import load_tokenizer
    tok = load_tokenizer("minilm")
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(str(folder)); tok.save_pretrained(str(folder))
    return folder


def test_predict_writes_csv_and_reports_empty_lines(tmp_path, capsys):
    model = _tiny_text_model(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("a lovely film\n\nboring\n")
    assert cli.main(["predict", str(model), str(texts), "--out", str(tmp_path / "out.csv"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "2 predictions written" in captured.out and "line 2: empty text" in captured.err
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "input,label,probability,p_negative,p_positive,error" and len(lines) == 4
    assert lines[2] == "line 2,,,,,empty text" and lines[1].split(",")[1] in ("negative", "positive")
    assert cli.main(["predict", str(model), str(texts), "--out", str(tmp_path / "out.json"), "--device", "cpu"]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [r["input"] for r in rows] == ["line 1", "line 2", "line 3"] and rows[1]["error"] == "empty text"


def test_predict_bad_model_folder_input_kind_and_format(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("fine\n")
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["predict", str(tmp_path / "missing"), str(texts), "--out", str(tmp_path / "o.csv")])
    model = _tiny_text_model(tmp_path / "model")
    with pytest.raises(SystemExit, match="text model, so INPUT must be a text file"):
        cli.main(["predict", str(model), str(tmp_path), "--out", str(tmp_path / "o.csv")])
    with pytest.raises(SystemExit, match="--out must end in .csv or .json"):
        cli.main(["predict", str(model), str(texts), "--out", str(tmp_path / "o.txt")])
    assert not (tmp_path / "o.csv").exists()
