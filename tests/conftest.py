import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# Tests never reach the network: online sources must fail fast with a clear message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# After the settings above, which transformers reads at import; tests import tiny_bert from here.
from foundation_course.adapters import tiny_bert  # noqa: E402, F401


@pytest.fixture(autouse=True, scope="session")
def runs_outside_the_checkout(tmp_path_factory):
    "Every test writes results and artefacts to a temporary folder, never into runs/."
    patch = pytest.MonkeyPatch()
    patch.setenv("FC_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    yield
    patch.undo()


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    "Send results and artefacts to a temporary folder."
    monkeypatch.setenv("FC_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"
