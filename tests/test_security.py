"""Loading is never code execution: no remote code from the Hub, no pickles.

That `Predictor` and `load_lora_adapter` refuse a pickle checkpoint (`.bin`, `.pt`) and name the
fix is tested in test_deployment.py (test_predictor_and_adapter_loader_refuse_pickle_checkpoints).
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".qmd", ".yml", ".yaml", ".json", ".txt"}
# `trust_remote_code=True`, `"trust_remote_code": True`, and the same inside a notebook's JSON
REMOTE_CODE = re.compile(r"""trust_remote_code\\?["']?\s*[=:]\s*True""")


def course_files() -> list[Path]:
    "Every text file of the library and of the notebooks folder (chapters, solutions, results)."
    folders = (ROOT / "foundation_course", ROOT / "nbs")
    return sorted(
        p for f in folders for p in f.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
    )


def remote_code_lines(path: Path) -> list[str]:
    "`path:line` of each place that turns on trust_remote_code."
    lines = path.read_text(errors="replace").splitlines()
    return [
        f"{path.relative_to(ROOT)}:{i}" for i, s in enumerate(lines, 1) if REMOTE_CODE.search(s)
    ]


def unsafe_torch_loads(source: str) -> list[int]:
    "Line numbers of `torch.load(...)` calls in `source` without `weights_only=True`."
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            safe = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
    return lines


def notebook_code(path: Path) -> str:
    "A notebook's code cells as one Python source; IPython's `%` and `!` lines are blanked."
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line
        for cell in code
        for line in cell.splitlines()
    )


def test_the_scanners_find_what_they_look_for():
    assert REMOTE_CODE.search("AutoModel.from_pretrained(name, trust_remote_code=True)")
    assert REMOTE_CODE.search('"    kwargs = {\\"trust_remote_code\\": True}\\n",')
    assert not REMOTE_CODE.search("AutoTokenizer.from_pretrained(path, trust_remote_code=False)")
    source = (
        "import torch\n"
        "a = torch.load(p)\n"
        "b = torch.load(p, map_location='cpu',\n    weights_only=False)\n"
        "c = torch.load(p, weights_only=True)\n"
    )
    assert unsafe_torch_loads(source) == [2, 3]


def test_nothing_turns_on_trust_remote_code():
    files = course_files()
    assert len([p for p in files if p.suffix == ".ipynb"]) >= 14 and len(files) > 30
    found = [hit for p in files for hit in remote_code_lines(p)]
    assert not found, f"trust_remote_code=True runs the model repository's own Python: {found}"


@pytest.mark.parametrize("kind", ["library", "notebooks"])
def test_every_torch_load_is_weights_only(kind):
    if kind == "library":
        sources = {p: p.read_text() for p in sorted((ROOT / "foundation_course").glob("*.py"))}
    else:
        sources = {p: notebook_code(p) for p in sorted((ROOT / "nbs").glob("*.ipynb"))}
        sources |= {p: p.read_text() for p in sorted((ROOT / "nbs" / "solutions").glob("*.py"))}
    if kind == "library":  # the checkpoint's trainer state and the saved CNN weights
        assert sum(len(re.findall(r"\btorch\.load\(", s)) for s in sources.values()) >= 2
    unsafe = {p.name: lines for p, s in sources.items() if (lines := unsafe_torch_loads(s))}
    assert not unsafe, f"torch.load without weights_only=True unpickles arbitrary code: {unsafe}"
