"""A tiny deterministic training run through `fit`, for the resume and multi-process tests."""

import argparse
import os
import time

import torch
from safetensors.torch import save_file
from torch import nn

from foundation_course.core import seed_everything
from foundation_course.training import default_loss, fit

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--checkpoint-dir")
parser.add_argument("--resume", action="store_true")
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--dropout", type=float, default=0.2)
parser.add_argument(
    "--sleep", type=float, default=0.0, help="seconds per step, so a test can interrupt the run"
)
args = parser.parse_args()

seed_everything(0)
x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
y = (x[:, :4].sum(1) > 0).long()
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(args.dropout), nn.Linear(32, 2))


def slow_loss(model, batch):
    time.sleep(args.sleep)
    return default_loss(model, batch)


fit(
    model,
    torch.utils.data.TensorDataset(x, y),
    epochs=args.epochs,
    batch_size=args.batch_size,
    lr=1e-2,
    loss_fn=slow_loss,
    checkpoint_dir=args.checkpoint_dir,
    checkpoint_every=2,
    resume=args.resume,
    progress=False,
)
if int(os.environ.get("RANK", "0")) == 0:
    print(f"world_size={os.environ.get('WORLD_SIZE', '1')}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
