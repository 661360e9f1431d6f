"""Restoration metrics, one function per number in the benchmark table, plus the statistics around them.

Conventions: images are HxWx3 uint8 RGB aligned face crops of the same size; a restored face is always
compared with its own ground truth. Fidelity (PSNR, SSIM, MS-SSIM) is computed on RGB at data range 255,
identity on descriptors of the default identity model, LMD on 68 landmarks at 512x512, sharpness on
the grey image. NIQE (no reference) is computed on one image alone.
"""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import pytorch_msssim
import torch
from PIL import Image
from scipy import ndimage, special, stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# Landmark distances are reported in pixels of a 512x512 crop, whatever the restorer's face size.
LMD_SIZE = 512
# Four 2x downsamplings must leave room for the 11-px window: (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 160
# NIQE reads 96-px blocks, so a 128-px face would give one block: faces are scored at 512 px (25 blocks).
NIQE_SIZE = 512
NIQE_BLOCK = 96
NIQE_PARAMS = Path(__file__).resolve().parents[1] / "weights" / "niqe" / "niqe_pris_params.npz"


def _check_pair(restored: np.ndarray, target: np.ndarray) -> None:
    if restored.shape != target.shape:
        raise ValueError(f"restored {restored.shape} and ground truth {target.shape} differ in shape")


