"""Training configuration: typed dataclasses read from YAML by `instantrestore.config`, changed by
`dotted.key=value` overrides.

    recipe: gfpgan | instantrestore
    model:  {config: <architecture YAML, relative to this file>, overrides: {key: value}}
    data:   where the prepared faces are and how batches are drawn
    optim:  optimisers
    losses: loss weights (0 turns a term off)
    ...     loop settings (steps, checkpoints, logging)

Every mistake (unknown key, wrong type, missing file) is one `ConfigError` line naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instantrestore.config import load_dataclass, read_yaml, set_dotted
from instantrestore.errors import ConfigError

RECIPES = ("gfpgan", "instantrestore")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class ModelSource:
    """Where the generator's architecture comes from: the `model` section of a model YAML, some keys changed."""
    config: str                                            # the architecture YAML, owned by the model code
    overrides: dict[str, Any] = field(default_factory=dict)  # architecture keys changed for this run


@dataclass
class DataConfig:
    data_dir: str                  # a `prepare-data` output (manifest.json + aligned crops)
    size: int = 512                # training resolution (crops are resized to it)
    preset: str | list[str] = "gfpgan"  # degradation preset(s) of `instantrestore degrade`; a list draws
                                        # one per sample (mixed severities)
    num_refs: int = 4              # reference slots per sample (InstantRestore)
    batch_size: int = 4            # per device and micro-step
    num_workers: int = 0
    val_samples: int = 4           # fixed validation faces rendered at each validation


@dataclass
class OptimConfig:
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    betas: tuple[float, float] = (0.0, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 0.0         # max gradient norm of the generator; 0 = no clipping
    warmup_steps: int = 0          # the generator's learning rate rises linearly over these first steps
    decay_steps: int = 0           # ... and falls along a half cosine to 0 over the last ones of `steps`


@dataclass
class LossConfig:
    l1: float = 0.0                # pixel L1 on [-1, 1] images, in every recipe
    pyramid: float = 0.0           # GFP-GAN image-pyramid L1 on the intermediate RGB outputs
    pyramid_until: int = 0         # drop the pyramid loss from this step on (GFP-GAN: 50k); 0 = never
    adversarial: float = 0.0       # non-saturating GAN loss for G; 0 = no discriminator at all
    r1_gamma: float = 10.0         # R1 weight on real images
    r1_interval: int = 16          # lazy R1: every N discriminator steps, scaled by N (StyleGAN2)
    ms_ssim: float = 0.0           # 1 - MS-SSIM
    lpips: float = 0.0             # LPIPS-VGG, only if its weights are on disk
    lpips_fallback_l1: float = 0.0  # L1 weight used INSTEAD of LPIPS when LPIPS is off (logged as such)
    identity: float = 0.0          # 1 - cosine of face descriptors of output and target (identity_net)
    identity_net: str = "dlib-torch"  # its descriptor: dlib-torch (packaged), faceres, mobilefacenet, or an ArcFace .onnx file
    landmark: float = 0.0          # landmark attention loss (InstantRestore: 5000)
    # where the landmark attention loss reads its map: one shared attn1 layer (None: one drawn per step,
    # as the authors draw it), queries of the target against the keys of one reference drawn per sample
    landmark_layer: str | None = None


@dataclass
class TrainConfig:
    recipe: str
    model: ModelSource
    data: DataConfig
    out_dir: str = "runs/train"
    seed: int = 0
    steps: int = 1000              # optimiser steps
    max_minutes: float = 0.0       # stop (checkpoint + export) after this wall time; 0 = no limit
    grad_accum: int = 1
    mixed_precision: str = "no"
    ema_decay: float = 0.999       # EMA of the generator's weights; 0 = no EMA (export the raw weights)
    reference_dropout: float = 0.1  # probability of restoring a sample without references (InstantRestore)
    # keep each training photo's reference keys/values once computed (InstantRestore): exact when the
    # reference branch is frozen and noise-free (model.input_noise false), and then references cost
    # one encoding per photo per run instead of one per use
    cache_reference_features: bool = False
    log_every: int = 10
    val_every: int = 500
    checkpoint_every: int = 500
    resume: bool = True            # continue from OUT/checkpoint when it exists
    # start the generator from an exported model (a `save_pretrained` directory, e.g. the packaged weights)
    # of the same architecture; a resumed checkpoint takes precedence
    init_from: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    config_path: str = ""          # set by `load_config`; model.config is relative to it

    def model_config_path(self) -> Path:
        path = Path(self.model.config)
        return path if path.is_absolute() else Path(self.config_path).parent / path

    def architecture(self) -> dict[str, Any]:
        """The model YAML's `model` section with this run's `model.overrides` applied."""
        path = self.model_config_path()
        section = read_yaml(path).get("model")
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: no 'model' section")
        for key, value in self.model.overrides.items():  # dotted keys reach into sections (`unet.sample_size`)
            set_dotted(section, key, value, f"{self.config_path}: model.overrides.{key}")
        return section


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a training YAML, apply `key=value` overrides, check every key and type."""
    values = read_yaml(path, overrides)
    values["config_path"] = str(path)
    config = load_dataclass(TrainConfig, values, str(path))
    _validate(config, str(path))
    return config


def _validate(config: TrainConfig, source: str) -> None:
    checks = [
        (config.recipe in RECIPES, f"'recipe' must be one of {', '.join(RECIPES)}, got {config.recipe!r}"),
        (config.mixed_precision in MIXED_PRECISION,
         f"'mixed_precision' must be one of {', '.join(MIXED_PRECISION)}, got {config.mixed_precision!r}"),
        (config.steps > 0, "'steps' must be > 0"),
        (config.grad_accum >= 1, "'grad_accum' must be >= 1"),
        (config.data.batch_size >= 1, "'data.batch_size' must be >= 1"),
        (config.data.size >= 32, "'data.size' must be >= 32"),
        (0.0 <= config.ema_decay < 1.0, "'ema_decay' must be in [0, 1)"),
        (0.0 <= config.reference_dropout <= 1.0, "'reference_dropout' must be in [0, 1]"),
        (config.losses.r1_interval >= 1, "'losses.r1_interval' must be >= 1"),
        (min(config.log_every, config.val_every, config.checkpoint_every) >= 1,
         "'log_every', 'val_every' and 'checkpoint_every' must be >= 1"),
        (config.model_config_path().is_file(), f"'model.config': no such file {config.model_config_path()}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")
