"""Background upsampling of whole photos: Lanczos interpolation vs the packaged upsamplers (esrgan-x2/x4).

Each photo (one per val person: FRLL view 03, the first CelebA photo; the first `--per-set` people of
each set whose face is found) is cropped to a multiple of 4, downscaled 2× and 4× (PIL bicubic with
antialiasing, as DIV2K's LR images are made), then brought back to full size by Lanczos (what
`restore -s N --bg-upsampler none` does) and by esrgan-xN. PSNR and SSIM (RGB, the benchmark's
settings) and the edge ratio (mean Sobel gradient over the photo's: how soft or sharp, 1 = as the photo)
are computed over the background only: every pixel outside the footprint of the aligned
512 px face crops that the restorer pastes back (faces found by the default detector on the full
photo). Seconds per megapixel of output (wall, and CPU of all threads) on `--threads` threads, tiles of
400 pixels.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bench/bench_upsampler.py --out out/bench_upsampler.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from instantrestore.evaluation.metrics import _peak_rss_bytes, bootstrap_ci95, paired_difference
from instantrestore.faces import FaceAnalyzer
from instantrestore.faces.detect import shared_dir
from instantrestore.imageio import read_image, write_bytes
from instantrestore.models.upsampler import load_upsampler

SCALES = (2, 4)
METHODS = ("lanczos", "esrgan")


def val_photos() -> list[tuple[str, Path]]:
    """(set, photo) candidates in a fixed order: FRLL view 03, the first CelebA photo of each val person."""
    data = shared_dir() / "data"
    photos = []
    for name, folder_name, first_photo in (("frll", "frll", lambda person: person / f"{person.name}_03.jpg"),
                                           ("celeba", "celeba-id", lambda person: sorted(person.iterdir())[0])):
        with open(data / folder_name / "splits.csv") as handle:
            people = [row[0] for row in csv.reader(handle) if row[1] == "val"]
        photos += [(name, first_photo(data / folder_name / "images" / person)) for person in people]
    return photos


def background_mask(photo: np.ndarray, analyzer: FaceAnalyzer) -> tuple[np.ndarray, int]:
    """True outside every aligned face crop's footprint (the region `restore` pastes a face into)."""
    height, width = photo.shape[:2]
    footprint = np.zeros((height, width), np.float32)
    faces = analyzer.find_faces(photo)
    for face in faces:
        _, affine = face.align(photo, 512)
        inverse = cv2.invertAffineTransform(np.asarray(affine, np.float64))
        footprint += cv2.warpAffine(np.ones((512, 512), np.float32), inverse, (width, height))
    return footprint == 0, len(faces)


