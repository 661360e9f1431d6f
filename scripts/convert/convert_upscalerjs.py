"""Rebuild the packaged background upsamplers from the UpscalerJS npm package they come from.

    python scripts/convert/convert_upscalerjs.py            # -> instantrestore/weights/esrgan_medium_x{2,4}/

`npm pack @upscalerjs/esrgan-medium@1.0.0` in a temporary directory (its sha256 is checked), read each
Keras layers model (model.json + weight shards, float32 in manifest order), check that its topology is
the RDN that `instantrestore.models.rdn.RDN` implements, check it against the package's own sample
output (assets/samples), and write config.json + model.safetensors (float16: the port stays within
1/255 of TF.js, see tests/test_upsample.py).
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

from instantrestore.imageio import write_bytes  # noqa: E402
from instantrestore.models.rdn import RDN  # noqa: E402

PACKAGE = "@upscalerjs/esrgan-medium@1.0.0"
PACKAGE_SHA256 = "367471ded0629387b9aabc75183be0b80d39d46c3f509945ebde4f5bf7a49627"
SCALES = (2, 4)


def fetch_package(workdir: Path, package: str = PACKAGE, sha256: str = PACKAGE_SHA256) -> Path:
    """`npm pack` the package into `workdir`, check its sha256, unpack it; the unpacked root."""
    name = subprocess.run(["npm", "pack", package, "--silent"], cwd=workdir, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tarball = workdir / name
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{tarball}: sha256 {digest}, expected {sha256}")
    with tarfile.open(tarball) as archive:
        archive.extractall(workdir, filter="data")
    return workdir / "package"


def read_keras_layers_model(model_dir: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The layer list and the named float32 weights of a TF.js layers model."""
    model = json.loads((model_dir / "model.json").read_text())
    manifest = model["weightsManifest"][0]
    data = b"".join((model_dir / path).read_bytes() for path in manifest["paths"])
    weights, offset = {}, 0
    for spec in manifest["weights"]:
        if spec["dtype"] != "float32" or "quantization" in spec:
            raise SystemExit(f"{model_dir}: weight {spec['name']} is {spec['dtype']}/quantized; expected float32")
        count = int(np.prod(spec["shape"]))
        weights[spec["name"]] = np.frombuffer(data, "<f4", count, offset).reshape(spec["shape"])
        offset += 4 * count
    if offset != len(data):
        raise SystemExit(f"{model_dir}: {len(data) - offset} bytes of weights left over")
    return model["modelTopology"]["model_config"]["config"]["layers"], weights


def keras_names(num_blocks: int, layers_per_block: int) -> dict[str, str]:
    """Our parameter prefix -> the Keras layer it comes from."""
    names = {"shallow_conv1": "F_m1", "shallow_conv2": "F_0", "global_fuse.0": "GFF_1", "global_fuse.1": "GFF_2",
             "up_conv1": "UPN1", "up_conv2": "UPN2", "up_conv3": "UPN3", "to_rgb": "SR"}
    for d in range(num_blocks):
        names[f"blocks.{d}.fuse"] = f"LFF_{d + 1}"
        for c in range(layers_per_block):
            names[f"blocks.{d}.convs.{c}"] = f"F_{d + 1}_{c + 1}"
    return names


def convert(model_dir: Path) -> RDN:
    """An RDN holding the weights of the UpscalerJS model in `model_dir`, its topology checked."""
    layers, weights = read_keras_layers_model(model_dir)
    by_name = {layer["name"]: layer for layer in layers}
    upsample = by_name["UPsample"]["config"]
    if upsample["interpolation"] != "nearest" or upsample["size"][0] != upsample["size"][1]:
        raise SystemExit(f"{model_dir}: upsampling {upsample}; expected square nearest-neighbour")
    num_blocks = sum(1 for name in by_name if name.startswith("LFF_"))
    layers_per_block = sum(1 for name in by_name if name.startswith("F_1_") and not name.endswith("_Relu"))
    model = RDN(scale=upsample["size"][0], num_features=by_name["F_0"]["config"]["filters"],
                growth=by_name["F_1_1"]["config"]["filters"], num_blocks=num_blocks,
                layers_per_block=layers_per_block)
    # every layer of the Keras graph must be one we know: RDN's convs, or the joins and activations between them
    joins = {"InputLayer", "Activation", "Concatenate", "Add", "UpSampling2D"}
    names = keras_names(num_blocks, layers_per_block)
    unknown = {layer["name"] for layer in layers if layer["class_name"] not in joins} - set(names.values())
    if unknown:
        raise SystemExit(f"{model_dir}: layers {sorted(unknown)} are not part of the RDN port")
    state = {}
    for prefix, keras in names.items():
        state[f"{prefix}.weight"] = torch.from_numpy(weights.pop(f"{keras}/kernel").transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
        state[f"{prefix}.bias"] = torch.from_numpy(weights.pop(f"{keras}/bias").copy())
    if weights:
        raise SystemExit(f"{model_dir}: weights {sorted(weights)} left unused")
    model.load_state_dict(state, strict=True)
    return model


def check_against_package_sample(model: RDN, package: Path, scale: int) -> float:
    """Largest difference, in grey levels, from the package's own sample output (assets/samples/{s}x/result.png,
    made by UpscalerJS from assets/fixture.png); more than 1 means the port or its input range is wrong."""
    from PIL import Image

    low = np.asarray(Image.open(package / "assets" / "fixture.png").convert("RGB"), np.float32)
    expected = np.asarray(Image.open(package / "assets" / "samples" / f"{scale}x" / "result.png").convert("RGB"))
    with torch.no_grad():
        out = model(torch.from_numpy(low).permute(2, 0, 1)[None])[0].permute(1, 2, 0).clamp(0, 255).round().numpy()
    difference = float(np.abs(out - expected).max())
    if difference > 1:
        raise SystemExit(f"x{scale}: differs from the package's sample output by {difference:.0f} grey levels")
    return difference


def save_upsampler(model: RDN, directory: Path, source: dict, fp16: bool = True) -> None:
    dtype = torch.float16 if fp16 else torch.float32
    state = {key: value.to(dtype).contiguous() for key, value in model.state_dict().items()}
    write_bytes(directory / "model.safetensors", save(state, metadata={"format": "pt"}))
    config = {"upsampler": "rdn", "model": model.config, "pixel_range": 255, "source": source}
    write_bytes(directory / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(REPO / "instantrestore" / "weights"))
    parser.add_argument("--fp32", action="store_true", help="store float32 instead of float16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = fetch_package(Path(tmp))
        for scale in SCALES:
            model = convert(package / "models" / f"x{scale}")
            difference = check_against_package_sample(model, package, scale)
            target = Path(args.output) / f"esrgan_medium_x{scale}"
            source = {"npm": PACKAGE, "file": f"models/x{scale}/model.json", "tarball_sha256": PACKAGE_SHA256,
                      "license": "MIT", "dataset": "DIV2K"}
            save_upsampler(model, target, source, fp16=not args.fp32)
            print(f"{PACKAGE} x{scale} -> {target} ({sum(p.numel() for p in model.parameters()):,} parameters; "
                  f"at most {difference:.0f} grey level from the package's sample output)")


if __name__ == "__main__":
    main()
