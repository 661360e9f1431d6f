import json

import cv2
import numpy as np
import pytest

from instantrestore.degradations import (PRESETS, DegradationPreset, apply_degradation, degrade, gaussian_kernel,
                                         get_preset, sample_parameters)
from instantrestore.errors import ConfigError

RANDOM_PRESETS = [name for name, preset in PRESETS.items() if preset.sr_factor is None]
SR_PRESETS = [name for name, preset in PRESETS.items() if preset.sr_factor is not None]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 96x80 image with edges, texture and colour, so every stage of a degradation changes it."""
    rng = np.random.default_rng(123)
    yy, xx = np.mgrid[0:96, 0:80]
    base = np.stack([xx * 3, yy * 2, (xx + yy) * 1.5], axis=-1)
    base[20:60, 25:55] = (230, 40, 90)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def test_contract_presets_exist():
    assert {"gfpgan", "codeformer", "instantrestore", "sr4", "sr8", "sr16", "sr32"} <= set(PRESETS)


@pytest.mark.parametrize("name", list(PRESETS))
def test_shape_dtype_and_input_untouched(image, name):
    before = image.copy()
    out = degrade(image, name, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("name", RANDOM_PRESETS)
def test_random_presets_are_reproducible_by_seed(image, name):
    first = degrade(image, name, seed=7)
    assert degrade(image, name, seed=7).tobytes() == first.tobytes()
    assert degrade(image, name, seed=np.random.default_rng(7)).tobytes() == first.tobytes()
    assert degrade(image, name, seed=8).tobytes() != first.tobytes()


def test_generator_seed_is_advanced(image):
    rng = np.random.default_rng(0)
    assert not np.array_equal(degrade(image, "instantrestore", rng), degrade(image, "instantrestore", rng))


@pytest.mark.parametrize("name", SR_PRESETS)
def test_sr_presets_are_bicubic_down_up_and_ignore_the_seed(image, name):
    factor = PRESETS[name].sr_factor
    height, width = image.shape[:2]
    small = cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_CUBIC)
    expected = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(degrade(image, name, seed=0), expected)
    assert np.array_equal(degrade(image, name, seed=99), expected)


def test_unknown_preset_lists_the_known_ones(image):
    with pytest.raises(ConfigError, match="unknown degradation preset 'nope'.*gfpgan.*sr16"):
        degrade(image, "nope", seed=0)


def test_rejects_non_rgb_uint8(image):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        degrade(image.astype(np.float32), "sr4", seed=0)


@pytest.mark.parametrize("name", RANDOM_PRESETS)
def test_sampled_parameters_are_in_range_and_replayable(image, name):
    preset = PRESETS[name]
    for seed in range(20):
        params = sample_parameters(name, seed)
        json.dumps(params)  # loggable as is
        blur = params["blur"]
        for sigma in (blur["sigma_x"], blur["sigma_y"]):
            assert preset.blur_sigma[0] <= sigma <= preset.blur_sigma[1]
        assert preset.downscale[0] <= params["scale"] <= preset.downscale[1]
        assert preset.noise_sigma[0] <= params["noise_sigma"] <= preset.noise_sigma[1]
        assert preset.jpeg_quality[0] <= params["jpeg_quality"] <= preset.jpeg_quality[1]
        if preset.anisotropic_prob == 0.0:
            assert blur["sigma_x"] == blur["sigma_y"]
        if preset.color_jitter_prob == 0.0:
            assert params["color_shift"] is None
    assert np.array_equal(apply_degradation(image, sample_parameters(name, 5)), degrade(image, name, 5))


def test_instantrestore_kernels_are_anisotropic():
    params = [sample_parameters("instantrestore", seed)["blur"] for seed in range(10)]
    assert all(p["sigma_x"] != p["sigma_y"] for p in params)
    assert len({round(p["theta"], 6) for p in params}) == 10


def test_gfpgan_jitter_and_gray_follow_their_probabilities():
    samples = [sample_parameters("gfpgan", seed) for seed in range(2000)]
    jitter = np.mean([s["color_shift"] is not None for s in samples])
    gray = np.mean([s["grayscale"] for s in samples])
    assert 0.25 < jitter < 0.35  # configured 0.3
    assert 0.0 < gray < 0.03  # configured 0.01
    shifts = np.array([s["color_shift"] for s in samples if s["color_shift"] is not None])
    assert np.abs(shifts).max() <= PRESETS["gfpgan"].color_jitter_shift


def test_grayscale_output_has_equal_channels(image):
    params = sample_parameters("gfpgan", 0) | {"grayscale": True}
    out = apply_degradation(image, params)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_gaussian_kernel_normalised_centred_and_rotated():
    iso = gaussian_kernel(41, 3.0, 3.0, 0.0)
    assert iso.shape == (41, 41) and iso.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(iso.argmax(), iso.shape) == (20, 20)
    np.testing.assert_allclose(iso, iso.T, atol=1e-7)
    wide = gaussian_kernel(41, 6.0, 1.0, 0.0)  # wide along x (columns)
    assert wide[20, 30] > wide[30, 20]
    np.testing.assert_allclose(gaussian_kernel(41, 6.0, 1.0, np.pi / 2), wide.T, atol=1e-6)


def test_custom_preset_object_and_stronger_blur_loses_more_detail(image):
    def blur_only(sigma: float) -> DegradationPreset:
        return DegradationPreset(f"blur{sigma}", blur_sigma=(sigma, sigma), anisotropic_prob=0.0)

    assert get_preset(blur_only(1.0)).name == "blur1.0"
    error = [np.abs(degrade(image, blur_only(s), 0).astype(float) - image).mean() for s in (0.5, 2.0, 8.0)]
    assert error[0] < error[1] < error[2]
