"""Time one training step of the course's from-scratch Transformer against transformers'
GPT2LMHeadModel with the same configuration and weights, in the same process, and print their ratio
and the model FLOP utilisation (MFU).

    # the cpu profile's causal model of chapter 04
    python benchmarks/bench_transformer.py
    # the gpu profile's
    python benchmarks/bench_transformer.py --d-model 512 --layers 8 --heads 8 --context 256 \
        --vocab 16384 --tied --batch 64 --device cuda

MFU = training FLOP/s / the machine's own measured matmul FLOP/s (fp32), with training FLOPs per
token 6 N + 12 L T d (N = weights touched per token including the tied output layer; Chowdhery et
al., 2022, app. B).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from foundation_course.core import (
    count_parameters,
    get_device,
    measure_matmul_flops,
    seed_everything,
)
from foundation_course.transformer import Transformer, TransformerConfig, to_hf


def train_step_fn(model: torch.nn.Module, batch: dict, device: torch.device):
    "One AdamW training step (forward, loss, backward, update) of `model` on `batch`, as a closure."
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def flops_per_token(cfg: TransformerConfig, model: torch.nn.Module) -> float:
    """Training FLOPs per token: 6 N + 12 L T d, N = the weights that multiply activations (all but
    the embedding tables, plus the output layer)."""
    n = (
        count_parameters(model)["total"]
        - cfg.max_len * cfg.d_model
        - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model)
    )
    return 6 * n + 12 * cfg.n_layers * cfg.max_len * cfg.d_model


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument(
        "--tied",
        action="store_true",
        help="tie the output layer to the token embeddings (the cpu profile unties them)",
    )
    p.add_argument(
        "--repeats", type=int, default=10, help="timed steps per model (after 2 warm-up steps)"
    )
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    device = get_device(args.device)
    seed_everything(0, deterministic=False)
    cfg = TransformerConfig(
        vocab_size=args.vocab,
        max_len=args.context,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        dropout=0.0,
        causal=True,
        tie_embeddings=args.tied,
    )
    ours = Transformer(cfg).to(device).train()
    theirs = to_hf(ours).to(device).train()
    ids = torch.randint(0, cfg.vocab_size, (args.batch, cfg.max_len), device=device)
    batch = dict(input_ids=ids, labels=ids)
    steps = {
        "ours": train_step_fn(ours, batch, device),
        "transformers": train_step_fn(theirs, batch, device),
    }
    for step in steps.values():
        step()
        step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    tokens = args.batch * cfg.max_len
    train_flops = flops_per_token(cfg, ours) * tokens / median["ours"]
    peak = measure_matmul_flops(2048, device=device)
    report = dict(
        params=count_parameters(ours)["total"],
        tokens_per_step=tokens,
        threads=torch.get_num_threads(),
        ours_s=median["ours"],
        transformers_s=median["transformers"],
        ratio=median["ours"] / median["transformers"],
        ours_tokens_per_s=tokens / median["ours"],
        train_gflops=train_flops / 1e9,
        matmul_gflops=peak / 1e9,
        mfu=train_flops / peak,
    )
    print(
        f"device {device}, {torch.get_num_threads()} threads; "
        f"model {report['params']:,} parameters "
        f"(vocab {cfg.vocab_size}, context {cfg.max_len}, d {cfg.d_model}, {cfg.n_layers} layers); "
        f"batch {args.batch} x {cfg.max_len} tokens"
    )
    print(
        f"one training step, median of {args.repeats}: ours {median['ours'] * 1e3:.1f} ms, "
        f"GPT2LMHeadModel {median['transformers'] * 1e3:.1f} ms -> "
        f"ratio ours/transformers {report['ratio']:.3f} (target <= 1.05)"
    )
    print(
        f"ours: {report['ours_tokens_per_s']:,.0f} tokens/s, "
        f"{report['train_gflops']:.1f} GFLOP/s of training; "
        f"measured fp32 matmul {report['matmul_gflops']:.1f} GFLOP/s "
        f"-> MFU {100 * report['mfu']:.1f}%"
    )
    return report


if __name__ == "__main__":
    main()
