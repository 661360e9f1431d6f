"""GFP-GAN baseline: official checkpoint layout, weight loading and saving, forward behaviour."""

from __future__ import annotations

import email.message
import hashlib
import io
import json
import math
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from instantrestore.errors import WeightsError
from instantrestore.models import registry
from instantrestore.models.gfpgan import OFFICIAL_GFPGAN_CONFIG, GFPGANv1Clean
from instantrestore.models.gfpgan_restorer import GFPGANRestorer
from instantrestore.pipeline import FaceRestorationPipeline
from instantrestore.models.registry import RegisteredWeights, load_gfpgan_state_dict, resolve_weights

REPO = Path(__file__).resolve().parent.parent

# State dict of the official GFPGANv1.3.pth / GFPGANv1.4.pth `params_ema` (out_size 512, channel_multiplier 2,
# narrow 1, different_w, sft_half, input_is_latent), in order: "key shape". Listed from the state_dict() of
# TencentARC/GFPGAN's own GFPGANv1Clean (gfpgan/archs/gfpganv1_clean_arch.py + stylegan2_clean_arch.py, run
# outside this repo), never from our model.
OFFICIAL_V1_STATE_DICT = """
conv_body_first.weight 32x3x1x1
conv_body_first.bias 32
conv_body_down.0.conv1.weight 32x32x3x3
conv_body_down.0.conv1.bias 32
conv_body_down.0.conv2.weight 64x32x3x3
conv_body_down.0.conv2.bias 64
conv_body_down.0.skip.weight 64x32x1x1
conv_body_down.1.conv1.weight 64x64x3x3
conv_body_down.1.conv1.bias 64
conv_body_down.1.conv2.weight 128x64x3x3
conv_body_down.1.conv2.bias 128
conv_body_down.1.skip.weight 128x64x1x1
conv_body_down.2.conv1.weight 128x128x3x3
conv_body_down.2.conv1.bias 128
conv_body_down.2.conv2.weight 256x128x3x3
conv_body_down.2.conv2.bias 256
conv_body_down.2.skip.weight 256x128x1x1
conv_body_down.3.conv1.weight 256x256x3x3
conv_body_down.3.conv1.bias 256
conv_body_down.3.conv2.weight 256x256x3x3
conv_body_down.3.conv2.bias 256
conv_body_down.3.skip.weight 256x256x1x1
conv_body_down.4.conv1.weight 256x256x3x3
conv_body_down.4.conv1.bias 256
conv_body_down.4.conv2.weight 256x256x3x3
conv_body_down.4.conv2.bias 256
conv_body_down.4.skip.weight 256x256x1x1
conv_body_down.5.conv1.weight 256x256x3x3
conv_body_down.5.conv1.bias 256
conv_body_down.5.conv2.weight 256x256x3x3
conv_body_down.5.conv2.bias 256
conv_body_down.5.skip.weight 256x256x1x1
conv_body_down.6.conv1.weight 256x256x3x3
conv_body_down.6.conv1.bias 256
conv_body_down.6.conv2.weight 256x256x3x3
conv_body_down.6.conv2.bias 256
conv_body_down.6.skip.weight 256x256x1x1
final_conv.weight 256x256x3x3
final_conv.bias 256
conv_body_up.0.conv1.weight 256x256x3x3
conv_body_up.0.conv1.bias 256
conv_body_up.0.conv2.weight 256x256x3x3
conv_body_up.0.conv2.bias 256
conv_body_up.0.skip.weight 256x256x1x1
conv_body_up.1.conv1.weight 256x256x3x3
conv_body_up.1.conv1.bias 256
conv_body_up.1.conv2.weight 256x256x3x3
conv_body_up.1.conv2.bias 256
conv_body_up.1.skip.weight 256x256x1x1
conv_body_up.2.conv1.weight 256x256x3x3
conv_body_up.2.conv1.bias 256
conv_body_up.2.conv2.weight 256x256x3x3
conv_body_up.2.conv2.bias 256
conv_body_up.2.skip.weight 256x256x1x1
conv_body_up.3.conv1.weight 256x256x3x3
conv_body_up.3.conv1.bias 256
conv_body_up.3.conv2.weight 256x256x3x3
conv_body_up.3.conv2.bias 256
conv_body_up.3.skip.weight 256x256x1x1
conv_body_up.4.conv1.weight 256x256x3x3
conv_body_up.4.conv1.bias 256
conv_body_up.4.conv2.weight 128x256x3x3
conv_body_up.4.conv2.bias 128
conv_body_up.4.skip.weight 128x256x1x1
conv_body_up.5.conv1.weight 128x128x3x3
conv_body_up.5.conv1.bias 128
conv_body_up.5.conv2.weight 64x128x3x3
conv_body_up.5.conv2.bias 64
conv_body_up.5.skip.weight 64x128x1x1
conv_body_up.6.conv1.weight 64x64x3x3
conv_body_up.6.conv1.bias 64
conv_body_up.6.conv2.weight 32x64x3x3
conv_body_up.6.conv2.bias 32
conv_body_up.6.skip.weight 32x64x1x1
toRGB.0.weight 3x256x1x1
toRGB.0.bias 3
toRGB.1.weight 3x256x1x1
toRGB.1.bias 3
toRGB.2.weight 3x256x1x1
toRGB.2.bias 3
toRGB.3.weight 3x256x1x1
toRGB.3.bias 3
toRGB.4.weight 3x128x1x1
toRGB.4.bias 3
toRGB.5.weight 3x64x1x1
toRGB.5.bias 3
toRGB.6.weight 3x32x1x1
toRGB.6.bias 3
final_linear.weight 8192x4096
final_linear.bias 8192
stylegan_decoder.style_mlp.1.weight 512x512
stylegan_decoder.style_mlp.1.bias 512
stylegan_decoder.style_mlp.3.weight 512x512
stylegan_decoder.style_mlp.3.bias 512
stylegan_decoder.style_mlp.5.weight 512x512
stylegan_decoder.style_mlp.5.bias 512
stylegan_decoder.style_mlp.7.weight 512x512
stylegan_decoder.style_mlp.7.bias 512
stylegan_decoder.style_mlp.9.weight 512x512
stylegan_decoder.style_mlp.9.bias 512
stylegan_decoder.style_mlp.11.weight 512x512
stylegan_decoder.style_mlp.11.bias 512
stylegan_decoder.style_mlp.13.weight 512x512
stylegan_decoder.style_mlp.13.bias 512
stylegan_decoder.style_mlp.15.weight 512x512
stylegan_decoder.style_mlp.15.bias 512
stylegan_decoder.constant_input.weight 1x512x4x4
stylegan_decoder.style_conv1.weight 1
stylegan_decoder.style_conv1.bias 1x512x1x1
stylegan_decoder.style_conv1.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_conv1.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_conv1.modulated_conv.modulation.bias 512
stylegan_decoder.to_rgb1.bias 1x3x1x1
stylegan_decoder.to_rgb1.modulated_conv.weight 1x3x512x1x1
stylegan_decoder.to_rgb1.modulated_conv.modulation.weight 512x512
stylegan_decoder.to_rgb1.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.0.weight 1
stylegan_decoder.style_convs.0.bias 1x512x1x1
stylegan_decoder.style_convs.0.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.0.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.0.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.1.weight 1
stylegan_decoder.style_convs.1.bias 1x512x1x1
stylegan_decoder.style_convs.1.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.1.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.1.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.2.weight 1
stylegan_decoder.style_convs.2.bias 1x512x1x1
stylegan_decoder.style_convs.2.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.2.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.2.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.3.weight 1
stylegan_decoder.style_convs.3.bias 1x512x1x1
stylegan_decoder.style_convs.3.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.3.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.3.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.4.weight 1
stylegan_decoder.style_convs.4.bias 1x512x1x1
stylegan_decoder.style_convs.4.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.4.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.4.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.5.weight 1
stylegan_decoder.style_convs.5.bias 1x512x1x1
stylegan_decoder.style_convs.5.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.5.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.5.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.6.weight 1
stylegan_decoder.style_convs.6.bias 1x512x1x1
stylegan_decoder.style_convs.6.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.6.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.6.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.7.weight 1
stylegan_decoder.style_convs.7.bias 1x512x1x1
stylegan_decoder.style_convs.7.modulated_conv.weight 1x512x512x3x3
stylegan_decoder.style_convs.7.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.7.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.8.weight 1
stylegan_decoder.style_convs.8.bias 1x256x1x1
stylegan_decoder.style_convs.8.modulated_conv.weight 1x256x512x3x3
stylegan_decoder.style_convs.8.modulated_conv.modulation.weight 512x512
stylegan_decoder.style_convs.8.modulated_conv.modulation.bias 512
stylegan_decoder.style_convs.9.weight 1
stylegan_decoder.style_convs.9.bias 1x256x1x1
stylegan_decoder.style_convs.9.modulated_conv.weight 1x256x256x3x3
stylegan_decoder.style_convs.9.modulated_conv.modulation.weight 256x512
stylegan_decoder.style_convs.9.modulated_conv.modulation.bias 256
stylegan_decoder.style_convs.10.weight 1
stylegan_decoder.style_convs.10.bias 1x128x1x1
stylegan_decoder.style_convs.10.modulated_conv.weight 1x128x256x3x3
stylegan_decoder.style_convs.10.modulated_conv.modulation.weight 256x512
stylegan_decoder.style_convs.10.modulated_conv.modulation.bias 256
stylegan_decoder.style_convs.11.weight 1
stylegan_decoder.style_convs.11.bias 1x128x1x1
stylegan_decoder.style_convs.11.modulated_conv.weight 1x128x128x3x3
stylegan_decoder.style_convs.11.modulated_conv.modulation.weight 128x512
stylegan_decoder.style_convs.11.modulated_conv.modulation.bias 128
stylegan_decoder.style_convs.12.weight 1
stylegan_decoder.style_convs.12.bias 1x64x1x1
stylegan_decoder.style_convs.12.modulated_conv.weight 1x64x128x3x3
stylegan_decoder.style_convs.12.modulated_conv.modulation.weight 128x512
stylegan_decoder.style_convs.12.modulated_conv.modulation.bias 128
stylegan_decoder.style_convs.13.weight 1
stylegan_decoder.style_convs.13.bias 1x64x1x1
stylegan_decoder.style_convs.13.modulated_conv.weight 1x64x64x3x3
stylegan_decoder.style_convs.13.modulated_conv.modulation.weight 64x512
stylegan_decoder.style_convs.13.modulated_conv.modulation.bias 64
stylegan_decoder.to_rgbs.0.bias 1x3x1x1
stylegan_decoder.to_rgbs.0.modulated_conv.weight 1x3x512x1x1
stylegan_decoder.to_rgbs.0.modulated_conv.modulation.weight 512x512
stylegan_decoder.to_rgbs.0.modulated_conv.modulation.bias 512
stylegan_decoder.to_rgbs.1.bias 1x3x1x1
stylegan_decoder.to_rgbs.1.modulated_conv.weight 1x3x512x1x1
stylegan_decoder.to_rgbs.1.modulated_conv.modulation.weight 512x512
stylegan_decoder.to_rgbs.1.modulated_conv.modulation.bias 512
stylegan_decoder.to_rgbs.2.bias 1x3x1x1
stylegan_decoder.to_rgbs.2.modulated_conv.weight 1x3x512x1x1
stylegan_decoder.to_rgbs.2.modulated_conv.modulation.weight 512x512
stylegan_decoder.to_rgbs.2.modulated_conv.modulation.bias 512
stylegan_decoder.to_rgbs.3.bias 1x3x1x1
stylegan_decoder.to_rgbs.3.modulated_conv.weight 1x3x512x1x1
stylegan_decoder.to_rgbs.3.modulated_conv.modulation.weight 512x512
stylegan_decoder.to_rgbs.3.modulated_conv.modulation.bias 512
stylegan_decoder.to_rgbs.4.bias 1x3x1x1
stylegan_decoder.to_rgbs.4.modulated_conv.weight 1x3x256x1x1
stylegan_decoder.to_rgbs.4.modulated_conv.modulation.weight 256x512
stylegan_decoder.to_rgbs.4.modulated_conv.modulation.bias 256
stylegan_decoder.to_rgbs.5.bias 1x3x1x1
stylegan_decoder.to_rgbs.5.modulated_conv.weight 1x3x128x1x1
stylegan_decoder.to_rgbs.5.modulated_conv.modulation.weight 128x512
stylegan_decoder.to_rgbs.5.modulated_conv.modulation.bias 128
stylegan_decoder.to_rgbs.6.bias 1x3x1x1
stylegan_decoder.to_rgbs.6.modulated_conv.weight 1x3x64x1x1
stylegan_decoder.to_rgbs.6.modulated_conv.modulation.weight 64x512
stylegan_decoder.to_rgbs.6.modulated_conv.modulation.bias 64
stylegan_decoder.noises.noise0 1x1x4x4
stylegan_decoder.noises.noise1 1x1x8x8
stylegan_decoder.noises.noise2 1x1x8x8
stylegan_decoder.noises.noise3 1x1x16x16
stylegan_decoder.noises.noise4 1x1x16x16
stylegan_decoder.noises.noise5 1x1x32x32
stylegan_decoder.noises.noise6 1x1x32x32
stylegan_decoder.noises.noise7 1x1x64x64
stylegan_decoder.noises.noise8 1x1x64x64
stylegan_decoder.noises.noise9 1x1x128x128
stylegan_decoder.noises.noise10 1x1x128x128
stylegan_decoder.noises.noise11 1x1x256x256
stylegan_decoder.noises.noise12 1x1x256x256
stylegan_decoder.noises.noise13 1x1x512x512
stylegan_decoder.noises.noise14 1x1x512x512
condition_scale.0.0.weight 256x256x3x3
condition_scale.0.0.bias 256
condition_scale.0.2.weight 256x256x3x3
condition_scale.0.2.bias 256
condition_scale.1.0.weight 256x256x3x3
condition_scale.1.0.bias 256
condition_scale.1.2.weight 256x256x3x3
condition_scale.1.2.bias 256
condition_scale.2.0.weight 256x256x3x3
condition_scale.2.0.bias 256
condition_scale.2.2.weight 256x256x3x3
condition_scale.2.2.bias 256
condition_scale.3.0.weight 256x256x3x3
condition_scale.3.0.bias 256
condition_scale.3.2.weight 256x256x3x3
condition_scale.3.2.bias 256
condition_scale.4.0.weight 128x128x3x3
condition_scale.4.0.bias 128
condition_scale.4.2.weight 128x128x3x3
condition_scale.4.2.bias 128
condition_scale.5.0.weight 64x64x3x3
condition_scale.5.0.bias 64
condition_scale.5.2.weight 64x64x3x3
condition_scale.5.2.bias 64
condition_scale.6.0.weight 32x32x3x3
condition_scale.6.0.bias 32
condition_scale.6.2.weight 32x32x3x3
condition_scale.6.2.bias 32
condition_shift.0.0.weight 256x256x3x3
condition_shift.0.0.bias 256
condition_shift.0.2.weight 256x256x3x3
condition_shift.0.2.bias 256
condition_shift.1.0.weight 256x256x3x3
condition_shift.1.0.bias 256
condition_shift.1.2.weight 256x256x3x3
condition_shift.1.2.bias 256
condition_shift.2.0.weight 256x256x3x3
condition_shift.2.0.bias 256
condition_shift.2.2.weight 256x256x3x3
condition_shift.2.2.bias 256
condition_shift.3.0.weight 256x256x3x3
condition_shift.3.0.bias 256
condition_shift.3.2.weight 256x256x3x3
condition_shift.3.2.bias 256
condition_shift.4.0.weight 128x128x3x3
condition_shift.4.0.bias 128
condition_shift.4.2.weight 128x128x3x3
condition_shift.4.2.bias 128
condition_shift.5.0.weight 64x64x3x3
condition_shift.5.0.bias 64
condition_shift.5.2.weight 64x64x3x3
condition_shift.5.2.bias 64
condition_shift.6.0.weight 32x32x3x3
condition_shift.6.0.bias 32
condition_shift.6.2.weight 32x32x3x3
condition_shift.6.2.bias 32
"""
OFFICIAL_NUM_PARAMETERS = 86_444_252  # learnable parameters; the 15 noise buffers add 699,024 values



