"""A small PyTorch executor for TF.js *graph* models (`model.json` + weight shards), no TensorFlow needed.

It runs exactly the ops of the MobileNet identity nets we use (faceres.json, mobilefacenet.json):
convolutions (regular and depthwise, TF "SAME"/"VALID" padding, plain or with Grappler's fused bias and
Relu), the element-wise arithmetic a folded batch norm, ReLU6 and PReLU leave behind, `Mean`, `Sum`,
`Squeeze`, and the dense head. Hand-written because no maintained Python package reads TF.js graph
models without TensorFlow itself (tensorflowjs' converter imports it). Tensors stay NHWC, as in the
graph, so every element-wise op broadcasts exactly as TensorFlow's does; only convolutions permute.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from instantrestore.errors import WeightsError

# Byte layouts of the manifest's dtypes; quantised weights are stored as `quantization.dtype`.
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "uint8": np.uint8,
                 "uint16": np.uint16, "bool": np.bool_}


def _attr(node: dict, key: str, default=None):
    """An attribute of a graph node in TF.js's JSON form ({"i": ...}, {"s": base64}, {"list": ...})."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(v) for v in items["i"]]
        if "s" in items:
            return [base64.b64decode(v).decode() for v in items["s"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "b" in value:
        return bool(value["b"])
    if "f" in value:
        return float(value["f"])
    return default


def _dequantise(raw: np.ndarray, spec: dict) -> np.ndarray:
    """Manifest values -> their original dtype: float16 widened, uint8/uint16 affine ones rescaled."""
    quantization = spec.get("quantization")
    if quantization is None or quantization["dtype"] == "float16":
        return raw.astype(_NUMPY_DTYPES[spec["dtype"]])
    return (raw.astype(np.float32) * quantization["scale"] + quantization["min"]).astype(np.float32)


def load_tfjs_weights(model_json: dict, directory: Path) -> dict[str, torch.Tensor]:
    """Every weight of the manifest by name, read from its shards (concatenated in manifest order)."""
    weights: dict[str, torch.Tensor] = {}
    for group in model_json["weightsManifest"]:
        shards = [directory / path for path in group["paths"]]
        for shard in shards:
            if not shard.is_file():
                raise WeightsError(f"{shard}: weight shard named in the model's manifest is missing")
        buffer = b"".join(shard.read_bytes() for shard in shards)
        offset = 0
        for spec in group["weights"]:
            stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
            if stored not in _NUMPY_DTYPES:
                raise WeightsError(f"{directory}: weight {spec['name']} has unsupported dtype {stored}")
            count = math.prod(spec["shape"])
            size = count * np.dtype(_NUMPY_DTYPES[stored]).itemsize
            if offset + size > len(buffer):
                raise WeightsError(f"{shards[0]}: truncated ({len(buffer)} bytes, manifest needs more)")
            raw = np.frombuffer(buffer, _NUMPY_DTYPES[stored], count, offset).reshape(spec["shape"])
            weights[spec["name"]] = torch.from_numpy(_dequantise(raw, spec).copy())
            offset += size
        if offset != len(buffer):
            raise WeightsError(f"{shards[0]}: {len(buffer)} bytes, but the manifest describes {offset}")
    return weights


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: the odd pixel goes after, unlike PyTorch's symmetric padding."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _conv(x: torch.Tensor, kernel: torch.Tensor, node: dict, depthwise: bool) -> torch.Tensor:
    """Conv2D / DepthwiseConv2dNative on NHWC input with an HWIO (or HWC-multiplier) kernel."""
    if _attr(node, "data_format", "NHWC") != "NHWC":
        raise WeightsError(f"{node['name']}: only NHWC convolutions are supported")
    _, stride_h, stride_w, _ = _attr(node, "strides")
    _, dilation_h, dilation_w, _ = _attr(node, "dilations", [1, 1, 1, 1])
    kernel_h, kernel_w, in_channels, multiplier = kernel.shape
    images = x.permute(0, 3, 1, 2)  # NHWC -> NCHW for torch
    if _attr(node, "padding") == "SAME":
        top, bottom = _same_padding(images.shape[2], kernel_h, stride_h, dilation_h)
        left, right = _same_padding(images.shape[3], kernel_w, stride_w, dilation_w)
        images = F.pad(images, (left, right, top, bottom))
    elif _attr(node, "padding") != "VALID":
        raise WeightsError(f"{node['name']}: padding {_attr(node, 'padding')} is not supported")
    if depthwise:  # TF output channel c * multiplier + m = torch group c, member m
        weight = kernel.permute(2, 3, 0, 1).reshape(in_channels * multiplier, 1, kernel_h, kernel_w)
        groups = in_channels
    else:
        weight = kernel.permute(3, 2, 0, 1)  # HWIO -> OIHW
        groups = 1
    out = F.conv2d(images, weight, stride=(stride_h, stride_w), dilation=(dilation_h, dilation_w), groups=groups)
    return out.permute(0, 2, 3, 1)


def _fused_matmul(inputs: list[torch.Tensor], node: dict) -> torch.Tensor:
    """Grappler's _FusedMatMul: x @ W (+ bias) (+ activation)."""
    x, weight, *extra = inputs
    if _attr(node, "transpose_a", False):
        x = x.T
    if _attr(node, "transpose_b", False):
        weight = weight.T
    return _fused_tail(x @ weight, extra, node)


def _fused_tail(out: torch.Tensor, extra: list[torch.Tensor], node: dict) -> torch.Tensor:
    """The bias and activation Grappler fused into a MatMul or convolution node."""
    for op in _attr(node, "fused_ops", []):
        if op == "BiasAdd":
            out = out + extra[0]
        elif op == "Relu":
            out = F.relu(out)
        else:
            raise WeightsError(f"{node['name']}: fused op {op} is not supported")
    return out


_ELEMENTWISE = {
    "Add": torch.add, "AddV2": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Minimum": torch.minimum,
    "Maximum": torch.maximum,
}
_UNARY = {"Relu": F.relu, "Relu6": lambda x: F.relu6(x), "Sigmoid": torch.sigmoid, "Identity": lambda x: x,
          "Softmax": lambda x: torch.softmax(x, dim=-1), "Abs": torch.abs, "Square": torch.square,
          "Rsqrt": torch.rsqrt}


class TFJSGraphModel:
    """A TF.js graph model run by PyTorch: `model(nhwc_batch, output="node/name") -> tensor`.

    Only the nodes the requested output depends on are run (the age and gender heads of faceres are
    skipped when asking for its descriptor).
    """

    def __init__(self, model_json_path: str | os.PathLike) -> None:
        path = Path(model_json_path)
        try:
            self.spec = json.loads(path.read_text())
            nodes = self.spec["modelTopology"]["node"]
        except (OSError, ValueError, KeyError) as err:
            raise WeightsError(f"{path}: not a readable TF.js graph model ({type(err).__name__})") from None
        if self.spec.get("format") != "graph-model":
            raise WeightsError(f"{path}: a TF.js {self.spec.get('format')!r}, expected a graph model")
        self.nodes = {node["name"]: node for node in nodes}
        self.weights = load_tfjs_weights(self.spec, path.parent)
        supported = {"Placeholder", "Const", "Conv2D", "DepthwiseConv2dNative", "_FusedConv2D",
                     "FusedDepthwiseConv2dNative", "Mean", "Sum", "Squeeze", "_FusedMatMul", *_ELEMENTWISE, *_UNARY}
        unsupported = sorted({node["op"] for node in nodes} - supported)
        if unsupported:
            raise WeightsError(f"{path}: ops {', '.join(unsupported)} are not supported by this executor")

    def _order(self, output: str) -> list[str]:
        """The nodes `output` depends on, each after its inputs (depth-first topological order)."""
        order, seen = [], set()
        stack = [(output, False)]
        while stack:
            name, inputs_done = stack.pop()
            if inputs_done:
                order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((source.split(":")[0], False) for source in self.nodes[name].get("input", [])
                         if not source.startswith("^"))
        return order

    def __call__(self, inputs: torch.Tensor, output: str) -> torch.Tensor:
        """Run the graph up to `output`; differentiable (call it under `torch.no_grad()` to score)."""
        if output not in self.nodes:
            raise KeyError(f"no node {output!r} in the graph")
        order = self._order(output)
        sources = {name: [s.split(":")[0] for s in self.nodes[name].get("input", []) if not s.startswith("^")]
                   for name in order}
        last_use = {source: step for step, name in enumerate(order) for source in sources[name]}
        values: dict[str, torch.Tensor] = {}
        for step, name in enumerate(order):
            node = self.nodes[name]
            op = node["op"]
            args = [values[source] for source in sources[name]]
            for source in sources[name]:  # activations are freed once read for the last time
                if last_use[source] == step and source != output:
                    values.pop(source, None)
            if op == "Placeholder":
                values[name] = inputs.float()
            elif op == "Const":
                values[name] = self.weights[name]
            elif op in ("Conv2D", "DepthwiseConv2dNative"):
                values[name] = _conv(args[0], args[1], node, depthwise=op == "DepthwiseConv2dNative")
            elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
                convolved = _conv(args[0], args[1], node, depthwise=op == "FusedDepthwiseConv2dNative")
                values[name] = _fused_tail(convolved, args[2:], node)
            elif op in ("Mean", "Sum"):
                dims = [int(d) for d in args[1].reshape(-1)]
                reduce = torch.mean if op == "Mean" else torch.sum
                values[name] = reduce(args[0], dim=dims, keepdim=_attr(node, "keep_dims", False))
            elif op == "Squeeze":
                values[name] = args[0].squeeze(tuple(_attr(node, "squeeze_dims")))
            elif op == "_FusedMatMul":
                values[name] = _fused_matmul(args, node)
            elif op in _ELEMENTWISE:
                values[name] = _ELEMENTWISE[op](args[0], args[1])
            else:
                values[name] = _UNARY[op](args[0])
        return values[output]
