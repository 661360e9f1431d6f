"""CPU time of the identity loss (dlib's descriptor, packaged port): forward, and forward + backward.

    .venv/bin/python scripts/bench/bench_identity_loss.py --threads 2 --batch 4 --size 256 --runs 10

The loss as training calls it: `IdentityLoss()(output, target)` on aligned crops in [0, 1], the output
requiring grad (the target's descriptor is computed without grad, as in training). Inputs are random
(the time does not depend on the pixels). On a shared machine, read `min_s` beside `median_s`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from instantrestore.losses import IdentityLoss


def seconds(step, runs: int, warmup: int) -> list[float]:
    times = []
    for run in range(warmup + runs):
        start = time.perf_counter()
        step()
        if run >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loss = IdentityLoss()
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    output = torch.rand(args.batch, 3, args.size, args.size, generator=generator).requires_grad_(True)

    def forward() -> None:
        with torch.no_grad():
            loss(output, target)

    def forward_backward() -> None:
        output.grad = None
        loss(output, target).backward()

    print(f"identity loss ({loss.name}), batch {args.batch}, {args.size}-px crops, {args.threads} threads, "
          f"torch {torch.__version__}")
    for name, step in (("forward", forward), ("forward+backward", forward_backward)):
        times = seconds(step, args.runs, args.warmup)
        print(f"  {name:17s} median {statistics.median(times) * 1000:7.1f} ms   min {min(times) * 1000:7.1f} ms"
              f"   ({args.runs} runs)")


if __name__ == "__main__":
    main()