def official_entries() -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in OFFICIAL_V1_STATE_DICT.strip().splitlines():
        key, shape = line.split()
        entries.append((key, tuple(int(size) for size in shape.split("x"))))
    return entries


@pytest.fixture(scope="module")
def tiny_model(tiny_gfpgan_config) -> GFPGANv1Clean:
    torch.manual_seed(0)
    model = GFPGANv1Clean(**tiny_gfpgan_config).eval()
    with torch.no_grad():  # as in a trained model, no weight is zero: noise strengths and biases start at 0
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def tiny_input() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------- official layout
def test_official_config_state_dict_matches_official_checkpoints_key_for_key():
    with torch.device("meta"):  # shapes only, no 86M-parameter init
        model = GFPGANv1Clean(**OFFICIAL_GFPGAN_CONFIG)
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    expected = official_entries()
    assert len(expected) == 285
    assert ours == expected
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_NUM_PARAMETERS
    noises = [key for key, _ in expected if ".noises.noise" in key]
    assert noises == [f"stylegan_decoder.noises.noise{i}" for i in range(15)]
    assert sum(math.prod(shape) for key, shape in expected if key not in noises) == OFFICIAL_NUM_PARAMETERS


def test_official_checkpoint_saved_the_official_way_loads_strictly(tiny_model, tiny_input, tmp_path,
                                                                   tiny_gfpgan_config):
    path = tmp_path / "GFPGANtiny.pth"
    torch.save({"params_ema": tiny_model.state_dict(), "params": {}}, path)
    model = GFPGANv1Clean(**tiny_gfpgan_config).eval()
    model.load_state_dict(load_gfpgan_state_dict(path), strict=True)
    with torch.no_grad():
        assert torch.equal(model(tiny_input)[0], tiny_model(tiny_input)[0])
    # `params` when there is no `params_ema`, and the same through the restorer's loader
    torch.save({"params": tiny_model.state_dict()}, path)
    restorer = GFPGANRestorer.from_pretrained(path, device="cpu", **tiny_gfpgan_config)
    with torch.no_grad():
        assert torch.equal(restorer.model(tiny_input)[0], tiny_model(tiny_input)[0])


