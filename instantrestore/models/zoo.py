"""Other papers' blind face restorers, loaded by spandrel (the `zoo` extra): CodeFormer and RestoreFormer++.

    codeformer        Zhou et al., NeurIPS 2022; spandrel_extra_arches builds it. S-Lab License 1.0:
                      non-commercial use only, weights and code alike.
    restoreformer++   Wang et al., TPAMI 2023; Apache-2.0. spandrel knows RestoreFormer, not ++ (its
                      loader fixes 8 heads and attention at 16 px): ++ is spandrel's RestoreFormer
                      built with the authors' release config, 4 heads and decoder attention at 16 and 32 px.
    FILE              any other face restorer spandrel recognises (RestoreFormer, GFP-GAN, ...).

All take aligned 512-px faces in [-1, 1], as the authors' inference scripts feed them; spandrel's own call
wrappers for CodeFormer and GFP-GAN pass [0, 1] instead, so the nets are called directly here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from instantrestore.errors import ConfigError, WeightsError
from instantrestore.models._torchvision import import_torchvision
from instantrestore.models.base import Restorer
from instantrestore.models.registry import is_state_dict, read_checkpoint, resolve_weights

ZOO_MODELS = ("codeformer", "restoreformer++")  # registered weights (models/registry.py)
INSTALL_HINT = "pip install 'instantrestore[zoo]'"
DEFAULT_FIDELITY = 0.5  # CodeFormer's inference default: 0 favours quality, 1 the input
RESTOREFORMER_RESOLUTION = 512
RESTOREFORMER_PLUS_PLUS_HEADS = 4  # not in the weights: the release config (8 for RestoreFormer)


def import_spandrel(extra_arches: bool = False) -> ModuleType:
    """spandrel, with spandrel_extra_arches (CodeFormer's home) when `extra_arches`; a one-line WeightsError
    saying what to install when either is missing."""
    for package in ("spandrel", "spandrel_extra_arches")[:2 if extra_arches else 1]:
        if importlib.util.find_spec(package) is None:
            raise WeightsError(f"this model needs {package}, which is not installed: {INSTALL_HINT}")
    try:
        import_torchvision()
        spandrel = importlib.import_module("spandrel")
        if extra_arches:
            importlib.import_module("spandrel_extra_arches")
    except ImportError as err:
        raise WeightsError(f"this model needs {err.name or 'spandrel'}, which is not installed: {INSTALL_HINT}") from None
    except RuntimeError as err:  # a torchvision built for another torch
        raise WeightsError(f"spandrel's torchvision does not import beside this torch ({str(err)[:100]}); "
                           f"install the torchvision built for torch {torch.__version__}") from None
    return spandrel


# ----------------------------------------------------------------------------- reading checkpoints
def read_face_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The generator's weights in a release file: `params_ema` (CodeFormer, GFP-GAN, basicsr), or the `vqvae.`
    part of a pytorch-lightning `state_dict` (RestoreFormer++, whose file also holds its training losses)."""
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, dict):
        checkpoint = checkpoint.get("params_ema", checkpoint.get("params", checkpoint.get("state_dict", checkpoint)))
    if is_state_dict(checkpoint) and any(key.startswith("vqvae.") for key in checkpoint):
        checkpoint = {key.removeprefix("vqvae."): value for key, value in checkpoint.items() if key.startswith("vqvae.")}
    if not is_state_dict(checkpoint):
        raise WeightsError(f"{path}: no state dict in this checkpoint (expected 'params_ema', 'params', "
                           f"'state_dict' or a dict of tensors)")
    return checkpoint


