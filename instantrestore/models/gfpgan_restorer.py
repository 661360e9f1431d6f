"""GFP-GAN as a `Restorer`: the blind (reference-free) baseline of the comparison.

Official checkpoints (`GFPGANv1.3.pth`, `GFPGANv1.4.pth`, or the registered names `gfpgan-v1.3`,
`gfpgan-v1.4`) load into the official 512 configuration. Our own models are directories:

    config.json         {"restorer": "gfpgan", "model": {GFPGANv1Clean arguments}}
    model.safetensors   the state dict (float32, or float16 with `fp16=True`)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from instantrestore.errors import WeightsError
from instantrestore.imageio import write_bytes
from instantrestore.models.base import Restorer
from instantrestore.models.gfpgan import GFPGANv1Clean
from instantrestore.models.registry import load_gfpgan_state_dict, resolve_weights
from instantrestore.references import ReferenceCache

# GFP-GAN v1.3 / v1.4 (options/train_gfpgan_v1.yml and the inference script of TencentARC/GFPGAN)
OFFICIAL_GFPGAN_CONFIG: dict[str, Any] = dict(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8,
                                              input_is_latent=True, different_w=True, narrow=1, sft_half=True)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def load_gfpgan(path_or_name: str | os.PathLike, **arch_overrides: Any) -> GFPGANv1Clean:
    """A GFPGANv1Clean (on the CPU) from an official checkpoint, a registered name or a `save_gfpgan` directory.

    `arch_overrides` replace GFPGANv1Clean arguments of the official config or of `config.json`.
    """
    path = resolve_weights(path_or_name)
    if path.is_dir():
        config, weights_path = read_config(path / CONFIG_NAME), path / WEIGHTS_NAME
    else:
        config, weights_path = dict(OFFICIAL_GFPGAN_CONFIG), path
    config.update(arch_overrides)
    state = load_gfpgan_state_dict(weights_path)
    model = GFPGANv1Clean(**config)
    check_fits(model, state, weights_path)
    model.load_state_dict(state, strict=True)  # copies into the model's float32 tensors (fp16 files too)
    return model


def save_gfpgan(model: GFPGANv1Clean, directory: str | os.PathLike, fp16: bool = False) -> Path:
    """Write `config.json` and `model.safetensors` into `directory`; the model itself is left as it is."""
    directory = Path(directory)
    dtype = torch.float16 if fp16 else torch.float32
    state = {key: value.detach().to("cpu", dtype).contiguous() for key, value in model.state_dict().items()}
    write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    config = {"restorer": GFPGANRestorer.name, "model": model.config}
    write_bytes(directory / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def read_config(path: Path) -> dict[str, Any]:
    """GFPGANv1Clean arguments from a model directory's `config.json`."""
    if not path.is_file():
        raise WeightsError(f"{path}: missing; a GFP-GAN model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: not a readable JSON config ({err})") from None
    if not (isinstance(config, dict) and config.get("restorer") == GFPGANRestorer.name
            and isinstance(config.get("model"), dict)):
        raise WeightsError(f"{path}: not a GFP-GAN config (expected \"restorer\": \"gfpgan\" and a \"model\" section)")
    unknown = sorted(set(config["model"]) - set(OFFICIAL_GFPGAN_CONFIG))
    if unknown:
        raise WeightsError(f"{path}: unknown GFPGANv1Clean arguments {unknown}")
    return config["model"]


def check_fits(model: GFPGANv1Clean, state: dict[str, torch.Tensor], path: Path) -> None:
    """One line naming the first mismatches, instead of load_state_dict's multi-line RuntimeError."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    reshaped = [f"{key} is {list(found[key])}, expected {list(shape)}"
                for key, shape in expected.items() if key in found and found[key] != shape]
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    if reshaped or missing or unexpected:
        examples = "; ".join(reshaped[:2] + [f"missing {key}" for key in missing[:1]]
                             + [f"unexpected {key}" for key in unexpected[:1]])
        raise WeightsError(f"{path}: weights do not fit GFPGANv1Clean({model.config}): {len(reshaped)} tensors of "
                           f"another shape, {len(missing)} missing, {len(unexpected)} unexpected (e.g. {examples})")


class GFPGANRestorer(Restorer):
    """Restores aligned faces with a GFPGANv1Clean; references are ignored.

    Args:
        model: the network (moved to `device` and put in eval mode; to save a model that is being
            trained, use `save_gfpgan`, which leaves it where it is).
        device: "auto", "cpu", "cuda", ...
        randomize_noise: draw fresh StyleGAN2 noise (seeded by `seed`) instead of the stored maps.
        **restorer_options: passed to `Restorer` (identity_model_path, detector).
    """

    name = "gfpgan"
    uses_references = False

    def __init__(self, model: GFPGANv1Clean, device: str | torch.device = "auto", randomize_noise: bool = False,
                 **restorer_options: Any) -> None:
        super().__init__(device, **restorer_options)
        self.model = model.to(self.device).eval()
        self.face_size = model.out_size
        self.randomize_noise = randomize_noise

    def restore_tensor(self, faces: torch.Tensor, refs: ReferenceCache | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        image, _ = self.model(faces * 2 - 1, randomize_noise=self.randomize_noise, generator=generator)
        return ((image + 1) / 2).clamp(0, 1)

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, device: str | torch.device = "auto",
                        randomize_noise: bool = False, identity_model_path: str | None = None,
                        detector: str = "default", **arch_overrides: Any) -> "GFPGANRestorer":
        """Load an official checkpoint (file or registered name) or a `save_pretrained` directory."""
        return cls(load_gfpgan(path_or_name, **arch_overrides), device, randomize_noise=randomize_noise,
                   identity_model_path=identity_model_path, detector=detector)

    def save_pretrained(self, directory: str | os.PathLike, fp16: bool = False) -> Path:
        """Write `config.json` and `model.safetensors` (half-precision weights if `fp16`) into `directory`."""
        return save_gfpgan(self.model, directory, fp16)
