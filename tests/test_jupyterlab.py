"""JupyterLab as learners use it: `jupyter lab` on 127.0.0.1, a chapter run in Chromium."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import NBS
from helpers_browser import ARTIFACTS, chromium

from foundation_course.cli import kernel_name

BIN = Path(sys.executable).parent
KERNEL = kernel_name()  # as `make lab`: this checkout's own kernel
START_TIMEOUT_S = 90
RUN_TIMEOUT_S = (
    300  # catches a hang; importing torch in a fresh kernel on a loaded 2-core machine is slow
)
ACTIVE_CELL_IS = (
    "n => [...document.querySelectorAll('.jp-NotebookPanel .jp-Cell')]"
    ".findIndex(c => c.classList.contains('jp-mod-active')) === n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET") -> object:
    req = urllib.request.Request(
        base + path,
        method=method,
        headers={"Authorization": f"token {token}"},
        data=b"" if method == "POST" else None,
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _first_chapter() -> str:
    return sorted(NBS.glob("[0-9][0-9]_*.ipynb"))[0].name


def _cells_up_to_the_device() -> int:
    "How many cells a learner runs in the first chapter up to the one that prints the device."
    cells = json.loads((NBS / _first_chapter()).read_text())["cells"]
    return 1 + next(i for i, c in enumerate(cells) if '"-> using"' in "".join(c["source"]))


FIRST_CELLS = _cells_up_to_the_device()  # imports, definitions, the device line


def test_kernel_spec_is_this_checkouts_own():
    "`make setup` registers a kernel named after this checkout, running its interpreter."
    listed = subprocess.run(
        [str(BIN / "jupyter"), "kernelspec", "list", "--json"], capture_output=True, text=True
    )
    specs = json.loads(listed.stdout)["kernelspecs"]
    assert KERNEL in specs, f"no kernel {KERNEL}: run `make setup`"
    assert Path(specs[KERNEL]["spec"]["argv"][0]).absolute() == Path(sys.executable).absolute()


@pytest.fixture
def lab(tmp_path):
    "`jupyter lab` on a copy of the first chapter (autosave can't touch nbs/), on 127.0.0.1, token."
    root = tmp_path / "nbs"
    root.mkdir()
    nb = json.loads((NBS / _first_chapter()).read_text())
    for cell in nb["cells"]:  # no committed output can stand in for one the kernel did not produce
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (root / _first_chapter()).write_text(json.dumps(nb))
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    token, port = secrets.token_hex(16), _free_port()
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        FC_RUNS_DIR=str(tmp_path / "runs"),
    )
    kernel = KERNEL
    server = subprocess.Popen(
        [
            str(BIN / "jupyter"),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--MappingKernelManager.default_kernel_name={kernel}",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=open(tmp_path / "lab.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            _api(base, token, "api/status")
            break
        except OSError:
            assert server.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "jupyter lab did not answer in time: " + (tmp_path / "lab.log").read_text()[-3000:]
            )
            time.sleep(0.5)
    yield dict(base=base, token=token, server=server, log=tmp_path / "lab.log")
    _stop(server, base, token)


def _stop(server: subprocess.Popen, base: str, token: str) -> list[psutil.Process]:
    "Shut the server down through its API (it stops its kernels); returns its processes."
    if server.poll() is not None:
        return []
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    try:
        _api(base, token, "api/shutdown", "POST")
        server.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    psutil.wait_procs(family, timeout=15)
    return family


def test_lab_opens_a_chapter_runs_its_first_cells_and_leaves_no_process(lab):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    chapter = _first_chapter()
    with chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(
            f"{lab['base']}lab/tree/{chapter}?token={lab['token']}", timeout=START_TIMEOUT_S * 1000
        )
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=START_TIMEOUT_S * 1000)
        page.wait_for_selector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=RUN_TIMEOUT_S * 1000
        )
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        for i in range(FIRST_CELLS):  # run and advance, one cell at a time, as a learner does
            page.keyboard.press("Shift+Enter")
            page.wait_for_function(ACTIVE_CELL_IS, arg=i + 1, timeout=START_TIMEOUT_S * 1000)
            # a learner reads each result before the next key press; so does the test
            page.wait_for_selector(
                ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=RUN_TIMEOUT_S * 1000
            )
        target = page.locator(".jp-NotebookPanel .jp-Cell").nth(FIRST_CELLS - 1)
        target.locator(".jp-OutputArea-output").first.wait_for(timeout=RUN_TIMEOUT_S * 1000)
        page.wait_for_selector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=RUN_TIMEOUT_S * 1000
        )
        output = target.locator(".jp-OutputArea-output").first.inner_text()
        prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        outputs = page.locator(".jp-NotebookPanel .jp-OutputArea-output").all_inner_texts()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-chapter.png"))
        sessions = _api(lab["base"], lab["token"], "api/sessions")
        page.close()
    assert "-> using cpu" in output or "-> using cuda" in output, output
    assert sum(p.strip() not in ("[ ]:", "") for p in prompts) >= 5, (
        f"too few cells ran: {prompts[:12]}"
    )
    assert "[*]:" not in prompts
    assert not any("Traceback" in o or "Error" in o for o in outputs[-FIRST_CELLS:]), outputs
    assert not errors, errors[:5]
    assert [s["path"] for s in sessions] == [chapter] and sessions[0]["kernel"][
        "execution_state"
    ] in ("idle", "busy")

    family = _stop(lab["server"], lab["base"], lab["token"])
    assert len(family) >= 2, "the server had no kernel process"
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    left += [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"
