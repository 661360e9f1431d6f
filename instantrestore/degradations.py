"""Synthetic degradations for blind face restoration, reproducible from a seed.

The blind presets follow GFP-GAN's `FFHQDegradationDataset` (Wang et al. 2021):

    blur (41-px Gaussian kernel, isotropic or rotated anisotropic)
    -> downsample by a random factor (bilinear)
    -> Gaussian noise
    -> JPEG (cv2.imencode)
    -> resize back to the input size (bilinear)
    -> optional colour shift / grayscale

The super-resolution presets (`sr4`, `sr8`, `sr16`, `sr32`) are the fixed, noise-free degradation of
super-resolution benchmarks: bicubic down by the factor, bicubic back up to the input size (`sr32` leaves
a 512-px face 16 px wide, the size of faces in group photos).

Written by hand with cv2/numpy because `basicsr` (where GFP-GAN takes these functions from) does not
install against current torchvision. All randomness goes through one `numpy.random.Generator`, and
`sample_parameters` draws every random choice up front, so the parameters of a degradation can be
logged and replayed with `apply_degradation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from instantrestore.errors import ConfigError

RangeF = tuple[float, float]


@dataclass(frozen=True)
class DegradationPreset:
    """One degradation recipe; ranges are (low, high), sampled uniformly.

    blur_sigma:         Gaussian kernel sigma in pixels, or None for no blur.
    anisotropic_prob:   probability that the kernel is anisotropic (two sigmas, rotated); else isotropic.
    kernel_size:        side of the blur kernel in pixels (odd).
    downscale:          downsampling factor range (values below 1 upsample, as in GFP-GAN).
    noise_sigma:        Gaussian noise sigma on the 0-255 scale, or None.
    jpeg_quality:       JPEG quality range (integers), or None for no compression.
    color_jitter_prob:  probability of adding one random offset per RGB channel ...
    color_jitter_shift: ... drawn from [-shift, shift] on the 0-255 scale.
    grayscale_prob:     probability of turning the degraded image gray.
    sr_factor:          if set, the preset is fixed bicubic down/up by this factor and the other
                        fields are unused.
    """

    name: str
    blur_sigma: RangeF | None = None
    anisotropic_prob: float = 0.5
    kernel_size: int = 41
    downscale: RangeF = (1.0, 1.0)
    noise_sigma: RangeF | None = None
    jpeg_quality: tuple[int, int] | None = None
    color_jitter_prob: float = 0.0
    color_jitter_shift: float = 20.0
    grayscale_prob: float = 0.0
    sr_factor: int | None = None


PRESETS: dict[str, DegradationPreset] = {
    preset.name: preset
    for preset in (
        # GFP-GAN options/train_gfpgan_v1.yml (its torch brightness/contrast/hue jitter is not reproduced).
        DegradationPreset("gfpgan", blur_sigma=(0.1, 10.0), anisotropic_prob=0.5, downscale=(0.8, 8.0),
                          noise_sigma=(0.0, 20.0), jpeg_quality=(60, 100),
                          color_jitter_prob=0.3, color_jitter_shift=20.0, grayscale_prob=0.01),
        # CodeFormer's stage-2/3 training degradation: stronger blur and downsampling, harsher JPEG.
        DegradationPreset("codeformer", blur_sigma=(1.0, 15.0), anisotropic_prob=0.5, downscale=(4.0, 30.0),
                          noise_sigma=(0.0, 20.0), jpeg_quality=(30, 80)),
        # InstantRestore (Zhang et al. 2024): anisotropic blur, always-on noise, very low JPEG quality.
        DegradationPreset("instantrestore", blur_sigma=(0.1, 12.0), anisotropic_prob=1.0, downscale=(1.0, 12.0),
                          noise_sigma=(10.0, 20.0), jpeg_quality=(10, 19)),
        DegradationPreset("sr4", sr_factor=4),
        DegradationPreset("sr8", sr_factor=8),
        DegradationPreset("sr16", sr_factor=16),
        DegradationPreset("sr32", sr_factor=32),
    )
}


def get_preset(preset: str | DegradationPreset) -> DegradationPreset:
    """The preset object for a name (or the object itself); unknown names raise ConfigError listing the known ones."""
    if isinstance(preset, DegradationPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"unknown degradation preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


def sample_parameters(preset: str | DegradationPreset, rng: int | np.random.Generator) -> dict[str, Any]:
    """Draw every random choice of one degradation; the result is JSON-serialisable (for logs).

    Keys: preset, sr_factor, blur ({sigma_x, sigma_y, theta} or None), scale, noise_sigma (or None),
    noise_seed, jpeg_quality (or None), color_shift ([r, g, b] on 0-255, or None), grayscale.
    """
    preset = get_preset(preset)
    rng = np.random.default_rng(rng)
    if preset.sr_factor is not None:
        return {"preset": preset.name, "sr_factor": preset.sr_factor}

    blur = None
    if preset.blur_sigma is not None:
        low, high = preset.blur_sigma
        if rng.uniform() < preset.anisotropic_prob:
            blur = {"sigma_x": float(rng.uniform(low, high)), "sigma_y": float(rng.uniform(low, high)),
                    "theta": float(rng.uniform(-math.pi, math.pi))}
        else:
            sigma = float(rng.uniform(low, high))
            blur = {"sigma_x": sigma, "sigma_y": sigma, "theta": 0.0}
    scale = float(rng.uniform(*preset.downscale))
    noise_sigma = float(rng.uniform(*preset.noise_sigma)) if preset.noise_sigma is not None else None
    # The noise field itself is drawn at apply time from this seed, so the parameters stay small.
    noise_seed = int(rng.integers(2**31))
    jpeg_quality = None
    if preset.jpeg_quality is not None:
        jpeg_quality = int(rng.integers(preset.jpeg_quality[0], preset.jpeg_quality[1] + 1))
    color_shift = None
    if rng.uniform() < preset.color_jitter_prob:
        shift = preset.color_jitter_shift
        color_shift = [float(v) for v in rng.uniform(-shift, shift, 3)]
    grayscale = bool(rng.uniform() < preset.grayscale_prob)
    return {"preset": preset.name, "sr_factor": None, "kernel_size": preset.kernel_size, "blur": blur,
            "scale": scale, "noise_sigma": noise_sigma, "noise_seed": noise_seed,
            "jpeg_quality": jpeg_quality, "color_shift": color_shift, "grayscale": grayscale}


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A (size, size) float32 2-D Gaussian with standard deviations sigma_x, sigma_y along axes
    rotated by theta (radians), normalised to sum 1."""
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    inverse = np.linalg.inv(covariance)
    offsets = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(offsets, offsets)
    points = np.stack([xx, yy], axis=-1)
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", points, inverse, points))
    return (kernel / kernel.sum()).astype(np.float32)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a float [0, 1] RGB image through JPEG at `quality`."""
    bgr = cv2.cvtColor(np.clip(image * 255.0, 0, 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def apply_degradation(image: np.ndarray, parameters: dict[str, Any]) -> np.ndarray:
    """Apply parameters from `sample_parameters` to an HxWx3 uint8 RGB image; same size, uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} array of shape {image.shape}")
    height, width = image.shape[:2]

    if parameters["sr_factor"] is not None:
        factor = parameters["sr_factor"]
        small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_CUBIC)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)

    degraded = image.astype(np.float32) / 255.0
    if parameters["blur"] is not None:
        blur = parameters["blur"]
        kernel = gaussian_kernel(parameters["kernel_size"], blur["sigma_x"], blur["sigma_y"], blur["theta"])
        degraded = cv2.filter2D(degraded, -1, kernel)
    scale = parameters["scale"]
    small_size = (max(1, int(width // scale)), max(1, int(height // scale)))
    degraded = cv2.resize(degraded, small_size, interpolation=cv2.INTER_LINEAR)
    if parameters["noise_sigma"] is not None:
        noise = np.random.default_rng(parameters["noise_seed"]).standard_normal(degraded.shape, dtype=np.float32)
        degraded = np.clip(degraded + noise * (parameters["noise_sigma"] / 255.0), 0, 1)
    if parameters["jpeg_quality"] is not None:
        degraded = _jpeg(degraded, parameters["jpeg_quality"])
    degraded = cv2.resize(degraded, (width, height), interpolation=cv2.INTER_LINEAR)
    if parameters["color_shift"] is not None:
        degraded = np.clip(degraded + np.asarray(parameters["color_shift"], np.float32) / 255.0, 0, 1)
    if parameters["grayscale"]:
        degraded = np.repeat(cv2.cvtColor(degraded, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return np.clip(degraded * 255.0, 0, 255).round().astype(np.uint8)


def degrade(image: np.ndarray, preset: str | DegradationPreset, seed: int | np.random.Generator) -> np.ndarray:
    """Degrade an HxWx3 uint8 RGB image with a preset; the same seed gives the same bytes.

    `seed` is an int or a numpy Generator (which is advanced). Returns an HxWx3 uint8 image.
    """
    return apply_degradation(image, sample_parameters(preset, seed))
