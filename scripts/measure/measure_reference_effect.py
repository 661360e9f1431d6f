"""Do references matter? Own vs another person's references, mean |difference| of the outputs.

Do references matter? For each val person, the benchmark's held-out photo is degraded (same seed as the
benchmark) and restored twice with 4 references: the person's own, and the next person's (in sorted order).
Prints the mean absolute difference of the two restorations (on the 0-255 scale) per preset, and writes JSON.

    .venv/bin/python scripts/measure/measure_reference_effect.py --data data/frll_celeba --people "frll_*" \\
        --model instantrestore/weights/instantrestore_compact --presets sr8 codeformer --json ref_effect.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from instantrestore.api import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.imageio import read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--people", default=None, help="a glob on person names, e.g. 'celeba_*'")
    parser.add_argument("--split", default="val")
    parser.add_argument("--presets", nargs="+", default=["sr8"])
    parser.add_argument("--num-refs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, args.split, args.num_refs, people=args.people)
    restorer = load_restorer(args.model, device="cpu")
    caches = [restorer.encode_references([read_image(index.image_path(case.person, name))
                                          for name in case.references[:args.num_refs]]) for case in cases]
    results = {}
    for preset_name in args.presets:
        differences = []
        for number, case in enumerate(cases):
            target = read_image(index.image_path(case.person, case.target))
            degraded = degrade(target, preset_name, degradation_seed(args.seed, case.person, preset_name))
            own = restorer.restore_face(degraded, refs=caches[number], seed=0).astype(np.float64)
            other = restorer.restore_face(degraded, refs=caches[(number + 1) % len(cases)], seed=0).astype(np.float64)
            differences.append(float(np.abs(own - other).mean()))
        results[preset_name] = {"n": len(differences), "mean_abs_diff_255": float(np.mean(differences)),
                                "min": float(np.min(differences)), "max": float(np.max(differences))}
        print(f"{preset_name}: another person's references change the output by "
              f"{results[preset_name]['mean_abs_diff_255']:.2f}/255 on average (n={len(differences)})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "data": args.data, "people": args.people, "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
