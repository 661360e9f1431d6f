"""Benchmark of the face pipeline on FRLL: which detector, which five points, which identity threshold.

For each detector backend (dlib, yunet; scrfd with --scrfd PATH) on FRLL photos of the val people
(front and three-quarter views), clean and degraded by each preset:
  - recall: a face counts as detected when a box overlaps the box the same backend found on the clean
    photo with IoU > 0.5 (a face missed on the clean photo counts as missed everywhere); every other
    box is counted as an extra (false) box, since each FRLL photo shows one person;
  - five-point stability: how far the alignment points on the degraded photo move from those on the
    clean photo, in eye distances, for the detector's own points and for points from dlib's 68;
  - seconds per photo for detection + 68 landmarks + alignment + paste-back (clean photos).
And for dlib's identity model: cosine similarities of same-person and different-person pairs, and the
cosine threshold that best reproduces dlib's own rule (Euclidean distance < 0.6 on raw descriptors).

    .venv/bin/python scripts/bench/bench_faces.py --out out/bench_faces.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from instantrestore.degradations import degrade
from instantrestore.faces import FaceAnalyzer, paste_back
from instantrestore.faces.detect import shared_dir
from instantrestore.faces.identity import DlibIdentity, cosine_similarity
from instantrestore.faces.landmarks import five_points_from_68
from instantrestore.imageio import read_image, write_bytes


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def frll_photos(shared: Path, split: str, views: list[str]) -> list[tuple[str, Path]]:
    with open(shared / "data/frll/splits.csv") as handle:
        people = [row["face_id"] for row in csv.DictReader(handle) if row["split"] == split]
    return [(person, shared / f"data/frll/images/{person}/{person}_{view}.jpg") for person in people for view in views]


def point_shift(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance between two five-point sets, in eye distances of the reference."""
    eye_distance = np.linalg.norm(reference[1] - reference[0])
    return float(np.linalg.norm(points - reference, axis=1).mean() / eye_distance)


def bench_detectors(photos, backends: dict[str, FaceAnalyzer], presets: list[str], seed: int) -> tuple[list, list]:
    detection, stability = [], []
    for name, analyzer in backends.items():
        hits = {preset: 0 for preset in ["clean", *presets]}
        extra = dict.fromkeys(hits, 0)  # boxes that are not the face: FRLL photos show one person
        shifts = {(preset, source): [] for preset in presets for source in ("detector", "from68")}
        for index, (_, path) in enumerate(photos):
            photo = read_image(path)
            clean = analyzer.find_faces(photo)
            if not clean:
                continue
            hits["clean"] += 1
            extra["clean"] += len(clean) - 1
            target = clean[0]
            for preset in presets:
                found = analyzer.find_faces(degrade(photo, preset, seed + index))
                extra[preset] += sum(box_iou(face.box, target.box) <= 0.5 for face in found)
                match = max(found, key=lambda face: box_iou(face.box, target.box), default=None)
                if match is None or box_iou(match.box, target.box) <= 0.5:
                    continue
                hits[preset] += 1
                shifts[preset, "from68"].append(point_shift(five_points_from_68(match.landmarks68),
                                                            five_points_from_68(target.landmarks68)))
                if match.detector_kps5 is not None:  # dlib HOG has no points of its own
                    shifts[preset, "detector"].append(point_shift(match.detector_kps5, target.detector_kps5))
        for preset, count in hits.items():
            detection.append({"backend": name, "preset": preset, "n": len(photos), "detected": count,
                              "recall": count / len(photos), "extra_boxes": extra[preset]})
        for (preset, source), values in shifts.items():
            if values:
                stability.append({"backend": name, "preset": preset, "points": source, "n": len(values),
                                  "mean_shift": float(np.mean(values)), "p90_shift": float(np.percentile(values, 90))})
    return detection, stability


def bench_timing(photos, backends: dict[str, FaceAnalyzer], size: int = 512) -> list:
    rows = []
    for name, analyzer in backends.items():
        seconds = []
        for _, path in photos:
            photo = read_image(path)
            start = time.perf_counter()
            faces = analyzer.find_faces(photo)
            aligned = [face.align(photo, size) for face in faces]
            paste_back(photo, [crop for crop, _ in aligned], [affine for _, affine in aligned])
            seconds.append(time.perf_counter() - start)
        rows.append({"backend": name, "n": len(seconds), "sec_per_photo_mean": float(np.mean(seconds)),
                     "sec_per_photo_median": float(np.median(seconds)), "photo_size": list(photo.shape[:2])})
    return rows


