"""Robust image I/O: modes, orientation, bit depth, bombs, bad files, atomic writes."""

import os

import numpy as np
import pytest
from PIL import Image

from instantrestore import imageio
from instantrestore.errors import ImageReadError
from instantrestore.imageio import read_image, to_rgb_array, write_image


@pytest.fixture
def gradient() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:60]
    return np.stack([x * 4, y * 6, (x + y) * 2], axis=2).astype(np.uint8)


def test_rgb_png_round_trip(tmp_path, gradient):
    path = write_image(tmp_path / "a.png", gradient)
    assert np.array_equal(read_image(path), gradient)


def test_grayscale_becomes_rgb(tmp_path, gradient):
    Image.fromarray(gradient[..., 0]).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (40, 60, 3) and np.array_equal(image[..., 0], image[..., 2])


def test_rgba_alpha_kept_only_when_asked(tmp_path, gradient):
    rgba = np.dstack([gradient, np.full(gradient.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (40, 60, 3)
    kept = read_image(tmp_path / "a.png", keep_alpha=True)
    assert kept.shape == (40, 60, 4) and (kept[..., 3] == 128).all()


def test_16bit_png_scaled_to_8bit(tmp_path):
    values = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image[..., 0].tolist() == [[0, 255], [100, 200]]


def test_cmyk_jpeg(tmp_path, gradient):
    Image.fromarray(gradient).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    image = read_image(tmp_path / "c.jpg")
    assert image.shape == (40, 60, 3)
    assert np.abs(image.astype(int) - gradient).mean() < 12


def test_exif_orientation_applied(tmp_path, gradient):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    Image.fromarray(gradient).save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert read_image(tmp_path / "o.jpg").shape == (60, 40, 3)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not an image\n", "not an image"),
])
def test_bad_files_name_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg(tmp_path, gradient):
    write_image(tmp_path / "full.jpg", np.tile(gradient, (8, 8, 1)))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch, gradient):
    write_image(tmp_path / "big.png", gradient)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="larger than 1000 pixels"):
        read_image(tmp_path / "big.png")


def test_write_refuses_overwrite_and_is_atomic(tmp_path, gradient, monkeypatch):
    path = write_image(tmp_path / "out.png", gradient)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_image(path, gradient)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        write_image(path, gradient[::-1], overwrite=True)
    assert path.read_bytes() == before  # the old file survives a kill mid-write
    assert os.listdir(tmp_path) == ["out.png"]  # and no temporary file is left behind


def test_to_rgb_array_accepts_pil_gray_and_paths(tmp_path, gradient):
    assert np.array_equal(to_rgb_array(Image.fromarray(gradient)), gradient)
    path = write_image(tmp_path / "a.png", gradient)
    assert np.array_equal(to_rgb_array(path), gradient) and np.array_equal(to_rgb_array(str(path)), gradient)
    with pytest.raises(ImageReadError):
        to_rgb_array(tmp_path / "absent.png")
    assert to_rgb_array(gradient[..., 0]).shape == (40, 60, 3)
    with pytest.raises(ValueError):
        to_rgb_array(np.zeros((4, 4, 2), np.uint8))


def test_atomic_writes_get_the_usual_file_mode(tmp_path, gradient):
    umask = os.umask(0o022)
    try:
        path = write_image(tmp_path / "a.png", gradient)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
