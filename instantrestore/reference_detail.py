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

The stage is split for training: `prepare` (numpy and OpenCV: warps, confidences) and `fuse` (torch,
differentiable), where an optional learned net (models/detail_fusion.py) adjusts the confidences and the bands'
gains; trained ones measured no better than these rules, so none ships (docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from instantrestore.faces.identity import ALIGNED_FACE_BOX
from instantrestore.faces.landmarks import LandmarkPredictor
from instantrestore.faces.warp import PiecewiseAffineWarp, sample
from instantrestore.models.detail_fusion import DetailFusionNet

DETAIL_SIZE = 512  # FFHQ's crop size: references are cut at it (faces/align.py ALIGN_SIZE)
FEATURE_STRIDE = 4  # the fusion net's features and weights are at DETAIL_SIZE / 4
# the fusion net's inputs, per reference: colour-matched low frequencies (3), their difference to the face's
# (3), rule-based confidence, valid pixels, warp bend, detail amplitude; per face: low frequencies (3), the
# input (3), landmark hull, detail amplitude
REFERENCE_FEATURES = 10
FACE_FEATURES = 8


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
    band_sigmas: tuple[float, ...] = (1.0, 2.0)  # the fused detail's bands, each with its learned gain
    shape_sigma: float = 16.0       # the references' shapes: their low frequencies (agreement_sigma) less this blur


@dataclass
class DetailInputs:
    """What the fusion reads, batched (B faces, K references, S = DETAIL_SIZE, s = S / FEATURE_STRIDE)."""

    detail: torch.Tensor              # (B, K, S, S) each warped reference's luminance high-pass, of 1
    confidence: torch.Tensor          # (B, K, S, S) rule-based: valid pixels x gates x identity trust
    hull: torch.Tensor                # (B, S, S) the face's feathered landmark hull
    reference_features: torch.Tensor | None = None  # (B, K, REFERENCE_FEATURES, s, s), for a fusion net
    face_features: torch.Tensor | None = None       # (B, FACE_FEATURES, s, s)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _channel_mean(image: np.ndarray) -> np.ndarray:
    """(S, S) mean of an (S, S, 3) image's channels (numpy's mean over the last axis is several times slower)."""
    return (image[..., 0] + image[..., 1] + image[..., 2]) / 3


def _features(maps: list[np.ndarray]) -> np.ndarray:
    """(C, s, s) float32: (S, S) and (S, S, c) maps stacked and area-averaged to the fusion net's size."""
    stacked = np.concatenate([m[..., None] if m.ndim == 2 else m for m in maps], axis=2).astype(np.float32)
    size = stacked.shape[0] // FEATURE_STRIDE
    return cv2.resize(stacked, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)


def _upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W) images blurred by a separable Gaussian, edges reflected (as `_blur`'s OpenCV does)."""
    radius = int(np.ceil(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=images.dtype) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    out = F.pad(images[:, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, taps.view(1, 1, 1, -1))
    return F.conv2d(out, taps.view(1, 1, -1, 1))[:, 0]


def detail_bands(detail: torch.Tensor, sigmas: tuple[float, ...]) -> list[torch.Tensor]:
    """(B, S, S) detail split into bands, finest first, that sum back to it: detail - G(s1), G(s1) - G(s2), ..."""
    bands, rest = [], detail
    for sigma in sigmas:
        smoother = gaussian_blur(detail, sigma)
        bands.append(rest - smoother)
        rest = smoother
    return bands + [rest]


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

    def __init__(self, settings: DetailSettings | None = None, predictor: LandmarkPredictor | None = None,
                 fusion: DetailFusionNet | None = None) -> None:
        """`fusion`: the learned weights and band gains (None: the rule-based confidences and the plain band)."""
        self.settings = settings or DetailSettings()
        self.predictor = predictor or LandmarkPredictor()
        self.fusion = fusion

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
        return np.sqrt(_blur(_channel_mean(band ** 2), self.settings.own_window))

    def less_noise(self, band: np.ndarray, image: np.ndarray) -> np.ndarray:
        """A fine band of the uint8 `image`, its local amplitude shrunk by `own_noise_factor` deviations of the
        image's noise (wavelet soft-thresholding): noise and the faint ripples of compression drop out, edges and
        texture above them stay."""
        settings = self.settings
        threshold = settings.own_noise_factor * max(noise_sigma(image) - settings.own_noise_floor, 0.0)
        return band * np.clip(1 - threshold / np.maximum(self._amplitude(band), 1e-6), 0, 1)[..., None]

    def reference_planes(self, references: np.ndarray) -> torch.Tensor:
        """(K, 5, S, S) what the stage samples from each (K, S, S, 3) uint8 reference, the same for every face it
        serves (the pipeline keeps it with the reference cache): the luminance high-pass, the low frequencies
        (3) and a plane of ones that, warped, marks where the reference has pixels. Luminance detail only: the
        detail of a differently lit or white-balanced photo keeps the face's colour."""
        settings = self.settings
        references = references.astype(np.float32) / 255
        grey = [_channel_mean(reference) for reference in references]
        high_pass = np.stack([(image - _blur(image, settings.detail_sigma))[..., None] for image in grey])
        low = np.stack([_blur(reference, settings.agreement_sigma) for reference in references])
        ones = np.ones(references.shape[:3] + (1,), np.float32)
        return torch.from_numpy(np.concatenate([high_pass, low, ones], axis=3)).permute(0, 3, 1, 2).contiguous()

    def prepare(self, base: np.ndarray, degraded: np.ndarray, reference_planes: torch.Tensor,
                reference_landmarks: np.ndarray, trust: np.ndarray | None = None,
                with_features: bool | None = None) -> DetailInputs:
        """What the fusion reads for one face (a batch of 1): the references (`reference_planes`) warped onto the
        base restoration, their detail and rule-based confidence, and the fusion net's features
        (`with_features`, by default when the stage has a net). `trust`: (K,) weights from identity that scale
        each reference's confidence (None: all 1)."""
        settings, size = self.settings, base.shape[0]
        with_features = self.fusion is not None if with_features is None else with_features
        target_landmarks = landmarks_of_aligned(self.predictor, base)
        warps = [PiecewiseAffineWarp(target_landmarks, landmarks, size) for landmarks in reference_landmarks]
        grids = torch.from_numpy(np.stack([warp.grid for warp in warps]))
        warped = sample(reference_planes, grids).permute(0, 2, 3, 1).numpy()
        luminance, warped_low, valid = warped[..., 0], warped[..., 1:4], warped[..., 4]

        hull = landmark_hull(target_landmarks, size, settings.hull_feather)
        base_low = _blur(base.astype(np.float32) / 255, settings.agreement_sigma)
        # colour statistics inside the hull, from every 4th pixel: the low frequencies vary slowly
        inside = (hull > 0.5)[::4, ::4]
        face_stats = lambda low_image: (low_image[::4, ::4][inside].mean(0), low_image[::4, ::4][inside].std(0) + 1e-3)
        mean_base, std_base = face_stats(base_low)
        confidences, reference_features = [], []
        for k, warp in enumerate(warps):
            # colour-match the reference's low frequencies to the face's inside the hull: light and white balance
            # differ between photos, so a global colour difference is not a disagreement
            mean_ref, std_ref = face_stats(warped_low[k])
            matched = (warped_low[k] - mean_ref) / std_ref * std_base + mean_base
            difference = _channel_mean(np.abs(matched - base_low))
            agreement = np.exp(-(difference / settings.agreement_scale) ** 2)
            bend = np.exp(-(warp.distortion / settings.bend_scale) ** 2)
            gate = agreement * bend if settings.gates else 1.0
            confidence = valid[k] * gate * (1.0 if trust is None else float(trust[k]))
            confidences.append(confidence)
            if not with_features:
                continue
            amplitude = np.sqrt(_blur(luminance[k] ** 2, FEATURE_STRIDE))
            reference_features.append(_features([matched, matched - base_low, confidence, valid[k], bend,
                                                 10 * amplitude]))
        as_batch = lambda array: torch.from_numpy(np.ascontiguousarray(array, np.float32))[None]
        inputs = DetailInputs(detail=as_batch(luminance), confidence=as_batch(np.stack(confidences)),
                              hull=as_batch(hull))
        if with_features:
            base_grey = _channel_mean(base.astype(np.float32) / 255)
            base_band = base_grey - _blur(base_grey, settings.detail_sigma)
            face_features = _features([base_low, degraded.astype(np.float32) / 255, hull,
                                       10 * np.sqrt(_blur(base_band ** 2, FEATURE_STRIDE))])
            inputs.reference_features = as_batch(np.stack(reference_features))
            inputs.face_features = as_batch(face_features)
        return inputs

    def fuse(self, inputs: DetailInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, S, S) fused luminance detail of the references, of 1, weighted for where it goes; (B, K) mean
        confidence of each reference inside the face). Differentiable in the fusion net's weights."""
        settings, size = self.settings, inputs.detail.shape[-1]
        confidence = inputs.confidence
        log_gains = shape_change = None
        if self.fusion is not None:
            logits, log_gains, shape_weight = self.fusion(inputs.reference_features, inputs.face_features)
            confidence = confidence * torch.exp(_upsample(logits, size))
            feature_size = inputs.reference_features.shape[-1]
            shape_change = _upsample(shape_weight[:, None], feature_size)[:, 0] * self._shape_change(inputs, logits)
        total = confidence.sum(dim=1)
        emphasis = confidence ** settings.fusion_power
        fused = (emphasis * inputs.detail).sum(dim=1) / emphasis.sum(dim=1).clamp_min(1e-6)
        if log_gains is not None:
            gains = torch.exp(_upsample(log_gains, size)).unbind(dim=1)
            fused = sum(gain * band for gain, band in zip(gains, detail_bands(fused, settings.band_sigmas)))
        hull = inputs.hull
        region = hull + settings.outside_weight * (1 - hull)
        used = (confidence * hull[:, None]).sum(dim=(2, 3)) / hull.sum(dim=(1, 2))[:, None].clamp_min(1e-6)
        detail = fused * region * total.clamp(max=1.0)
        if shape_change is not None:  # weighed by the net alone: it replaces the face's shapes, it adds no detail
            detail = detail + hull * _upsample(shape_change[:, None], size)[:, 0]
        return detail, used

    def _shape_change(self, inputs: DetailInputs, logits: torch.Tensor) -> torch.Tensor:
        """(B, s, s) the references' fused shape band minus the face's, in luminance at the features' size: the
        colour-matched low frequencies (features 0-2) less their blur of `shape_sigma`, weighed per reference by
        its confidence (feature 6) and the net's logits."""
        sigma = self.settings.shape_sigma / FEATURE_STRIDE
        band = lambda low: low - gaussian_blur(low, sigma)
        references = inputs.reference_features
        shapes = band(references[:, :, 0:3].mean(dim=2).flatten(0, 1)).unflatten(0, references.shape[:2])
        weights = references[:, :, 6] * torch.exp(_upsample(logits, references.shape[-1]))
        fused = (weights * shapes).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-6)
        return fused - band(inputs.face_features[:, 0:3].mean(dim=1))

    def __call__(self, base: np.ndarray, degraded: np.ndarray, input_size: int, restorer_size: int,
                 reference_planes: torch.Tensor | None = None, reference_landmarks: np.ndarray | None = None,
                 trust: np.ndarray | None = None, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
        """(detailed uint8 face, each reference's mean confidence inside the face or None without references).

        `base` and `degraded` are (S, S, 3) uint8 crops at one size (the restorer's output brought to it, and
        the input, which was cut from `input_size` photo pixels); `reference_planes` of references at that size
        (`reference_planes`) with their (K, 68, 2) landmarks and (K,) identity trust."""
        if strength <= 0:
            return base, None
        out = base.astype(np.float32)
        own_weight = 0.0
        if input_size > restorer_size:
            change, own_weight = self.own_detail(degraded, base)
            out += strength * change
            own_weight = own_weight[..., None]
        used = None
        if reference_planes is not None and len(reference_planes):
            inputs = self.prepare(base, degraded, reference_planes, reference_landmarks, trust)
            with torch.no_grad():
                detail, used = self.fuse(inputs)
            detail, used = detail[0].numpy()[..., None] * 255, used[0].numpy()
            out += strength * (1 - own_weight) * detail  # the face's own detail, where it has some, comes first
        return np.clip(out.round(), 0, 255).astype(np.uint8), used
