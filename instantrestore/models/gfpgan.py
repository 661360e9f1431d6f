"""GFP-GAN v1 "clean": a U-Net that removes degradations, feeding a pretrained StyleGAN2 prior.

Wang et al., "Towards Real-World Blind Face Restoration with Generative Facial Prior", CVPR 2021,
Fig. 2. The degradation-removal U-Net encodes the degraded face down to 4x4; its bottleneck is
mapped to the StyleGAN2 latent W+ (`final_linear`) and its decoder features, at every resolution,
are turned into a spatial scale and shift that modulate the StyleGAN2 features (channel-split SFT).
Parameter names follow the official v1.3/v1.4 checkpoints so they load with `strict=True`.

`save_pretrained` / `from_pretrained` (as InstantRestoreModel's) use a directory:

    config.json         {"restorer": "gfpgan", "model": {GFPGANv1Clean arguments}}
    model.safetensors   the state dict (float32, or float16 with `fp16=True`)

and `from_pretrained` also reads the official `GFPGANv1.3.pth` / `GFPGANv1.4.pth` (or the registered names
`gfpgan-v1.3`, `gfpgan-v1.4`) into the official 512 configuration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn
from torch.nn import functional as F

from instantrestore.errors import WeightsError
from instantrestore.imageio import write_bytes
from instantrestore.models.registry import load_gfpgan_state_dict, resolve_weights
from instantrestore.models.stylegan2 import LEAKY_SLOPE, StyleGAN2GeneratorClean, channel_table, log2_size

RESTORER_NAME = "gfpgan"  # config.json's "restorer"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# GFP-GAN v1.3 / v1.4 (options/train_gfpgan_v1.yml and the inference script of TencentARC/GFPGAN)
OFFICIAL_GFPGAN_CONFIG: dict[str, Any] = dict(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8,
                                              input_is_latent=True, different_w=True, narrow=1, sft_half=True)




class ResBlock(nn.Module):
    """U-Net residual block that halves (down) or doubles (up) the resolution, bilinearly.

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels.
        mode: "down" or "up".
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "down") -> None:
        super().__init__()
        if mode not in ("down", "up"):
            raise ValueError(f"mode must be 'down' or 'up', got {mode!r}")
        self.scale_factor = 0.5 if mode == "down" else 2.0
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LEAKY_SLOPE, inplace=True)
        out = F.interpolate(out, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), LEAKY_SLOPE, inplace=True)
        skip = self.skip(F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False))
        return out + skip