def masked_psnr(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    error = (image[mask].astype(np.float64) - target[mask].astype(np.float64)) ** 2
    return float(10 * np.log10(255 ** 2 / error.mean()))


def masked_ssim(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    # the benchmark's SSIM settings (metrics.ssim), its per-pixel map averaged over the background
    _, ssim_map = structural_similarity(target, image, data_range=255, channel_axis=2, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)
    return float(ssim_map[mask].mean())


def edge_ratio(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude (Sobel, grey) of `image` over that of the ground truth, in the background:
    below 1 the result is softer than the photo, above 1 it has more edges than the photo."""
    def gradient(rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return float(gradient(image)[mask].mean() / gradient(target)[mask].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/bench_upsampler.json")
    parser.add_argument("--per-set", type=int, default=10, help="photos per set (FRLL, CelebA)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    analyzer = FaceAnalyzer()
    upsamplers = {scale: load_upsampler(f"esrgan-x{scale}", device="cpu", tile=args.tile) for scale in SCALES}
    rows, taken = [], {"frll": 0, "celeba": 0}
    for set_name, path in val_photos():
        if taken[set_name] == args.per_set:
            continue
        photo = read_image(path)
        height, width = (side - side % 4 for side in photo.shape[:2])
        photo = photo[:height, :width]
        background, num_faces = background_mask(photo, analyzer)
        if num_faces == 0:
            print(f"{path}: no face found, skipped")
            continue
        taken[set_name] += 1
        row = {"set": set_name, "photo": str(path), "size": [width, height], "faces": num_faces,
               "background_fraction": round(float(background.mean()), 4)}
        for scale in SCALES:
            low = np.asarray(Image.fromarray(photo).resize((width // scale, height // scale), Image.BICUBIC))
            megapixels = width * height / 1e6
            for method, upsample in (
                    ("lanczos", lambda: cv2.resize(low, (width, height), interpolation=cv2.INTER_LANCZOS4)),
                    ("esrgan", lambda: upsamplers[scale].upsample(low))):
                # wall time, and CPU time of all threads (steadier on a shared machine)
                wall, cpu = time.perf_counter(), time.process_time()
                image = upsample()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                row[f"x{scale}/{method}"] = {"psnr": masked_psnr(image, photo, background),
                                             "ssim": masked_ssim(image, photo, background),
                                             "edges": edge_ratio(image, photo, background),
                                             "sec_per_mp": wall / megapixels, "cpu_sec_per_mp": cpu / megapixels}
        rows.append(row)
        print(f"{path.name} {width}x{height} faces={num_faces} " + " ".join(
            f"x{s} {m} {row[f'x{s}/{m}']['psnr']:.2f}dB/{row[f'x{s}/{m}']['ssim']:.4f}/{row[f'x{s}/{m}']['edges']:.2f}"
            for s in SCALES for m in METHODS), flush=True)

    summary = {}
    for scale in SCALES:
        for method in METHODS:
            cell = [row[f"x{scale}/{method}"] for row in rows]
            summary[f"x{scale}/{method}"] = {
                metric: float(np.mean([c[metric] for c in cell])) for metric in ("psnr", "ssim", "edges", "sec_per_mp", "cpu_sec_per_mp")}
            summary[f"x{scale}/{method}"].update(
                {f"{metric}_ci95": bootstrap_ci95([c[metric] for c in cell]) for metric in ("psnr", "ssim", "edges")})
        summary[f"x{scale}/esrgan-lanczos"] = {
            metric: paired_difference([row[f"x{scale}/esrgan"][metric] for row in rows],
                                      [row[f"x{scale}/lanczos"][metric] for row in rows]).as_dict()
            for metric in ("psnr", "ssim")}
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threads": args.threads,
              "tile": args.tile, "n": len(rows), "per_set": taken, "peak_rss_mb": round(_peak_rss_bytes() / 2 ** 20),
              "load_average": os.getloadavg(),
              "summary": summary, "photos": rows}
    write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())

    print(f"\n{len(rows)} photos ({taken}), background only, {args.threads} threads, tile {args.tile}:\n")
    print("| scale | method | PSNR↑ | SSIM↑ | edges (1 = as the photo) | s / output MP (wall / CPU) |\n"
          "|---|---|---:|---:|---:|---:|")
    for scale in SCALES:
        for method in METHODS:
            cell = summary[f"x{scale}/{method}"]
            print(f"| ×{scale} | {method} | {cell['psnr']:.2f} ± {cell['psnr_ci95']:.2f} | "
                  f"{cell['ssim']:.4f} ± {cell['ssim_ci95']:.4f} | {cell['edges']:.3f} ± {cell['edges_ci95']:.3f} | "
                  f"{cell['sec_per_mp']:.2f} / {cell['cpu_sec_per_mp']:.2f} |")
    for scale in SCALES:
        diff = summary[f"x{scale}/esrgan-lanczos"]
        print(f"×{scale} esrgan − lanczos: PSNR {diff['psnr']['mean_diff']:+.2f} ± {diff['psnr']['ci95']:.2f} dB "
              f"(better on {diff['psnr']['a_better']:.0%}), SSIM {diff['ssim']['mean_diff']:+.4f} ± "
              f"{diff['ssim']['ci95']:.4f} (better on {diff['ssim']['a_better']:.0%})")
    print(f"peak RSS {result['peak_rss_mb']} MB, load average {result['load_average'][1]:.1f} -> {args.out}")


if __name__ == "__main__":
    main()