def test_save_pretrained_round_trip_through_safetensors(tiny_model, tiny_input, tmp_path, tiny_gfpgan_config):
    restorer = GFPGANRestorer(tiny_model, device="cpu")
    tiny_model.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config == {"restorer": "gfpgan", "model": tiny_gfpgan_config}
    loaded = GFPGANRestorer.from_pretrained(tmp_path / "model", device="cpu")
    assert loaded.model.config == tiny_model.config
    faces = tiny_input[:1]
    with torch.no_grad():
        assert torch.equal(loaded.restore_tensor(faces, None, None), restorer.restore_tensor(faces, None, None))
    tiny_model.save_pretrained(tmp_path / "half", fp16=True)
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < \
        0.6 * (tmp_path / "model" / "model.safetensors").stat().st_size
    half = GFPGANRestorer.from_pretrained(tmp_path / "half", device="cpu")
    with torch.no_grad():
        difference = (half.restore_tensor(faces, None, None) - restorer.restore_tensor(faces, None, None)).abs()
    assert 0 < difference.max() < 0.05


def test_save_pretrained_leaves_a_model_in_training_as_it_is(tmp_path, tiny_gfpgan_config):
    model = GFPGANv1Clean(**tiny_gfpgan_config).train()
    model.save_pretrained(tmp_path / "checkpoint")
    assert model.training
    loaded = GFPGANRestorer.from_pretrained(tmp_path / "checkpoint", device="cpu").model
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in loaded.state_dict().items())


