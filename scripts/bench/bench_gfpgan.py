"""CPU forward time of GFP-GAN: the official 512 configuration and the compact training config.

    .venv/bin/python scripts/bench/bench_gfpgan.py --threads 2 --runs 5 -o runs/bench_gfpgan.json

Weights are random (the time does not depend on their values). Prints one line per model and
writes the numbers as JSON. On a shared machine, read `min_s` beside `median_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from instantrestore.imageio import write_bytes
from instantrestore.models.gfpgan import GFPGANv1Clean
from instantrestore.models.gfpgan import OFFICIAL_GFPGAN_CONFIG

REPO = Path(__file__).resolve().parents[2]


def time_forward(model: torch.nn.Module, size: int, runs: int, warmup: int) -> list[float]:
    """Wall-clock seconds of `runs` batch-1 forwards at `size`, after `warmup` untimed ones."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times = []
    with torch.inference_mode():
        for run in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if run >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compact-config", type=Path, default=REPO / "configs" / "gfpgan_compact.yaml")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "runs" / "bench_gfpgan.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    compact = yaml.safe_load(args.compact_config.read_text())["model"]
    configs = {"gfpgan-512-official": OFFICIAL_GFPGAN_CONFIG, "gfpgan-compact": compact}
    rows = []
    for name, config in configs.items():
        torch.manual_seed(0)
        model = GFPGANv1Clean(**config).eval()
        times = time_forward(model, model.out_size, args.runs, args.warmup)
        row = {"model": name, "config": model.config, "parameters": sum(p.numel() for p in model.parameters()),
               "median_s": statistics.median(times), "min_s": min(times), "times_s": times}
        rows.append(row)
        print(f"{name}: {row['parameters']:,} parameters, {model.out_size}px forward "
              f"median {row['median_s']:.3f} s, min {row['min_s']:.3f} s ({args.runs} runs, {args.threads} threads)")
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
              "rows": rows}
    write_bytes(args.output, (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
