"""Identity descriptors of aligned faces: dlib's ResNet (offline default) or a user's ArcFace ONNX model.

Both take our FFHQ-aligned crops (any size) and return unit-norm descriptors, so the identity score is
a cosine similarity whatever the model.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from instantrestore.errors import WeightsError
from instantrestore.faces.align import ffhq_template
from instantrestore.faces.landmarks import LandmarkPredictor, dlib_model_files

# Where dlib's HOG detector puts the face in an FFHQ-aligned crop, as fractions of the crop side
# (mean over 80 FRLL frontal photos aligned with YuNet points; std <= 0.04). The landmark predictor
# is run in this fixed box instead of detecting again on every crop.
ALIGNED_FACE_BOX = np.array([0.20, 0.32, 0.79, 0.91])


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of two descriptors (float), or of every row of `a` with every row of `b` (matrix)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a_unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b_unit = b / np.linalg.norm(b, axis=-1, keepdims=True)
    if a.ndim == 1 and b.ndim == 1:
        return float(a_unit @ b_unit)
    return np.atleast_2d(a_unit) @ np.atleast_2d(b_unit).T


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32).reshape(len(rows), -1)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


class IdentityModel(ABC):
    name: str
    dim: int
    same_person_threshold: float  # cosine similarity above which two faces are taken as one person

    @abstractmethod
    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Aligned uint8 RGB crops (any square size) -> (N, dim) float32 unit-norm descriptors."""


class DlibIdentity(IdentityModel):
    """dlib's face recognition ResNet (99.38% on LFW), shipped with face_recognition_models.

    dlib decides "same person" at Euclidean distance 0.6 between raw descriptors. Ours are normalised,
    and the raw ones are not unit length (mean norm 1.50), so the rule does not convert exactly. Measured
    on FRLL (20 val people x 6 front/three-quarter views, 300 same-person and 6,840 different-person
    pairs; scripts/bench_faces.py): cosine >= 0.925 makes the same decision as dlib's rule on 99.76% of
    pairs and is right on 99.68% (dlib's rule: 99.55%); same-person pairs have cosine 0.940-1 (mean
    0.971), different people at most 0.936 (mean 0.852).
    """

    name = "dlib"
    dim = 128
    same_person_threshold = 0.925

    def __init__(self) -> None:
        import dlib

        self.model = dlib.face_recognition_model_v1(dlib_model_files().face_recognition_model_location())
        self.landmarks = LandmarkPredictor()

    def raw_descriptor(self, crop: np.ndarray) -> np.ndarray:
        """dlib's own (not normalised) 128-D descriptor of one aligned crop."""
        crop = np.ascontiguousarray(crop[..., :3])
        shape = self.landmarks.shape(crop, ALIGNED_FACE_BOX * crop.shape[0])
        return np.array(self.model.compute_face_descriptor(crop, shape), np.float32)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        return _unit(np.stack([self.raw_descriptor(crop) for crop in crops]))


class ArcFaceIdentity(IdentityModel):
    """An insightface ArcFace recognition model (e.g. w600k_r50.onnx of buffalo_l) on 112x112 crops.

    Our FFHQ crop is re-warped onto insightface's ArcFace template through the FFHQ template points,
    i.e. the crop the model was trained on. The threshold is insightface's reference one: squared
    Euclidean distance 1.24 between unit descriptors (its deploy/test.py; deepinsight/insightface#1106),
    i.e. cosine 1 - 1.24 / 2 = 0.38. Not re-measured here: no ArcFace weights are available offline.
    """

    name = "arcface"
    same_person_threshold = 0.38

    def __init__(self, model_path: str | os.PathLike) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise WeightsError(f"{path}: ArcFace identity model not found")
        from insightface.model_zoo import get_model

        self.model = get_model(str(path), providers=["CPUExecutionProvider"])
        if not hasattr(self.model, "get_feat"):
            raise WeightsError(f"{path}: not an ArcFace recognition model")
        self.input_size = int(self.model.input_size[0])
        self.dim = int(self.model.output_shape[-1])

    def arcface_crop(self, crop: np.ndarray) -> np.ndarray:
        from insightface.utils import face_align

        kps5 = ffhq_template(crop.shape[0])
        return face_align.norm_crop(np.ascontiguousarray(crop[..., :3]), kps5, image_size=self.input_size)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        # insightface models take BGR, like every cv2-read image it was written for
        bgr = [cv2.cvtColor(self.arcface_crop(crop), cv2.COLOR_RGB2BGR) for crop in crops]
        return _unit(self.model.get_feat(bgr))


def load_identity_model(path: str | os.PathLike | None = None) -> IdentityModel:
    """dlib's model (offline, ships with the dependencies) by default; ArcFace when a model file is given."""
    if path is None:
        return DlibIdentity()
    return ArcFaceIdentity(path)
