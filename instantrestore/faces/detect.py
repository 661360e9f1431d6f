"""Face detectors behind one small interface: dlib HOG, YuNet (OpenCV) and SCRFD (insightface).

The default is YuNet when its weights are present, chosen by `scripts/bench/bench_faces.py` on FRLL (20 val
people x 6 front/three-quarter views, 768 px): both find every face on clean and `sr8` photos, but under
the `codeformer` preset YuNet (pyramid, see `YuNetDetector`) finds 98.3% against 65.8% for dlib HOG, at
about half the time per photo for detection + landmarks + alignment + paste-back (0.23 s vs 0.45 s,
2 threads on a shared, loaded CPU). Its cost: a few extra boxes on degraded photos (2 of 120 under
`sr8`, 6 under `codeformer`, against 0 and 1 for dlib). YuNet's weights (MIT, 323 KB) ship inside the
package, beside their licence, so every install gets it.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from instantrestore.errors import ConfigError, WeightsError

YUNET_FILENAME = "yunet_n_dynamic.onnx"
YUNET_SHA256 = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"
DETECTOR_NAMES = ("default", "dlib", "yunet", "scrfd")


@dataclass
class DetectedFace:
    box: np.ndarray          # (4,) float32 x0, y0, x1, y1 in photo pixels
    score: float
    kps5: np.ndarray | None  # (5, 2) float32 in the FFHQ template's order, or None (dlib HOG has none)


class FaceDetector(ABC):
    name: str = "detector"

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in an HxWx3 uint8 RGB photo, in no particular order."""


def shared_dir() -> Path:
    """$INSTANTRESTORE_SHARED, or ../shared beside the checkout: the scripts' and tests' data, never read by
    the toolkit itself."""
    return Path(os.environ.get("INSTANTRESTORE_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))


def default_yunet_path() -> Path:
    """The packaged YuNet weights."""
    return Path(__file__).resolve().parents[1] / "weights" / "yunet" / YUNET_FILENAME


@lru_cache(maxsize=1)
def _hog_detector():
    """Built once per process: dlib deserialises its HOG filters in about 5 s."""
    import dlib

    return dlib.get_frontal_face_detector()


class DlibHogDetector(FaceDetector):
    """dlib's frontal HOG + linear SVM detector. Its 80x80 window misses smaller faces, so photos whose
    short side is under `upsample_below` pixels are upsampled once (2x) before scanning."""

    name = "dlib"

    def __init__(self, upsample_below: int = 1000) -> None:
        self.detector = _hog_detector()
        self.upsample_below = upsample_below

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        upsample = 1 if min(rgb.shape[:2]) < self.upsample_below else 0
        rects, scores, _ = self.detector.run(np.ascontiguousarray(rgb), upsample, 0.0)
        return [DetectedFace(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32), float(s), None)
                for r, s in zip(rects, scores)]


@lru_cache(maxsize=4)
def _static_yunet_bytes(path: str) -> bytes:
    """The dynamic YuNet graph with its input fixed to 1x3x32x32.

    OpenCV's ONNX importer rejects this file's symbolic `height`/`width` ("dynamic 'zero' shapes are
    not supported"); once the dimensions are concrete it imports, and `setInputSize` then reshapes the
    network to each photo, as FaceDetectorYN does for its own models.
    """
    import onnx

    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, 32, 32)):
        dim.dim_value = value
    return model.SerializeToString()


