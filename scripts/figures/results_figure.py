"""Write docs/results.jpg: degraded | blind | 4 references, restorer alone | with references | ground truth.

    .venv/bin/python scripts/figures/results_figure.py [--model default] [--preset codeformer] [--people 6]

Each row is one FRLL val person (CC BY 4.0; CelebA's faces are not redistributed): the frontal photo (view 03)
aligned as everywhere else, degraded with the benchmark's seed for that person and preset, restored by the
packaged model blind, with four other photos of the person (views 08, 02, 04, 07, as the benchmark picks them)
through the restorer alone (detail strength 0) and with the reference-detail stage, next to the photo itself.
Runs on a CPU in a minute.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from instantrestore.api import load_restorer
from instantrestore.degradations import degrade
from instantrestore.evaluation.benchmark import FRLL_REFERENCE_VIEWS, FRLL_TARGET_VIEW, degradation_seed
from instantrestore.faces import FaceAnalyzer
from instantrestore.imageio import read_image, write_bytes

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ("degraded", "blind", "4 refs, restorer alone", "4 refs + reference detail", "ground truth")
HEADER = 22  # pixels of the column titles


def aligned(analyzer: FaceAnalyzer, path: Path) -> np.ndarray:
    photo = read_image(path)
    face = max(analyzer.find_faces(photo), key=lambda found: found.area)
    return face.align(photo)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("INSTANTRESTORE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--model", default="default")
    parser.add_argument("--preset", default="codeformer")
    parser.add_argument("--people", type=int, default=6)
    parser.add_argument("--tile", type=int, default=256, help="pixels per face in the figure")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "results.jpg")
    args = parser.parse_args()

    frll = args.shared / "data" / "frll"
    with open(frll / "splits.csv") as splits:
        people = [row["face_id"] for row in csv.DictReader(splits) if row["split"] == "val"][:args.people]
    analyzer, restorer = FaceAnalyzer(), load_restorer(args.model, device="cpu")
    rows = []
    for person in people:
        truth = aligned(analyzer, frll / "images" / person / f"{person}_{FRLL_TARGET_VIEW}.jpg")
        degraded = degrade(truth, args.preset, degradation_seed(0, f"frll_{person}", args.preset))
        refs = restorer.encode_references([frll / "images" / person / f"{person}_{view}.jpg" for view in FRLL_REFERENCE_VIEWS[:4]])
        tiles = [degraded, restorer.restore_face(degraded),
                 restorer.restore_face(degraded, refs=refs, detail_strength=0), restorer.restore_face(degraded, refs=refs),
                 truth]
        # the face's middle 3/4, where the detail is, rather than the whole crop shrunk
        rows.append(np.concatenate([np.asarray(Image.fromarray(tile[64:448, 64:448]).resize((args.tile, args.tile),
                                                                                            Image.LANCZOS))
                                    for tile in tiles], axis=1))
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    figure = Image.new("RGB", (grid.width, grid.height + HEADER), "white")
    figure.paste(grid, (0, HEADER))
    draw = ImageDraw.Draw(figure)
    for column, title in enumerate(COLUMNS):
        draw.text((column * args.tile + 6, 5), title, fill="black")
    encoded = io.BytesIO()
    figure.save(encoded, format="JPEG", quality=90)  # photos: a PNG of six rows is 1.8 MB
    write_bytes(args.output, encoded.getvalue())
    print(f"wrote {args.output} ({len(encoded.getvalue()) // 1024} KB): FRLL val {', '.join(people)}, "
          f"preset {args.preset}, model {args.model}")


if __name__ == "__main__":
    main()
