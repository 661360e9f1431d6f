"""Paired difference of two methods of one benchmark run, face by face, per preset (A - B, 95% bootstrap CI).

    python scripts/measure/compare_cells.py bench/frll_val detail base --num-refs 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from instantrestore.evaluation.metrics import paired_difference

METRICS = ("psnr", "identity", "identity_faceres", "lmd", "sharpness")
LOWER_IS_BETTER = {"lmd"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a benchmark's output folder")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--num-refs", type=int, default=4)
    parser.add_argument("--num-refs-b", type=int, default=None, help="B's number of references (default: A's)")
    args = parser.parse_args()
    refs_b = args.num_refs if args.num_refs_b is None else args.num_refs_b
    print(f"{args.a} (k={args.num_refs}) - {args.b} (k={refs_b}): mean difference ± 95% CI (share of faces better)")
    for preset_dir in sorted((args.out / "cells").iterdir()):
        cell_a, cell_b = (preset_dir / f"{args.a}_r{args.num_refs}.json", preset_dir / f"{args.b}_r{refs_b}.json")
        if not (cell_a.is_file() and cell_b.is_file()):
            continue
        faces_a, faces_b = (json.loads(cell.read_text())["faces"] for cell in (cell_a, cell_b))
        parts = []
        for metric in METRICS:
            values_a, values_b = [f.get(metric) for f in faces_a], [f.get(metric) for f in faces_b]
            if all(v is None for v in values_a):
                continue
            diff = paired_difference(values_a, values_b, higher_is_better=metric not in LOWER_IS_BETTER)
            parts.append(f"{metric} {diff.mean_diff:+.3f} ± {diff.ci95:.3f} ({diff.a_better:.0%})")
        print(f"{preset_dir.name} (n={len(faces_a)}): " + "; ".join(parts))


if __name__ == "__main__":
    main()
