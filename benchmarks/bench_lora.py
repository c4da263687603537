"""Our `LoRALinear` against peft's LoRA layer: forward+backward time on the same shapes, as a ratio.

    python benchmarks/bench_lora.py    # the layer benchmark (target: ours/peft <= 1.1)

Chapter 09's method comparison is the chapter itself: `foundation-course run 09 --profile gpu`.

Both layers get the same base weight, A and B (checked: same outputs); timings alternate between
them, and the best of each is compared (as core.measure_matmul_flops does: the best run is the one
least disturbed by other processes). Times on a shared machine are noisy; read the ratio."""

import argparse
import copy
import math
import statistics
import time

import torch
from torch import nn

from foundation_course.core import get_device, seed_everything
from foundation_course.lora import LoRALinear


def peft_lora_layer(base: nn.Linear, r: int, alpha: float) -> nn.Module:
    "peft's LoRA layer around `base`, built the way get_peft_model builds it."
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        nn.Sequential(base), LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"])
    ).base_model.model[0]


def fwd_bwd_seconds(layer: nn.Module, x: torch.Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    layer(x).sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_shape(
    tokens: int, d_in: int, d_out: int, r: int, repeats: int, device: torch.device
) -> dict:
    base = nn.Linear(d_in, d_out).to(device).requires_grad_(False)
    ours = LoRALinear(copy.deepcopy(base), r=r, alpha=2 * r)
    nn.init.normal_(ours.lora_B, std=0.02)
    theirs = peft_lora_layer(copy.deepcopy(base), r=r, alpha=2 * r)
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    x = torch.randn(
        tokens, d_in, device=device, requires_grad=True
    )  # inside a network, gradients also flow to the input
    assert torch.allclose(ours(x), theirs(x), atol=1e-5), "the two layers disagree"
    times = {"ours": [], "peft": []}
    for _ in range(3):  # warm-up
        fwd_bwd_seconds(ours, x), fwd_bwd_seconds(theirs, x)
    for _ in range(repeats):
        times["ours"].append(fwd_bwd_seconds(ours, x))
        times["peft"].append(fwd_bwd_seconds(theirs, x))
    ours_s, peft_s = min(times["ours"]), min(times["peft"])
    return dict(
        shape=f"{tokens}x{d_in}->{d_out}",
        r=r,
        ours_ms=1e3 * ours_s,
        peft_ms=1e3 * peft_s,
        ratio=ours_s / peft_s,
    )


def layer_benchmark(repeats: int) -> None:
    device = get_device()
    seed_everything(0)
    tokens = 4096 if device.type == "cuda" else 512  # 16 sequences of 32 tokens on CPU
    shapes = [
        (tokens, 384, 384),
        (tokens, 384, 1536),
        (tokens, 768, 768),
    ]  # MiniLM and BERT-base projections
    print(
        f"LoRALinear (ours) vs peft LoRA Linear, forward+backward, best of {repeats}, "
        f"device {device}, {torch.get_num_threads()} threads"
    )
    print(f"{'shape':<20} {'r':>3} {'ours ms':>9} {'peft ms':>9} {'ours/peft':>10}", flush=True)
    rows = []
    for t, i, o in shapes:
        for r in (8, 16):
            rows.append(row := bench_shape(t, i, o, r, repeats, device))
            print(
                f"{row['shape']:<20} {row['r']:>3} {row['ours_ms']:>9.3f} "
                f"{row['peft_ms']:>9.3f} {row['ratio']:>10.3f}",
                flush=True,
            )
    overall = math.exp(statistics.mean(math.log(r["ratio"]) for r in rows))
    print(
        f"geometric-mean ratio ours/peft: {overall:.3f} "
        f"(target <= 1.1: {'met' if overall <= 1.1 else 'NOT met'})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    layer_benchmark(args.repeats)
