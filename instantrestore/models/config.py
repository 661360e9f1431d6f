"""Typed configs read from YAML: `InstantRestoreConfig.from_yaml(path, ["model.adain=false", ...])`.

The YAML holds one section, `model`: what `InstantRestoreModel` is built from and saved with. How it is
trained (losses, optimiser, data) lives in the training recipes (`configs/train_*.yaml`), and nowhere else.
`load_dataclass` is the one generic piece: any dataclass tree can be filled from a mapping the same way, with
unknown keys and wrong types refused as one-line `ConfigError`s naming the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from instantrestore.errors import ConfigError

T = TypeVar("T")

DEFAULT_PROMPT = "A high-quality photo of a person; professional, 8k"

# The modules the authors put LoRA on (pix2pix-turbo style): attention projections, every conv of the
# resnets and resamplers, the transformer's in/out projections and feed-forward layers.
UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
                     "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj"]
VAE_LORA_TARGETS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0"]

# SD-Turbo's noise schedule (its scheduler_config.json), for the DDPMScheduler that adds noise and turns
# the predicted noise into x0. Kept in the recipe so a run never needs the hub for it.
SD_TURBO_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                      "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}


@dataclass
class ModelConfig:
    """Everything `InstantRestoreModel` is built from; saved next to its weights.

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
    num_refs:        references per face in training (and the most a restorer is trained for).
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
    num_refs: int = 4
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


@dataclass
class InstantRestoreConfig:
    model: ModelConfig

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "InstantRestoreConfig":
        return load_yaml(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_yaml(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Read a YAML file into dataclass `cls`, after applying dotted `key=value` overrides (values parsed as YAML)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    for override in overrides or []:
        apply_override(raw, override)
    try:
        return load_dataclass(cls, raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`a.b.c=value` sets raw["a"]["b"]["c"] = yaml.safe_load(value)."""
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not key=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {override!r}: value is not valid YAML") from None


def load_dataclass(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; nested dataclass fields recurse. Unknown keys are errors."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown setting {where + unknown[0]!r} (known: {', '.join(sorted(names))})")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = load_dataclass(hint, value, f"{where}{name}.")
        else:
            values[name] = _check_type(value, hint, where + name)
    try:
        return cls(**values)
    except TypeError as err:  # a required field missing
        raise ConfigError(f"{where or 'config'}: {err}") from None


def _check_type(value: Any, hint: Any, name: str) -> Any:
    """Accept `value` if it fits `hint` (ints for floats too); one-line ConfigError otherwise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: {value!r} does not fit {hint}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is Any:
        return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(hint) or (Any,)
            return [_check_type(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise ConfigError(f"{name}: {value!r} is not a {getattr(hint, '__name__', hint)}")
