"""Large clean faces through `restore`: how much of its own detail a face keeps, and its PSNR to itself.

For val people of a prepared set, the benchmark's target photo (the whole source photo, clean) is resized so
that its face is W px wide (FRLL photos are studio shots; CelebA's are in the wild), restored as a whole photo
blind and with the person's 4 references, and measured inside the detected face box: detail kept (mean
|Laplacian| of the output over the input's) and PSNR of the output against the input. Writes JSON.

    python scripts/measure/large_faces.py --data data/val --src data/src_val -o bench/large_faces.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from instantrestore import load_restorer
from instantrestore.data.prepare import load_index
from instantrestore.evaluation.benchmark import benchmark_cases
from instantrestore.imageio import read_image, write_bytes


def detail(image: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def source_photo(src: Path, person: str, name: str) -> Path:
    return next(path for path in (src / person).iterdir() if path.stem == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared data (its val split chooses people and photos)")
    parser.add_argument("--src", required=True, help="the source folder it was prepared from (whole photos)")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--widths", type=int, nargs="+", default=[150, 300, 600])
    parser.add_argument("--people", type=int, default=8, help="people per set (FRLL, CelebA)")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    index = load_index(args.data)
    restorer = load_restorer(args.model)
    rows = []
    for people in ("frll_*", "celeba_*"):
        cases, _ = benchmark_cases(index, "val", 4, max_people=args.people, people=people)
        for case in cases:
            photo = read_image(source_photo(Path(args.src), case.person, case.target))
            references = [read_image(index.image_path(case.person, name)) for name in case.references[:4]]
            cache = restorer.encode_references(references)
            faces = restorer.analyzer.find_faces(photo)
            if not faces:
                continue
            face_width = faces[0].box[2] - faces[0].box[0]
            for width in args.widths:
                scale = width / face_width
                if scale > 1.5:  # no upscaled photos: their "detail" would be interpolation
                    continue
                resized = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                for num_refs, refs in ((0, None), (4, cache)):
                    result = restorer.restore(resized, refs=refs)
                    x0, y0, x1, y1 = np.round(result.faces[0].box).astype(int)
                    before, after = resized[y0:y1, x0:x1], result.image[y0:y1, x0:x1]
                    rows.append({"person": case.person, "width": width, "num_refs": num_refs,
                                 "detail_kept": detail(after) / max(detail(before), 1e-6),
                                 "psnr_to_input": psnr(after, before)})
                    print(rows[-1], flush=True)
    summary = {}
    for width in args.widths:
        for num_refs in (0, 4):
            chosen = [r for r in rows if r["width"] == width and r["num_refs"] == num_refs]
            if chosen:
                summary[f"w{width}_r{num_refs}"] = {
                    "n": len(chosen), "detail_kept": float(np.mean([r["detail_kept"] for r in chosen])),
                    "detail_kept_min": float(np.min([r["detail_kept"] for r in chosen])),
                    "psnr_to_input": float(np.mean([r["psnr_to_input"] for r in chosen]))}
    print(json.dumps(summary, indent=1))
    write_bytes(args.output, json.dumps({"model": args.model, "summary": summary, "faces": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
