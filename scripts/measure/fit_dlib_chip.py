"""Fit where dlib's 150-px face chip (padding 0.25) lies in our FFHQ-aligned crop, and check the result.

    python scripts/measure/fit_dlib_chip.py [--shared ../shared]

dlib cuts its chip with a similarity transform fitted to 51 of its 68 landmarks; we align with a
similarity fitted to five points. Between the two there is a similarity that depends on each face, most
on the head's turn. This fits one, by least squares over the chip corners of FRLL `train` faces (frontal
and three-quarter views; profiles are left out), and prints it for `DLIB_CHIP_TO_CROP512` in
instantrestore/faces/dlib_resnet.py. It then checks the packaged one on the `val` people: the port's
descriptor of dlib's own chip, and of the chip cut with the fixed affine from our aligned crop, against
dlib's own `compute_face_descriptor` of the photo (cosine, and verdicts at dlib's 0.6 distance).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from instantrestore.faces import FaceAnalyzer  # noqa: E402
from instantrestore.faces.dlib_resnet import CHIP_SIZE, SAME_PERSON_DISTANCE, DlibDescriptor  # noqa: E402
from instantrestore.faces.identity import DlibTorchIdentity  # noqa: E402
from instantrestore.faces.landmarks import dlib_model_files  # noqa: E402
from instantrestore.imageio import read_image  # noqa: E402

CHIP_PADDING = 0.25
CROP = 512


def chip_to_photo(details: dlib.chip_details) -> np.ndarray:
    """(2, 3) affine from chip pixels to photo pixels: dlib's `get_mapping_to_chip`, inverted (the chip's
    corners are the rectangle's corners rotated by `angle` about its centre)."""
    rect, angle = details.rect, details.angle
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.right(), rect.bottom()]])
    photo = (corners - centre) @ rotation.T + centre
    chip = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], np.float64)
    return cv2.getAffineTransform(chip.astype(np.float32), photo.astype(np.float32))


def people(shared: Path, split: str) -> list[str]:
    rows = [line.split(",") for line in (shared / "data/frll/splits.csv").read_text().split()[1:]]
    return sorted(person for person, which in rows if which == split)


