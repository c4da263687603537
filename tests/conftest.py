import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# Tests never reach the network: online sources must fail fast with a clear message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    "Send results and artefacts to a temporary folder."
    monkeypatch.setenv("FC_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"
