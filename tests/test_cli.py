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
