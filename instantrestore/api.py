"""`load_restorer`: one entry point from a name or a path to a ready pipeline (faces + identity + restorer)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from instantrestore.errors import ConfigError, WeightsError
from instantrestore.models.base import Restorer
from instantrestore.models.upsampler import DEFAULT_TILE, BackgroundUpsampler
from instantrestore.pipeline import FaceRestorationPipeline
from instantrestore.models.registry import PAPER_CHECKPOINTS, find_paper_checkpoint
from instantrestore.models.zoo import ZOO_MODELS, load_zoo_restorer, read_face_state_dict

# Weights that ship inside the package (trained on this project's data; see MODEL_CARD.md).
PACKAGED_WEIGHTS = Path(__file__).parent / "weights"
PACKAGED = {"default": "instantrestore_compact", "instantrestore": "instantrestore_compact",
            "gfpgan": "gfpgan_compact"}
OFFICIAL_GFPGAN = {"gfpgan-v1.3": "GFPGANv1.3", "gfpgan-v1.4": "GFPGANv1.4"}
NAMES = ["default", "instantrestore", "gfpgan", "gfpgan-v1.3", "gfpgan-v1.4", "bicubic", *ZOO_MODELS, *PAPER_CHECKPOINTS]
CHECKPOINT_SUFFIXES = (".pth", ".ckpt")


def packaged_model_available(name: str) -> bool:
    return name in PACKAGED and (PACKAGED_WEIGHTS / PACKAGED[name] / "config.json").is_file()


def _load_directory(path: Path, device: str | torch.device) -> Restorer:
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
    if name_or_path in ZOO_MODELS or _is_zoo_checkpoint(name_or_path):
        restorer = load_zoo_restorer(name_or_path, weights, fidelity, device=device)
    elif fidelity is not None:
        raise ConfigError(f"fidelity applies to codeformer, not {name_or_path!r}")
    else:
        restorer = _build_restorer(name_or_path, device, weights)
    return FaceRestorationPipeline(restorer, detector=detector, identity_model_path=identity_model_path,
                                   bg_upsampler=bg_upsampler, bg_tile=bg_tile, detail_strength=detail_strength)


def _is_zoo_checkpoint(name_or_path: str) -> bool:
    """A release file of another paper's restorer: `.ckpt`, or a `.pth` without GFP-GAN's layout."""
    path = Path(name_or_path)
    if path.suffix not in CHECKPOINT_SUFFIXES or not path.is_file():
        return False
    if path.suffix == ".ckpt":
        return True
    return "conv_body_first.weight" not in read_face_state_dict(path)  # GFP-GAN's first U-Net conv


def _build_restorer(name_or_path: str, device: str | torch.device, weights: str | None) -> Restorer:
    if name_or_path == "bicubic":
        from instantrestore.models.classical import BicubicRestorer

        return BicubicRestorer(device=device)
    if weights is not None or name_or_path in OFFICIAL_GFPGAN or str(name_or_path).endswith(".pth"):
        from instantrestore.models.gfpgan_restorer import GFPGANRestorer

        source = weights or OFFICIAL_GFPGAN.get(name_or_path, name_or_path)
        if name_or_path not in ("gfpgan", *OFFICIAL_GFPGAN) and not str(name_or_path).endswith(".pth"):
            raise WeightsError(f"--weights applies to gfpgan, codeformer and restoreformer++, not {name_or_path!r}")
        return GFPGANRestorer.from_pretrained(source, device=device)
    if find_paper_checkpoint(str(name_or_path)) is not None:
        from instantrestore.models.authors_checkpoint import paper_model_directory

        return _load_directory(paper_model_directory(str(name_or_path)), device)
    if name_or_path in PACKAGED:
        path = PACKAGED_WEIGHTS / PACKAGED[name_or_path]
        if not packaged_model_available(name_or_path):
            raise WeightsError(
                f"model {name_or_path!r}: its packaged weights ({path}) are not in this build; "
                f"train them with `instantrestore train` or pass a model directory")
        return _load_directory(path, device)
    path = Path(name_or_path)
    if path.is_dir():
        return _load_directory(path, device)
    raise WeightsError(f"{name_or_path}: not a model name ({', '.join(NAMES)}) nor a model directory or .pth file")
