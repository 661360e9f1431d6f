"""Dense alignment of a reference face onto the face being restored.

Both faces are FFHQ-aligned crops with 68 landmarks. The target's landmarks, plus points on the crop's
border, are triangulated; each triangle maps affinely onto the same triangle of the reference's landmarks
(piecewise-affine, as GFRNet and ASFFNet align their guides), and the border follows the similarity that
fits all 68 points. The result is a sampling grid: for each target pixel, where to read the reference.
It is applied with `grid_sample`, so a stage trained on warped references can differentiate through the warp.

The grid is rasterised triangle by triangle with OpenCV (an index map, then one affine per triangle):
scikit-image's PiecewiseAffineTransform searches a simplex per pixel, tens of times slower at 512 px.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy.spatial import Delaunay
from torch.nn import functional as F

# Points per side of the crop's border that close the triangulation around the landmarks.
_BORDER_POINTS_PER_SIDE = 6


def border_points(size: int, per_side: int = _BORDER_POINTS_PER_SIDE) -> np.ndarray:
    """(4 * per_side, 2) points evenly spaced along the border of a `size` x `size` crop."""
    ticks = np.linspace(0, size - 1, per_side + 1)[:-1]
    last = float(size - 1)
    sides = [np.stack([ticks, np.zeros_like(ticks)], 1), np.stack([np.full_like(ticks, last), ticks], 1),
             np.stack([last - ticks, np.full_like(ticks, last)], 1), np.stack([np.zeros_like(ticks), last - ticks], 1)]
    return np.concatenate(sides).astype(np.float64)


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


class PiecewiseAffineWarp:
    """Where each target pixel reads the reference, with how much the warp bends there.

    Attributes:
        grid:       (S, S, 2) float32 reference pixel coordinates (x, y) for each target pixel.
        distortion: (S, S) float32, per triangle: how far its affine departs from the similarity fitted to all
                    68 points (0 = the same shape; a folded triangle, one that flips, is +inf).
    """

    def __init__(self, target_landmarks: np.ndarray, reference_landmarks: np.ndarray, size: int) -> None:
        target = np.asarray(target_landmarks, np.float64).reshape(-1, 2)
        reference = np.asarray(reference_landmarks, np.float64).reshape(-1, 2)
        similarity, _ = cv2.estimateAffinePartial2D(target, reference, method=cv2.LMEDS)
        if similarity is None:
            raise ValueError("landmarks too degenerate to align a reference")
        border = border_points(size)
        target_points = np.concatenate([target, border])
        reference_points = np.concatenate([reference, _apply(similarity, border)])
        triangles = Delaunay(target_points).simplices

        # one affine per triangle, target -> reference: solve [x y 1] A^T = [x' y']
        homogeneous = np.concatenate([target_points[triangles], np.ones((len(triangles), 3, 1))], axis=2)
        affines = np.linalg.solve(homogeneous, reference_points[triangles]).transpose(0, 2, 1)  # (T, 2, 3)

        index = np.full((size, size), -1, np.int32)
        for k, triangle in enumerate(target_points[triangles]):
            cv2.fillConvexPoly(index, np.round(triangle).astype(np.int32), int(k))
        index[index < 0] = 0  # rounding can leave a pixel uncovered on the border; any triangle there is the similarity
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        pixel_affines = affines[index].astype(np.float32)
        self.grid = np.stack([pixel_affines[..., 0, 0] * xs + pixel_affines[..., 0, 1] * ys + pixel_affines[..., 0, 2],
                              pixel_affines[..., 1, 0] * xs + pixel_affines[..., 1, 1] * ys + pixel_affines[..., 1, 2]],
                             axis=-1)

        # distortion: the triangle's linear part relative to the similarity's (singular values' log-ratios)
        relative = affines[:, :, :2] @ np.linalg.inv(similarity[:, :2])
        det = np.linalg.det(relative)
        singular = np.linalg.svd(relative, compute_uv=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            bend = np.abs(np.log(np.maximum(singular, 1e-6))).max(axis=1)
        bend[det <= 0] = np.inf
        self.distortion = bend.astype(np.float32)[index]


def sample(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Warp (K, C, H, W) images with (K, S, S, 2) pixel-coordinate grids -> (K, C, S, S); zeros outside."""
    height, width = images.shape[-2:]
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=grids.dtype, device=grids.device)
    normalised = (grids + 0.5) * scale - 1  # pixel centres, align_corners=False
    return F.grid_sample(images, normalised, mode="bilinear", padding_mode="zeros", align_corners=False)
