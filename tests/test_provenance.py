"""The committed outputs are one run: every chapter's results file and executed notebook come from
the same `make outputs` (one run id), and each results file says where and with what it ran."""

import json
import re

import pytest
from conftest import NBS

from foundation_course.cli import chapters

RESULTS = NBS / "results" / "cpu"
PROVENANCE = ("run_id", "git_commit", "started_at", "cpu_cores", "torch", "elapsed_s")


def committed_results() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in RESULTS.glob("*.json")}


def notebook_text_outputs(chapter: str) -> str:
    cells = json.loads((NBS / f"{chapter}.ipynb").read_text(encoding="utf-8"))["cells"]
    texts = []
    for output in (o for c in cells for o in c.get("outputs", [])):
        texts.append("".join(output.get("text", "")))
        texts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_every_chapter_has_committed_results():
    missing = sorted(set(chapters()) - set(committed_results()))
    assert not missing, f"no committed cpu results for {missing}: run `make outputs`"


@pytest.mark.parametrize("field", PROVENANCE)
def test_results_record_their_provenance(field):
    lacking = sorted(name for name, r in committed_results().items() if r.get(field) in (None, ""))
    assert not lacking, f"{lacking} lack {field!r}: regenerate them with `make outputs`"


def test_committed_results_are_one_run():
    ids = {name: r.get("run_id") for name, r in committed_results().items()}
    assert len(set(ids.values())) == 1, f"the committed results come from several runs: {ids}"
    assert all(r["profile"] == "cpu" for r in committed_results().values())


@pytest.mark.parametrize("chapter", chapters())
def test_committed_notebook_is_from_that_run(chapter):
    "A chapter's last cell prints the run id beside its results path; the outputs must show it."
    run_id = next(iter(committed_results().values()))["run_id"]
    printed = re.findall(r"\(run ([\w-]+), commit [0-9a-f]+\)", notebook_text_outputs(chapter))
    assert printed == [run_id], (
        f"nbs/{chapter}.ipynb shows run(s) {printed}, the committed results run {run_id}: "
        "commit outputs and results from one `make outputs`"
    )