def bench_identity(photos, analyzer: FaceAnalyzer, size: int = 512) -> dict:
    model = DlibIdentity()
    people, raw = [], []
    for person, path in photos:
        photo = read_image(path)
        faces = analyzer.find_faces(photo)
        if faces:
            people.append(person)
            raw.append(model.raw_descriptor(faces[0].align(photo, size)[0]))
    raw = np.stack(raw)
    cosine = cosine_similarity(raw, raw)
    pairs = list(combinations(range(len(raw)), 2))
    same = np.array([people[i] == people[j] for i, j in pairs])
    cos = np.array([cosine[i, j] for i, j in pairs])
    dlib_same = np.array([np.linalg.norm(raw[i] - raw[j]) < 0.6 for i, j in pairs])
    candidates = np.round(np.arange(0.80, 0.99, 0.005), 3)
    agreement = [float(np.mean((cos >= t) == dlib_same)) for t in candidates]
    best = float(candidates[int(np.argmax(agreement))])
    return {
        "n_faces": len(raw), "n_same_pairs": int(same.sum()), "n_different_pairs": int((~same).sum()),
        "raw_norm_mean": float(np.linalg.norm(raw, axis=1).mean()),
        "cos_same_mean": float(cos[same].mean()), "cos_same_min": float(cos[same].min()),
        "cos_different_mean": float(cos[~same].mean()), "cos_different_max": float(cos[~same].max()),
        "dlib_rule_accuracy": float(np.mean(dlib_same == same)),
        "cos_threshold_matching_dlib_rule": best, "agreement_with_dlib_rule": max(agreement),
        "accuracy_at_that_threshold": float(np.mean((cos >= best) == same)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=shared_dir())
    parser.add_argument("--split", default="val")
    parser.add_argument("--views", default="02,03,04,07,08,09", help="FRLL views: front 03/08, three-quarter 02/04/07/09")
    parser.add_argument("--presets", default="sr8,codeformer")
    parser.add_argument("--scrfd", type=Path, help="an SCRFD ONNX file to benchmark as well")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench_faces.json"))
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    photos = frll_photos(args.shared, args.split, args.views.split(","))
    presets = args.presets.split(",")
    backends = {"dlib": FaceAnalyzer("dlib"), "yunet": FaceAnalyzer("yunet")}
    if args.scrfd:
        backends["scrfd"] = FaceAnalyzer("scrfd", args.scrfd)

    detection, stability = bench_detectors(photos, backends, presets, args.seed)
    timing = bench_timing(photos, backends)
    identity = bench_identity(photos, backends["yunet"])

    print(f"FRLL {args.split}: {len(photos)} photos (views {args.views})\n")
    print(f"{'backend':8} {'preset':12} {'recall':>7} {'':9} {'extra boxes':>11}")
    for row in detection:
        print(f"{row['backend']:8} {row['preset']:12} {row['recall']:7.3f} {row['detected']:4}/{row['n']:<4} "
              f"{row['extra_boxes']:11}")
    print(f"\n{'backend':8} {'preset':12} {'points':9} {'shift/eye dist (mean, p90)':>28}")
    for row in stability:
        print(f"{row['backend']:8} {row['preset']:12} {row['points']:9} {row['mean_shift']:14.3f} {row['p90_shift']:8.3f}"
              f"  (n={row['n']})")
    print(f"\n{'backend':8} {'s/photo mean':>12} {'median':>8}  (detect + landmarks + align + paste back)")
    for row in timing:
        print(f"{row['backend']:8} {row['sec_per_photo_mean']:12.3f} {row['sec_per_photo_median']:8.3f}")
    print("\ndlib identity:", json.dumps(identity, indent=1))

    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": str(args.shared),
              "split": args.split, "views": args.views, "n_photos": len(photos), "seed": args.seed,
              "threads": args.threads, "detection": detection, "five_point_stability": stability,
              "timing": timing, "identity_dlib": identity}
    write_bytes(args.out, json.dumps(report, indent=2).encode())
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
