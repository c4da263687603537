import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NBS, ROOT, tiny_minilm_classifier

from foundation_course import cli
from foundation_course.core import atomic_write_text, available_devices

BIN = Path(sys.executable).parent


def test_chapters_are_numbered_notebooks_with_parameters():
    names = cli.chapters()
    assert names[:3] == ["00_core", "01_data", "02_training"]
    assert "90_cli" not in names and "index" not in names


def test_resolve_chapters_by_number_or_name():
    assert cli.resolve_chapters(["02", "data"]) == ["02_training", "01_data"]
    with pytest.raises(SystemExit, match="Unknown chapter 'lora'; chapters: 00_core"):
        cli.resolve_chapters(["lora"])


def _record(chapter, profile="cpu", **metrics):
    return dict(
        chapter=chapter,
        profile=profile,
        device=profile,
        elapsed_s=1.0,
        saved_at="now",
        metrics=metrics,
    )


def test_results_table_names_missing_chapters(tmp_path):
    atomic_write_text(
        tmp_path / "00_core.json",
        json.dumps(_record("00_core", matmul_gflops=123.456, sizes=[1, 2], nested={"a": 0.5})),
    )
    table = cli.results_table({"cpu": tmp_path}, ["00_core", "02_training"])
    assert re.search(r"^    matmul_gflops +123\.5$", table, re.M) and re.search(
        r"^    nested\.a +0\.5$", table, re.M
    )
    assert "No results yet for: 02_training" in table


def test_results_table_puts_profiles_side_by_side(tmp_path):
    for profile, acc in (("cpu", 0.81), ("gpu", 0.875)):
        atomic_write_text(
            tmp_path / profile / "09_lora_peft.json",
            json.dumps(_record("09_lora_peft", profile, acc=acc)),
        )
    atomic_write_text(
        tmp_path / "gpu" / "09_lora_peft.json",
        json.dumps(_record("09_lora_peft", "gpu", acc=0.875, qlora=0.86)),
    )
    table = cli.results_table(
        {"cpu": tmp_path / "cpu", "gpu": tmp_path / "gpu", "none": tmp_path / "missing"}
    )
    lines = table.splitlines()
    assert lines[0].startswith("09_lora_peft  [cpu: cpu, 1.0 s, now]  [gpu: gpu, 1.0 s, now]")
    assert lines[1].split() == ["metric", "cpu", "gpu"]
    assert lines[2].split() == ["acc", "0.81", "0.875"] and lines[3].split() == [
        "qlora",
        "-",
        "0.86",
    ]


def test_results_reads_every_profile_and_fails_clearly_when_nothing_is_recorded(runs_dir, capsys):
    with pytest.raises(
        SystemExit,
        match=r"No results recorded yet \(looked in .*smoke/results.*\): run a chapter first",
    ) as e:
        cli.main(["results"])
    assert isinstance(e.value.code, str)  # printed to stderr, exit status 1
    with pytest.raises(SystemExit, match="No results recorded yet"):
        cli.main(["results", "--profile", "cpu"])
    atomic_write_text(
        runs_dir / "gpu" / "results" / "05_contrastive.json",
        json.dumps(_record("05_contrastive", "gpu", acc=0.9)),
    )
    assert cli.main(["results"]) == 0
    out = capsys.readouterr().out
    assert "05_contrastive  [gpu: gpu" in out and "No results yet for: 00_core" in out


def test_committed_results_have_a_column_per_recorded_profile():
    dirs = cli.committed_results_dirs()
    assert dirs["cpu"] == NBS / "results" / "cpu"
    assert ("gpu" in dirs) == (NBS / "results" / "gpu").is_dir()


def test_committed_outputs_settle_progress_bars():
    outputs = [
        dict(output_type="stream", name="stderr", text="\rfit:   0%|\rfit:  50%|"),
        dict(output_type="stream", name="stderr", text="\rfit: 100%|\n"),
        dict(output_type="stream", name="stdout", text=["done\n"]),
        dict(output_type="display_data", data={}, metadata={}),
    ]
    merged = cli._merge_streams(outputs)
    assert [o["output_type"] for o in merged] == ["stream", "stream", "display_data"]
    assert merged[0]["text"] == ["fit: 100%|\n"] and merged[1]["text"] == ["done\n"]


