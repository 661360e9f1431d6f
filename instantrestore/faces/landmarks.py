"""dlib's 68-point landmark predictor and the five FFHQ points derived from it."""

from __future__ import annotations

import warnings
from functools import lru_cache

import dlib
import numpy as np

# iBUG 68-point indices (0-based). The subject's right eye (36-41) is on the image's left.
_EYE_IMAGE_LEFT = slice(36, 42)
_EYE_IMAGE_RIGHT = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_IMAGE_LEFT = 48
_MOUTH_IMAGE_RIGHT = 54


def dlib_model_files():
    """face_recognition_models finds its files through pkg_resources, which warns on import; the warning
    is about setuptools' future, not ours (pyproject pins setuptools<81)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import face_recognition_models
    return face_recognition_models


def five_points_from_68(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2) in the FFHQ template's order: eye centre on the image's left, eye
    centre on the right, nose tip, mouth corner on the left, mouth corner on the right."""
    lm68 = np.asarray(lm68, dtype=np.float32)
    return np.stack([lm68[_EYE_IMAGE_LEFT].mean(0), lm68[_EYE_IMAGE_RIGHT].mean(0), lm68[_NOSE_TIP],
                     lm68[_MOUTH_IMAGE_LEFT], lm68[_MOUTH_IMAGE_RIGHT]])


def to_dlib_rect(box: np.ndarray) -> dlib.rectangle:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def shape_to_array(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[point.x, point.y] for point in shape.parts()], dtype=np.float32)


@lru_cache(maxsize=1)
def _shape_predictor() -> dlib.shape_predictor:
    """Loaded once per process: the 100 MB model takes seconds to deserialise."""
    return dlib.shape_predictor(dlib_model_files().pose_predictor_model_location())


class LandmarkPredictor:
    """dlib's 68-point shape predictor (iBUG 300-W), run inside a face box in dlib's HOG-box convention."""

    def __init__(self) -> None:
        self.predictor = _shape_predictor()

    def shape(self, rgb: np.ndarray, box: np.ndarray) -> dlib.full_object_detection:
        return self.predictor(np.ascontiguousarray(rgb), to_dlib_rect(box))

    def __call__(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float32 landmarks in photo coordinates."""
        return shape_to_array(self.shape(rgb, box))
