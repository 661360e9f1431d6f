"""Write tests/fixtures/faceres_tfjs.json: TF.js's own faceres descriptors of a few FRLL faces.

The chips are made by our pipeline (YuNet -> FFHQ crop -> dlib chip, FaceResIdentity.chip), written as
raw RGB, and run through the original graph by TF.js (scripts/convert/faceres_tfjs_reference.mjs); the test
then runs our PyTorch executor on the same chips and compares. Needs node, @tensorflow/tfjs and the
faceres files (scripts/data/fetch_faceres.py):

    mkdir -p /tmp/tfjs && (cd /tmp/tfjs && npm install @tensorflow/tfjs@4.22.0)
    .venv/bin/python scripts/convert/make_faceres_fixture.py --tfjs /tmp/tfjs/node_modules
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from instantrestore.faces import FaceAnalyzer
from instantrestore.faces.detect import shared_dir
from instantrestore.faces.identity import FACERES_SHA256, FaceResIdentity, faceres_dir
from instantrestore.imageio import read_image, write_bytes

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("005/005_03.jpg", "005/005_08.jpg", "006/006_03.jpg")  # FRLL: two views of one person, one other
FIXTURE = REPO / "tests" / "fixtures" / "faceres_tfjs.json"
SIGNIFICANT_DIGITS = 4  # keeps the fixture small (17 KB); the test allows 1e-3, TF.js vs ours differ by 5e-5


def faceres_chips(model: FaceResIdentity, shared: Path) -> list:
    analyzer = FaceAnalyzer()
    chips = []
    for name in PHOTOS:
        photo = read_image(shared / "data" / "frll" / "images" / name)
        crop, _ = analyzer.find_faces(photo)[0].align(photo, 512)
        chips.append(model.chip(crop))
    return chips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tfjs", type=Path, required=True, help="a node_modules folder with @tensorflow/tfjs")
    parser.add_argument("--shared", type=Path, default=shared_dir())
    args = parser.parse_args()

    chips = faceres_chips(FaceResIdentity(), args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for number, chip in enumerate(chips):
            path = Path(tmp) / f"chip{number}.rgb"
            path.write_bytes(chip.tobytes())
            paths.append(str(path))
        done = subprocess.run(["node", str(REPO / "scripts" / "convert" / "faceres_tfjs_reference.mjs"), str(faceres_dir()), *paths],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "NODE_PATH": str(args.tfjs.resolve())})
    reference = json.loads(done.stdout)
    fixture = {
        "made_by": "scripts/convert/make_faceres_fixture.py --tfjs NODE_MODULES (see its docstring)",
        "tfjs_version": reference["tfjs_version"],
        "faceres_sha256": FACERES_SHA256,
        "photos": [f"data/frll/images/{name}" for name in PHOTOS],
        "output": FaceResIdentity.OUTPUT_NODE,
        "descriptors": [[float(f"{value:.{SIGNIFICANT_DIGITS}g}") for value in row] for row in reference["descriptors"]],
    }
    write_bytes(FIXTURE, json.dumps(fixture, separators=(",", ":")).encode())
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes), TF.js {reference['tfjs_version']}")


if __name__ == "__main__":
    main()
