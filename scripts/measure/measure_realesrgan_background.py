"""Should `--bg-upsampler auto` run RealESRGAN_x4plus (`realesrgan-x4`) instead of Lanczos?

Measured on the real low-quality whole photos of ../shared/data/real-lq/whole_imgs:

  - NIQE (no reference, lower is better) of each photo brought to 2x (`restore -s 2`): Lanczos vs
    realesrgan-x4 then an area resize to 2x, as Real-ESRGAN's `--outscale 2` does;
  - PSNR (RGB) with a reference: the photo downscaled 2x (PIL bicubic, antialiased) and brought back to its own
    size by each method, against the photo itself;
  - side-by-side crops (Lanczos | Real-ESRGAN) for the eye, in OUT/.

Photos are first area-downscaled to at most `--max-side` px (RRDBNet costs about 30 MFLOP per input pixel: a
1920-px photo takes many minutes on a CPU). Whole photos, faces included: no face is restored here.

    OMP_NUM_THREADS=1 python scripts/measure/measure_realesrgan_background.py --out out/realesrgan_bg
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from instantrestore.evaluation.metrics import niqe, psnr
from instantrestore.faces.detect import shared_dir
from instantrestore.imageio import read_image, write_bytes, write_image
from instantrestore.models.upsampler import load_upsampler


def lanczos(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LANCZOS4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=shared_dir() / "data" / "real-lq" / "whole_imgs")
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("--out", type=Path, default=Path("out/realesrgan_bg"))
    args = parser.parse_args()

    upsampler = load_upsampler("realesrgan-x4", device="cpu")
    rows = []
    for path in sorted(args.photos.iterdir()):
        photo = read_image(path)
        shrink = min(1.0, args.max_side / max(photo.shape[:2]))
        photo = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else photo
        photo = photo[:photo.shape[0] // 2 * 2, :photo.shape[1] // 2 * 2]
        height, width = photo.shape[:2]
        started = time.perf_counter()
        net_2x = upsampler.upsample(photo, outscale=2)
        seconds = time.perf_counter() - started
        lanczos_2x = lanczos(photo, 2 * width, 2 * height)
        small = np.asarray(Image.fromarray(photo).resize((width // 2, height // 2), Image.BICUBIC))
        row = {"photo": path.name, "size": [width, height], "niqe_input": niqe(photo),
               "niqe_lanczos_2x": niqe(lanczos_2x), "niqe_realesrgan_2x": niqe(net_2x),
               "psnr_lanczos": psnr(lanczos(small, width, height), photo),
               "psnr_realesrgan": psnr(upsampler.upsample(small, outscale=2), photo),
               "realesrgan_sec": seconds}
        rows.append(row)
        print(json.dumps(row))
        write_image(args.out / f"{path.stem}_lanczos_vs_realesrgan.png", np.hstack([lanczos_2x, net_2x]), overwrite=True)
    summary = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key not in ("photo", "size")}
    print("mean", json.dumps(summary))
    write_bytes(args.out / "results.json", json.dumps({"rows": rows, "mean": summary}, indent=1).encode())


if __name__ == "__main__":
    main()
