"""`FaceAnalyzer`: photo -> faces (box, 68 landmarks, 5 alignment points) -> aligned crops.

Also prepares reference photos: aligned crops pass through, whole photos have their face found and
aligned, and in a group photo the face that looks most like the other references is taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from instantrestore.faces.align import (ALIGN_SIZE, align_face, estimate_alignment, ffhq_template, resize_face,
                                        transform_points)
from instantrestore.faces.detect import DetectedFace, build_detector
from instantrestore.faces.identity import IdentityModel, cosine_similarity
from instantrestore.faces.landmarks import LandmarkPredictor, five_points_from_68

# dlib's landmark predictor was trained inside dlib HOG boxes, which sit differently from a YuNet/SCRFD
# box; we rebuild a HOG-style box from the detector's five points. Fitted on 40 FRLL train people: the
# HOG box side is 2.26 eye-to-mouth distances (eye midpoint to mouth midpoint), its centre 0.06 of
# that distance above the mean of the five points. On 75 other train photos, the 68 points in this box
# land within 0.027 eye distances (mean, on the five derived points) of those in the real HOG box, and
# move 0.033 under `sr8`; a box scaled from the detector's box does worse (0.126 and 0.055).
_HOG_SIDE_PER_EYE_MOUTH = 2.26
_HOG_CENTRE_RAISE = 0.06

# An image counts as an already-aligned crop when its five points lie on the template scaled to its
# size, within this fraction of the side on average. Measured with both detectors: GFP-GAN's four
# example crops (data/real-lq/cropped_faces) 0.010-0.030; whole square FRLL photos 0.073-0.171.
_ALIGNED_TOLERANCE = 0.045

# A reference smaller than this carries too little identity to guide a restoration.
MIN_REFERENCE_SIDE = 64


@dataclass
class Face:
    box: np.ndarray          # (4,) x0, y0, x1, y1 in photo pixels
    score: float
    landmarks68: np.ndarray  # (68, 2) in photo pixels (dlib iBUG order)
    kps5: np.ndarray         # (5, 2) in photo pixels, the FFHQ template's order, from the 68 (used to align)
    detector_kps5: np.ndarray | None = None  # the detector's own five points (None for dlib HOG)

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    def side_in_photo(self) -> int:
        """The side, in photo pixels, of the region an aligned crop of this face covers."""
        affine = estimate_alignment(self.kps5, ALIGN_SIZE)
        return int(round(ALIGN_SIZE / np.sqrt(abs(np.linalg.det(affine[:, :2])))))

    def align(self, rgb: np.ndarray, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(aligned `size` x `size` crop, (2, 3) photo -> crop affine)."""
        affine = estimate_alignment(self.kps5, size)
        return align_face(rgb, affine, size), affine


def landmarks_in_crop(face: Face, affine: np.ndarray) -> np.ndarray:
    """The face's 68 landmarks in the coordinates of the crop made with `affine`."""
    return transform_points(face.landmarks68, affine).astype(np.float32)


def hog_style_box(kps5: np.ndarray) -> np.ndarray:
    """The dlib HOG box the landmark predictor expects, from a detector's five points."""
    eye_to_mouth = (kps5[3] + kps5[4]) / 2 - (kps5[0] + kps5[1]) / 2
    centre = kps5.mean(axis=0) - _HOG_CENTRE_RAISE * eye_to_mouth
    half = _HOG_SIDE_PER_EYE_MOUTH * np.linalg.norm(eye_to_mouth) / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32)