PARAMETERS = 'profile = "smoke"\nout_dir = None'
RECORD = (
    "from foundation_course.core import Results\n"
    "results = Results('{name}', profile, out_dir)\n"
    "results.log(answer=42, first=[1, 2])\n"
    "results.save()"
)


def _chapter(folder, name, *sources):
    "A tiny chapter: a parameters cell, then one code cell per source."
    cells = [
        dict(
            cell_type="code",
            id="params00",
            metadata={"tags": ["parameters"]},
            execution_count=None,
            outputs=[],
            source=PARAMETERS,
        )
    ]
    cells += [
        dict(
            cell_type="code",
            id=f"cell{i:04d}",
            metadata={},
            execution_count=None,
            outputs=[],
            source=src,
        )
        for i, src in enumerate(sources)
    ]
    kernelspec = dict(name="python3", display_name="Python 3", language="python")
    nb = dict(nbformat=4, nbformat_minor=5, metadata=dict(kernelspec=kernelspec), cells=cells)
    (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    return folder


def _run_in(tmp_path, monkeypatch, capsys, *args):
    monkeypatch.setattr(cli, "nbs_dir", lambda: tmp_path)
    code = cli.main(["run", *args, "--profile", "smoke", "--out", str(tmp_path / "runs")])
    return code, capsys.readouterr()


def test_run_failure_names_chapter_cell_and_error(tmp_path, capsys, monkeypatch):
    _chapter(tmp_path, "50_broken", "x = 1", "raise ValueError('broken on purpose')")
    code, captured = _run_in(tmp_path, monkeypatch, capsys, "50")
    assert code == 1 and "FAILED" in captured.out
    # cell 1 is papermill's injected one
    assert (
        "50_broken failed in cell 3 of the executed notebook, which starts `raise ValueError"
        in captured.err
    )
    assert "ValueError: broken on purpose" in captured.err


def test_run_reports_a_dead_kernel(tmp_path, capsys, monkeypatch):
    _chapter(tmp_path, "51_dies", "import os\nos.kill(os.getpid(), 9)", "print('never')")
    code, captured = _run_in(tmp_path, monkeypatch, capsys, "51")
    assert code == 1
    assert (
        "51_dies failed in cell 2 of the executed notebook, which starts `import os`: "
        "the kernel died" in captured.err
    )
    assert "The executed notebook is " in captured.err and "51_dies.ipynb" in captured.err


def test_run_reports_a_cell_timeout(tmp_path, capsys, monkeypatch):
    _chapter(tmp_path, "52_slow", "x = 1", "import time\ntime.sleep(60)")
    monkeypatch.setattr(cli, "nbs_dir", lambda: tmp_path)
    code = cli.main(
        ["run", "52", "--profile", "smoke", "--out", str(tmp_path / "runs"), "--timeout", "3"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "52_slow failed in cell 3 of the executed notebook, which starts `import time`" in err
    assert "the cell ran longer than the 3 s allowed per cell (raise --timeout)" in err


def test_run_refuses_an_unknown_chapter_and_an_unavailable_device(tmp_path, monkeypatch):
    _chapter(tmp_path, "50_tiny", "x = 1")
    monkeypatch.setattr(cli, "nbs_dir", lambda: tmp_path)
    with pytest.raises(SystemExit, match="Unknown chapter 'lora'; chapters: 50_tiny"):
        cli.main(["run", "lora"])
    missing = next(d for d in ("cuda", "mps") if d not in available_devices())
    with pytest.raises(
        SystemExit,
        match=f"--device {missing} is not available on this machine \\(available: .*cpu\\)",
    ):
        cli.main(["run", "50", "--device", missing, "--out", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists(), "a refused run wrote something"


def test_commit_outputs_guard_and_copy(tmp_path, capsys, monkeypatch):
    with pytest.raises(
        SystemExit, match="--commit-outputs records the cpu profile only; add --profile cpu"
    ):
        cli.main(["run", "00", "--profile", "smoke", "--commit-outputs"])
    _chapter(tmp_path, "50_tiny", RECORD.format(name="50_tiny"), "print('hello')")
    monkeypatch.setattr(cli, "nbs_dir", lambda: tmp_path)
    executed = cli.run_chapter("50_tiny", "smoke", tmp_path / "runs")
    cli.commit_outputs("50_tiny", executed, "cpu", tmp_path)
    nb = json.loads((tmp_path / "50_tiny.ipynb").read_text())
    assert [c["id"] for c in nb["cells"]] == ["params00", "cell0000", "cell0001"], (
        "the injected cell stayed"
    )
    assert nb["cells"][2]["outputs"][0]["text"] == ["hello\n"] and "papermill" not in nb["metadata"]
    assert (
        json.loads((tmp_path / "results" / "cpu" / "50_tiny.json").read_text())["metrics"]["answer"]
        == 42
    )


def test_installed_entry_point_runs_a_chapter_and_reports_times(tmp_path):
    "The installed console script on a tiny project: exit 0, times per chapter, no kernel noise."
    project = tmp_path / "project"
    (project / "nbs").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'tiny'\n")
    _chapter(project / "nbs", "50_tiny", RECORD.format(name="50_tiny"))
    env = dict(os.environ, FC_RUNS_DIR=str(tmp_path / "runs"), FC_RUN_ID="test-run-1")
    command = [str(BIN / "foundation-course"), "run", "50", "--profile", "smoke"]
    runs = [
        subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        for _ in range(2)
    ]
    for done in runs:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "without encryption" not in done.stdout + done.stderr and not done.stderr.strip(), (
            done.stderr
        )
    first, second = (r.stdout.splitlines() for r in runs)
    assert (
        first[0]
        == "Running 1 chapter(s) at the smoke profile into "
        + str(tmp_path / "runs" / "smoke")
        + " (run test-run-1)"
    )
    assert re.fullmatch(
        r"\[1/1\] 50_tiny \.\.\. done in \d+ s \(no recorded run\); course so far \d+ s", first[1]
    )
    assert re.fullmatch(
        r"\[1/1\] 50_tiny \.\.\. done in \d+ s \(last recorded \d+ s\); course so far \d+ s",
        second[1],
    )
    record = json.loads((tmp_path / "runs" / "smoke" / "results" / "50_tiny.json").read_text())
    assert record["metrics"] == {"answer": 42, "first": [1, 2]} and record["run_id"] == "test-run-1"


def test_installed_entry_point_exits_1_with_the_message_on_stderr(tmp_path):
    env = dict(os.environ, FC_RUNS_DIR=str(tmp_path / "runs"))
    command = str(BIN / "foundation-course")
    for args, message in (
        (["run", "nope"], "Unknown chapter 'nope'; chapters: 00_core"),
        (["results"], "No results recorded yet"),
    ):
        done = subprocess.run(
            [command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 1 and message in done.stderr and not done.stdout, (
            done.stdout + done.stderr
        )


def test_missing_extra_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "papermill", None)  # import papermill now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'foundation_course\[course\]'"):
        cli.run_chapter("00_core", "smoke")


def test_kernel_name_is_per_checkout(tmp_path):
    assert cli.kernel_name(ROOT) == cli.kernel_name() != cli.kernel_name(tmp_path)
    assert re.fullmatch(r"foundation-course-[0-9a-f]{8}", cli.kernel_name())
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "kernel-name"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == cli.kernel_name(), (
        "the Makefile and the CLI disagree on the kernel's name"
    )


def test_readme_names_the_kernel_the_makefile_registers():
    makefile = (ROOT / "Makefile").read_text()
    names = set(re.findall(r'--display-name "([^"]+)"', makefile))
    assert names == {"Python (foundation-course, $(notdir $(CURDIR)))"}, names
    shown = "Python (foundation-course, <folder>)"
    assert f"`{shown}`" in (ROOT / "README.md").read_text(), (
        "the README names a kernel that `make setup` does not register"
    )


def test_main_list(capsys):
    assert cli.main(["list"]) == 0
    assert "01_data" in capsys.readouterr().out


def test_module_runs_as_a_script():
    "`python -m foundation_course.cli` (what tools/gpu_run.sh calls) is the command itself."
    done = subprocess.run(
        [sys.executable, "-m", "foundation_course.cli", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == cli.chapters()


def _tiny_text_model(folder):
    model, tok = tiny_minilm_classifier()
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_predict_writes_csv_and_reports_empty_lines(tmp_path, capsys):
    model = _tiny_text_model(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("a lovely film\n\nboring\n")
    assert (
        cli.main(
            [
                "predict",
                str(model),
                str(texts),
                "--out",
                str(tmp_path / "out.csv"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "2 predictions written" in captured.out and "line 2: empty text" in captured.err
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "input,label,probability,p_negative,p_positive,error" and len(lines) == 4
    assert lines[2] == "line 2,,,,,empty text" and lines[1].split(",")[1] in (
        "negative",
        "positive",
    )
    assert (
        cli.main(
            [
                "predict",
                str(model),
                str(texts),
                "--out",
                str(tmp_path / "out.json"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [r["input"] for r in rows] == ["line 1", "line 2", "line 3"] and rows[1][
        "error"
    ] == "empty text"


def test_predict_bad_model_folder_input_kind_and_format(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("fine\n")
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(
            ["predict", str(tmp_path / "missing"), str(texts), "--out", str(tmp_path / "o.csv")]
        )
    model = _tiny_text_model(tmp_path / "model")
    with pytest.raises(SystemExit, match="text model, so INPUT must be a text file"):
        cli.main(["predict", str(model), str(tmp_path), "--out", str(tmp_path / "o.csv")])
    with pytest.raises(SystemExit, match="--out must end in .csv or .json"):
        cli.main(["predict", str(model), str(texts), "--out", str(tmp_path / "o.txt")])
    assert not (tmp_path / "o.csv").exists()


def _tiny_image_model(folder):
    from safetensors.torch import save_file

    from foundation_course.data import load_image_backbone

    folder.mkdir()
    torch.manual_seed(0)
    model = load_image_backbone("efficientnet-lite0", pretrained=False).set_head(3)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    config = dict(
        backbone="efficientnet-lite0",
        num_classes=3,
        input_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        class_names=["a", "b", "c"],
        head="_fc",
        channels_from_grey=True,
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_predict_labels_a_folder_of_images(tmp_path, capsys):
    from PIL import Image

    model = _tiny_image_model(tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28), dtype=np.uint8)).save(
            images / f"img{i}.png"
        )
    (images / "notes.txt").write_text("not an image")
    assert (
        cli.main(
            [
                "predict",
                str(model),
                str(images),
                "--out",
                str(tmp_path / "out.csv"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert (
        "3 predictions written" in captured.out and "notes.txt: cannot decode image" in captured.err
    )
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "input,label,probability,p_a,p_b,p_c,error"
    rows = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    assert set(rows) == {"img0.png", "img1.png", "img2.png", "notes.txt"}
    assert all(rows[f"img{i}.png"][1] in ("a", "b", "c") for i in range(3))
    with pytest.raises(SystemExit, match="image model, so INPUT must be a folder of images"):
        cli.main(
            ["predict", str(model), str(tmp_path / "out.csv"), "--out", str(tmp_path / "o.json")]
        )


def test_predict_refuses_an_unavailable_device(tmp_path):
    missing = next(d for d in ("cuda", "mps") if d not in available_devices())
    texts = tmp_path / "texts.txt"
    texts.write_text("fine\n")
    with pytest.raises(SystemExit, match=f"--device {missing} is not available on this machine"):
        cli.main(
            [
                "predict",
                str(tmp_path),
                str(texts),
                "--out",
                str(tmp_path / "o.csv"),
                "--device",
                missing,
            ]
        )


def test_predict_threshold_marks_abstentions(tmp_path, capsys):
    model = _tiny_text_model(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("a lovely film\nboring\nfine\n")
    assert (
        cli.main(
            [
                "predict",
                str(model),
                str(texts),
                "--out",
                str(tmp_path / "all.json"),
                "--device",
                "cpu",
                "--threshold",
                "0.999",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "all.json").read_text())
    assert [r["label"] for r in rows] == ["abstain"] * 3, "a random tiny model is never 99.9% sure"
    assert "3 abstained (below --threshold 0.999)" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "predict",
                str(model),
                str(texts),
                "--out",
                str(tmp_path / "none.json"),
                "--device",
                "cpu",
                "--threshold",
                "0.0",
            ]
        )
        == 0
    )
    assert all(
        r["label"] in ("negative", "positive")
        for r in json.loads((tmp_path / "none.json").read_text())
    )
