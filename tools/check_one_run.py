"""Check that the committed outputs are one run: every chapter has a results file, all of them
carry the same run id and their provenance, and each chapter notebook prints that run id beside
its results.

    python tools/check_one_run.py [--nbs nbs]   # exit 1 and name what differs

`make outputs` runs it after copying the run over nbs/."""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = ("run_id", "git_commit", "started_at", "cpu_cores", "torch", "elapsed_s")
PRINTED_RUN = re.compile(r"\(run ([\w-]+), commit [0-9a-f]+\)")


def chapter_names(nbs: Path) -> list[str]:
    "Numbered notebooks with a papermill `parameters` cell, as `foundation-course run` finds them."
    names = []
    for path in sorted(nbs.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        if any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
            names.append(path.stem)
    return names


def printed_run_ids(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    texts = [
        "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
        for cell in cells
        for out in cell.get("outputs", [])
    ]
    return PRINTED_RUN.findall("\n".join(texts))


def one_run_problems(nbs: Path, profile: str = "cpu") -> list[str]:
    "What keeps `nbs` from being one run of `profile`; empty when it is one."
    results_dir = nbs / "results" / profile
    records = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}
    problems = [
        f"{name}: no results in {results_dir.name}/"
        for name in chapter_names(nbs)
        if name not in records
    ]
    for name, record in records.items():
        lacking = [field for field in PROVENANCE if record.get(field) in (None, "")]
        if lacking:
            problems.append(f"{name}: results lack {', '.join(lacking)}")
    run_ids = {record.get("run_id") for record in records.values()}
    if len(run_ids) > 1:
        by_id = {name: record.get("run_id") for name, record in records.items()}
        problems.append(f"the results come from {len(run_ids)} runs: {by_id}")
    run_id = next(iter(run_ids), None)
    for name in chapter_names(nbs):
        printed = printed_run_ids(nbs / f"{name}.ipynb")
        if printed != [run_id]:
            problems.append(f"{name}.ipynb prints run(s) {printed}, its results' run is {run_id}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nbs", default=str(ROOT / "nbs"), help="the notebooks folder")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args(argv)
    problems = one_run_problems(Path(args.nbs), args.profile)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("Not one run: regenerate the outputs with `make outputs`.", file=sys.stderr)
        return 1
    print(f"One run: {len(chapter_names(Path(args.nbs)))} chapters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