class FaceAnalyzer:
    """Detect faces, place 68 landmarks on each, and align them to the FFHQ template."""

    def __init__(self, detector: str = "default", detector_path: str | os.PathLike | None = None) -> None:
        self.detector = build_detector(detector, detector_path)
        self.landmarks = LandmarkPredictor()

    def _to_face(self, rgb: np.ndarray, detected: DetectedFace) -> Face:
        landmark_box = detected.box if detected.kps5 is None else hog_style_box(detected.kps5)
        landmarks68 = self.landmarks(rgb, landmark_box)
        # Align on the five points derived from the 68, not on the detector's own: on the FRLL val photos
        # (scripts/bench/bench_faces.py) they move 0.030 eye distances from the clean photo's under `sr8` and
        # 0.141 under `codeformer`, against 0.077 and 0.295 for YuNet's points.
        return Face(detected.box, detected.score, landmarks68, five_points_from_68(landmarks68), detected.kps5)

    def find_faces(self, rgb: np.ndarray, only_center_face: bool = False) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB photo, largest first; with `only_center_face`, just the one whose box
        centre is closest to the photo's centre (GFP-GAN's `--only_center_face`)."""
        rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3])
        detected = self.detector.detect(rgb)
        if only_center_face and detected:
            centre = np.array([rgb.shape[1], rgb.shape[0]]) / 2
            detected = [min(detected, key=lambda d: np.linalg.norm((d.box[:2] + d.box[2:]) / 2 - centre))]
        faces = [self._to_face(rgb, d) for d in detected]
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def is_aligned_crop(self, image: np.ndarray, faces: list[Face]) -> bool:
        """A square image whose face sits on the FFHQ template, or a square image with no face found
        (a degraded crop can defeat the detector; whole photos are rarely square and faceless)."""
        side = image.shape[0]
        if image.shape[0] != image.shape[1]:
            return False
        if not faces:
            return True
        template = ffhq_template(side)
        return any(np.linalg.norm(face.kps5 - template, axis=1).mean() < _ALIGNED_TOLERANCE * side
                   for face in faces)

    def reference_crops(self, images: list[np.ndarray],
                        identity_model: IdentityModel) -> tuple[list[np.ndarray], list[str]]:
        """Aligned crops of the references at full resolution, in their order, and notes on what was chosen or
        skipped; bring them to a model's size with `resize_face`.

        Each reference is an aligned crop (kept as it is) or a whole photo (its face aligned at `ALIGN_SIZE`).
        When a photo has several faces, the one most similar to the other references is used.
        """
        notes: list[str] = []
        chosen: dict[int, np.ndarray] = {}
        candidates: dict[int, list[np.ndarray]] = {}
        for index, image in enumerate(images):
            image = np.ascontiguousarray(np.asarray(image)[..., :3])
            if min(image.shape[:2]) < MIN_REFERENCE_SIDE:
                notes.append(f"reference {index + 1}: {image.shape[1]}x{image.shape[0]} is too small to guide a "
                             f"restoration (under {MIN_REFERENCE_SIDE} px); skipped")
                continue
            faces = self.find_faces(image)
            if self.is_aligned_crop(image, faces):
                chosen[index] = image
                if not faces:
                    notes.append(f"reference {index + 1}: no face detected in a square image; used as an aligned crop")
            elif not faces:
                notes.append(f"reference {index + 1}: no face found; skipped")
            elif len(faces) == 1:
                chosen[index] = faces[0].align(image, ALIGN_SIZE)[0]
            else:
                candidates[index] = [face.align(image, ALIGN_SIZE)[0] for face in faces]

        for index, crops in candidates.items():
            pick, reason = self._most_similar(crops, index, chosen, candidates, identity_model)
            chosen[index] = crops[pick]
            notes.append(f"reference {index + 1}: {len(crops)} faces found; used face {pick + 1} "
                         f"(largest first), {reason}")
        return [chosen[index] for index in sorted(chosen)], notes

    @staticmethod
    def _most_similar(crops: list[np.ndarray], index: int, chosen: dict[int, np.ndarray],
                      candidates: dict[int, list[np.ndarray]], identity_model: IdentityModel) -> tuple[int, str]:
        """(index, why): the crop most similar to the unambiguous references; failing those, to the best
        match in each other group photo; failing that (a lone group photo), the largest face."""
        others = [identity_model.embed(group) for other, group in candidates.items() if other != index]
        if not chosen and not others:
            return 0, "the largest (no other reference to compare identities with)"
        embeddings = identity_model.embed(crops)
        if chosen:
            anchors = identity_model.embed(list(chosen.values()))
            scores = cosine_similarity(embeddings, anchors).mean(axis=1)
        else:
            scores = np.mean([cosine_similarity(embeddings, group).max(axis=1) for group in others], axis=0)
        pick = int(np.argmax(scores))
        return pick, f"the most similar to the other references (identity {scores[pick]:.2f})"
