"""How a face reaches the 128-px model and back: each resize/ensemble choice against the pipeline's.

How a face reaches the 128-px model and comes back, measured on the benchmark's val cases: each choice
against the pipeline's, per face (PSNR at 512, dlib identity and sharpness against the ground truth). Not a test.

    .venv/bin/python scripts/measure/measure_inference_path.py --people "frll_*" --max-people 20 [--model default]

- `input`: the degraded 512-px crop brought to the model's size by PIL's bicubic (the pipeline) or by
  `resize_face` (area-averaged, as the training crops were);
- `whole-photo refs`: references given as whole photos, their face warped straight to the model's size (the
  pipeline before) or cut at 512 and area-averaged (the pipeline now, as aligned-crop references);
- `flip ensemble`: the mean of the model on the face and on its mirror image (with mirrored references).
docs/benchmark.md ("From photo to model and back") says which were adopted and why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import instantrestore
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import benchmark_cases, degradation_seed
from instantrestore.evaluation.metrics import paired_difference, psnr, sharpness
from instantrestore.faces.align import ALIGN_SIZE, resize_face
from instantrestore.faces.identity import load_identity_model
from instantrestore.imageio import read_image
from instantrestore.pipeline import faces_to_tensor, tensor_to_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/frll_celeba")
    parser.add_argument("--sources", default="data/src_frll_celeba", help="the whole photos prepare-data read")
    parser.add_argument("--people", default="frll_*")
    parser.add_argument("--max-people", type=int, default=20)
    parser.add_argument("--presets", nargs="+", default=["sr8", "instantrestore", "codeformer", "sr32"])
    parser.add_argument("--model", default="default")
    parser.add_argument("--json")
    args = parser.parse_args()

    pipeline = instantrestore.load_restorer(args.model, device="cpu")
    restorer, size = pipeline.restorer, pipeline.face_size
    dlib = load_identity_model("dlib")
    index = load_index(args.data)
    cases, _ = benchmark_cases(index, "val", 4, args.max_people, args.people)

    def restore(face: np.ndarray, features) -> torch.Tensor:
        with torch.no_grad():
            return restorer.restore_tensor(faces_to_tensor([face]), features, None)[0].float()

    def to_512(output: torch.Tensor) -> np.ndarray:
        return np.asarray(Image.fromarray(tensor_to_faces(output[None])[0]).resize((512, 512), Image.BICUBIC))

    def encode(crops: list[np.ndarray]):
        with torch.no_grad():
            return restorer.reference_features(faces_to_tensor(crops)) if pipeline.uses_references else None

    scores: dict[str, dict[str, list[dict[str, float]]]] = {}
    for case in cases:
        target = read_image(index.image_path(case.person, case.target))
        target_embedding = dlib.embed([target])[0]
        crops = [resize_face(read_image(index.image_path(case.person, name)), size) for name in case.references[:4]]
        photos = [read_image(next((Path(args.sources) / case.person).glob(name + ".*"))) for name in case.references[:4]]
        faces = [max(pipeline.analyzer.find_faces(photo), key=lambda face: face.area) for photo in photos]
        features = {
            "crops": encode(crops),
            "photos_warped": encode([face.align(photo, size)[0] for face, photo in zip(faces, photos)]),
            "photos_area": encode([resize_face(face.align(photo, ALIGN_SIZE)[0], size)
                                   for face, photo in zip(faces, photos)]),
            "crops_mirrored": encode([crop[:, ::-1].copy() for crop in crops]),
        }
        for preset in args.presets:
            degraded = degrade(target, preset, degradation_seed(0, case.person, preset))
            bicubic = np.asarray(Image.fromarray(degraded).resize((size, size), Image.BICUBIC))
            area = resize_face(degraded, size)
            plain = restore(area, features["crops"])
            mirrored = restore(area[:, ::-1].copy(), features["crops_mirrored"]).flip(-1)
            outputs = {
                "input_bicubic": restore(bicubic, features["crops"]),
                "input_area": plain,
                "refs_photos_warped": restore(area, features["photos_warped"]),
                "refs_photos_area": restore(area, features["photos_area"]),
                "flip_ensemble": (plain + mirrored) / 2,
            }
            for name, output in outputs.items():
                restored = to_512(output)
                scores.setdefault(preset, {}).setdefault(name, []).append({
                    "psnr": psnr(restored, target), "sharpness": sharpness(restored, target),
                    "identity": float(np.dot(dlib.embed([restored])[0], target_embedding))})

    comparisons = [("input_area", "input_bicubic"), ("refs_photos_area", "refs_photos_warped"),
                   ("flip_ensemble", "input_area")]
    report = {}
    for preset, by_name in scores.items():
        for new, old in comparisons:
            row = {}
            for metric in ("psnr", "identity", "sharpness"):
                a = [face[metric] for face in by_name[new]]
                b = [face[metric] for face in by_name[old]]
                diff = paired_difference(a, b)
                row[metric] = {"mean": diff.mean_diff, "ci95": diff.ci95, "a_better": diff.a_better}
            report[f"{preset} {new} - {old}"] = row
            print(f"{preset:15s} {new} - {old}: " + ", ".join(
                f"{metric} {row[metric]['mean']:+.4f} ± {row[metric]['ci95'] or 0:.4f}" for metric in row))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
