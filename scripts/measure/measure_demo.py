"""`make demo`'s photo measured per face: colour shift, sharpness, PSNR against the original.

`make demo`'s photo, measured: per face box, the restored photo against the degraded one it came from
(mean colour shift per channel, sharpness) and against the original photo (PSNR), so "sharper, colours
kept" is a number, not an impression.

    .venv/bin/python scripts/measure/measure_demo.py [--model default] [--json demo.json]

Sharpness: the benchmark's (`metrics.sharpness`), against the degraded face box (a ratio > 1: more fine
detail than the degraded input; the original photo's ratio is printed beside it as the ceiling that is real
detail, not noise).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from instantrestore.api import load_restorer
from instantrestore.degradations import degrade
from instantrestore.demo import demo_photo
from instantrestore.evaluation.metrics import psnr, sharpness
from instantrestore.imageio import read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--json")
    args = parser.parse_args()

    original = read_image(demo_photo())
    degraded = degrade(original, "sr4", seed=0)  # as `instantrestore demo`
    result = load_restorer(args.model, device="cpu").restore(degraded)
    rows = []
    for face in result.faces:
        x0, y0, x1, y1 = np.round(face.box).astype(int).clip(0)
        crops = {name: image[y0:y1, x0:x1, :3] for name, image in
                 (("original", original), ("degraded", degraded), ("restored", result.image))}
        shift = crops["restored"].reshape(-1, 3).mean(0) - crops["degraded"].reshape(-1, 3).mean(0)
        rows.append({"box": [int(v) for v in (x0, y0, x1, y1)],
                     "colour_shift_rgb": [round(float(v), 2) for v in shift],
                     "sharpness_restored_over_degraded": sharpness(crops["restored"], crops["degraded"]),
                     "sharpness_original_over_degraded": sharpness(crops["original"], crops["degraded"]),
                     "psnr_degraded": psnr(crops["degraded"], crops["original"]),
                     "psnr_restored": psnr(crops["restored"], crops["original"])})
        row = rows[-1]
        print(f"face {row['box']}: colour shift {row['colour_shift_rgb']} /255; sharpness x"
              f"{row['sharpness_restored_over_degraded']:.2f} (original x{row['sharpness_original_over_degraded']:.2f}); "
              f"PSNR vs original {row['psnr_degraded']:.2f} -> {row['psnr_restored']:.2f} dB")
    worst = max(abs(v) for row in rows for v in row["colour_shift_rgb"])
    print(f"{len(rows)} faces: largest colour shift {worst:.2f}/255; mean sharpness x"
          f"{np.mean([row['sharpness_restored_over_degraded'] for row in rows]):.2f}; mean PSNR "
          f"{np.mean([row['psnr_degraded'] for row in rows]):.2f} -> {np.mean([row['psnr_restored'] for row in rows]):.2f} dB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "faces": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