def psnr(restored: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all RGB pixels (inf for identical images)."""
    _check_pair(restored, target)
    if np.array_equal(restored, target):
        return float("inf")
    return float(peak_signal_noise_ratio(target, restored, data_range=255))


def ssim(restored: np.ndarray, target: np.ndarray) -> float:
    """SSIM of Wang et al. 2004 via scikit-image: 11x11 Gaussian window (sigma 1.5), population
    covariances, averaged over the RGB channels -- the settings of the paper and of BasicSR's metric."""
    _check_pair(restored, target)
    return float(structural_similarity(target, restored, data_range=255, channel_axis=2,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def ms_ssim(restored: np.ndarray, target: np.ndarray) -> float:
    """Multi-scale SSIM (Wang et al. 2003): pytorch_msssim, as the training loss uses, with the standard
    five scale weights and 11x11 Gaussian window (sigma 1.5); needs sides above 160 px."""
    _check_pair(restored, target)
    if min(target.shape[:2]) <= MS_SSIM_MIN_SIDE:
        raise ValueError(f"MS-SSIM needs images larger than {MS_SSIM_MIN_SIDE} px on each side, got {target.shape[:2]}")
    as_batch = lambda image: torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    return float(pytorch_msssim.ms_ssim(as_batch(restored), as_batch(target), data_range=255, win_size=11))


def sharpness(restored: np.ndarray, target: np.ndarray) -> float:
    """Fine detail relative to the ground truth: mean absolute Laplacian of the grey restored face over the
    ground truth's. 1 is as much detail as the ground truth; an L1-trained restorer stays below 1. Noise
    counts as detail too, so a noisy input can score above 1: read it beside PSNR, not alone."""
    _check_pair(restored, target)
    detail = lambda image: np.abs(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)).mean()
    return float(detail(restored) / max(detail(target), 1e-6))


def identity_similarity(restored: Sequence[np.ndarray], targets: Sequence[np.ndarray], identity_model) -> list[float]:
    """Cosine similarity of each restored face to its ground truth under `identity_model` (unit descriptors)."""
    if len(restored) != len(targets):
        raise ValueError(f"{len(restored)} restored faces but {len(targets)} ground truths")
    if not restored:
        return []
    a = np.asarray(identity_model.embed(list(restored)), dtype=np.float64)
    b = np.asarray(identity_model.embed(list(targets)), dtype=np.float64)
    return [float(v) for v in np.sum(a * b, axis=1)]


def identity_column(identity_model) -> str:
    """Column name of an identity score: `identity` for the offline default (dlib), `identity_<name>` otherwise,
    so scores of different identity models never share a column."""
    return "identity" if identity_model.name == "dlib" else f"identity_{identity_model.name}"


def _at_lmd_size(image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == (LMD_SIZE, LMD_SIZE):
        return image
    return np.asarray(Image.fromarray(image).resize((LMD_SIZE, LMD_SIZE), Image.BICUBIC))


def landmark_distance(restored: np.ndarray, target: np.ndarray,
                      landmarks_68: Callable[[np.ndarray], np.ndarray]) -> float:
    """LMD: mean Euclidean distance in pixels between the 68 landmarks found on the restored and on the
    ground-truth aligned crop, both resized to 512x512. `landmarks_68(crop) -> (68, 2)` (x, y)."""
    _check_pair(restored, target)
    a = np.asarray(landmarks_68(_at_lmd_size(restored)), dtype=np.float64)
    b = np.asarray(landmarks_68(_at_lmd_size(target)), dtype=np.float64)
    return float(np.linalg.norm(a - b, axis=1).mean())


def lpips_metric(device: str | torch.device = "cpu") -> Callable[[np.ndarray, np.ndarray], float] | None:
    """LPIPS (AlexNet) when the `lpips` package and its backbone weights are on disk, else None.

    Never falls back to random or downloaded weights: an LPIPS of an untrained network is meaningless,
    and the toolkit runs offline.
    """
    try:
        import lpips  # optional: not a dependency of the toolkit
    except ImportError:
        return None
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not backbone.is_file():
        return None
    model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    def score(restored: np.ndarray, target: np.ndarray) -> float:
        _check_pair(restored, target)
        to_tensor = lambda image: (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1).to(device)
        with torch.no_grad():
            return float(model(to_tensor(restored), to_tensor(target)).item())

    return score


# ------------------------------------------------------------------------------------------------- NIQE
# A port of basicsr 1.4.2's metrics/niqe.py (Apache-2.0; itself a port of Mittal et al.'s MATLAB release),
# with basicsr's pristine-image model (weights/niqe/, its licence beside it). tests/test_evaluation.py holds it
# to values written by basicsr's own code.
@lru_cache(maxsize=1)
def _niqe_pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    params = np.load(NIQE_PARAMS)
    return params["mu_pris_param"].ravel(), params["cov_pris_param"], params["gaussian_window"]


@lru_cache(maxsize=1)
def _aggd_shape_table() -> tuple[np.ndarray, np.ndarray]:
    """The shape parameters AGGD fits search over, and the moment ratio each one gives."""
    shape = np.arange(0.2, 10.001, 0.001)
    ratio = special.gamma(2 / shape) ** 2 / (special.gamma(1 / shape) * special.gamma(3 / shape))
    return shape, ratio


def _aggd_fit(values: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching: (shape, left scale, right scale)."""
    values = values.ravel()
    left_std = np.sqrt(np.mean(values[values < 0] ** 2))
    right_std = np.sqrt(np.mean(values[values > 0] ** 2))
    gamma_hat = left_std / right_std
    r_hat = np.mean(np.abs(values)) ** 2 / np.mean(values ** 2)
    r_hat_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    shapes, ratios = _aggd_shape_table()
    alpha = shapes[np.argmin((ratios - r_hat_norm) ** 2)]
    spread = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    return alpha, left_std * spread, right_std * spread


def _niqe_block_features(block: np.ndarray) -> list[float]:
    """18 features: the AGGD fit of the normalised luminance and of its products with 4 neighbours."""
    alpha, beta_left, beta_right = _aggd_fit(block)
    features = [alpha, (beta_left + beta_right) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, beta_left, beta_right = _aggd_fit(block * np.roll(block, shift, axis=(0, 1)))
        mean = (beta_right - beta_left) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
        features.extend([alpha, mean, beta_left, beta_right])
    return features


def _matlab_half_size_matrix(length: int) -> np.ndarray:
    """(ceil(length / 2), length) matrix of MATLAB's `imresize(x, 0.5)` (antialiased bicubic, symmetric edges)."""
    scale, kernel_width = 0.5, 4 / 0.5
    out_length = -(-length // 2)
    centre = np.arange(1, out_length + 1) / scale + 0.5 * (1 - 1 / scale)
    taps = np.floor(centre - kernel_width / 2)[:, None] + np.arange(int(np.ceil(kernel_width)) + 2)
    distance = np.abs(centre[:, None] - taps) * scale
    cubic = np.where(distance <= 1, 1.5 * distance ** 3 - 2.5 * distance ** 2 + 1,
                     np.where(distance <= 2, -0.5 * distance ** 3 + 2.5 * distance ** 2 - 4 * distance + 2, 0))
    weights = cubic / cubic.sum(axis=1, keepdims=True)
    index = taps.astype(int) - 1  # MATLAB counts from 1
    index = np.where(index < 0, -index - 1, np.where(index >= length, 2 * length - 1 - index, index))
    matrix = np.zeros((out_length, length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), index.shape[1]), index.ravel()), weights.ravel())
    return matrix


def niqe(image: np.ndarray) -> float:
    """NIQE (Mittal et al. 2013, "Making a completely blind image quality analyzer") of an HxWx3 uint8 RGB
    image, lower is better: the distance of its local statistics from a model of pristine photos.

    As basicsr and the MATLAB release compute it: on the BT.601 luma rounded to integers, in 96-px blocks
    without overlap (the image is cut to whole blocks), at two scales. Needs at least 2x2 blocks (192 px);
    face crops are scored at `NIQE_SIZE`.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"NIQE takes an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    blocks_y, blocks_x = image.shape[0] // NIQE_BLOCK, image.shape[1] // NIQE_BLOCK
    if blocks_y < 2 or blocks_x < 2:
        raise ValueError(f"NIQE needs at least {2 * NIQE_BLOCK} px on each side, got {image.shape[:2]}")
    mu_pristine, cov_pristine, window = _niqe_pristine_model()
    # float32 as in basicsr: the AGGD fit picks a shape from a table, so the precision moves the score
    luma = (image.astype(np.float32) / 255 @ np.array([65.481, 128.553, 24.966]) + 16) / 255
    luma = luma.astype(np.float32) * 255
    luma = luma.round()[:blocks_y * NIQE_BLOCK, :blocks_x * NIQE_BLOCK]
    features = []
    for scale in (1, 2):
        mu = ndimage.convolve(luma, window, mode="nearest")
        sigma = np.sqrt(np.abs(ndimage.convolve(np.square(luma), window, mode="nearest") - np.square(mu)))
        normalised = (luma - mu) / (sigma + 1)
        side = NIQE_BLOCK // scale
        features.append(np.array([_niqe_block_features(normalised[y * side:(y + 1) * side, x * side:(x + 1) * side])
                                  for x in range(blocks_x) for y in range(blocks_y)]))
        if scale == 1:
            luma = (_matlab_half_size_matrix(luma.shape[0]) @ luma @ _matlab_half_size_matrix(luma.shape[1]).T
                    ).astype(np.float32)
    features = np.concatenate(features, axis=1)
    mu_image = np.nanmean(features, axis=0)
    cov_image = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
    difference = mu_pristine - mu_image
    return float(np.sqrt(difference @ np.linalg.pinv((cov_pristine + cov_image) / 2) @ difference))


def niqe_at_face_size(face: np.ndarray) -> float:
    """NIQE of an aligned face crop resized (bicubic) to `NIQE_SIZE`, so every restorer is scored on 25 blocks."""
    if face.shape[:2] != (NIQE_SIZE, NIQE_SIZE):
        face = np.asarray(Image.fromarray(face).resize((NIQE_SIZE, NIQE_SIZE), Image.BICUBIC))
    return niqe(face)


# --------------------------------------------------------------------------------------------- statistics
def bootstrap_ci95(values: Sequence[float], seed: int = 0, resamples: int = 2000) -> float | None:
    """Half-width of the 95% percentile-bootstrap interval of the mean (None with fewer than 2 values)."""
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size < 2 or not np.all(np.isfinite(data)):
        return None
    if np.all(data == data[0]):  # scipy warns on degenerate samples; the interval is a point
        return 0.0
    result = stats.bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=resamples,
                             method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float((high - low) / 2)


@dataclass
class PairedComparison:
    """Per-face differences A - B of one metric over the same faces."""

    mean_diff: float
    ci95: float | None      # half-width of the bootstrap 95% interval of the mean difference
    n: int
    a_better: float         # fraction of faces where A is strictly better than B
    higher_is_better: bool

    def as_dict(self) -> dict:
        return {"mean_diff": self.mean_diff, "ci95": self.ci95, "n": self.n, "a_better": self.a_better,
                "higher_is_better": self.higher_is_better}


def paired_difference(a: Sequence[float], b: Sequence[float], higher_is_better: bool = True,
                      seed: int = 0) -> PairedComparison:
    """Compare method A with method B face by face (e.g. with 4 references vs blind): does A help, by how much?"""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same faces: {len(a)} vs {len(b)} values")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        raise ValueError("paired comparison of empty samples")
    diffs = np.array([x - y for x, y in pairs], dtype=np.float64)
    better = diffs > 0 if higher_is_better else diffs < 0
    return PairedComparison(mean_diff=float(diffs.mean()), ci95=bootstrap_ci95(diffs, seed=seed), n=len(diffs),
                            a_better=float(better.mean()), higher_is_better=higher_is_better)


# --------------------------------------------------------------------------------------------- resources
def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


def _reset_peak_rss() -> bool:
    """Linux lets a process reset its own high-water mark (clear_refs 5), so each method gets its own peak."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass
class ResourceMeter:
    """Wall-clock seconds of the timed sections and the peak resident memory while measuring."""

    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        _reset_peak_rss()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.peak_rss_mb = max(self.peak_rss_mb, _peak_rss_bytes() / 2**20)
