"""Benchmark of face finding on small faces in whole photos (16-40 px, as in group and old snapshots).

Each photo (FRLL val people, views 03 and 07; CelebA-ID val, one photo per person) is shrunk so that the face
box found on the clean photo is W px wide, pasted at the centre of a 480x360 grey canvas and degraded at that
size (Gaussian blur, noise, JPEG; `--blur/--noise/--jpeg`). YuNet with its upscaled level (the default)
and without (`fine_side=0`) then look for it:
  - recall: a box overlapping the clean box (scaled) with IoU > 0.5; other boxes count as extra;
  - five-point shift: the alignment points (from dlib's 68, as the pipeline aligns) against the clean
    photo's, scaled, in eye distances;
  - milliseconds of detection per photo.

    .venv/bin/python scripts/bench/bench_small_faces.py --out out/bench_small_faces.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

from instantrestore.faces import FaceAnalyzer
from instantrestore.faces.detect import YuNetDetector, shared_dir
from instantrestore.imageio import read_image, write_bytes

CANVAS = (360, 480)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def val_photos(shared: Path) -> list[Path]:
    with open(shared / "data/frll/splits.csv") as handle:
        frll = [row["face_id"] for row in csv.DictReader(handle) if row["split"] == "val"]
    with open(shared / "data/celeba-id/splits.csv") as handle:
        celeba = [row["identity"] for row in csv.DictReader(handle) if row["split"] == "val"]
    return ([shared / f"data/frll/images/{person}/{person}_{view}.jpg" for person in frll for view in ("03", "07")]
            + [sorted((shared / f"data/celeba-id/images/{person}").iterdir())[0] for person in celeba])


def small_degraded(rgb: np.ndarray, scale: float, blur: float, noise: float, jpeg: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The RGB photo shrunk by `scale` on a grey canvas, degraded; and the (x, y) offset of the photo.
    (cv2 codes the channels as BGR and decodes them back in the same order, so the result is RGB.)"""
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((*CANVAS, 3), 110, np.uint8)
    y0, x0 = (CANVAS[0] - small.shape[0]) // 2, (CANVAS[1] - small.shape[1]) // 2
    canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    canvas = cv2.GaussianBlur(canvas, (0, 0), blur) if blur > 0 else canvas
    canvas = np.clip(canvas + rng.normal(0, noise, canvas.shape), 0, 255).astype(np.uint8)
    _, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR), np.array([x0, y0], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=shared_dir())
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 24, 32, 40])
    parser.add_argument("--blur", type=float, default=1.5, help="Gaussian sigma in px, at the small size")
    parser.add_argument("--noise", type=float, default=10.0, help="Gaussian noise sigma, grey levels")
    parser.add_argument("--jpeg", type=int, default=30, help="JPEG quality")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("out/bench_small_faces.json"))
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    analyzer = FaceAnalyzer("yunet")
    detectors = {"yunet": analyzer.detector, "yunet, no upscaled level": YuNetDetector(fine_side=0)}
    photos = val_photos(args.shared)
    rows = {(name, width): {"found": 0, "extra": 0, "shift": [], "seconds": 0.0, "n": 0}
            for name in detectors for width in args.widths}
    for index, path in enumerate(photos):
        rgb = read_image(path)
        clean = analyzer.find_faces(rgb)
        if not clean:
            continue
        target = clean[0]
        for width in args.widths:
            scale = width / float(target.box[2] - target.box[0])
            rng = np.random.default_rng(1000 * index + width)
            photo, offset = small_degraded(rgb, scale, args.blur, args.noise, args.jpeg, rng)
            box, points = target.box * scale + np.tile(offset, 2), target.kps5 * scale + offset
            eye_distance = np.linalg.norm(points[1] - points[0])
            for name, detector in detectors.items():
                row = rows[name, width]
                row["n"] += 1
                start = time.perf_counter()
                found = detector.detect(photo)
                row["seconds"] += time.perf_counter() - start
                row["extra"] += sum(box_iou(face.box, box) <= 0.5 for face in found)
                match = max(found, key=lambda face: box_iou(face.box, box), default=None)
                if match is None or box_iou(match.box, box) <= 0.5:
                    continue
                row["found"] += 1
                aligned_on = analyzer._to_face(photo, match).kps5
                row["shift"].append(float(np.linalg.norm(aligned_on - points, axis=1).mean() / eye_distance))

    report = []
    print(f"{len(photos)} photos; blur {args.blur}, noise {args.noise}, JPEG {args.jpeg}\n")
    print(f"{'detector':26} {'face':>5} {'recall':>13} {'extra':>6} {'shift/eye dist':>15} {'ms':>6}")
    for (name, width), row in rows.items():
        entry = {"detector": name, "face_px": width, "n": row["n"], "found": row["found"],
                 "recall": row["found"] / row["n"], "extra_boxes": row["extra"],
                 "mean_shift": float(np.mean(row["shift"])) if row["shift"] else None,
                 "ms_per_photo": 1000 * row["seconds"] / row["n"]}
        report.append(entry)
        shift = f"{entry['mean_shift']:.3f}" if row["shift"] else "-"
        print(f"{name:26} {width:5} {entry['recall']:6.3f} {row['found']:3}/{row['n']:<3} {row['extra']:6} "
              f"{shift:>15} {entry['ms_per_photo']:6.0f}")
    meta = {"photos": len(photos), "blur": args.blur, "noise": args.noise, "jpeg": args.jpeg,
            "threads": args.threads, "canvas": list(CANVAS)}
    write_bytes(args.out, json.dumps({**meta, "rows": report}, indent=2).encode())
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
