"""Reference outputs of the original UpscalerJS models, computed by TensorFlow.js, for tests/test_upsample.py.

    python scripts/convert/make_upscalerjs_fixture.py      # needs node and npm; -> tests/fixtures/upscalerjs_esrgan_medium.npz

In a temporary directory: `npm pack` the model package (sha256 checked), `npm install @tensorflow/tfjs`
(pure JavaScript, CPU backend), then `scripts/convert/upscalerjs_reference.js` runs each model on a few small
images: two crops of scikit-image's astronaut photo (NASA, public domain) and uniform noise (which
drives the output outside 0..255, so clamping differences would show). Stored: the uint8 inputs and
TF.js's raw float32 outputs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from skimage import data

from convert_upscalerjs import PACKAGE, PACKAGE_SHA256, REPO, SCALES, fetch_package

TFJS = "@tensorflow/tfjs@4.22.0"
FIXTURE = REPO / "tests" / "fixtures" / "upscalerjs_esrgan_medium.npz"


def fixture_inputs() -> dict[str, np.ndarray]:
    astronaut = data.astronaut()
    return {"face": astronaut[90:114, 170:198], "texture": astronaut[300:320, 20:44],
            "noise": np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)}


def run_tfjs(workdir: Path, model_dir: Path, image: np.ndarray, scale: int) -> np.ndarray:
    height, width = image.shape[:2]
    image.tofile(workdir / "input.u8")
    subprocess.run(["node", str(REPO / "scripts" / "convert" / "upscalerjs_reference.js"), str(model_dir),
                    str(workdir / "input.u8"), str(height), str(width), str(workdir / "output.f32")],
                   check=True, env={**os.environ, "NODE_PATH": str(workdir / "node_modules")})
    return np.fromfile(workdir / "output.f32", "<f4").reshape(height * scale, width * scale, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(FIXTURE))
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        package = fetch_package(workdir)
        subprocess.run(["npm", "install", "--silent", "--no-save", TFJS], cwd=workdir, check=True)
        for name, image in fixture_inputs().items():
            arrays[f"input/{name}"] = image
            for scale in SCALES:
                arrays[f"x{scale}/{name}"] = run_tfjs(workdir, package / "models" / f"x{scale}", image, scale)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays, package=np.array(PACKAGE), tarball_sha256=np.array(PACKAGE_SHA256),
                        tfjs=np.array(TFJS))
    print(f"{args.output}: {', '.join(sorted(arrays))} ({Path(args.output).stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