def test_decoder_load_path_initialises_the_stylegan2_prior(tiny_model, tmp_path, tiny_gfpgan_config):
    path = tmp_path / "stylegan2.pth"
    torch.save({"params_ema": tiny_model.stylegan_decoder.state_dict()}, path)
    model = GFPGANv1Clean(**tiny_gfpgan_config, decoder_load_path=path, fix_decoder=True)
    for key, value in tiny_model.stylegan_decoder.state_dict().items():
        assert torch.equal(model.stylegan_decoder.state_dict()[key], value), key
    assert not any(p.requires_grad for p in model.stylegan_decoder.parameters())
    assert all(p.requires_grad for p in model.conv_body_first.parameters())


# ---------------------------------------------------------------- numerics against the official code
def test_official_implementation_outputs_are_reproduced(shared):
    """A small GFPGANv1Clean run through TencentARC's own code (../shared/golden/README.md): its weights load
    strictly and give the same restored image and U-Net RGB outputs, so every op and its order match."""
    golden = load_file(str(shared / "golden" / "gfpgan_v1_clean_small.safetensors"))
    with safe_open(str(shared / "golden" / "gfpgan_v1_clean_small.safetensors"), "pt") as handle:
        config = json.loads(handle.metadata()["config"])
    model = GFPGANv1Clean(**config).eval()
    model.load_state_dict({key[len("model."):]: value for key, value in golden.items() if key.startswith("model.")},
                          strict=True)
    with torch.no_grad():
        output, rgbs = model(golden["input"], return_rgb=True, randomize_noise=False)
    expected = [golden["output"]] + [golden[f"rgb.{level}"] for level in range(len(rgbs))]
    assert len(rgbs) == 4
    for ours, theirs in zip([output, *rgbs], expected):
        assert ours.shape == theirs.shape
        assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-5


