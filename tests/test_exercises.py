"""Every exercise can be solved and can be failed: the reference solution passes its check, each
plausible wrong answer fails it, and the learner's stub says "not implemented yet", not a traceback.

Solutions live in nbs/solutions/chNN_<name>.py: plain functions named as the stubs, `CHECKS` (the
module that holds the `check_<function>` functions) and `WRONG` (function name -> wrong answers)."""

import ast
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NBS, load_module

SOLUTIONS = sorted((NBS / "solutions").glob("ch[0-9][0-9]_*.py"))
# Names a stub's signature may use in annotations or defaults.
STUB_GLOBALS = dict(
    torch=torch, np=np, math=math, nn=torch.nn, F=torch.nn.functional, Tensor=torch.Tensor
)


def _load_solution(path: Path):
    return load_module(path, f"solution_{path.stem}")


def _notebook_of(solution: Path) -> Path:
    "nbs/solutions/ch09_lora_peft.py -> nbs/09_lora_peft.ipynb"
    return NBS / f"{solution.stem[2:]}.ipynb"


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _exercise_cells(notebook: Path) -> list[str]:
    return [_source(c) for c in _cells(notebook) if "exercise" in c["metadata"].get("tags", [])]


def _stub_functions(cell_source: str) -> dict[str, ast.FunctionDef]:
    "The top-level functions an exercise cell defines."
    tree = ast.parse(cell_source)
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _raises_not_implemented(fn: ast.FunctionDef) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


def _compile_stub(cell_source: str, fn: ast.FunctionDef):
    "The stub as a function, compiled alone (postponed annotations: no chapter imports needed)."
    namespace = dict(STUB_GLOBALS)
    code = "from __future__ import annotations\n" + ast.get_source_segment(cell_source, fn)
    exec(compile(code, f"<stub {fn.name}>", "exec"), namespace)
    return namespace[fn.name]


def _stubs(solution: Path) -> dict[str, tuple[str, ast.FunctionDef]]:
    found = {}
    for source in _exercise_cells(_notebook_of(solution)):
        found.update({name: (source, fn) for name, fn in _stub_functions(source).items()})
    return found


def _ids(paths):
    return [p.stem for p in paths]


def test_every_chapter_with_exercises_has_a_solutions_file():
    with_exercises = [p for p in sorted(NBS.glob("[0-9][0-9]_*.ipynb")) if _exercise_cells(p)]
    missing = [
        p.name for p in with_exercises if not list((NBS / "solutions").glob(f"ch{p.stem}.py"))
    ]
    assert not missing, f"exercise cells without nbs/solutions/ch<chapter>.py: {missing}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_solutions_file_matches_its_chapter(solution):
    notebook = _notebook_of(solution)
    assert notebook.exists(), f"{solution.name} names no chapter: {notebook.name} does not exist"
    module = _load_solution(solution)
    assert isinstance(getattr(module, "CHECKS", None), str), (
        f"{solution.name} lacks CHECKS = 'foundation_course.<module>'"
    )
    assert isinstance(getattr(module, "WRONG", None), dict), (
        f"{solution.name} lacks WRONG = {{name: [wrong answers]}}"
    )
    stubs = _stubs(solution)
    assert stubs, f"{notebook.name} has no cell tagged `exercise` with a stub function"
    for name in stubs:
        assert callable(getattr(module, name, None)), (
            f"{solution.name} has no solution for the stub {name}"
        )
        assert module.WRONG.get(name), f"{solution.name}: WRONG has no wrong answer for {name}"
    assert set(module.WRONG) <= set(stubs), f"{solution.name}: WRONG names functions with no stub"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_check_passes_with_the_solution_and_fails_with_each_wrong_answer(solution, capsys):
    module = _load_solution(solution)
    checks = importlib.import_module(module.CHECKS)
    for name in _stubs(solution):
        check = getattr(checks, f"check_{name}", None)
        assert check is not None, f"{module.CHECKS} has no check_{name}"
        assert check(getattr(module, name)) is True, f"check_{name} rejects the reference solution"
        assert f"{name}: correct" in capsys.readouterr().out
        for wrong in module.WRONG[name]:
            with pytest.raises(AssertionError):
                check(wrong)
            capsys.readouterr()


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_stub_raises_not_implemented_and_its_check_says_so(solution, capsys):
    module = _load_solution(solution)
    checks = importlib.import_module(module.CHECKS)
    notebook_text = "\n".join(
        _source(c) for c in _cells(_notebook_of(solution)) if c["cell_type"] == "code"
    )
    for name, (source, fn) in _stubs(solution).items():
        assert _raises_not_implemented(fn), f"the stub {name} does not raise NotImplementedError"
        stub = _compile_stub(source, fn)
        assert getattr(checks, f"check_{name}")(stub) is False, (
            f"check_{name} did not report the stub"
        )
        assert f"{name}: not implemented yet" in capsys.readouterr().out
        assert f"check_{name}({name}" in notebook_text, (
            f"the chapter never calls check_{name}({name})"
        )


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_exercise_cells_do_not_hold_the_answer(solution):
    "A stub is a signature, a docstring and the raise: no body that computes the answer."
    for name, (_, fn) in _stubs(solution).items():
        body = [
            n
            for n in fn.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        ]
        assert len(body) == 1 and isinstance(body[0], ast.Raise), (
            f"the stub {name} holds more than a raise"
        )