def check_yunet_weights(path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"{path}: YuNet face detector weights not found; pass --detector dlib, or reinstall "
                           f"instantrestore (it ships weights/yunet/{YUNET_FILENAME})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != YUNET_SHA256:
        raise WeightsError(f"{path}: not the YuNet weights this toolkit expects (sha256 {digest[:12]}..., "
                           f"expected {YUNET_SHA256[:12]}...); the file may be truncated or a different model")


class YuNetDetector(FaceDetector):
    """YuNet (libfacedetection) through cv2.FaceDetectorYN: box + five landmarks.

    YuNet is built for small faces: a large face that is also blurred (a 768 px FRLL photo under the
    `codeformer` preset) is found in 52% of photos at full size but in 98% at a quarter of the size.
    So it scans a pyramid, the photo (shrunk to `max_side`) and up to two halvings down to a short side
    of `min_side`, and merges the scales with non-maximum suppression. At the other end, blurred faces of
    16 px and less slip under its smallest anchors, so one finer level is scanned too: the photo at twice
    its size, at most `fine_side` on its long side (0 turns the level off). That level keeps only boxes
    under `fine_max_face` px in the photo: larger faces are found at the other levels, and what the
    enlarged photo adds at that size is false (a shirt collar under an FRLL face, scored 0.61, in a box
    larger than the face, so it came first). Each input is padded bottom/right (coordinates do not move) to multiples of 32, the
    network's largest stride.
    """

    name = "yunet"

    def __init__(self, model_path: str | os.PathLike | None = None, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, max_side: int = 1280, min_side: int = 96, levels: int = 3,
                 fine_side: int = 2560, fine_max_face: int = 32) -> None:
        path = Path(model_path) if model_path is not None else default_yunet_path()
        check_yunet_weights(path)
        model = np.frombuffer(_static_yunet_bytes(str(path)), np.uint8)
        self.detector = cv2.FaceDetectorYN.create("onnx", model, np.zeros(0, np.uint8), (32, 32),
                                                  score_threshold, nms_threshold, 5000)
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.max_side, self.min_side, self.levels = max_side, min_side, levels
        self.fine_side, self.fine_max_face = fine_side, fine_max_face

    def _detect_at(self, bgr: np.ndarray, scale: float) -> np.ndarray:
        """(N, 15) YuNet rows in photo coordinates for the photo resized by `scale`."""
        if scale != 1.0:
            size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        bgr = cv2.copyMakeBorder(bgr, 0, -bgr.shape[0] % 32, 0, -bgr.shape[1] % 32, cv2.BORDER_CONSTANT)
        self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self.detector.detect(bgr)
        if rows is None:
            return np.zeros((0, 15), np.float32)
        rows = rows.copy()
        rows[:, :14] /= scale
        return rows

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        scale = min(1.0, self.max_side / max(rgb.shape[:2]))
        scales = [scale]
        while len(scales) < self.levels and min(rgb.shape[:2]) * scales[-1] / 2 >= self.min_side:
            scales.append(scales[-1] / 2)
        rows = [self._detect_at(bgr, s) for s in scales]
        fine = min(2.0, self.fine_side / max(rgb.shape[:2]))
        if fine > scale:
            fine_rows = self._detect_at(bgr, fine)
            rows.append(fine_rows[np.maximum(fine_rows[:, 2], fine_rows[:, 3]) < self.fine_max_face])
        rows = np.concatenate(rows)
        keep = cv2.dnn.NMSBoxes(rows[:, :4].tolist(), rows[:, 14].tolist(), self.score_threshold,
                                self.nms_threshold) if len(rows) else []
        faces = []
        for x, y, w, h, *points, score in rows[np.asarray(keep, int).reshape(-1)]:
            # YuNet's landmark order (right eye of the subject first = image left) is the template's.
            kps5 = np.asarray(points, np.float32).reshape(5, 2)
            faces.append(DetectedFace(np.array([x, y, x + w, y + h], np.float32), float(score), kps5))
        return faces


class ScrfdDetector(FaceDetector):
    """insightface SCRFD from a user-supplied ONNX file (e.g. det_10g.onnx of buffalo_l)."""

    name = "scrfd"

    def __init__(self, model_path: str | os.PathLike, score_threshold: float = 0.5,
                 input_size: tuple[int, int] = (640, 640)) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise WeightsError(f"{path}: SCRFD detector model not found")
        from insightface.model_zoo import get_model

        self.model = get_model(str(path), providers=["CPUExecutionProvider"])
        if not hasattr(self.model, "detect"):
            raise WeightsError(f"{path}: not an SCRFD face detector model")
        self.model.prepare(ctx_id=-1, input_size=input_size, det_thresh=score_threshold)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        dets, kpss = self.model.detect(np.ascontiguousarray(rgb[..., ::-1]))  # insightface works in BGR
        return [DetectedFace(det[:4].astype(np.float32), float(det[4]),
                             None if kpss is None else kpss[i].astype(np.float32))
                for i, det in enumerate(dets)]


def build_detector(name: str = "default", model_path: str | os.PathLike | None = None) -> FaceDetector:
    """`default` = YuNet (measured better, see the module docstring), from the packaged weights.

    `name` may also be the path of an ONNX file: YuNet if it is the file YuNet's checksum names, else SCRFD
    (insightface's `det_*.onnx`), so a command line needs one flag for either.
    """
    if name.endswith(".onnx"):
        path = Path(name)
        if not path.is_file():
            raise WeightsError(f"{path}: no such face detector model")
        if hashlib.sha256(path.read_bytes()).hexdigest() == YUNET_SHA256:
            return YuNetDetector(path)
        return ScrfdDetector(path)
    if name in ("default", "yunet"):
        return YuNetDetector(model_path)
    if name == "dlib":
        return DlibHogDetector()
    if name == "scrfd":
        if model_path is None:
            raise WeightsError("the scrfd detector needs a model file: pass its path (e.g. det_10g.onnx)")
        return ScrfdDetector(model_path)
    raise ConfigError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTOR_NAMES)}, or an .onnx path")