# ---------------------------------------------------------------- forward
def test_forward_shapes_and_rgb_list(tiny_model, tiny_input):
    with torch.no_grad():
        image, rgbs = tiny_model(tiny_input, return_rgb=True)
        _, no_rgbs = tiny_model(tiny_input)
    assert image.shape == (2, 3, 64, 64)
    assert [rgb.shape[-1] for rgb in rgbs] == [8, 16, 32, 64]  # one per U-Net decoder level
    assert all(rgb.shape[:2] == (2, 3) for rgb in rgbs)
    assert no_rgbs == []


def test_forward_is_deterministic_with_stored_noise(tiny_model, tiny_input):
    with torch.no_grad():
        first, _ = tiny_model(tiny_input, randomize_noise=False)
        second, _ = tiny_model(tiny_input, randomize_noise=False)
        seeded = [tiny_model(tiny_input, randomize_noise=True, generator=torch.Generator().manual_seed(seed))[0]
                  for seed in (3, 3, 4)]
    assert torch.equal(first, second)
    assert torch.equal(seeded[0], seeded[1])
    assert not torch.equal(seeded[0], seeded[2])
    assert not torch.equal(seeded[0], first)


def test_training_gradients_reach_the_unet_and_skip_the_fixed_decoder(tiny_input, tiny_gfpgan_config):
    model = GFPGANv1Clean(**tiny_gfpgan_config, fix_decoder=True)
    image, rgbs = model(tiny_input, return_rgb=True)
    (image.square().mean() + sum(rgb.square().mean() for rgb in rgbs)).backward()
    assert model.conv_body_first.weight.grad is not None
    assert model.condition_scale[-1][0].weight.grad is not None
    assert all(p.grad is None for p in model.stylegan_decoder.parameters())


