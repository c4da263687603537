"""Build glue: nbdev's processed notebooks -> Sphinx (myst-nb, sphinx-book-theme) -> offline site;
and README.md from index.ipynb.

    python tools/build_site.py site [--out _site]   # writes <out>/html, warnings are errors
    python tools/build_site.py readme               # README.md and its figures from nbs/index.ipynb

Everything is discovered: the site has every notebook in nbs/, the chapters in file order."""

from __future__ import annotations

import argparse
import ast
import base64
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SITE_CONF = ROOT / "site"
README = ROOT / "README.md"

# Quarto spellings in nbdev's output that docutils can't take: show_doc markdown opens with a
# `---` rule,
# and links carry Quarto attributes such as `{target="_blank"}`.
_LEADING_RULE = re.compile(r"\A\s*---\s*\n")
_QUARTO_ATTRS = re.compile(r"(\]\([^)]*\))\{[^}\n]*\}")
# Quarto cell options -> the myst-nb tags that do the same.
_QUARTO_TO_TAGS = {
    ("echo", "false"): "remove-input",
    ("output", "false"): "remove-output",
    ("include", "false"): "remove-cell",
}
_SHOW_DOC = re.compile(r"^show_doc\(", re.M)
_DIRECTIVE = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(\S+)\s*$")
TOCTREE = "```{toctree}\n:hidden:\n:glob:\n\n[0-9][0-9]_*\nglossary\n```"


def _text(src) -> str:
    return "".join(src) if isinstance(src, list) else src


def _fix_markdown(text: str) -> str:
    return _QUARTO_ATTRS.sub(r"\1", _LEADING_RULE.sub("", text))


def _fix_cell(cell: dict) -> dict:
    "Make one nbdev-processed cell renderable by myst-nb."
    if cell["cell_type"] == "markdown":
        cell["source"] = _fix_markdown(_text(cell["source"]))
    if cell["cell_type"] != "code":
        return cell
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    for line in _text(cell["source"]).splitlines():
        match = _DIRECTIVE.match(line)
        if not match:
            break
        tag = _QUARTO_TO_TAGS.get((match[1], match[2].lower()))
        if tag and tag not in tags:
            tags.append(tag)
    for out in cell.get("outputs", []):
        if "text/markdown" in out.get("data", {}):
            out["data"]["text/markdown"] = _fix_markdown(_text(out["data"]["text/markdown"]))
    return cell


def _title_cell(front_matter: str) -> dict:
    "nbdev moves `# title` and `> description` into Quarto front matter; put them back as markdown."
    import yaml

    meta = yaml.safe_load(front_matter.strip().strip("-")) or {}
    lines = [f"# {meta.get('title', '')}"] + (
        [f"> {meta['description']}"] if meta.get("description") else []
    )
    return dict(cell_type="markdown", id="site-title", metadata={}, source="\n\n".join(lines))


