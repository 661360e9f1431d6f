"""The reference-detail stage: full-resolution detail for a face restored at a restorer's own size.

A restorer works at its face size (128 px for the compact models), so its output, brought to the 512-px crop,
holds no detail finer than that size can draw. This stage adds it back from two sources, after any restorer:

    input's own detail     the input crop's fine band, less its noise, where it is stronger than the restored
                           face's (a large sharp face keeps its detail; a blurred or small one changes nothing);
    the references' detail each reference warped onto the restored face (faces/warp.py), its high-pass band
                           (image minus its Gaussian blur) fused by per-pixel confidence, inside the face.

A reference's confidence at a pixel is the product of: the warp has pixels there; its triangle is not bent far
from the face's overall similarity (a folded or stretched triangle is a pose or an expression the target does
not share); its low frequencies, colour-matched, agree with the restored face's (glasses on one and not the
other, an open mouth on a closed one, a hand, another hairstyle disagree there). With every confidence at 1 it
is the plain mean of the warped references' high-pass inside the landmark hull: the untrained transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from instantrestore.faces.identity import ALIGNED_FACE_BOX
from instantrestore.faces.landmarks import LandmarkPredictor
from instantrestore.faces.warp import PiecewiseAffineWarp, sample

DETAIL_SIZE = 512  # FFHQ's crop size: references are cut at it (faces/align.py ALIGN_SIZE)


@dataclass(frozen=True)
class DetailSettings:
    """The stage's constants, in pixels at `DETAIL_SIZE`."""

    gates: bool = True              # False: every confidence 1, the plain untrained transfer
    detail_sigma: float = 4.0       # the references' band: image minus its Gaussian blur of this sigma
    agreement_sigma: float = 6.0    # low frequencies compared between a warped reference and the restored face
    agreement_scale: float = 0.12   # colour-matched low-frequency difference (of 1) at which confidence is 1/e
    bend_scale: float = 0.5         # log stretch of a warp triangle at which its confidence is 1/e
    hull_feather: float = 8.0       # Gaussian feather of the landmark hull
    outside_weight: float = 0.0     # weight of reference detail outside the hull (hair, neck), still gated
    fusion_power: float = 1.0       # per pixel, references weigh confidence ** this: above 1 the best one leads
    own_sigma: float = 3.0          # the input's own fine band: image minus its Gaussian blur of this sigma
    own_window: float = 2.0         # window of the band's local amplitude
    own_full_ratio: float = 1.1     # the input's band replaces the restoration's fully from this amplitude ratio on
    own_noise_factor: float = 2.0   # noise deviations shrunk off that amplitude...
    own_noise_floor: float = 1.0    # ...above this estimate (grey levels): below it the estimate is fine texture


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def landmarks_of_aligned(predictor: LandmarkPredictor, crop: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks of an aligned crop: dlib's predictor in the fixed box where aligned faces sit."""
    return predictor(np.ascontiguousarray(crop), ALIGNED_FACE_BOX * crop.shape[0])


def landmark_hull(landmarks: np.ndarray, size: int, feather: float) -> np.ndarray:
    """(S, S) float32 mask of the 68 landmarks' convex hull, brows raised to the forehead, feathered."""
    points = np.asarray(landmarks, np.float32).copy()
    brows = points[17:27]
    eye_line = points[36:48, 1].mean()
    forehead = brows.copy()
    forehead[:, 1] -= 0.6 * (eye_line - brows[:, 1].mean())  # the forehead's skin above the brows
    hull = cv2.convexHull(np.concatenate([points, forehead]).round().astype(np.int32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0)
    mask = cv2.erode(mask, np.ones((int(feather), int(feather)), np.uint8))
    return _blur(mask, feather)


def noise_sigma(image: np.ndarray) -> float:
    """The noise's standard deviation in a uint8 image, from the median of its finest diagonal wavelet band
    (Donoho's estimator: natural detail is sparse there, noise is everywhere)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    height, width = (grey.shape[0] // 2) * 2, (grey.shape[1] // 2) * 2
    grey = grey[:height, :width]
    diagonal = (grey[0::2, 0::2] - grey[1::2, 0::2] - grey[0::2, 1::2] + grey[1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / 0.6745)


class ReferenceDetailStage:
    """Base restoration at 512 (+ the input crop, + aligned references with landmarks) -> detailed face."""

    def __init__(self, settings: DetailSettings | None = None, predictor: LandmarkPredictor | None = None) -> None:
        self.settings = settings or DetailSettings()
        self.predictor = predictor or LandmarkPredictor()

    def own_detail(self, degraded: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((S, S, 3) float32 change to the base, (S, S) weight): where the input's fine band (above a Gaussian
        blur of `own_sigma`), less its noise (`less_noise`), is stronger than the restoration's, it replaces it; a
        blurred input's band is weaker than the restoration's and changes nothing."""
        settings = self.settings
        band = lambda image: image - _blur(image, settings.own_sigma)
        input_band, base_band = self.less_noise(band(degraded.astype(np.float32)), degraded), band(base.astype(np.float32))
        ratio = self._amplitude(input_band) / np.maximum(self._amplitude(base_band), 1e-6)
        weight = np.clip((ratio - 1) / (settings.own_full_ratio - 1), 0, 1)
        return weight[..., None] * (input_band - base_band), weight

    def _amplitude(self, band: np.ndarray) -> np.ndarray:
        return np.sqrt(_blur((band ** 2).mean(axis=2), self.settings.own_window))

    def less_noise(self, band: np.ndarray, image: np.ndarray) -> np.ndarray:
        """A fine band of the uint8 `image`, its local amplitude shrunk by `own_noise_factor` deviations of the
        image's noise (wavelet soft-thresholding): noise and the faint ripples of compression drop out, edges and
        texture above them stay."""
        settings = self.settings
        threshold = settings.own_noise_factor * max(noise_sigma(image) - settings.own_noise_floor, 0.0)
        return band * np.clip(1 - threshold / np.maximum(self._amplitude(band), 1e-6), 0, 1)[..., None]

    def reference_detail(self, base: np.ndarray, references: np.ndarray, reference_landmarks: np.ndarray,
                         trust: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((S, S, 3) float32 fused high-pass of the warped references, (K,) mean confidence of each in the face).
        `trust`: (K,) weights from identity that scale each reference's confidence (None: all 1)."""
        settings, size = self.settings, base.shape[0]
        target_landmarks = landmarks_of_aligned(self.predictor, base)
        warps = [PiecewiseAffineWarp(target_landmarks, landmarks, size) for landmarks in reference_landmarks]
        grids = torch.from_numpy(np.stack([warp.grid for warp in warps]))

        references = references.astype(np.float32) / 255
        # luminance detail only: the detail of a differently lit or white-balanced photo keeps the face's colour
        # (taken before the warp, which is linear: one channel to sample instead of three)
        high_pass = np.stack([(reference - _blur(reference, settings.detail_sigma)).mean(axis=2, keepdims=True)
                              for reference in references])
        low = np.stack([_blur(reference, settings.agreement_sigma) for reference in references])
        ones = np.ones(references.shape[:3] + (1,), np.float32)
        stacked = torch.from_numpy(np.concatenate([high_pass, low, ones], axis=3)).permute(0, 3, 1, 2)
        warped = sample(stacked, grids).permute(0, 2, 3, 1).numpy()
        luminance, warped_low, valid = warped[..., 0], warped[..., 1:4], warped[..., 4]

        hull = landmark_hull(target_landmarks, size, settings.hull_feather)
        base_low = _blur(base.astype(np.float32) / 255, settings.agreement_sigma)
        # colour statistics inside the hull, from every 4th pixel: the low frequencies vary slowly
        inside = (hull > 0.5)[::4, ::4]
        face_stats = lambda low_image: (low_image[::4, ::4][inside].mean(0), low_image[::4, ::4][inside].std(0) + 1e-3)
        mean_base, std_base = face_stats(base_low)
        confidences = []
        for k, warp in enumerate(warps):
            # colour-match the reference's low frequencies to the face's inside the hull: light and white balance
            # differ between photos, so a global colour difference is not a disagreement
            mean_ref, std_ref = face_stats(warped_low[k])
            matched = (warped_low[k] - mean_ref) / std_ref * std_base + mean_base
            difference = np.abs(matched - base_low).mean(axis=2)
            agreement = np.exp(-(difference / settings.agreement_scale) ** 2)
            bend = np.exp(-(warp.distortion / settings.bend_scale) ** 2)
            gate = agreement * bend if settings.gates else 1.0
            confidences.append(valid[k] * gate * (1.0 if trust is None else float(trust[k])))
        confidence = np.stack(confidences)
        total = confidence.sum(0)
        emphasis = confidence ** settings.fusion_power
        fused = (emphasis * luminance).sum(0) / np.maximum(emphasis.sum(0), 1e-6)
        region = hull + settings.outside_weight * (1 - hull)
        weight = region * np.minimum(total, 1.0)
        detail = (fused * weight)[..., None].repeat(3, axis=2) * 255
        used = (confidence * hull).sum(axis=(1, 2)) / max(float(hull.sum()), 1e-6)
        return detail, used

    def __call__(self, base: np.ndarray, degraded: np.ndarray, input_size: int, restorer_size: int,
                 references: np.ndarray | None = None, reference_landmarks: np.ndarray | None = None,
                 trust: np.ndarray | None = None, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
        """(detailed uint8 face, each reference's mean confidence inside the face or None without references).

        `base` and `degraded` are (S, S, 3) uint8 crops at one size (the restorer's output brought to it, and
        the input, which was cut from `input_size` photo pixels); `references` (K, S, S, 3) uint8 at that size
        with their (K, 68, 2) landmarks and (K,) identity trust."""
        if strength <= 0:
            return base, None
        out = base.astype(np.float32)
        own_weight = 0.0
        if input_size > restorer_size:
            change, own_weight = self.own_detail(degraded, base)
            out += strength * change
            own_weight = own_weight[..., None]
        used = None
        if references is not None and len(references):
            detail, used = self.reference_detail(base, references, reference_landmarks, trust)
            out += strength * (1 - own_weight) * detail  # the face's own detail, where it has some, comes first
        return np.clip(out.round(), 0, 255).astype(np.uint8), used