class Faces:
    """dlib's view of a photo (HOG box, 68 landmarks, chip, descriptor) and ours (aligned crop)."""

    def __init__(self) -> None:
        models = dlib_model_files()
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(models.pose_predictor_model_location())
        self.descriptor = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self.analyzer = FaceAnalyzer("yunet")

    def __call__(self, photo: np.ndarray) -> dict | None:
        boxes = self.detector(photo, 0)
        ours = self.analyzer.find_faces(photo)
        if len(boxes) != 1 or len(ours) != 1:
            return None
        shape = self.shapes(photo, boxes[0])
        crop, photo_to_crop = ours[0].align(photo, CROP)
        details = dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        chip_to_crop = np.vstack([photo_to_crop, [0, 0, 1]]) @ np.vstack([chip_to_photo(details), [0, 0, 1]])
        return {"crop": crop, "chip_to_crop": chip_to_crop[:2],
                "chip": dlib.get_face_chip(photo, shape, size=CHIP_SIZE, padding=CHIP_PADDING),
                "dlib": np.array(self.descriptor.compute_face_descriptor(photo, shape), np.float32),
                "chip_details": details}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("INSTANTRESTORE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--fit-people", type=int, default=20, help="train people to fit on")
    parser.add_argument("--fit-views", default="02,03,04,07,08,09",
                        help="FRLL views to fit on (03, 08: frontal; 02, 04, 07, 09: three-quarter)")
    parser.add_argument("--check-views", default="02,03,04,07,08,09", help="FRLL views of the val people to check on")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faces = Faces()

    def collect(persons: list[str], views: str) -> list[dict]:
        found = []
        for person in persons:
            for view in views.split(","):
                face = faces(read_image(args.shared / f"data/frll/images/{person}/{person}_{view}.jpg"))
                if face is not None:
                    found.append(dict(face, person=person))
        return found

    # fit: chip corners and centre, mapped by each face's own chip -> crop transform, pooled
    train = collect(people(args.shared, "train")[: args.fit_people], args.fit_views)
    grid = np.array([[0, 0], [CHIP_SIZE - 1, 0], [0, CHIP_SIZE - 1], [CHIP_SIZE - 1, CHIP_SIZE - 1],
                     [(CHIP_SIZE - 1) / 2, (CHIP_SIZE - 1) / 2]], np.float64)
    source = np.concatenate([grid] * len(train)).astype(np.float32)
    target = np.concatenate([grid @ face["chip_to_crop"][:, :2].T + face["chip_to_crop"][:, 2] for face in train])
    fitted, _ = cv2.estimateAffinePartial2D(source, target.astype(np.float32), method=cv2.LMEDS)
    residual = np.abs(source @ fitted[:, :2].T + fitted[:, 2] - target).reshape(len(train), -1, 2)
    scale = math.hypot(*fitted[:, 0])
    print(f"fitted on {len(train)} faces of {args.fit_people} train people: chip -> {CROP}-px crop affine")
    print(np.array2string(fitted, precision=4, separator=", "))
    print(f"  scale {scale:.4f} crop px per chip px, angle {math.degrees(math.atan2(fitted[1, 0], fitted[0, 0])):.3f} deg; "
          f"per-face corner residual mean {residual.mean():.2f} px, max {residual.max():.2f} px (of {CROP})")

    # check on the val people, against dlib's descriptor of the photo: the port on dlib's own chips, then
    # on chips cut with the packaged affine from our aligned crops
    val = collect(people(args.shared, "val"), args.check_views)
    theirs = np.stack([face["dlib"] for face in val])
    descriptor = DlibDescriptor()
    for size in ("dlib chip", 256, CROP):
        if size == "dlib chip":
            images = torch.from_numpy(np.stack([face["chip"] for face in val])).permute(0, 3, 1, 2).float()
            network = descriptor.network
        else:
            crops = np.stack([cv2.resize(face["crop"], (size, size), interpolation=cv2.INTER_AREA) for face in val])
            images = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
            network = descriptor
        start = time.perf_counter()
        with torch.no_grad():
            ours = network(images).numpy()
        seconds = time.perf_counter() - start
        cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        distance = np.linalg.norm(ours - theirs, axis=1)
        same = np.array([[a["person"] == b["person"] for b in val] for a in val])
        upper = np.triu_indices(len(val), 1)
        ours_d = np.linalg.norm(ours[:, None] - ours[None], axis=-1)[upper]
        theirs_d = np.linalg.norm(theirs[:, None] - theirs[None], axis=-1)[upper]
        agree = ((ours_d < SAME_PERSON_DISTANCE) == (theirs_d < SAME_PERSON_DISTANCE)).mean()
        unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
        agree_cosine = (((unit @ unit.T)[upper] >= DlibTorchIdentity.same_person_threshold)
                        == (theirs_d < SAME_PERSON_DISTANCE)).mean()
        right = ((ours_d < SAME_PERSON_DISTANCE) == same[upper]).mean()
        right_dlib = ((theirs_d < SAME_PERSON_DISTANCE) == same[upper]).mean()
        source = size if size == "dlib chip" else f"{size}-px crop + fixed affine"
        print(f"{len(val)} val faces ({len(set(f['person'] for f in val))} people), {source}: cosine to dlib's "
              f"descriptor of the photo min {cosine.min():.5f} mean {cosine.mean():.5f}; L2 max {distance.max():.3f} "
              f"mean {distance.mean():.3f}; pair distances within {np.abs(ours_d - theirs_d).max():.3f} of dlib's; "
              f"verdicts at {SAME_PERSON_DISTANCE} equal to dlib's on {agree:.2%} of {len(ours_d)} pairs; right on "
              f"{right:.2%} (dlib {right_dlib:.2%}); cosine >= {DlibTorchIdentity.same_person_threshold} "
              f"(dlib-torch) agrees with dlib's rule on {agree_cosine:.2%}; {seconds:.2f} s")


if __name__ == "__main__":
    main()
