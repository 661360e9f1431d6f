"""FFHQ alignment: five landmarks -> similarity transform -> square crop, as GFP-GAN crops its faces."""

from __future__ import annotations

import cv2
import numpy as np

# The standard 5 landmarks of FFHQ faces at 512x512 (facexlib `FaceRestoreHelper.face_template`):
# left eye in the image, right eye, nose tip, left mouth corner, right mouth corner.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)

# GFP-GAN pads outside the photo with constant grey (facexlib's default border mode, BGR 135,133,132),
# not REFLECT: a mirrored half-face beside the real one is something a restorer may "restore" as a face,
# and our restorers are compared with GFP-GAN on the crops it would see. The paste-back mask is warped
# from the crop's own extent, so the grey never reaches the output photo.
BORDER_GREY_RGB = (132, 133, 135)

# Reference photos are cut at this side (FFHQ's; `prepare-data` stores its training crops so), then brought to a
# restorer's own size by `resize_face`, as its training references were: warping a sharp photo straight to a
# 128-px crop aliases every face larger than that.
ALIGN_SIZE = 512


def ffhq_template(size: int = 512) -> np.ndarray:
    """The five-point FFHQ template for a `size` x `size` crop, (5, 2) float32."""
    return FFHQ_TEMPLATE_512 * np.float32(size / 512.0)


def estimate_alignment(kps5: np.ndarray, size: int = 512) -> np.ndarray:
    """(2, 3) similarity transform (rotation, uniform scale, shift) taking photo `kps5` onto the template.

    Least-median-of-squares, as facexlib does: one badly placed point (a mouth corner on a blurred
    photo) does not drag the other four.
    """
    kps5 = np.asarray(kps5, dtype=np.float32).reshape(5, 2)
    affine, _ = cv2.estimateAffinePartial2D(kps5, ffhq_template(size), method=cv2.LMEDS)
    if affine is None:  # degenerate points (all on one spot); LMEDS has nothing to fit
        raise ValueError(f"cannot fit an alignment to landmarks {kps5.tolist()}")
    return affine


def align_face(rgb: np.ndarray, affine: np.ndarray, size: int = 512) -> np.ndarray:
    """Warp the photo with `affine` into a `size` x `size` aligned crop (bilinear, grey outside the photo)."""
    return cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GREY_RGB)


def resize_face(image: np.ndarray, size: int) -> np.ndarray:
    """A square crop at `size`: area-averaged down (as `FaceRestorationDataset` feeds training), bicubic up."""
    if image.shape[0] == size:
        return image.copy()
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ affine[:, :2].T + affine[:, 2]
