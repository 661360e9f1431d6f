"""Robust image reading and atomic writing.

Every image enters the toolkit through `read_image` and leaves through `write_image`, so orientation,
colour modes, bit depth, size limits and atomicity are handled in one place.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from instantrestore.errors import ImageReadError

# A decoded RGBA image of this many pixels is 400 MB; anything larger is refused before decoding.
MAX_PIXELS = 100_000_000
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16 or array.max(initial=0) > 255:
        return (array.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    return array.clip(0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike, keep_alpha: bool = False) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB (HxWx4 RGBA if `keep_alpha` and the file has alpha).

    Applies the EXIF orientation, converts grayscale, palette, CMYK and 16-bit images, and refuses
    images above `MAX_PIXELS` from their header, before decoding (decompression bombs).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageReadError(
                        f"{path}: {width}x{height} is larger than {MAX_PIXELS} pixels; refusing to decode")
                image.load()
                image = ImageOps.exif_transpose(image)
                return _pil_to_array(image, keep_alpha)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(f"{path}: image too large ({err})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: corrupt or truncated image ({err})") from None


def _pil_to_array(image: Image.Image, keep_alpha: bool) -> np.ndarray:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = _to_uint8(np.asarray(image))
        rgb = np.repeat(gray[..., None], 3, axis=2)
        return rgb
    if image.mode == "RGBA" and np.asarray(image).dtype != np.uint8:
        image = Image.fromarray(_to_uint8(np.asarray(image)))
    target = "RGBA" if (keep_alpha and has_alpha) else "RGB"
    return np.ascontiguousarray(np.asarray(image.convert(target)))


def to_rgb_array(image: "np.ndarray | Image.Image | str | os.PathLike") -> np.ndarray:
    """The API boundary: accept a PIL image, an HxWx3 (or HxW, HxWx4) uint8 array or an image file path
    (read with `read_image`'s checks), return HxWx3 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return _pil_to_array(image, keep_alpha=False)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got an array of shape {array.shape}")
    return np.ascontiguousarray(_to_uint8(array[..., :3]))


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for writing; rename it onto `path` only on success.

    A kill mid-write leaves either the old file or none, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would (0666 minus umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_image(path: str | os.PathLike, image: np.ndarray, overwrite: bool = False, quality: int = 95) -> Path:
    """Write an RGB(A) uint8 array atomically; refuse to replace an existing file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    suffix = path.suffix.lower()
    pil = Image.fromarray(np.asarray(image))
    if suffix in (".jpg", ".jpeg") and pil.mode == "RGBA":
        pil = pil.convert("RGB")
    params = {"quality": quality} if suffix in (".jpg", ".jpeg", ".webp") else {}
    with atomic_output(path) as handle:
        pil.save(handle, format=Image.registered_extensions().get(suffix, "PNG"), **params)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write raw bytes (reports, caches)."""
    with atomic_output(path) as handle:
        handle.write(data)
    return Path(path)
