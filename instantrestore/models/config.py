"""`InstantRestoreConfig`: what `InstantRestoreModel` is built from and saved with, read from the `model`
section of a model YAML (`configs/instantrestore_*.yaml`) by `instantrestore.config`, the one loader.

How it is trained (losses, optimiser, data) lives in the training recipes (`configs/train_*.yaml`), and
nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from instantrestore.config import load_dataclass, read_yaml
from instantrestore.errors import ConfigError

DEFAULT_PROMPT = "A high-quality photo of a person; professional, 8k"

# The modules the authors put LoRA on (pix2pix-turbo style): attention projections, every conv of the
# resnets and resamplers, the transformer's in/out projections and feed-forward layers.
UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                     "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_LORA_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0"]

# written by earlier versions (config.json of shipped and converted checkpoints), read by nothing now
RETIRED_KEYS = ("num_refs",)

# SD-Turbo's noise schedule (its scheduler_config.json), for the DDPMScheduler that adds noise and turns
# the predicted noise into x0. Kept in the recipe so a run never needs the hub for it.
SD_TURBO_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                      "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}


@dataclass
class InstantRestoreConfig:
    """Everything `InstantRestoreModel` is built from; saved next to its weights (config.json's `model`).

    pretrained:      hub id or local directory holding `unet/` and `vae/` (diffusers layout; plus
                     `text_encoder/` and `tokenizer/` when prompt_encoder is "clip"). None: build the
                     compact UNet/VAE from `unet`/`vae` below with random weights (seed `init_seed`).
    vae_pretrained:  a separate VAE (hub id or directory with the VAE at its root), e.g.
                     stabilityai/sd-vae-ft-mse as the authors use; None: `pretrained`/vae.
    embed_base:      copy the base UNet/VAE into every saved checkpoint (compact: a few MB; keeps a
                     checkpoint self-contained). False at full scale, where the checkpoint names `pretrained`.
    prompt_encoder:  "clip": encode `prompt` once with `pretrained`/text_encoder; "random": a fixed Gaussian
                     embedding (prompt_tokens x cross_attention_dim, seed init_seed) standing in for the
                     prompt at compact scale. Either way the embedding is stored with the weights.
    freeu:           (s1, s2, b1, b2) for `unet.enable_freeu` on both UNets (authors: 0.9, 0.2, 1.4, 1.6), or None.
    train_timesteps: the noise levels a training forward draws from; inference_timestep at test time;
                     reference_timestep the (tiny) noise level of the reference branch.
    shared_attention: reference K/V feed the up-block self-attention; False = blind one-step restorer.
    train_input:     the input's own K/V take part next to the references' (authors' recipe: False).
    adain:           renormalise each reference's values to the per-channel mean/std of the input's values.
    reference_locality: sigma (a fraction of the face's width) of a Gaussian prior that makes each query look
                     near its own place in the (aligned) references; None: no prior (the authors').
    vae_skip:        zero-initialised 1x1 convolutions carry the restoring VAE encoder's features of the
                     degraded face to its decoder at every resolution (as pix2pix-turbo's single-step
                     model does). The authors' recipe has none.
    codec:           how faces become the UNet's input and back: "vae" (AutoencoderKL, SD's latent) or
                     "pixel_unshuffle" (lossless space-to-depth by `codec_factor`, no weights; as DeepFloyd
                     IF's super-resolution UNets run on pixels), for a compact scale without a bottleneck.
    input_noise:     noise the input at its timestep and the references at reference_timestep (SD-Turbo's
                     setting); False feeds them clean, and the timestep only conditions the UNet.
    prediction:      "epsilon": the UNet predicts noise, turned into x0 by the scheduler; "residual":
                     x0 = input + UNet output, with the output convolution of a freshly built UNet
                     zero-initialised, so an untrained restorer returns its input.
    finetune:        "lora" (LoRA on UNet and VAE, the authors' choice on a strong pretrained base) or
                     "full" (the whole restoring UNet is trained; the base only seeds it).
    shared_layers:   name prefixes of the up-block self-attention layers that share attention
                     (e.g. ["up_blocks.1"]); None = all of them.
    round_base_weights_to: a dtype ("bfloat16"): the base weights are rounded to it after loading, as the
                     authors' loader does when it writes their bf16 checkpoint over the fp32 base. None: as loaded.
    inference_autocast: a dtype ("float16"): a restorer on CUDA runs under torch.autocast of it, as the
                     authors' inference does. None: full precision.
    """

    face_size: int = 512
    pretrained: str | None = None
    vae_pretrained: str | None = None
    embed_base: bool = False
    unet: dict[str, Any] = field(default_factory=dict)
    vae: dict[str, Any] = field(default_factory=dict)
    init_seed: int = 0
    prompt: str = DEFAULT_PROMPT
    prompt_encoder: str = "clip"
    prompt_tokens: int = 77
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD_TURBO_SCHEDULER))
    freeu: list[float] | None = None
    train_timesteps: list[int] = field(default_factory=lambda: [249, 499, 749])
    inference_timestep: int = 249
    reference_timestep: int = 1
    shared_attention: bool = True
    train_input: bool = False
    adain: bool = True
    reference_locality: float | None = None
    unet_lora_rank: int = 32
    unet_lora_alpha: int = 16
    unet_lora_targets: list[str] = field(default_factory=lambda: list(UNET_LORA_TARGETS))
    vae_lora_rank: int = 32
    vae_lora_alpha: int = 16
    vae_lora_targets: list[str] = field(default_factory=lambda: list(VAE_LORA_TARGETS))
    train_conv_in: bool = True
    vae_skip: bool = False
    codec: str = "vae"
    codec_factor: int = 8
    input_noise: bool = True
    prediction: str = "epsilon"
    finetune: str = "lora"
    shared_layers: list[str] | None = None
    round_base_weights_to: str | None = None
    inference_autocast: str | None = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Sequence[str] = ()) -> "InstantRestoreConfig":
        """The `model` section of a model YAML; overrides are dotted from the file's top (`model.adain=false`)."""
        return cls.from_dict(read_yaml(path, overrides).get("model"), str(path))

    @classmethod
    def from_dict(cls, values: Any, source: str) -> "InstantRestoreConfig":
        """From a `model` mapping (a YAML section, a checkpoint's config.json); keys of older versions that
        nothing reads any more are dropped."""
        if isinstance(values, dict):
            values = {key: value for key, value in values.items() if key not in RETIRED_KEYS}
        return load_dataclass(cls, values, source, "model.")

    def __post_init__(self) -> None:
        if self.prompt_encoder not in ("clip", "random"):
            raise ConfigError(f"model.prompt_encoder must be 'clip' or 'random', not {self.prompt_encoder!r}")
        for name, value, choices in (("codec", self.codec, ("vae", "pixel_unshuffle")),
                                     ("prediction", self.prediction, ("epsilon", "residual")),
                                     ("finetune", self.finetune, ("lora", "full"))):
            if value not in choices:
                raise ConfigError(f"model.{name} must be one of {', '.join(choices)}, not {value!r}")
        needs_vae = self.codec == "vae"
        if self.pretrained is None and not (self.unet and (self.vae or not needs_vae)):
            raise ConfigError("model: give either `pretrained` or the `unet` (and, with codec vae, `vae`) "
                              "architecture settings")
        if self.vae_skip and not needs_vae:
            raise ConfigError("model.vae_skip needs codec vae")
        if self.pretrained is None and self.prompt_encoder == "clip":
            raise ConfigError("model.prompt_encoder 'clip' needs `pretrained` (a directory with text_encoder/)")
        if self.freeu is not None and len(self.freeu) != 4:
            raise ConfigError("model.freeu must be [s1, s2, b1, b2] or null")
        for name in ("round_base_weights_to", "inference_autocast"):
            if getattr(self, name) not in (None, "bfloat16", "float16"):
                raise ConfigError(f"model.{name} must be 'bfloat16', 'float16' or null")
