"""Time our NT-Xent (forward + backward) against a reference formulation, at batch 512 and
dimension 128.

The reference is the common SimCLR formulation: drop the diagonal of the similarity matrix with a
boolean mask, gather each anchor's positive, and classify [positive, negatives] with the label 0.
Both run in this process on the same inputs; the script checks that they agree and prints the time
ratio (reference / ours: above 1 is faster).

    python benchmarks/bench_ntxent.py [--batch 512] [--dim 128] [--repeats 50] [--device cpu]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from foundation_course.contrastive import nt_xent
from foundation_course.core import get_device


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T
    off_diagonal = ~torch.eye(2 * n, dtype=torch.bool, device=z.device)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    positives = sim[torch.arange(2 * n, device=z.device), partner].unsqueeze(1)
    is_negative = off_diagonal.clone()
    is_negative[torch.arange(2 * n, device=z.device), partner] = False
    negatives = sim[is_negative].view(2 * n, 2 * n - 2)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long, device=z.device))


def time_fwd_bwd(loss_fn, z1, z2, temperature, repeats, device):
    times = []
    for i in range(repeats + 5):
        a, b = z1.detach().clone().requires_grad_(True), z2.detach().clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss_fn(a, b, temperature).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = get_device(args.device)
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(args.batch, args.dim, generator=g).to(device)
    z2 = torch.randn(args.batch, args.dim, generator=g).to(device)
    ours_value, ref_value = (
        nt_xent(z1, z2, args.temperature).item(),
        reference_nt_xent(z1, z2, args.temperature).item(),
    )
    assert abs(ours_value - ref_value) < 1e-4 * max(1.0, abs(ref_value)), (ours_value, ref_value)
    # interleave the two, several rounds, so background load hits both alike
    ours, ref = [], []
    for _ in range(3):
        ours.append(time_fwd_bwd(nt_xent, z1, z2, args.temperature, args.repeats, device))
        ref.append(time_fwd_bwd(reference_nt_xent, z1, z2, args.temperature, args.repeats, device))
    t_ours, t_ref = min(ours), min(ref)
    print(
        f"NT-Xent forward+backward, batch {args.batch}, dim {args.dim}, {device} "
        f"({torch.get_num_threads()} threads): ours {t_ours * 1e3:.2f} ms, "
        f"reference {t_ref * 1e3:.2f} ms (loss {ours_value:.5f} vs {ref_value:.5f})"
    )
    print(f"speed ratio (reference / ours): {t_ref / t_ours:.2f}x  (target: 1.0x or better)")


if __name__ == "__main__":
    main()
