"""Write an identity cohort: one dlib descriptor per FRLL train person, for reference_gate.py's S-norm margin.

    python scripts/data/make_identity_cohort.py --frll ../shared/data/frll -o data/identity_cohort_dlib.safetensors

Each train person of FRLL's `splits.csv` (val people never enter it: they are what the cohort is measured on)
is described by the mean of the unit dlib descriptors of their frontal and three-quarter photos (`COHORT_VIEWS`),
each aligned and embedded exactly as the pipeline encodes a reference, renormalised. Written as float16 to
`--out` with the people's ids in the metadata (`cohort`); the same photos and code give the same bytes. A
measurement, not shipped: scripts/measure/reference_gate.py --cohort reads it (docs/reference-detail.md).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from instantrestore import load_restorer
from instantrestore.faces.align import resize_face
from instantrestore.imageio import read_image

# FRLL views (data/frll/views.csv) dlib describes well: neutral and smiling, front and three-quarter. Profiles
# (01, 05, 06, 10) are left out: dlib's landmarks fail on them.
COHORT_VIEWS = ("02", "03", "04", "07", "08", "09")


def train_people(frll: Path) -> list[str]:
    with (frll / "splits.csv").open(newline="", encoding="utf-8") as handle:
        return sorted(row["face_id"] for row in csv.DictReader(handle) if row["split"] == "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frll", type=Path, default=Path("../shared/data/frll"))
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()

    restorer = load_restorer("default", detail_strength=0)
    identity = restorer.identity_model
    people = train_people(args.frll)
    descriptors = []
    for person in people:
        photos = [read_image(args.frll / "images" / person / f"{person}_{view}.jpg") for view in COHORT_VIEWS]
        crops, notes = restorer.analyzer.reference_crops(photos, identity)
        if notes:
            print(f"{person}: {'; '.join(notes)}")
        embeddings = identity.embed([resize_face(crop, restorer.face_size) for crop in crops])
        mean = embeddings.mean(axis=0)
        descriptors.append(mean / np.linalg.norm(mean))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # one metadata entry: safetensors writes several in no fixed order, and the file is to come out the same
    about = json.dumps({"identity_net": identity.name, "source": "FRLL (CC BY 4.0) train split", "people": people,
                        "views": COHORT_VIEWS})
    save_file({"descriptors": np.stack(descriptors).astype(np.float16)}, str(args.out), metadata={"cohort": about})
    print(f"{args.out}: {len(people)} people x {identity.dim}")


if __name__ == "__main__":
    main()