def _levels(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children `prefix.0.`, `prefix.1.`, ... the weights hold."""
    count = 0
    while any(key.startswith(f"{prefix}.{count}.") for key in state):
        count += 1
    return count


def _attention_resolutions(state: dict[str, torch.Tensor], part: str) -> tuple[int, ...]:
    """The resolutions where the encoder (`down`) or decoder (`up`) levels of a RestoreFormer hold attention."""
    blocks = f"{part}.{'down' if part == 'encoder' else 'up'}"
    return tuple(sorted(RESTOREFORMER_RESOLUTION // 2 ** level for level in range(_levels(state, blocks))
                        if f"{blocks}.{level}.attn.0.q.weight" in state))


def is_restoreformer_plus_plus(state: dict[str, torch.Tensor]) -> bool:
    """RestoreFormer's layout, with decoder attention at more resolutions than the encoder's."""
    restoreformer = all(key in state for key in ("quantize.embedding.weight", "quant_conv.weight",
                                                  "encoder.conv_in.weight", "decoder.conv_out.weight"))
    return restoreformer and len(_attention_resolutions(state, "decoder")) > len(_attention_resolutions(state, "encoder"))


def build_restoreformer_plus_plus(state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """spandrel's RestoreFormer in RestoreFormer++'s configuration, sizes read from the weights as spandrel does."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    restoreformer_arch = importlib.import_module("spandrel.architectures.RestoreFormer.__arch.restoreformer_arch")
    channels = state["encoder.conv_in.weight"].shape[0]
    levels = _levels(state, "encoder.down")
    z_channels = state["quant_conv.weight"].shape[1]
    config = dict(
        n_embed=state["quantize.embedding.weight"].shape[0], embed_dim=state["quantize.embedding.weight"].shape[1],
        ch=channels, out_ch=state["decoder.conv_out.weight"].shape[0],
        ch_mult=tuple(state[f"encoder.down.{level}.block.0.conv2.weight"].shape[0] // channels
                      for level in range(levels)),
        num_res_blocks=_levels(state, "encoder.down.0.block"), in_channels=state["encoder.conv_in.weight"].shape[1],
        resolution=RESTOREFORMER_RESOLUTION, z_channels=z_channels,
        enable_mid="encoder.mid.block_1.norm1.weight" in state, head_size=RESTOREFORMER_PLUS_PLUS_HEADS)
    net = RestoreFormer(**config, attn_resolutions=_attention_resolutions(state, "encoder"),
                        double_z=state["encoder.conv_out.weight"].shape[0] == 2 * z_channels)
    # ++'s decoder also attends at 32 px (the authors' `ex_multi_scale_num=1`)
    net.decoder = restoreformer_arch.MultiHeadDecoderTransformer(
        **{key: config[key] for key in ("ch", "out_ch", "ch_mult", "num_res_blocks", "in_channels", "resolution",
                                        "z_channels", "enable_mid", "head_size")},
        attn_resolutions=_attention_resolutions(state, "decoder"))
    _load_weights(net, state, path, "RestoreFormer++")
    return net


def run_restoreformer(net: nn.Module, faces: torch.Tensor) -> torch.Tensor:
    """RestoreFormer(++) on faces in [-1, 1]. Where the encoder kept no attention feature for a decoder level
    (++'s 32-px level), the authors' decoder attends to that level's plain encoder feature; spandrel's
    decoder looks only for the former, so the latter is handed over under its name."""
    quant, _, _, features = net.encode(faces)
    for name in [name for name in features if name.startswith("block_") and not name.endswith("_atten")]:
        features.setdefault(f"{name}_atten", features[name])
    return net.decode(quant, features)


def _load_weights(net: nn.Module, state: dict[str, torch.Tensor], path: Path, label: str) -> None:
    """Every tensor of `net` from `state`, in its shape; tensors the net lacks are left out, as the authors'
    loader does (`strict=False`: their file may hold training-only ones)."""
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    reshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or reshaped:
        examples = "; ".join([f"missing {key}" for key in missing[:1]]
                             + [f"{key} is {list(state[key].shape)}" for key in reshaped[:1]])
        raise WeightsError(f"{path}: weights do not fit {label}: {len(missing)} missing, {len(reshaped)} of "
                           f"another shape (e.g. {examples})")
    net.load_state_dict({key: state[key] for key in expected}, strict=True)


# ----------------------------------------------------------------------------- the restorer
class ZooRestorer(Restorer):
    """Another paper's blind face restorer behind the common interface; references are ignored.

    Args:
        net: the network, on (B, 3, 512, 512) faces in [-1, 1].
        name: what reports and the benchmark call it ("codeformer", "restoreformer++", ...).
        forward: `forward(net, faces) -> restored`; by default `net(faces)[0]`.
        fidelity: CodeFormer's `w` in [0, 1] (how much of the input's features it fuses back); None for
            the others.
        device: "auto", "cpu", "cuda", ...
    """

    uses_references = False

    def __init__(self, net: nn.Module, name: str, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                 fidelity: float | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.name = name
        self.forward = forward or (lambda net, faces: net(faces)[0])
        self.fidelity = fidelity

    def restore_tensor(self, faces: torch.Tensor, reference_features: dict[str, torch.Tensor] | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        if self.fidelity is None:
            return self.forward(self.net, faces)
        return self.net(faces, weight=self.fidelity)[0]


def load_zoo_restorer(name_or_path: str | os.PathLike, weights: str | os.PathLike | None = None,
                      fidelity: float | None = None, device: str | torch.device = "auto") -> ZooRestorer:
    """`codeformer` / `restoreformer++` (from `weights`, else the registered release file, downloaded once),
    or a checkpoint file of a face restorer spandrel recognises. `fidelity`: CodeFormer's `w` (default 0.5)."""
    name = str(name_or_path)
    if fidelity is not None and not 0 <= fidelity <= 1:
        raise ConfigError(f"fidelity {fidelity}: must be between 0 and 1 (CodeFormer's w)")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: no such weights file (--weights of --model {name})")
    else:
        path = resolve_weights(name) if name in ZOO_MODELS else Path(name).expanduser()

    state = read_face_state_dict(path)
    if is_restoreformer_plus_plus(state):
        import_spandrel()
        net, architecture, forward = build_restoreformer_plus_plus(state, path), "restoreformer++", run_restoreformer
    else:
        net, architecture = _load_with_spandrel(import_spandrel(extra_arches=True), state, path)
        forward = None
    if name in ZOO_MODELS and architecture != name:
        raise WeightsError(f"{path}: a {architecture} checkpoint, not {name}")
    if architecture == "codeformer":
        fidelity = DEFAULT_FIDELITY if fidelity is None else fidelity
    elif fidelity is not None:
        raise ConfigError(f"fidelity applies to CodeFormer, not {architecture}")
    return ZooRestorer(net, architecture, forward, fidelity, device)


def _load_with_spandrel(spandrel: ModuleType, state: dict[str, torch.Tensor], path: Path) -> tuple[nn.Module, str]:
    """spandrel's own detection, over its main and extra architectures; a private registry, so spandrel's
    global one is left as it is."""
    import spandrel_extra_arches

    registry = spandrel.ArchRegistry()
    registry.add(*spandrel.MAIN_REGISTRY, *spandrel_extra_arches.EXTRA_REGISTRY)
    try:
        descriptor = registry.load(state)
    except Exception as err:  # unknown architecture, or weights that do not fit it (multi-line RuntimeError)
        first_line = str(err).strip().split("\n")[0][:120]
        raise WeightsError(f"{path}: not a face restorer spandrel recognises ({first_line})") from None
    if descriptor.purpose != "FaceSR":
        raise WeightsError(f"{path}: a {descriptor.architecture.name} checkpoint, not a face restorer")
    return descriptor.model, descriptor.architecture.name.lower()