def test_compact_config_builds_and_runs_at_256():
    config = yaml.safe_load((REPO / "configs" / "gfpgan_compact.yaml").read_text())["model"]
    torch.manual_seed(0)
    restorer = FaceRestorationPipeline(GFPGANRestorer(GFPGANv1Clean(**config), device="cpu"))
    assert restorer.face_size == 256 and not restorer.uses_references
    crop = torch.randint(0, 256, (256, 256, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    restored = restorer.restore_faces([crop.numpy()])
    assert restored[0].shape == (256, 256, 3) and restored[0].dtype.name == "uint8"


# ---------------------------------------------------------------- bad weights
@pytest.mark.parametrize("damage", ["truncated", "garbage", "text", "empty", "not_a_state_dict"])
def test_unreadable_checkpoint_is_one_line_weights_error(tiny_model, tmp_path, damage):
    good = tmp_path / "good.pth"
    torch.save({"params_ema": tiny_model.state_dict()}, good)
    bad = tmp_path / "bad.pth"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "garbage":
        bad.write_bytes(bytes(range(256)) * 10)
    elif damage == "text":
        bad.write_text("hello world" * 10)
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"params_ema": {"step": 3}}, bad)
    with pytest.raises(WeightsError) as err:
        load_gfpgan_state_dict(bad)
    assert str(bad) in one_line(err)


