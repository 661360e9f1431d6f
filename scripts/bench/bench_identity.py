"""The identity nets side by side on FRLL: how well each separates people, and how much they agree.

FRLL photos of one split (default: the 20 val people x 6 front/three-quarter views), found by YuNet and
aligned as everywhere else (512 px FFHQ crops); every pair scored by each net's cosine similarity:
  - AUC of same-person vs different-person pairs, the range of each, and the threshold with the best
    balanced accuracy (the middle of the best plateau): the nets' `same_person_threshold`;
  - Pearson and Spearman correlation of the nets' cosine distances over all pairs (an independent second
    opinion correlates, but far from 1);
  - CPU seconds per face of each net's `embed` (landmarks, crop and net; CPU time, since the machine is shared).

    .venv/bin/python scripts/bench/bench_identity.py --nets dlib faceres --out out/bench_identity.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
from scipy import stats

from instantrestore.faces import FaceAnalyzer, load_identity_model
from instantrestore.faces.detect import shared_dir
from instantrestore.imageio import read_image, write_bytes

from bench_faces import frll_photos  # scripts/ is on the path when run as a script: the face benchmark's photos


def separation(cosine: np.ndarray, same: np.ndarray) -> dict:
    """AUC, score ranges and the best balanced-accuracy threshold of one net's pair scores."""
    auc = stats.mannwhitneyu(cosine[same], cosine[~same]).statistic / (same.sum() * (~same).sum())
    candidates = np.round(np.arange(0.0, 1.0, 0.005), 3)
    balanced = np.array([(np.mean(cosine[same] >= t) + np.mean(cosine[~same] < t)) / 2 for t in candidates])
    best = candidates[balanced == balanced.max()]
    return {"auc": float(auc), "same_min": float(cosine[same].min()), "same_mean": float(cosine[same].mean()),
            "different_max": float(cosine[~same].max()), "different_mean": float(cosine[~same].mean()),
            "best_balanced_accuracy": float(balanced.max()), "threshold": float(np.median(best)),
            "threshold_plateau": [float(best.min()), float(best.max())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["dlib", "faceres"], help="names or ArcFace .onnx paths")
    parser.add_argument("--shared", type=Path, default=shared_dir())
    parser.add_argument("--split", default="val")
    parser.add_argument("--views", default="02,03,04,07,08,09")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench_identity.json"))
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    analyzer = FaceAnalyzer()
    people, crops = [], []
    for person, path in frll_photos(args.shared, args.split, args.views.split(",")):
        photo = read_image(path)
        faces = analyzer.find_faces(photo)
        if faces:
            people.append(person)
            crops.append(faces[0].align(photo, 512)[0])
    pairs = list(combinations(range(len(crops)), 2))
    same = np.array([people[i] == people[j] for i, j in pairs])

    nets, distances = {}, {}
    for name in args.nets:
        model = load_identity_model(name)
        start = time.process_time()
        embeddings = model.embed(crops)
        cpu_seconds = (time.process_time() - start) / len(crops)
        cosine = np.array([float(embeddings[i] @ embeddings[j]) for i, j in pairs])
        distances[model.name] = 1 - cosine
        nets[model.name] = {**separation(cosine, same), "cpu_sec_per_face": cpu_seconds}
        print(f"{model.name}: {json.dumps(nets[model.name])}")
    correlation = {}
    for a, b in combinations(distances, 2):
        correlation[f"{a}~{b}"] = {"pearson": float(stats.pearsonr(distances[a], distances[b]).statistic),
                                   "spearman": float(stats.spearmanr(distances[a], distances[b]).statistic)}
        print(f"{a} ~ {b}: {correlation[f'{a}~{b}']}")

    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": str(args.shared),
              "split": args.split, "views": args.views, "n_faces": len(crops), "n_same_pairs": int(same.sum()),
              "n_different_pairs": int((~same).sum()), "threads": args.threads, "nets": nets,
              "distance_correlation": correlation}
    write_bytes(args.out, json.dumps(report, indent=2).encode())
    print(f"{len(crops)} faces, {same.sum()} same-person and {(~same).sum()} different-person pairs; wrote {args.out}")


if __name__ == "__main__":
    main()
