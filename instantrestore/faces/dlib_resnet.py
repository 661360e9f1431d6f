"""dlib's 128-D face descriptor (`dlib_face_recognition_resnet_model_v1`) as a differentiable PyTorch module.

The network is dlib's ResNet-29-like metric net (Davis King, 99.38% on LFW), as face-api.js describes it
in its `FaceRecognitionNet`; the weights are the TF.js conversion that npm `@vladmandic/face-api` ships,
turned into safetensors by `scripts/convert/convert_faceapi_identity.py`. dlib's per-channel affine layer after
each convolution is folded into the convolution there, so every box below is a plain `nn.Conv2d`.

Input: dlib's 150x150 RGB face chip (`dlib.get_face_chip(img, shape, size=150, padding=0.25)`).
`DlibFaceResNet` takes such chips; `DlibDescriptor` cuts the chip from our FFHQ-aligned crops itself,
with one fixed affine and `grid_sample`, so a loss on its output reaches the restorer's pixels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from instantrestore.errors import WeightsError

WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "dlib_resnet" / "model.safetensors"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's input normalisation (its input_rgb_image_sized<150>): RGB minus this mean, divided by 256
CHIP_MEAN_RGB = (122.782, 117.001, 104.298)
CHIP_DIVISOR = 256.0
# dlib's rule: two raw (not normalised) descriptors closer than this in Euclidean distance are one person
SAME_PERSON_DISTANCE = 0.6

# (in_channels, out_channels, downsample) of the residual blocks, in order; names as in face-api.js
RESIDUAL_BLOCKS = (
    ("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions and an identity shortcut; a down block halves the resolution.

    Down blocks (dlib's `ares_down`) use a stride-2 'valid' first convolution, and their shortcut is a
    2x2 average pool with zero channels appended. Where the pool's output is larger than the convolution's
    (odd sizes: 8 -> 3 vs 4, 4 -> 1 vs 2), the convolution output is zero-padded bottom/right, which is
    what dlib's `add_prev` does when it adds tensors of different sizes.

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels (more than `in_channels` only in a down block).
        downsample: halve the resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=0)
        else:
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.downsample:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2, 2)
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))
        out = F.pad(out, (0, shortcut.shape[3] - out.shape[3], 0, shortcut.shape[2] - out.shape[2]))
        return F.relu(out + shortcut)


class DlibFaceResNet(nn.Module):
    """dlib's face recognition ResNet: (B, 3, 150, 150) chips -> (B, 128) raw descriptors.

    Chips are RGB in [0, 255] (float); the network subtracts dlib's mean itself. Descriptors are dlib's
    own, not unit length: compare with Euclidean distance < 0.6 (`SAME_PERSON_DISTANCE`) or cosine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CHIP_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.blocks = nn.Sequential(*(ResidualBlock(cin, cout, down) for _, cin, cout, down in RESIDUAL_BLOCKS))
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean) / CHIP_DIVISOR
        # stem: 150 -> 72 -> 35
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        # residual stages: 35 (32 ch) -> 17 (64) -> 8 (128) -> 4 (256) -> 2 (256)
        x = self.blocks(x)
        # global mean, then the 256 -> 128 projection
        return self.fc(x.mean(dim=(2, 3)))


