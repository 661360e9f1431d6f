"""`load_restorer`: one entry point from a name or a path to a ready pipeline (faces + identity + restorer).

Names are looked up in one table, `MODELS` (name -> how it loads, which options it takes); a path is a
`save_pretrained` directory or a release file, told apart by what the file holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from instantrestore.errors import ConfigError, WeightsError
from instantrestore.models.base import Restorer
from instantrestore.models.registry import PAPER_ALIASES, PAPER_CHECKPOINTS
from instantrestore.models.upsampler import DEFAULT_TILE, BackgroundUpsampler
from instantrestore.models.zoo import ZOO_MODELS, load_zoo_restorer, read_face_state_dict
from instantrestore.pipeline import FaceRestorationPipeline

# Weights that ship inside the package (trained on this project's data; see MODEL_CARD.md).
PACKAGED_WEIGHTS = Path(__file__).parent / "weights"
PACKAGED = {"default": "instantrestore_compact", "instantrestore": "instantrestore_compact",
            "gfpgan": "gfpgan_compact"}
OFFICIAL_GFPGAN = {"gfpgan-v1.3": "GFPGANv1.3", "gfpgan-v1.4": "GFPGANv1.4"}
CHECKPOINT_SUFFIXES = (".pth", ".ckpt")
Device = str | torch.device


def packaged_model_available(name: str) -> bool:
    return name in PACKAGED and (PACKAGED_WEIGHTS / PACKAGED[name] / "config.json").is_file()


def _load_directory(path: Path, device: Device) -> Restorer:
    """A directory written by `save_pretrained`: its config.json says which restorer it holds."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise WeightsError(f"{path}: not a model directory (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{config_file}: unreadable model config ({err})") from None
    kind = config.get("restorer")
    if kind == "gfpgan":
        from instantrestore.models.gfpgan_restorer import GFPGANRestorer

        restorer = GFPGANRestorer.from_pretrained(path, device=device)
    elif kind == "instantrestore":
        from instantrestore.models.ir_restorer import InstantRestoreRestorer

        restorer = InstantRestoreRestorer.from_pretrained(path, device=device)
    else:
        raise WeightsError(f"{config_file}: unknown restorer {kind!r} (expected 'gfpgan' or 'instantrestore')")
    restorer.identity_loss_model = config.get("identity_loss_model")  # written by the trainer
    return restorer


def load_restorer(name_or_path: str = "default", device: str | torch.device = "auto",
                  weights: str | None = None, bg_upsampler: str | BackgroundUpsampler = "auto",
                  bg_tile: int = DEFAULT_TILE, fidelity: float | None = None, detector: str = "default",
                  identity_model_path: str | None = None, detail_strength: float = 1.0) -> FaceRestorationPipeline:
    """A restorer by name (`default`, `instantrestore`, `gfpgan`, `gfpgan-v1.3`, `gfpgan-v1.4`, `bicubic`,
    `codeformer`, `restoreformer++`, `instantrestore-paper` or its hub id `hwdz15508/InstantRestore`, the
    ablations `instantrestore-paper-*`) or by path (a `save_pretrained` directory, an official GFP-GAN `.pth`,
    or with the `zoo` extra a CodeFormer / RestoreFormer++ release file). Named release files and the
    authors' checkpoints are downloaded (and converted) once, into `$INSTANTRESTORE_HOME/weights`.

    `weights` overrides the file a named model loads (e.g. `gfpgan` with the official GFPGANv1.4.pth,
    `codeformer` with codeformer.pth). `fidelity` is CodeFormer's w in [0, 1] (default 0.5; 1 keeps
    closer to the input). CodeFormer is non-commercial (S-Lab License 1.0).
    `bg_upsampler` upscales the background when `restore(..., upscale=s)` has s > 1: "auto" (Lanczos, which
    measured better than the packaged nets), "none" (Lanczos), the packaged `esrgan-x2`/`-x4`,
    `realesrgan-x2`/`-x4`, a path, or a BackgroundUpsampler;
    it runs in tiles of `bg_tile` pixels (0: whole photos at once). It is loaded on first use.
    `detector` and `identity_model_path` (an ArcFace ONNX file) choose the pipeline's face detector and
    identity model; both load on first use. `detail_strength` weighs the reference-detail stage after the
    restorer (0: the restorer's output alone; 1: full detail from the references and from large inputs).
    """
    if not 0 <= detail_strength <= 1:
        raise ConfigError(f"detail strength must be in [0, 1], got {detail_strength}")
    name = str(name_or_path)
    model = MODELS.get(name) or _model_at_path(name)
    if weights is not None and not model.takes_weights:
        raise WeightsError(f"--weights applies to gfpgan, codeformer and restoreformer++, not {name!r}")
    if fidelity is not None and not model.takes_fidelity:
        raise ConfigError(f"fidelity applies to codeformer, not {name!r}")
    restorer = model.load(name, device, weights, fidelity)
    return FaceRestorationPipeline(restorer, detector=detector, identity_model_path=identity_model_path,
                                   bg_upsampler=bg_upsampler, bg_tile=bg_tile, detail_strength=detail_strength)


@dataclass(frozen=True)
class ModelLoader:
    """How one kind of model loads: `load(name_or_path, device, weights, fidelity)`, and whether it takes
    `weights` (a file replacing its own) and `fidelity` (CodeFormer's w)."""
    load: Callable[[str, Device, str | None, float | None], Restorer]
    takes_weights: bool = False
    takes_fidelity: bool = False


def _load_packaged(name: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    if weights is not None:  # `gfpgan` with an official file: the architecture is the same
        return _gfpgan_from_file(weights, device)
    path = PACKAGED_WEIGHTS / PACKAGED[name]
    if not packaged_model_available(name):
        raise WeightsError(f"model {name!r}: its packaged weights ({path}) are not in this build; "
                           f"train them with `instantrestore train` or pass a model directory")
    return _load_directory(path, device)


def _load_official_gfpgan(name: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    return _gfpgan_from_file(weights or OFFICIAL_GFPGAN[name], device)


def _load_gfpgan_path(path: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    return _gfpgan_from_file(path, device)


def _gfpgan_from_file(source: str, device: Device) -> Restorer:
    """An official GFP-GAN `.pth`, or its registered name (downloaded once)."""
    from instantrestore.models.gfpgan_restorer import GFPGANRestorer

    return GFPGANRestorer.from_pretrained(source, device=device)


def _load_bicubic(name: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    from instantrestore.models.classical import BicubicRestorer

    return BicubicRestorer(device=device)


def _load_zoo(name_or_path: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    return load_zoo_restorer(name_or_path, weights, fidelity, device=device)


def _load_paper(name: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    """The authors' checkpoint, downloaded and converted once into the weights cache."""
    from instantrestore.models.authors_checkpoint import paper_model_directory

    return _load_directory(paper_model_directory(name), device)


def _load_model_directory(path: str, device: Device, weights: str | None, fidelity: float | None) -> Restorer:
    return _load_directory(Path(path), device)


# Every model name, and how it loads.
MODELS: dict[str, ModelLoader] = {
    "default": ModelLoader(_load_packaged),
    "instantrestore": ModelLoader(_load_packaged),
    "gfpgan": ModelLoader(_load_packaged, takes_weights=True),
    **{name: ModelLoader(_load_official_gfpgan, takes_weights=True) for name in OFFICIAL_GFPGAN},
    "bicubic": ModelLoader(_load_bicubic),
    **{name: ModelLoader(_load_zoo, takes_weights=True, takes_fidelity=True) for name in ZOO_MODELS},
    **{name: ModelLoader(_load_paper) for name in (*PAPER_CHECKPOINTS, *PAPER_ALIASES)},
}
NAMES = [name for name in MODELS if name not in PAPER_ALIASES]


def _model_at_path(name_or_path: str) -> ModelLoader:
    """A `save_pretrained` directory, an official GFP-GAN `.pth`, or another paper's release file (`.ckpt`, or
    a `.pth` without GFP-GAN's layout)."""
    path = Path(name_or_path)
    if path.is_dir():
        return ModelLoader(_load_model_directory)
    if path.suffix in CHECKPOINT_SUFFIXES and path.is_file():
        if path.suffix == ".ckpt" or "conv_body_first.weight" not in read_face_state_dict(path):  # GFP-GAN's first conv
            return ModelLoader(_load_zoo, takes_fidelity=True)
        return ModelLoader(_load_gfpgan_path)
    if path.suffix == ".pth":  # a release file's name ("GFPGANv1.4.pth") is downloaded; else the error names the path
        return ModelLoader(_load_gfpgan_path)
    raise WeightsError(f"{name_or_path}: not a model name ({', '.join(NAMES)}) nor a model directory or .pth file")
