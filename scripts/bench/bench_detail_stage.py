"""Seconds per 512-px face through `restore_face` with 4 cached references, with and without the detail stage.

The restorer alone, with the reference-detail stage, and the stage's parts (landmarks, identity trust, warps),
the fastest of a few runs each. Writes JSON.

    OMP_NUM_THREADS=2 python scripts/bench/bench_detail_stage.py --data data/val -o bench/detail_speed.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from instantrestore import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.faces.warp import PiecewiseAffineWarp
from instantrestore.imageio import read_image, write_bytes
from instantrestore.reference_detail import landmarks_of_aligned


def best_of(repeats: int, run) -> float:
    """The fastest of `repeats` runs, in seconds: the machine's other load only ever adds time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--faces", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", 4, max_people=args.faces)
    restorer = load_restorer("default", device="cpu")
    rows = []
    for case in cases:
        target = read_image(index.image_path(case.person, case.target))
        degraded = degrade(target, "codeformer", degradation_seed(0, case.person, "codeformer"))
        cache = restorer.encode_references([read_image(index.image_path(case.person, name))
                                            for name in case.references[:4]])
        restorer.restore_face(degraded, refs=cache)  # warm-up: lazy loads
        base = restorer.restore_face(degraded, refs=cache, detail_strength=0)
        stage = restorer.detail_stage
        target_landmarks = landmarks_of_aligned(stage.predictor, base)
        rows.append({
            "restorer_alone": best_of(args.repeats, lambda: restorer.restore_face(degraded, refs=cache,
                                                                                 detail_strength=0)),
            "with_stage": best_of(args.repeats, lambda: restorer.restore_face(degraded, refs=cache)),
            "landmarks": best_of(args.repeats, lambda: landmarks_of_aligned(stage.predictor, base)),
            "identity_trust": best_of(args.repeats, lambda: restorer.identity_model.embed([base])),
            "warps": best_of(args.repeats, lambda: [PiecewiseAffineWarp(target_landmarks, points, base.shape[0])
                                                    for points in cache.landmarks]),
        })
        print(case.person, {k: round(v * 1000, 1) for k, v in rows[-1].items()}, flush=True)
    summary = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    summary["threads"] = torch.get_num_threads()
    print({k: round(v * 1000, 1) if k != "threads" else v for k, v in summary.items()}, "(ms)")
    write_bytes(args.output, json.dumps({"summary_seconds": summary, "faces": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