class StyleGAN2GeneratorCSFT(StyleGAN2GeneratorClean):
    """StyleGAN2 generator whose features are modulated by Channel-split Spatial Feature Transform.

    After the first (upsampling) conv of each level, features F become F * scale + shift, with
    scale and shift maps predicted from the U-Net decoder. With `sft_half`, only the second half
    of the channels is modulated and the first half passes through, keeping more of the prior.

    Args:
        out_size, num_style_feat, num_mlp, channel_multiplier, narrow: as StyleGAN2GeneratorClean.
        sft_half: modulate only half of the channels.
    """

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: float = 2, narrow: float = 1, sft_half: bool = False) -> None:
        super().__init__(out_size, num_style_feat=num_style_feat, num_mlp=num_mlp,
                         channel_multiplier=channel_multiplier, narrow=narrow)
        self.sft_half = sft_half

    def modulate_features(self, features: torch.Tensor, level: int,
                          conditions: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        scale, shift = conditions[level]
        if not self.sft_half:
            return features * scale + shift
        kept, modulated = torch.split(features, features.shape[1] // 2, dim=1)
        return torch.cat([kept, modulated * scale + shift], dim=1)


class GFPGANv1Clean(nn.Module):
    """GFP-GAN: degradation-removal U-Net + StyleGAN2 facial prior joined by channel-split SFT.

    Input and output images are (B, 3, out_size, out_size) in [-1, 1].

    Args:
        out_size: face size (power of two); 512 for the official models.
        num_style_feat: length of the StyleGAN2 latent w.
        channel_multiplier: StyleGAN2 channel multiplier (2 for v1.3/v1.4).
        decoder_load_path: a pretrained StyleGAN2 checkpoint to initialise the decoder with.
        fix_decoder: freeze the StyleGAN2 decoder (requires_grad=False), as in GFP-GAN training.
        num_mlp: layers of the (unused when `input_is_latent`) StyleGAN2 mapping network.
        input_is_latent: the predicted code is already w (skips the mapping network).
        different_w: predict one w per StyleGAN2 layer (W+), not one shared w.
        narrow: scales all channels; the U-Net uses half the StyleGAN2 width.
        sft_half: apply SFT to half of the StyleGAN2 channels.
    """

    def __init__(self, out_size: int = 512, num_style_feat: int = 512, channel_multiplier: float = 2,
                 decoder_load_path: str | os.PathLike | None = None, fix_decoder: bool = True, num_mlp: int = 8,
                 input_is_latent: bool = False, different_w: bool = False, narrow: float = 1,
                 sft_half: bool = False) -> None:
        super().__init__()
        # what save_pretrained writes and from_pretrained rebuilds (the load path and freezing are training choices)
        self.config = dict(out_size=out_size, num_style_feat=num_style_feat, channel_multiplier=channel_multiplier,
                           num_mlp=num_mlp, input_is_latent=input_is_latent, different_w=different_w,
                           narrow=narrow, sft_half=sft_half)
        self.out_size = out_size
        self.num_style_feat = num_style_feat
        self.input_is_latent = input_is_latent
        self.different_w = different_w
        self.log_size = log2_size(out_size)
        channels = channel_table(channel_multiplier, narrow * 0.5)  # the U-Net is half as wide as StyleGAN2
        down_sizes = [2 ** level for level in range(self.log_size, 2, -1)]  # out_size .. 8
        up_sizes = down_sizes[::-1]                                         # 8 .. out_size

        # degradation-removal U-Net: encoder (downsampling ResBlocks to 4x4)
        self.conv_body_first = nn.Conv2d(3, channels[out_size], 1)
        self.conv_body_down = nn.ModuleList(ResBlock(channels[size], channels[size // 2], "down")
                                            for size in down_sizes)
        self.final_conv = nn.Conv2d(channels[4], channels[4], 3, 1, 1)
        # U-Net decoder (upsampling ResBlocks), with an RGB head per level for the multi-scale restoration loss
        self.conv_body_up = nn.ModuleList(ResBlock(channels[size // 2], channels[size], "up") for size in up_sizes)
        self.toRGB = nn.ModuleList(nn.Conv2d(channels[size], 3, 1) for size in up_sizes)

        # latent code: the 4x4 bottleneck -> w (or W+: one w per StyleGAN2 layer)
        num_latent = 2 * self.log_size - 2
        self.final_linear = nn.Linear(channels[4] * 4 * 4, (num_latent if different_w else 1) * num_style_feat)

        # the generative facial prior
        self.stylegan_decoder = StyleGAN2GeneratorCSFT(out_size, num_style_feat=num_style_feat, num_mlp=num_mlp,
                                                       channel_multiplier=channel_multiplier, narrow=narrow,
                                                       sft_half=sft_half)
        if decoder_load_path:
            self.stylegan_decoder.load_state_dict(load_gfpgan_state_dict(decoder_load_path))
        if fix_decoder:
            self.stylegan_decoder.requires_grad_(False)

        # SFT heads: U-Net decoder features -> spatial scale and shift for each StyleGAN2 level
        def sft_head(size: int) -> nn.Sequential:
            width = channels[size]
            return nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
                                 nn.Conv2d(width, width if sft_half else 2 * width, 3, 1, 1))

        self.condition_scale = nn.ModuleList(sft_head(size) for size in up_sizes)
        self.condition_shift = nn.ModuleList(sft_head(size) for size in up_sizes)

    # ----------------------------------------------------------------- saving and loading
    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, **arch_overrides: Any) -> "GFPGANv1Clean":
        """An official checkpoint (file, or registered name `gfpgan-v1.4`) or a `save_pretrained` directory,
        on the CPU. `arch_overrides` replace arguments of the official config or of `config.json`."""
        path = resolve_weights(path_or_name)
        if path.is_dir():
            config, weights_path = _read_config(path / CONFIG_NAME), path / WEIGHTS_NAME
        else:
            config, weights_path = dict(OFFICIAL_GFPGAN_CONFIG), path
        config.update(arch_overrides)
        state = load_gfpgan_state_dict(weights_path)
        model = cls(**config)
        _check_fits(model, state, weights_path)
        model.load_state_dict(state, strict=True)  # copies into the model's float32 tensors (fp16 files too)
        return model

    def save_pretrained(self, directory: str | os.PathLike, fp16: bool = False) -> Path:
        """Write `config.json` and `model.safetensors` (half precision with `fp16`) into `directory`; the
        model itself is left where and as it is (it may be in training)."""
        directory = Path(directory)
        dtype = torch.float16 if fp16 else torch.float32
        state = {key: value.detach().to("cpu", dtype).contiguous() for key, value in self.state_dict().items()}
        write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        config = {"restorer": RESTORER_NAME, "model": self.config}
        write_bytes(directory / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
        return directory

    def forward(self, x: torch.Tensor, return_rgb: bool = False, randomize_noise: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Degraded faces in [-1, 1] -> (restored faces, U-Net RGB outputs 8..out_size if `return_rgb`).

        With `randomize_noise=False` the stored noise maps are used and the output is deterministic;
        otherwise fresh noise is drawn (from `generator` when given).
        """
        # encoder
        feat = F.leaky_relu(self.conv_body_first(x), LEAKY_SLOPE, inplace=True)
        unet_skips = []
        for down in self.conv_body_down:
            feat = down(feat)
            unet_skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAKY_SLOPE, inplace=True)

        # style code
        style_code = self.final_linear(feat.flatten(1))
        if self.different_w:
            style_code = style_code.view(style_code.shape[0], -1, self.num_style_feat)

        # decode: U-Net decoder levels, each giving the SFT conditions (and an RGB image) at its resolution
        conditions, out_rgbs = [], []
        for up, scale, shift, to_rgb, skip in zip(self.conv_body_up, self.condition_scale, self.condition_shift,
                                                  self.toRGB, reversed(unet_skips)):
            feat = up(feat + skip)
            conditions.append((scale(feat), shift(feat)))
            if return_rgb:
                out_rgbs.append(to_rgb(feat))

        # decode: StyleGAN2 prior modulated by the conditions
        image = self.stylegan_decoder(style_code, conditions, input_is_latent=self.input_is_latent,
                                      randomize_noise=randomize_noise, generator=generator)
        return image, out_rgbs


def _read_config(path: Path) -> dict[str, Any]:
    """GFPGANv1Clean arguments from a model directory's `config.json`."""
    if not path.is_file():
        raise WeightsError(f"{path}: missing; a GFP-GAN model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path}: not a readable JSON config ({err})") from None
    if not (isinstance(config, dict) and config.get("restorer") == RESTORER_NAME
            and isinstance(config.get("model"), dict)):
        raise WeightsError(f"{path}: not a GFP-GAN config (expected \"restorer\": \"gfpgan\" and a \"model\" section)")
    unknown = sorted(set(config["model"]) - set(OFFICIAL_GFPGAN_CONFIG))
    if unknown:
        raise WeightsError(f"{path}: unknown GFPGANv1Clean arguments {unknown}")
    return config["model"]


def _check_fits(model: GFPGANv1Clean, state: dict[str, torch.Tensor], path: Path) -> None:
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
