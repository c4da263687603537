"""Load a model with a new head and trigger the libraries' usual notices.

argv[1] says when the course is imported: course-first, transformers-first or never."""

import sys
import tempfile
import warnings

when = sys.argv[1]  # course-first | transformers-first | never
if when == "course-first":
    from foundation_course import core
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel  # noqa: E402

if when == "transformers-first":
    from foundation_course import core
import torch.utils.cpp_extension  # noqa: E402,F401  (says "No CUDA runtime" on a machine without one)
from tqdm import TqdmWarning  # noqa: E402

folder = tempfile.mkdtemp()
config = BertConfig(
    vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
)
BertModel(config).save_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder)  # a new head: a load report
model.is_gradient_checkpointing  # deprecated in transformers 5: a FutureWarning
warnings.warn_explicit(
    "IProgress not found. Please update jupyter and ipywidgets.",
    TqdmWarning,
    "tqdm/auto.py",
    21,
    module="tqdm.auto",
)
if when != "never":
    core.find_artifact("lora-adapter", "smoke", out_dir=folder)  # the course's own warning
