"""PSNR gain of a training run's current generator over its input, 24 val faces per preset.

Quick check of a training run between benchmarks: PSNR gain of its current (raw, not EMA) generator
over the degraded input, on 24 faces of the val split per preset, at the training resolution.

    .venv/bin/python scripts/measure/eval_checkpoint.py configs/train_instantrestore_compact_blind.yaml \\
        runs/instantrestore_blind [--threads 1]

Restores blind (no references), as stage 1 is trained; the benchmark is the real measurement.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from safetensors.torch import load_model

from instantrestore.data.dataset import FaceRestorationDataset
from instantrestore.training.config import load_config
from instantrestore.training.recipes import build_recipe


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR of [-1, 1] images, as on [0, 1] ones (peak 2)."""
    return float(10 * torch.log10(4 / (image - target).pow(2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("run", help="the run's out_dir (its checkpoint/generator.safetensors is read)")
    parser.add_argument("--presets", nargs="+", default=["sr8", "codeformer", "instantrestore"])
    parser.add_argument("--faces", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, [])
    generator = build_recipe(config).build_generator()
    load_model(generator, f"{args.run}/checkpoint/generator.safetensors")
    generator.eval()
    for preset in args.presets:
        val = FaceRestorationDataset(config.data.data_dir, "val", config.data.size, preset, 0, config.seed)
        scores = []
        for index in np.linspace(0, len(val) - 1, args.faces).round().astype(int):
            sample = val.sample(int(index), 0)
            with torch.no_grad():
                restored = generator(sample["degraded"][None])[0].clamp(-1, 1)
            scores.append((psnr(sample["degraded"], sample["target"]), psnr(restored, sample["target"])))
        before, after = np.array(scores).T
        print(f"{args.run} {preset}: input {before.mean():.2f} dB, model {after.mean():.2f} dB, "
              f"gain {(after - before).mean():+.2f} dB")


if __name__ == "__main__":
    main()
