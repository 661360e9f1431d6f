"""Fusion nets of the reference-detail stage on stored val samples: PSNR, identity (dlib, faceres), sharpness.

The samples (`python -m instantrestore.training.detail_stage prepare --split val`) hold the default's restoration
with 4 references and what the stage reads, so each net only composes: a quick paired comparison between
training runs. The benchmark, which restores from scratch, judges the one shipped.

    python scripts/measure/detail_fusion_val.py --samples data/detail_val none runs/detail_a/final runs/detail_b/final
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from instantrestore.evaluation.metrics import paired_difference, psnr, sharpness
from instantrestore.faces.identity import load_identity_model
from instantrestore.models.detail_fusion import DetailFusionNet
from instantrestore.reference_detail import ReferenceDetailStage
from instantrestore.training.detail_stage import compose, load_samples

METRICS = ("psnr", "dlib", "faceres", "sharpness")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", required=True)
    parser.add_argument("nets", nargs="+", help="`none` (the rule-based stage), `start` (no reference detail) or a "
                                                "save_pretrained folder")
    args = parser.parse_args()

    samples = load_samples(args.samples)
    presets = [safe_open(path, "pt").metadata()["preset"] for path in sorted(Path(args.samples).glob("*.safetensors"))]
    identity = {"dlib": load_identity_model("dlib"), "faceres": load_identity_model("faceres")}
    targets = [image for image in samples["target"].permute(0, 2, 3, 1).numpy()]
    target_embeddings = {name: net.embed(targets) for name, net in identity.items()}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name in args.nets:
        if name == "start":
            outputs = samples["start"].float().clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        else:
            stage = ReferenceDetailStage(fusion=None if name == "none" else DetailFusionNet.from_pretrained(name))
            with torch.no_grad():
                outputs = np.concatenate([
                    (compose(stage, {k: v[i:i + 8] for k, v in samples.items()})[0] * 255).round().to(torch.uint8)
                    .permute(0, 2, 3, 1).numpy() for i in range(0, len(targets), 8)])
        scores[name] = {"psnr": np.array([psnr(o, t) for o, t in zip(outputs, targets)]),
                        "sharpness": np.array([sharpness(o, t) for o, t in zip(outputs, targets)])}
        for net_name, net in identity.items():
            scores[name][net_name] = np.sum(net.embed(list(outputs)) * target_embeddings[net_name], axis=1)
        print(f"{name}: " + ", ".join(f"{metric} {scores[name][metric].mean():.4f}" for metric in METRICS))

    by_preset = defaultdict(list)
    for number, preset in enumerate(presets):
        by_preset[preset].append(number)
    first = args.nets[0]
    for name in args.nets[1:]:
        print(f"\n{name} - {first}, paired, ± 95% CI")
        for preset, rows in [("all", list(range(len(presets))))] + sorted(by_preset.items()):
            parts = []
            for metric in METRICS:
                diff = paired_difference(scores[name][metric][rows], scores[first][metric][rows])
                parts.append(f"{metric} {diff.mean_diff:+.4f} ± {diff.ci95 or 0:.4f}")
            print(f"  {preset} (n={len(rows)}): " + "; ".join(parts))


if __name__ == "__main__":
    main()