def test_truncated_safetensors_and_missing_file_are_weights_errors(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsError) as err:
        GFPGANRestorer.from_pretrained(tmp_path / "model", device="cpu")
    assert str(weights) in one_line(err)
    with pytest.raises(WeightsError) as err:
        load_gfpgan_state_dict(tmp_path / "missing.pth")
    assert "missing.pth" in one_line(err)


def test_checkpoint_of_another_architecture_is_one_line_weights_error(tiny_model, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"params_ema": tiny_model.state_dict()}, path)
    with pytest.raises(WeightsError) as err:  # the official 512 config expects other shapes
        GFPGANRestorer.from_pretrained(path, device="cpu")
    assert "do not fit" in one_line(err) and "conv_body_first.weight is [16, 3, 1, 1]" in str(err.value)


# ---------------------------------------------------------------- registry
def test_offline_missing_weights_name_the_url_and_the_place(monkeypatch, tmp_path):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    entry = registry.REGISTERED_WEIGHTS["gfpgan-v1.4"]
    with pytest.raises(WeightsError) as err:
        resolve_weights("gfpgan-v1.4")
    message = one_line(err)
    assert entry.url in message and str(tmp_path / "weights" / "GFPGANv1.4.pth") in message
    with pytest.raises(WeightsError) as err:
        GFPGANRestorer.from_pretrained("GFPGANv1.3.pth", device="cpu")
    assert registry.REGISTERED_WEIGHTS["gfpgan-v1.3"].url in one_line(err)
    with pytest.raises(WeightsError):
        resolve_weights(tmp_path / "no_such_model.pth")


def test_download_is_checksum_verified_and_atomic(monkeypatch, tmp_path):
    payload = b"pretend checkpoint bytes" * 1000
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))

    class Response(io.BytesIO):
        def info(self) -> email.message.Message:
            headers = email.message.Message()
            headers["Content-Length"] = str(len(payload))
            return headers

    monkeypatch.setattr(torch.hub, "urlopen", lambda request: Response(payload))
    target = tmp_path / "weights" / "GFPGANv1.4.pth"

    def register(sha256: str) -> None:
        entry = registry.REGISTERED_WEIGHTS["gfpgan-v1.4"]
        monkeypatch.setitem(registry.REGISTERED_WEIGHTS, "gfpgan-v1.4",
                            RegisteredWeights(entry.name, entry.filename, entry.url, sha256))

    register("0" * 64)
    with pytest.raises(WeightsError) as err:
        resolve_weights("gfpgan-v1.4")
    assert "sha256" in one_line(err)
    assert list((tmp_path / "weights").iterdir()) == []  # nothing half-written or wrong left behind
    register(hashlib.sha256(payload).hexdigest())
    assert resolve_weights("gfpgan-v1.4") == target
    assert target.read_bytes() == payload

