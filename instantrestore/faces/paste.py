"""Paste restored aligned crops back into the (upscaled) photo with a feathered mask."""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


def upscaled_inverse(affine: np.ndarray, upscale: int) -> np.ndarray:
    """(2, 3) map from crop pixels to pixels of the photo upscaled `upscale` times.

    Pixel centres: photo pixel p covers upscaled pixels centred at upscale * (p + 0.5) - 0.5, hence the
    (upscale - 1) / 2 shift on top of the scaled inverse.
    """
    inverse = cv2.invertAffineTransform(np.asarray(affine, np.float64)) * upscale
    inverse[:, 2] += (upscale - 1) / 2
    return inverse


def _resize(image: np.ndarray, upscale: int) -> np.ndarray:
    if upscale == 1:
        return image.copy()
    height, width = image.shape[:2]
    return cv2.resize(np.ascontiguousarray(image), (width * upscale, height * upscale), interpolation=cv2.INTER_LANCZOS4)


def _soft_mask(crop_size: int, inverse: np.ndarray, out_size: tuple[int, int], upscale: int) -> np.ndarray:
    """The crop's footprint in the output, eroded (drop the interpolated edge) and Gaussian-feathered
    over a band of 1/20 of the face's size, as GFP-GAN does, so no seam shows around the face."""
    footprint = cv2.warpAffine(np.ones((crop_size, crop_size), np.float32), inverse, out_size)
    footprint = cv2.erode(footprint, np.ones((2 * upscale, 2 * upscale), np.uint8))
    edge = int(np.sqrt(footprint.sum())) // 20
    if edge > 0:
        footprint = cv2.erode(footprint, np.ones((2 * edge, 2 * edge), np.uint8))
        footprint = cv2.GaussianBlur(footprint, (2 * edge + 1, 2 * edge + 1), 0)
    return footprint[..., None]


def _face_region(size: int, inverse: np.ndarray, shape: tuple[int, int]
                 ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """((x0, y0, x1, y1), crop -> region map) of the rectangle a `size` crop covers in an image of `shape`
    (height, width), or None when it covers nothing: work per face, since a whole upscaled photo per face costs
    gigabytes."""
    height, width = shape
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [width, height])
    if x0 >= x1 or y0 >= y1:
        return None
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    return (int(x0), int(y0), int(x1), int(y1)), shifted


def add_photo_band(canvas: np.ndarray, photo: np.ndarray, crop: np.ndarray, affine: np.ndarray, weight: float,
                   clean: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """In place, for a face larger in the photo than its aligned `crop` (cut with `affine`): add inside the face's
    paste mask the photo's band finer than the crop can hold (the photo minus the crop warped back), passed
    through `clean(band, photo region)` (noise removal), times `weight`. `canvas` and `photo` are one size."""
    size = crop.shape[0]
    found = _face_region(size, upscaled_inverse(affine, 1), canvas.shape[:2])
    if found is None:
        return
    (x0, y0, x1, y1), inverse = found
    roi_size = (x1 - x0, y1 - y0)
    region = np.ascontiguousarray(photo[y0:y1, x0:x1, :3])
    back = cv2.warpAffine(np.asarray(crop)[..., :3], inverse, roi_size, flags=cv2.INTER_LINEAR)
    band = clean(region.astype(np.float32) - back, region)
    mask = _soft_mask(size, inverse, roi_size, 1)
    canvas[y0:y1, x0:x1, :3] = np.clip(canvas[y0:y1, x0:x1, :3] + weight * mask * band, 0, 255).round().astype(np.uint8)


def paste_back(rgb: np.ndarray, restored_crops: list[np.ndarray], affines: list[np.ndarray], upscale: int = 1,
               alpha: np.ndarray | None = None, background: np.ndarray | None = None) -> np.ndarray:
    """The photo upscaled `upscale` times with each restored crop warped back over its face.

    `affines[k]` is the photo -> crop transform the k-th crop was aligned with. `background` is the photo
    already upscaled (by a background upsampler); without it, the photo is resized with Lanczos. With
    `alpha` (HxW uint8), the result is RGBA, the alpha channel upscaled with Lanczos.
    """
    if len(restored_crops) != len(affines):
        raise ValueError(f"{len(restored_crops)} restored faces but {len(affines)} alignments")
    if background is None:
        canvas = _resize(np.asarray(rgb)[..., :3], upscale)
    else:
        height, width = np.asarray(rgb).shape[:2]
        if background.shape[:2] != (height * upscale, width * upscale):
            raise ValueError(f"background is {background.shape[1]}x{background.shape[0]}, "
                             f"expected {width * upscale}x{height * upscale}")
        canvas = np.array(background[..., :3], np.uint8)
    for crop, affine in zip(restored_crops, affines):
        size = crop.shape[0]
        found = _face_region(size, upscaled_inverse(affine, upscale), canvas.shape[:2])
        if found is None:
            continue
        (x0, y0, x1, y1), inverse = found
        roi_size = (int(x1 - x0), int(y1 - y0))
        face = cv2.warpAffine(np.asarray(crop)[..., :3], inverse, roi_size, flags=cv2.INTER_LINEAR)
        mask = _soft_mask(size, inverse, roi_size, upscale)
        blended = mask * face.astype(np.float32) + (1 - mask) * canvas[y0:y1, x0:x1].astype(np.float32)
        canvas[y0:y1, x0:x1] = np.clip(blended.round(), 0, 255).astype(np.uint8)
    if alpha is not None:
        canvas = np.dstack([canvas, _resize(np.asarray(alpha, np.uint8), upscale)])
    return canvas
