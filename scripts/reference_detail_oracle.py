"""Can pasting a reference's detail help PSNR? For each val person's held-out photo (benchmark selection and
degradation seed), at the compact model's 128 px: PSNR of the degraded input, and of the input plus the
detail of the person's first reference (the reference minus its own degradation). Prints one line per set
and preset: input PSNR, first-reference PSNR, best-of-4 PSNR.

    .venv/bin/python scripts/reference_detail_oracle.py --data data/frll_celeba
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.imageio import read_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--presets", nargs="+", default=["sr16", "sr32", "codeformer"])
    args = parser.parse_args()
    index = load_index(args.data)

    def small(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (args.size, args.size), interpolation=cv2.INTER_AREA).astype(np.float64)

    for people in ["frll_*", "celeba_*"]:
        cases, _ = benchmark_cases(index, "val", 4, people=people)
        for preset in args.presets:
            rows = []
            for case in cases[:20]:
                target = read_image(index.image_path(case.person, case.target))
                degraded = small(degrade(target, preset, degradation_seed(0, case.person, preset)))
                scores = []
                for name in case.references[:4]:
                    reference = read_image(index.image_path(case.person, name))
                    detail = small(reference) - small(degrade(reference, preset, 1))
                    scores.append(psnr(np.clip(degraded + detail, 0, 255), small(target)))
                rows.append([psnr(degraded, small(target)), scores[0], max(scores)])
            print(people, preset, "input / first reference / best of 4:", np.round(np.mean(rows, 0), 2))


if __name__ == "__main__":
    main()
