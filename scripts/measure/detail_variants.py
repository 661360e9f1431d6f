"""Paired comparison of reference-detail stage settings (`DetailSettings`) on the same faces.

One base restoration per face, then each variant; PSNR, sharpness and identity (dlib, and faceres when fetched).

    python scripts/measure/detail_variants.py --data data/val --people "frll_*" --max-people 10 \\
        --variants "gates=False" "" "hull_feather=16"
"""

from __future__ import annotations

import argparse
import ast

import numpy as np

from instantrestore import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.evaluation.metrics import psnr, sharpness
from instantrestore.faces import load_identity_model
from instantrestore.faces.identity import faceres_available
from instantrestore.imageio import read_image
from instantrestore.reference_detail import DetailSettings, ReferenceDetailStage


def parse_variant(text: str) -> dict:
    """"a=1, b=False" -> {"a": 1, "b": False}; "" is the defaults."""
    return {key.strip(): ast.literal_eval(value) for key, value in
            (item.split("=", 1) for item in text.split(",") if item.strip())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--people", default=None)
    parser.add_argument("--max-people", type=int, default=10)
    parser.add_argument("--presets", nargs="+", default=["codeformer", "sr32"])
    parser.add_argument("--variants", nargs="+", default=["gates=False", ""])
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", 4, max_people=args.max_people, people=args.people)
    restorer = load_restorer(args.model)
    judges = {"dlib": load_identity_model("dlib")}
    if faceres_available():
        judges["faceres"] = load_identity_model("faceres")
    stages = {text or "defaults": ReferenceDetailStage(DetailSettings(**parse_variant(text)),
                                                       restorer.detail_stage.predictor) for text in args.variants}
    for preset in args.presets:
        scores: dict[str, list[list[float]]] = {name: [] for name in ["base", *stages]}
        for case in cases:
            target = read_image(index.image_path(case.person, case.target))
            degraded = degrade(target, preset, degradation_seed(0, case.person, preset))
            cache = restorer.encode_references([read_image(index.image_path(case.person, name))
                                                for name in case.references[:4]])
            outputs = {"base": restorer.restore_face(degraded, refs=cache, detail_strength=0)}
            for name, stage in stages.items():
                restorer.detail_stage = stage
                outputs[name] = restorer.restore_face(degraded, refs=cache)
            for name, image in outputs.items():
                row = [psnr(image, target), sharpness(image, target)]
                row += [float(model.embed([image])[0] @ model.embed([target])[0]) for model in judges.values()]
                scores[name].append(row)
        columns = ["PSNR", "sharpness", *(f"ID {judge}" for judge in judges)]
        print(f"{preset} ({len(cases)} faces): " + " / ".join(columns))
        base = np.array(scores["base"])
        for name, rows in scores.items():
            rows = np.array(rows)
            delta = rows - base
            print(f"  {name:28s} " + "  ".join(f"{m:.3f} ({d:+.3f})" for m, d in zip(rows.mean(0), delta.mean(0))))


if __name__ == "__main__":
    main()
