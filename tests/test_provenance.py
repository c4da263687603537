"""tools/check_one_run.py, which `make outputs` runs last: it accepts a folder that is one run and
names each way a folder can fail to be one (mixed runs, missing provenance, missing results, a
notebook printing another run)."""

import json

import pytest
from conftest import ROOT, load_module

RUN = "20261130T000000Z-abc123"


@pytest.fixture(scope="module")
def check():
    return load_module(ROOT / "tools" / "check_one_run.py")


def write_chapter(nbs, name, run_id=RUN, printed=RUN, **drop):
    "A chapter notebook (parameters cell, the printed provenance line) and its results file."
    cells = [
        dict(cell_type="code", metadata=dict(tags=["parameters"]), source="profile = 'auto'"),
        dict(
            cell_type="code",
            metadata={},
            source="print(...)",
            outputs=[
                dict(
                    output_type="stream",
                    name="stdout",
                    text=f"runs/cpu/results/{name}.json (run {printed}, commit 1234abc)\n",
                )
            ],
        ),
    ]
    (nbs / f"{name}.ipynb").write_text(json.dumps(dict(cells=cells)))
    record = dict(
        chapter=name,
        profile="cpu",
        run_id=run_id,
        git_commit="1234abc",
        started_at="2026-11-30T00:00:00+00:00",
        cpu_cores=2,
        torch="2.14.1",
        elapsed_s=12.5,
    )
    for field in drop:
        record.pop(field)
    (nbs / "results" / "cpu").mkdir(parents=True, exist_ok=True)
    (nbs / "results" / "cpu" / f"{name}.json").write_text(json.dumps(record))


def test_one_run_passes(check, tmp_path):
    write_chapter(tmp_path, "00_core")
    write_chapter(tmp_path, "01_data")
    assert check.one_run_problems(tmp_path) == []
    assert check.main(["--nbs", str(tmp_path)]) == 0


def test_results_from_two_runs_fail(check, tmp_path, capsys):
    write_chapter(tmp_path, "00_core")
    write_chapter(tmp_path, "01_data", run_id="other", printed="other")
    assert any("2 runs" in p for p in check.one_run_problems(tmp_path))
    assert check.main(["--nbs", str(tmp_path)]) == 1
    assert "make outputs" in capsys.readouterr().err


def test_missing_provenance_is_named(check, tmp_path):
    write_chapter(tmp_path, "00_core", git_commit=None)
    assert check.one_run_problems(tmp_path) == ["00_core: results lack git_commit"]


def test_a_chapter_without_results_fails(check, tmp_path):
    write_chapter(tmp_path, "00_core")
    write_chapter(tmp_path, "01_data")
    (tmp_path / "results" / "cpu" / "01_data.json").unlink()
    assert "01_data: no results in cpu/" in check.one_run_problems(tmp_path)


def test_a_notebook_from_another_run_fails(check, tmp_path):
    write_chapter(tmp_path, "00_core")
    write_chapter(tmp_path, "01_data", printed="older-run")
    problems = check.one_run_problems(tmp_path)
    assert problems == [f"01_data.ipynb prints run(s) ['older-run'], its results' run is {RUN}"]


def test_the_committed_outputs_are_one_run(check):
    problems = check.one_run_problems(ROOT / "nbs")
    assert problems == [], "nbs/ is not one run; run `make outputs`:\n" + "\n".join(problems)
