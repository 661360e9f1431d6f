"""Golden NIQE values for tests/test_evaluation.py, computed by basicsr's own code, not ours.

Downloads the basicsr 1.4.2 sdist (PyPI, Apache-2.0) into a temporary folder and runs its
`basicsr/metrics/niqe.py` (`calculate_niqe`, with its `niqe_pris_params.npz`) standalone: basicsr's package
`__init__` (which imports its whole training stack) is bypassed by loading the four files NIQE needs
(metrics/niqe.py, metrics/metric_util.py, utils/color_util.py, utils/matlab_functions.py) as modules. Needs
numpy, scipy, cv2 and torch (matlab_functions is written in torch). The images are scikit-image's bundled
`astronaut` and `coffee`, so the test needs no file of ours.

    python scripts/measure/make_niqe_fixture.py   # writes tests/fixtures/niqe_basicsr.json
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import scipy.ndimage
from skimage import data

REPO = Path(__file__).resolve().parents[2]
BASICSR = "basicsr==1.4.2"
IMAGES = ("astronaut", "coffee")


def load_basicsr_niqe(root: Path):
    """basicsr's calculate_niqe, its imports wired to the sdist's files without running basicsr/__init__.py."""
    def load(name: str, path: Path) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    registry = types.ModuleType("basicsr.utils.registry")
    registry.METRIC_REGISTRY = types.SimpleNamespace(register=lambda: (lambda function: function))
    sys.modules["basicsr.utils.registry"] = registry
    sys.modules["scipy.ndimage.filters"] = scipy.ndimage  # its old name; same `convolve`
    utils = types.ModuleType("basicsr.utils")
    sys.modules["basicsr.utils"] = utils
    utils.bgr2ycbcr = load("basicsr.utils.color_util", root / "basicsr/utils/color_util.py").bgr2ycbcr
    load("basicsr.utils.matlab_functions", root / "basicsr/utils/matlab_functions.py")
    load("basicsr.metrics.metric_util", root / "basicsr/metrics/metric_util.py")
    return load("basicsr.metrics.niqe", root / "basicsr/metrics/niqe.py").calculate_niqe


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "basicsr", BASICSR,
                        "-d", tmp, "-q"], check=True)
        with tarfile.open(next(Path(tmp).glob("basicsr-*.tar.gz"))) as archive:
            archive.extractall(tmp, filter="data")
        calculate_niqe = load_basicsr_niqe(next(Path(tmp).glob("basicsr-*/")))
        values = {}
        for name in IMAGES:
            rgb = getattr(data, name)()
            values[name] = calculate_niqe(rgb[..., ::-1], crop_border=0, input_order="HWC", convert_to="y")
            print(f"{name} {rgb.shape}: NIQE {values[name]:.6f}")
    fixture = {"made_by": f"scripts/measure/make_niqe_fixture.py: {BASICSR} basicsr/metrics/niqe.py calculate_niqe"
                          "(BGR image, crop_border=0, convert_to='y') on skimage.data images",
               "niqe": values}
    (REPO / "tests/fixtures/niqe_basicsr.json").write_text(json.dumps(fixture, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