def _module_of(name: str) -> str | None:
    "The `#| default_exp` module of nbs/<name>.ipynb (nbdev's processing drops that cell)."
    cells = json.loads((NBS / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    found = re.search(
        r"^#\|\s*default_exp\s+(\S+)", "\n".join(_text(c["source"]) for c in cells), re.M
    )
    return found[1] if found else None


def fill_show_docs(nb: dict, module: str) -> None:
    "Run the show_doc cells without output (one per exported name) against the exported module."
    from execnb.shell import CaptureShell

    todo = [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and not c.get("outputs")
        and _SHOW_DOC.search(_text(c["source"]))
    ]
    if not todo:
        return
    shell = CaptureShell()
    setup = f"from nbdev.showdoc import show_doc\nfrom foundation_course.{module} import *"
    for code, cell in [(setup, None), *((_text(c["source"]), c) for c in todo)]:
        outputs = json.loads(json.dumps(shell.run(code)))
        errors = [o for o in outputs if o.get("output_type") == "error"]
        if errors:
            raise SystemExit(
                f"{module}: `{code.splitlines()[-1]}` raised "
                f"{errors[0]['ename']}: {errors[0]['evalue']}"
            )
        if cell is not None:
            cell["outputs"] = outputs


def solution_sources(chapter: str) -> dict[str, str]:
    "The reference solutions of a chapter's exercises (nbs/solutions/ch<chapter>.py), by name."
    path = NBS / "solutions" / f"ch{chapter}.py"
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    return {
        n.name: ast.get_source_segment(text, n)
        for n in ast.parse(text).body
        if isinstance(n, ast.FunctionDef)
    }


def _exercise_names(cell: dict) -> list[str]:
    try:
        tree = ast.parse(_text(cell["source"]))
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]


def solution_cell(names: list[str], solutions: dict[str, str]) -> dict | None:
    "A collapsed 'Show solution' block (HTML <details>: no script, works offline) with the code."
    code = "\n\n\n".join(solutions[n] for n in names if n in solutions)
    if not code:
        return None
    # The fenced code sits between two raw-HTML blocks: blank lines in it cannot end a block early.
    opening = '<details class="solution">\n<summary>Show solution</summary>'
    body = f"{opening}\n\n```python\n{code}\n```\n\n</details>"
    return dict(cell_type="markdown", id=f"solution-{names[0]}"[:64], metadata={}, source=body)


def add_solution_toggles(nb: dict, chapter: str) -> None:
    "After each cell tagged `exercise`, a toggle that shows the reference solution."
    solutions = solution_sources(chapter)
    cells = []
    for cell in nb["cells"]:
        cells.append(cell)
        if cell["cell_type"] == "code" and "exercise" in cell.get("metadata", {}).get("tags", []):
            toggle = solution_cell(_exercise_names(cell), solutions)
            if toggle:
                cells.append(toggle)
    nb["cells"] = cells


def gpu_results_cell(chapter: str, results: Path = NBS / "results") -> dict | None:
    "A closing section with the chapter's gpu-profile results beside its cpu ones, where recorded."
    from foundation_course.cli import results_table

    gpu = results / "gpu" / f"{chapter}.json"
    if not gpu.exists():
        return None
    record = json.loads(gpu.read_text(encoding="utf-8"))
    machine = record.get("gpu_name") or record.get("device", "a GPU")
    table = results_table({"cpu": results / "cpu", "gpu": results / "gpu"}, [chapter])
    text = (
        f"## At the gpu profile\n\nThis chapter also ran at the `gpu` profile, on {machine} "
        f"(`nbs/results/gpu/{chapter}.json`). Its recorded results, beside the cpu run's:\n\n"
        f"```text\n{table}\n```"
    )
    return dict(cell_type="markdown", id="gpu-results", metadata={}, source=text)


def stage_notebook(src: Path, dest: Path) -> None:
    "Copy a processed notebook for Sphinx; the landing page is executed and holds the toctree."
    nb = execute(src) if src.stem == "index" else json.loads(src.read_text(encoding="utf-8"))
    module = _module_of(src.stem)
    if module:
        fill_show_docs(nb, module)
    nb["cells"] = [
        _title_cell(_text(c["source"])) if c["cell_type"] == "raw" else _fix_cell(c)
        for c in nb["cells"]
    ]
    add_solution_toggles(nb, src.stem)
    gpu = gpu_results_cell(src.stem)
    if gpu:
        nb["cells"].append(gpu)
    if src.stem == "index":
        nb["cells"].append(
            dict(cell_type="markdown", id="site-toctree", metadata={}, source=TOCTREE)
        )
    dest.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")


def mathjax_dir() -> Path:
    "MathJax 3's browser build, from the `django-static-mathjax` package: served by the site."
    import mathjax

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def build_site(out: Path) -> Path:
    "Process nbs/ with nbdev, stage it with site/ and MathJax, build HTML with warnings as errors."
    from nbdev.serve import proc_nbs
    from sphinx.cmd.build import build_main

    proc = proc_nbs(str(NBS), n_workers=0)
    src, html, doctrees = out / "src", out / "html", out / "doctrees"
    for folder in (src, html, doctrees):  # only what this build writes: `out` may hold other things
        shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(SITE_CONF, src, ignore=shutil.ignore_patterns("__pycache__"))
    for nb in sorted(proc.glob("*.ipynb")):
        stage_notebook(nb, src / nb.name)
    shutil.copytree(mathjax_dir(), src / "_static" / "mathjax")
    code = build_main(
        ["-W", "--keep-going", "-q", "-b", "html", "-d", str(doctrees), str(src), str(html)]
    )
    if code:
        raise SystemExit(f"sphinx-build failed (exit {code}); the warnings above say where")
    return html


def execute(path: Path) -> dict:
    "A notebook executed in nbs/ (so the project's files are found wherever the site is built)."
    import nbformat
    from nbclient import NotebookClient

    from foundation_course.cli import kernel_config

    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        config=kernel_config(),
        resources={"metadata": {"path": str(NBS)}},
    ).execute()
    return json.loads(nbformat.writes(nb))


README_FIGURES = "nbs/images"


def _readme_figure(index: int) -> str:
    return f"{README_FIGURES}/index-figure-{index}.png"


def readme_figures(nb: dict) -> dict[str, bytes]:
    "The landing page's figures, by the path README.md shows them from."
    images = [
        out["data"]["image/png"]
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    return {_readme_figure(i): base64.b64decode(_text(png)) for i, png in enumerate(images, 1)}


def readme_text(nb: dict) -> str:
    "README.md: the landing page's markdown and code outputs, chapter links pointing into nbs/."
    parts, figures = [], 0
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            parts.append(_text(cell["source"]))
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if "text/markdown" in out.get("data", {}):
                parts.append(_text(out["data"]["text/markdown"]))
            elif "image/png" in out.get("data", {}):
                figures += 1
                parts.append(f"![A figure of the landing page]({_readme_figure(figures)})")
            elif out.get("output_type") == "stream":
                parts.append("```text\n" + _text(out["text"]).rstrip() + "\n```")
    text = "\n\n".join(p.strip() for p in parts if p.strip())
    text = re.sub(r"\]\((?!https?:|#)([^)]+\.ipynb)\)", r"](nbs/\1)", text)
    return (
        "<!-- Generated from nbs/index.ipynb by `make readme`: "
        "edit the notebook, not this file. -->"
        "\n\n" + text + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    site = sub.add_parser("site", help="build the offline HTML site")
    site.add_argument(
        "--out",
        default=str(ROOT / "_site"),
        help="output folder (default: _site/); the site is <out>/html",
    )
    sub.add_parser("readme", help="write README.md from nbs/index.ipynb")
    args = parser.parse_args(argv)
    if args.command == "site":
        print(f"Site: {build_site(Path(args.out).resolve()) / 'index.html'}")
        return 0
    from foundation_course.core import atomic_write_bytes, atomic_write_text

    nb = execute(NBS / "index.ipynb")
    for path, png in readme_figures(nb).items():
        atomic_write_bytes(ROOT / path, png)
    atomic_write_text(README, readme_text(nb))
    print(f"Wrote {README.name} and its figures in {README_FIGURES}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
