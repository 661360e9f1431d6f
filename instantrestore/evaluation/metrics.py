"""Restoration metrics, one function per number in the benchmark table, plus the statistics around them.

Conventions: images are HxWx3 uint8 RGB aligned face crops of the same size; a restored face is always
compared with its own ground truth. Fidelity (PSNR, SSIM, MS-SSIM) is computed on RGB at data range 255,
identity on descriptors of the default identity model, LMD on 68 landmarks at 512x512, sharpness on
the grey image.
"""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import pytorch_msssim
import torch
from PIL import Image
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# Landmark distances are reported in pixels of a 512x512 crop, whatever the restorer's face size.
LMD_SIZE = 512
# Four 2x downsamplings must leave room for the 11-px window: (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 160


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
