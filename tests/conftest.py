import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"

# Tests never reach the network: online sources must fail fast with a clear message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


def tiny_bert(vocab_size=100, seed=0):
    "A small random BERT sequence classifier, for tests of model surgery (adapters, LoRA)."
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()