def load_dlib_resnet(path: str | os.PathLike | None = None) -> DlibFaceResNet:
    """The packaged port (or a safetensors file at `path`), in eval mode with frozen float32 weights."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise WeightsError(f"{path}: dlib face descriptor weights not found "
                           "(rebuild them with scripts/convert/convert_faceapi_identity.py)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    model = DlibFaceResNet()
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in state.items()}
    if found != expected:
        wrong = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
        raise WeightsError(f"{path}: not dlib face descriptor weights ({len(wrong)} tensors missing, extra or "
                           f"misshapen, e.g. {wrong[0]})")
    model.load_state_dict({name: value.float() for name, value in state.items()})
    return model.eval().requires_grad_(False)


# Where dlib's chip lies in our FFHQ-aligned crop: chip pixel (x, y, 1) -> pixel of a 512-px crop
# (pixel centres at integers, as in cv2 and dlib). dlib fits its chip to 51 of its 68 landmarks and we align
# on five points, so the true map moves from face to face, most with the head's turn. This one is fitted by
# least squares on real faces, not derived from dlib's template: FRLL train photos, frontal and
# three-quarter (scripts/measure/fit_dlib_chip.py, which also prints how far single faces stray).
DLIB_CHIP_TO_CROP512 = np.array([[2.2142, 0.010434, 92.794], [-0.010434, 2.2142, 142.06]])


def dlib_chip_theta(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """(1, 2, 3) `affine_grid` matrix of `dlib.get_face_chip(..., size, padding)` in our aligned crops: chip
    coordinates -> crop coordinates, both normalised to [-1, 1] with align_corners=False (so it holds for
    any crop size). dlib puts its landmark template at (padding + t) / (1 + 2 padding) * size, so every
    chip is the 150-px, padding-0.25 chip (`DLIB_CHIP_TO_CROP512`) scaled about the template."""
    scale, shift = 100 * (1 + 2 * padding) / size, 100 * (CHIP_PADDING - padding)
    chip150_from_chip = np.array([[scale, 0, shift], [0, scale, shift], [0, 0, 1]])
    chip_from_normal = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
    normal_from_crop = np.array([[2 / 512, 0, 1 / 512 - 1], [0, 2 / 512, 1 / 512 - 1], [0, 0, 1]])
    theta = normal_from_crop @ np.vstack([DLIB_CHIP_TO_CROP512, [0, 0, 1]]) @ chip150_from_chip @ chip_from_normal
    return torch.tensor(theta[:2], dtype=torch.float32)[None]


def cut_chips(crops: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, S, S) aligned crops -> (B, 3, size, size) chips by `theta` (`dlib_chip_theta`), differentiable."""
    grid = F.affine_grid(theta.to(crops.device).expand(len(crops), 2, 3), [len(crops), 3, size, size],
                         align_corners=False)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)


def working_size(chip_size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> int:
    """The crop side at which one chip pixel is one crop pixel: crops are resized to it (with antialiasing)
    before the chip is sampled; sampled directly, a 512-px crop sends gradient to only 80% of the pixels
    under the chip (bilinear taps 2.2 px apart). It does not change the agreement with dlib."""
    scale = 100 * (1 + 2 * padding) / chip_size
    return round(512 / (math.hypot(*DLIB_CHIP_TO_CROP512[:, 0]) * scale))


class DlibDescriptor(nn.Module):
    """dlib descriptors of FFHQ-aligned crops, differentiable: crops -> fixed-affine 150-px chips -> ResNet.

    Args:
        weights_path: a safetensors file (default: the packaged port).
        input_range: the crops' value range, (0, 1) or (-1, 1).
    """

    def __init__(self, weights_path: str | os.PathLike | None = None,
                 input_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.network = load_dlib_resnet(weights_path)
        self.input_range = input_range
        self.register_buffer("theta", dlib_chip_theta(), persistent=False)
        self.working_size = working_size()

    def to_working_size(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) aligned crops -> (B, 3, W, W), values unchanged in range."""
        if crops.shape[-1] == self.working_size:
            return crops.float()
        return F.interpolate(crops.float(), size=(self.working_size, self.working_size), mode="bilinear",
                             align_corners=False, antialias=True)

    def chips(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) aligned crops in `input_range` -> (B, 3, 150, 150) dlib chips in [0, 255]."""
        low, high = self.input_range
        crops = (self.to_working_size(crops) - low) * (255.0 / (high - low))
        return cut_chips(crops, self.theta, CHIP_SIZE)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) aligned crops -> (B, 128) raw dlib descriptors (not unit length)."""
        return self.network(self.chips(crops))
