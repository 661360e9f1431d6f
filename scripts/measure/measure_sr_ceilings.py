"""What the `srN` inputs leave to recover: PSNR of aliased vs antialiased inputs, no restoration.

What the `srN` inputs leave to recover, with no restoration at all: PSNR at 512 against the ground truth of
the benchmark's val targets, for the preset's own input (bicubic down without antialiasing, bicubic up), the same
small face downsampled with antialiasing (area) and brought back, and the ground truth through the model's
working size and back. Not a test.

    .venv/bin/python scripts/measure/measure_sr_ceilings.py --people "frll_*" --factor 8
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases
from instantrestore.evaluation.metrics import psnr
from instantrestore.imageio import read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/frll_celeba")
    parser.add_argument("--people", default="frll_*")
    parser.add_argument("--factor", type=int, default=8, help="the srN preset's N")
    parser.add_argument("--model-size", type=int, default=128)
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", 4, None, args.people)
    scores: dict[str, list[float]] = {"preset input (aliased)": [], "antialiased, same size": [],
                                      f"ground truth at {args.model_size} px": []}
    for case in cases:
        target = read_image(index.image_path(case.person, case.target))
        side = target.shape[0]
        small = side // args.factor
        back = lambda image: cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
        scores["preset input (aliased)"].append(psnr(degrade(target, f"sr{args.factor}", 0), target))
        scores["antialiased, same size"].append(
            psnr(back(cv2.resize(target, (small, small), interpolation=cv2.INTER_AREA)), target))
        scores[f"ground truth at {args.model_size} px"].append(psnr(back(
            cv2.resize(target, (args.model_size, args.model_size), interpolation=cv2.INTER_AREA)), target))
    print(f"{args.people}: {len(cases)} faces, sr{args.factor} ({side // args.factor}-px face)")
    for name, values in scores.items():
        print(f"  {name:28s} {np.mean(values):.2f} dB")


if __name__ == "__main__":
    main()
