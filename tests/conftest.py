import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
TRAIN_SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def load_module(path: Path, name: str | None = None):
    "A Python file that is not an installed module (a tool, a solution file), imported by path."
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What a learner must not see in a chapter's outputs: library load reports, warnings meant for
# developers, kernel transport messages, and where the course happens to be installed.
NOISE = (
    "LOAD REPORT",
    "FutureWarning",
    "DeprecationWarning",
    "TqdmWarning",
    "No CUDA runtime",
    "without encryption",
    str(ROOT),
    sys.prefix,
    "site-packages",
)


def output_text(notebook: Path) -> str:
    parts = []
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        for out in cell.get("outputs", []):
            parts.append("".join(out.get("text", "")))
            parts += [
                "".join(v) if isinstance(v, list) else str(v)
                for k, v in out.get("data", {}).items()
                if k.startswith("text/")
            ]
            parts += [out.get("evalue", "")] + out.get("traceback", [])
    return "\n".join(parts)


# Tests never reach the network: online sources must fail fast with a clear message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# After the settings above, which transformers reads at import; tests import tiny_bert from here.
from foundation_course.adapters import tiny_bert  # noqa: E402, F401


def tiny_minilm_classifier(seed: int = 0, **config):
    "A small random negative/positive BERT with MiniLM's tokenizer (and vocabulary), in eval mode."
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from foundation_course.data import load_tokenizer

    tok = load_tokenizer("minilm")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
        **config,
    )
    return BertForSequenceClassification(config).eval(), tok


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_cpu_processes(*script_args: str) -> subprocess.CompletedProcess:
    """tests/scripts/train_tiny.py as two CPU processes under `accelerate launch` (gloo).

    accelerate's --cpu flag starts one process unless MPI is set up; launching for several GPUs
    with the CPU forced gives two gloo processes."""
    env = dict(os.environ, FC_DEVICE="cpu", CUDA_VISIBLE_DEVICES="")
    launch = ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port())]
    command = [str(Path(sys.executable).parent / "accelerate"), *launch, str(TRAIN_SCRIPT)]
    return subprocess.run(
        [*command, *script_args], capture_output=True, text=True, timeout=300, env=env
    )
