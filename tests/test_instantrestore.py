"""InstantRestore model: shared-image attention, reference caching, attention capture, saving, both scales.

Tiny random models only (no download): the compact recipe shrunk by overrides, and an SD-Turbo stand-in
with SD-Turbo's block types and attention layout at a few channels.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import load_file, save_file

from instantrestore.errors import ConfigError, WeightsError
from instantrestore.models.attention import SharedAttnProcessor, locality_prior, up_block_self_attention_layers
from instantrestore.models.config import SD_TURBO_SCHEDULER, InstantRestoreConfig
from instantrestore.models.instantrestore import InstantRestoreModel, predicted_clean_latents
from instantrestore.models.ir_restorer import InstantRestoreRestorer
from instantrestore.references import ReferenceCache

REPO = Path(__file__).resolve().parents[1]
COMPACT = REPO / "configs" / "instantrestore_compact.yaml"
SD_TURBO = REPO / "configs" / "instantrestore_sd_turbo.yaml"
SIZE = 32  # the face size of conftest's tiny_instantrestore


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model(tiny_instantrestore) -> InstantRestoreModel:
    built = tiny_instantrestore(random_lora=True)
    assert built.config.face_size == SIZE
    return built


@pytest.mark.parametrize("adain", [False, True])
def test_references_change_the_output(adain, tiny_instantrestore):
    model = tiny_instantrestore(f"model.adain={str(adain).lower()}")
    degraded = images(1, 0)
    kv_a = model.encode_references(images(2, 1), generator=seeded(1))
    kv_b = model.encode_references(images(2, 2), generator=seeded(1))
    with torch.no_grad():
        out_a = model(degraded, kv_a, generator=seeded())
        out_a_again = model(degraded, kv_a, generator=seeded())
        out_b = model(degraded, kv_b, generator=seeded())
        blind = model(degraded, None, generator=seeded())
    assert torch.equal(out_a, out_a_again)
    assert (out_a - out_b).abs().max() > 1e-4
    assert (out_a - blind).abs().max() > 1e-4


def test_zero_references_equal_the_plain_unet(tiny_instantrestore):
    model = tiny_instantrestore("model.train_input=true")
    latents = torch.randn(2, 4, SIZE // 2, SIZE // 2, generator=seeded())
    prompt = model.prompt_embeds.expand(2, -1, -1)
    shared = model.unet.attn_processors
    assert sum(isinstance(p, SharedAttnProcessor) for p in shared.values()) == 4
    with torch.no_grad():
        with_sharing = model.unet(latents, 249, encoder_hidden_states=prompt).sample
        model.unet.set_attn_processor(AttnProcessor2_0())
        plain = model.unet(latents, 249, encoder_hidden_states=prompt).sample
    assert torch.equal(with_sharing, plain)


def test_every_reference_dropped_restores_blind(model):
    degraded = images(2, 0)
    kv = model.encode_references(images(3, 1), generator=seeded(1))
    mask = torch.tensor([[False, False, False], [True, False, True]])
    with torch.no_grad():
        masked = model(degraded, kv, reference_mask=mask, generator=seeded())
        blind = model(degraded, None, generator=seeded())
        full = model(degraded, kv, generator=seeded())
    torch.testing.assert_close(masked[0], blind[0], atol=1e-5, rtol=0)
    assert (masked[1] - blind[1]).abs().max() > 1e-4 and (masked[1] - full[1]).abs().max() > 1e-4


def test_cached_references_give_the_same_output(model, tmp_path):
    restorer = InstantRestoreRestorer(model, device="cpu", fuse=False)
    references = images(2, 1)
    kv = model.encode_references(references, generator=seeded(5))  # straight from the reference branch
    assert {k: v.shape for k, v in restorer.reference_features(references).items()} == {k: v.shape for k, v in kv.items()}
    uint8_faces = ((references + 1) * 127.5).permute(0, 2, 3, 1).round().byte().numpy()
    cache = ReferenceCache(faces=uint8_faces, features=kv, model_id=restorer.model_id)
    loaded = ReferenceCache.load(cache.save(tmp_path / "album.refs"))
    assert loaded.model_id == restorer.model_id and set(loaded.features) == set(kv)
    degraded = images(2, 0)
    with torch.no_grad():
        uncached = model(degraded, kv, generator=seeded())
    from_disk = restorer.restore_tensor(degraded, loaded.features, seeded())
    assert torch.equal(uncached, from_disk)
    assert not torch.equal(from_disk, restorer.restore_tensor(degraded, None, seeded()))


def test_captured_attention_rows_sum_to_one_and_leave_output_alone(model):
    degraded = images(2, 0)
    kv = model.encode_references(images(3, 1), generator=seeded(1))
    layer = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"
    with torch.no_grad():
        plain = model(degraded, kv, generator=seeded())
        captured_out, captured = model(degraded, kv, generator=seeded(), capture_attention_layer=layer)
    torch.testing.assert_close(captured_out, plain, atol=1e-5, rtol=0)
    heads = model.unet.get_submodule(layer).heads
    side = SIZE // 2 // 2  # latent 16, up_blocks.1 at half of it
    assert captured.side == side and captured.self_tokens == 0  # train_input off: references' keys only
    assert captured.probs.shape == (2, heads, side * side, 3 * side * side)
    assert captured.references().shape == (2, heads, side * side, 3, side * side)
    assert captured.reference(1).shape == (2, heads, side * side, side * side)
    torch.testing.assert_close(captured.probs.sum(-1), torch.ones(2, heads, side * side))
    assert model.shared_layers[layer].captured is None  # nothing left behind after the call


def test_locality_prior_is_a_gaussian_of_the_distance_between_places():
    prior = locality_prior(16, 16, sigma=0.5)  # 4x4 grids: neighbours are 0.25 apart
    assert torch.equal(prior.diagonal(), torch.zeros(16)) and torch.equal(prior, prior.T)
    torch.testing.assert_close(prior[5, 6], torch.tensor(-0.25 ** 2 / (2 * 0.5 ** 2)))  # (1, 1) -> (1, 2)
    coarse_to_fine = locality_prior(4, 16, sigma=0.5)  # grids of different sizes span the same face
    assert coarse_to_fine[0].argmax() in (0, 1, 4, 5)


def test_locality_prior_points_each_query_at_its_own_place_in_every_reference(tiny_instantrestore):
    model = tiny_instantrestore("model.reference_locality=0.05", random_lora=True)
    degraded = images(2, 0)
    kv = model.encode_references(images(3, 1), generator=seeded(1))
    mask = torch.tensor([[True, False, True], [True, True, True]])
    layer = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"
    with torch.no_grad():
        plain = model(degraded, kv, reference_mask=mask, generator=seeded())
        captured_out, captured = model(degraded, kv, reference_mask=mask, generator=seeded(),
                                       capture_attention_layer=layer)
        without_prior = tiny_instantrestore(random_lora=True)(degraded, kv, reference_mask=mask, generator=seeded())
    torch.testing.assert_close(captured_out, plain, atol=1e-5, rtol=0)  # the prior enters both attention paths
    assert (plain - without_prior).abs().max() > 1e-4
    torch.testing.assert_close(captured.probs.sum(-1), torch.ones(captured.probs.shape[:3]))
    assert captured.reference(1)[0].max() == 0  # a dropped reference stays unseen
    own_place = torch.arange(captured.side ** 2)
    assert torch.equal(captured.reference(0).argmax(-1), own_place.expand(2, captured.probs.shape[1], -1))


def test_lora_round_trip_gives_identical_outputs(model, tmp_path):
    path = model.save_pretrained(tmp_path / "ckpt")
    assert {"config.json", "unet_lora.safetensors", "vae_lora.safetensors", "trained.safetensors"} <= {
        p.name for p in path.iterdir()}
    loaded = InstantRestoreModel.from_pretrained(path).eval()
    assert loaded.reference_fingerprint() == model.reference_fingerprint()
    kv = model.encode_references(images(2, 1), generator=seeded(1))
    assert all(torch.equal(kv[k], v) for k, v in loaded.encode_references(images(2, 1), generator=seeded(1)).items())
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    with torch.no_grad():
        before = model(images(1, 0), kv, generator=seeded())
        after = loaded(images(1, 0), kv, generator=seeded())
        fused = InstantRestoreRestorer(loaded, device="cpu").model(images(1, 0), kv, generator=seeded())
    # bitwise-equal weights; the outputs may still differ in the last bit, because CPU BLAS kernels
    # depend on the memory alignment of weights read from a file
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, before, atol=1e-4, rtol=0)
    # a LoRA file missing one tensor, or holding another shape, is refused in one line
    lora = load_file(str(path / "unet_lora.safetensors"))
    first = sorted(lora)[0]
    save_file({k: v for k, v in lora.items() if k != first}, str(path / "unet_lora.safetensors"))
    with pytest.raises(WeightsError, match="1 missing"):
        InstantRestoreModel.from_pretrained(path)
    save_file({**lora, first: torch.zeros(1, 1)}, str(path / "unet_lora.safetensors"))
    with pytest.raises(WeightsError, match="1 of another shape") as err:
        InstantRestoreModel.from_pretrained(path)
    assert "\n" not in str(err.value)


def test_trainable_parameters_are_lora_conv_in_and_vae_skips_only(model):
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in name or name.startswith(("unet.conv_in.", "vae_skip.")) for name in names)
    assert any(name.startswith("vae.") for name in names) and any(name.startswith("vae_skip.") for name in names)
    assert not any(p.requires_grad for p in [*model.reference_unet.parameters(), *model.reference_vae.parameters()])


def test_vae_skips_start_as_a_no_op_and_carry_the_degraded_face(tiny_instantrestore):
    with_skips, without = tiny_instantrestore("model.vae_skip=true"), tiny_instantrestore("model.vae_skip=false")
    degraded, kv = images(2, 0), with_skips.encode_references(images(2, 1), generator=seeded(1))
    with torch.no_grad():
        torch.testing.assert_close(with_skips(degraded, kv, generator=seeded()), without(degraded, kv, generator=seeded()),
                                   atol=1e-6, rtol=0)
        for conv in with_skips.vae_skip.convs:
            torch.nn.init.normal_(conv.weight, std=0.1, generator=seeded(2))
        changed = with_skips(degraded, kv, generator=seeded())
        assert (changed - without(degraded, kv, generator=seeded())).abs().max() > 1e-3
        assert not with_skips.vae_skip.features  # nothing kept between forwards
        # a decode on its own (no encoder features) is the plain VAE decode
        latent = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=seeded(3))
        torch.testing.assert_close(with_skips.vae.decode(latent).sample, without.vae.decode(latent).sample,
                                   atol=1e-6, rtol=0)
        # a deep copy (the trainer's EMA) uses its own skip convolutions, not the original's
        copied = copy.deepcopy(with_skips)
        for conv in copied.vae_skip.convs:
            conv.weight.zero_()
        torch.testing.assert_close(copied(degraded, kv, generator=seeded()), without(degraded, kv, generator=seeded()),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(with_skips(degraded, kv, generator=seeded()), changed, atol=0, rtol=0)


def test_shared_attention_off_ignores_references(tiny_instantrestore):
    model = tiny_instantrestore("model.shared_attention=false")
    assert model.encode_references(images(2, 1)) == {}
    assert not any(isinstance(p, SharedAttnProcessor) for p in model.unet.attn_processors.values())


def test_config_overrides_and_errors(tmp_path):
    config = InstantRestoreConfig.from_yaml(SD_TURBO, ["model.adain=false", "model.unet_lora_rank=8"])
    assert config.adain is False and config.unet_lora_rank == 8 and config.vae_lora_rank == 32
    assert config.train_input is False
    with pytest.raises(ConfigError, match="unknown key 'model.adian'"):
        InstantRestoreConfig.from_yaml(SD_TURBO, ["model.adian=false"])
    with pytest.raises(ConfigError, match="'model.unet_lora_rank' must be int"):
        InstantRestoreConfig.from_yaml(SD_TURBO, ["model.unet_lora_rank=four"])
    with pytest.raises(ConfigError, match="missing.yaml"):
        InstantRestoreConfig.from_yaml(tmp_path / "missing.yaml")
    # a key earlier versions wrote (the shipped config.json has it) is still read, and dropped
    assert InstantRestoreConfig.from_yaml(SD_TURBO, ["model.num_refs=4"]) == InstantRestoreConfig.from_yaml(SD_TURBO)


# --------------------------------------------------------------------------- SD-Turbo structure
def write_sd_turbo_stand_in(root: Path) -> None:
    """SD-Turbo's layout (SD 2.1 UNet, CLIP text encoder, VAE) with a few channels, as a local 'hub' dir."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 8, 16, 16), layers_per_block=2, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 2, 4, 4), cross_attention_dim=16, use_linear_projection=True,
    ).save_pretrained(root / "unet")
    vae = dict(block_out_channels=(4, 4, 4, 4), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=2)
    AutoencoderKL(**vae).save_pretrained(root / "vae")
    AutoencoderKL(**vae).save_pretrained(root / "vae-ft-mse")  # the separately named VAE, weights at its root
    CLIPTextModel(CLIPTextConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=77, bos_token_id=0,
                                 eos_token_id=1, pad_token_id=1)).save_pretrained(root / "text_encoder")
    words = ["<|startoftext|>", "<|endoftext|>", *"abcdefghijklmnopqrstuvwxyz", "a</w>", "o</w>", "8</w>"]
    (root / "tokenizer").mkdir()
    (root / "vocab.json").write_text(json.dumps({word: i for i, word in enumerate(words)}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77).save_pretrained(root / "tokenizer")


def test_sd_turbo_config_builds_from_a_local_stand_in(tmp_path):
    write_sd_turbo_stand_in(tmp_path / "sd-turbo")
    config = InstantRestoreConfig.from_yaml(SD_TURBO, [
        f"model.pretrained={tmp_path / 'sd-turbo'}", f"model.vae_pretrained={tmp_path / 'sd-turbo' / 'vae-ft-mse'}",
        "model.face_size=64"])
    model = InstantRestoreModel.from_config(config).eval()
    expected = [f"up_blocks.{block}.attentions.{i}.transformer_blocks.0.attn1" for block in (1, 2, 3) for i in range(3)]
    assert up_block_self_attention_layers(model.unet) == expected
    assert list(model.shared_layers) == expected
    assert model.prompt_embeds.shape == (1, 77, 16)  # CLIP tokens x the stand-in's cross-attention width
    faces = torch.rand(1, 3, 64, 64) * 2 - 1
    kv = model.encode_references(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert set(kv) == set(expected) and kv[expected[-1]].shape == (2, 1, 2, 8 * 8, 8)
    with torch.no_grad():
        assert model(faces, kv, generator=seeded()).shape == faces.shape
    saved = json.loads((model.save_pretrained(tmp_path / "ckpt") / "config.json").read_text())
    assert saved["model"]["pretrained"] == str(tmp_path / "sd-turbo") and not (tmp_path / "ckpt" / "base").exists()


def test_sd_turbo_offline_without_weights_is_one_line(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = InstantRestoreConfig.from_yaml(SD_TURBO)
    with pytest.raises(WeightsError) as err:
        InstantRestoreModel.from_config(config)
    message = str(err.value)
    assert "\n" not in message and "stabilityai/sd-turbo" in message and "download" in message
    with pytest.raises(WeightsError, match="no such directory"):
        InstantRestoreModel.from_config(InstantRestoreConfig.from_yaml(
            SD_TURBO, [f"model.pretrained={tmp_path / 'absent'}"]))
    with pytest.raises(WeightsError, match="not an InstantRestore checkpoint"):
        InstantRestoreModel.from_pretrained(tmp_path)


def test_training_step_reaches_lora_through_output_and_attention_map(tiny_instantrestore):
    model = tiny_instantrestore().train()
    assert model.unet.training and not model.reference_unet.training and not model.reference_vae.training
    kv = model.encode_references(images(2, 1))
    layer = "up_blocks.2.attentions.1.transformer_blocks.0.attn1"
    restored, captured = model(images(2, 0), kv, generator=seeded(), capture_attention_layer=layer)
    (restored.square().mean() + captured.reference(0)[..., 0].mean()).backward()
    unused = {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}
    # train_input off: the input's own keys at the shared layers are never used (AdaIN still reads its values)
    assert unused and all(".attn1.to_k." in name and name.startswith("unet.up_blocks.") for name in unused)
    assert all(p.grad.abs().sum() > 0 for p in model.unet.conv_in.parameters())
    assert not any(p.grad is not None for p in model.reference_unet.parameters())


# ----------------------------------------------------------------------------- the compact recipe's path
PIXEL = [  # the compact recipe as configured (pixels, no noise, residual, full training), shrunk to 32 px
    f"model.face_size={SIZE}", "model.codec_factor=2", "model.unet.in_channels=12", "model.unet.out_channels=12",
    "model.unet.block_out_channels=[8, 16, 16]", "model.unet.sample_size=16", "model.unet.norm_num_groups=4",
    "model.unet.attention_head_dim=2", "model.unet.cross_attention_dim=8", "model.prompt_tokens=3",
]


def pixel_model(*overrides: str) -> InstantRestoreModel:
    return InstantRestoreModel.from_config(InstantRestoreConfig.from_yaml(COMPACT, PIXEL + list(overrides))).eval()


def test_untrained_compact_restorer_returns_its_input_with_or_without_references():
    model = pixel_model()
    assert model.vae is None and model.config.codec == "pixel_unshuffle"
    degraded = images(2, 0)
    with torch.no_grad():
        assert torch.equal(model(degraded), degraded)
        assert torch.equal(model(degraded, model.encode_references(images(3, 1))), degraded)


def test_compact_restorer_trains_whole_and_round_trips(tmp_path):
    model = pixel_model()
    trainable = model.trainable_parameters()
    assert len(trainable) == len(list(model.unet.parameters())) and not any(
        p.requires_grad for p in model.reference_unet.parameters())
    with torch.no_grad():
        for parameter in trainable:  # as if trained: the output is no longer the input
            parameter.add_(torch.randn(parameter.shape, generator=seeded(parameter.numel())) * 0.05)
    path = model.save_pretrained(tmp_path / "ckpt")
    assert (path / "unet" / "config.json").is_file() and not (path / "unet_lora.safetensors").exists()
    loaded = InstantRestoreModel.from_pretrained(path).eval()
    kv = model.encode_references(images(2, 1))
    with torch.no_grad():
        before, after = model(images(1, 0), kv), loaded(images(1, 0), kv)
    assert (before - images(1, 0)).abs().max() > 1e-3
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    # a second stage starts from this checkpoint: its trained UNet becomes the base and the reference branch
    stage2 = pixel_model(f"model.pretrained={path}")
    assert all(torch.equal(a, b) for a, b in zip(stage2.reference_unet.state_dict().values(),
                                                   model.unet.state_dict().values()))
    with torch.no_grad():
        torch.testing.assert_close(stage2(images(1, 0)), model(images(1, 0)), atol=1e-5, rtol=0)


def test_shared_layers_choose_which_layers_share():
    model = pixel_model("model.shared_layers=[up_blocks.1]")
    assert list(model.shared_layers) == ["up_blocks.1.attentions.0.transformer_blocks.0.attn1",
                                         "up_blocks.1.attentions.1.transformer_blocks.0.attn1"]
    assert set(model.encode_references(images(1, 1))) == set(model.shared_layers)
    with pytest.raises(ConfigError, match="matches none"):
        pixel_model("model.shared_layers=[down_blocks.0]")


def test_half_precision_storage_loads_as_float32(tmp_path):
    model = pixel_model()
    path = model.save_pretrained(tmp_path / "ckpt", unet_dtype=torch.float16)
    loaded = InstantRestoreModel.from_pretrained(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert all(torch.equal(a.half().float(), b) for a, b in zip(model.unet.state_dict().values(),
                                                                 loaded.unet.state_dict().values()))


@pytest.mark.parametrize("settings", [{}, {"clip_sample": True}, {"clip_sample": True, "clip_sample_range": 2.0},
                                      {"thresholding": True, "sample_max_value": 3.0}])
def test_clean_latents_are_what_the_schedulers_own_step_predicts(settings, tiny_instantrestore):
    from diffusers import DDPMScheduler

    model = tiny_instantrestore(f"model.scheduler={json.dumps({**SD_TURBO_SCHEDULER, **settings})}")
    config = model.scheduler.config
    assert config.clip_sample == settings.get("clip_sample", False)  # absent: unclipped, unlike diffusers' default
    noise_pred, noisy = torch.randn(2, 2, 4, 8, 8, generator=seeded()) * 3
    for timestep in (1, 249):
        ours = predicted_clean_latents(model.scheduler, noise_pred, noisy, torch.tensor([timestep, timestep]))
        step = DDPMScheduler.from_config(config).step(noise_pred, timestep, noisy, generator=seeded())
        torch.testing.assert_close(ours, step.pred_original_sample, atol=1e-6, rtol=0)
    per_face = predicted_clean_latents(model.scheduler, noise_pred, noisy, torch.tensor([1, 249]))
    assert torch.equal(per_face[1], ours[1]) and not torch.equal(per_face[0], ours[0])


def test_base_weights_rounded_to_bfloat16_when_asked(tiny_instantrestore):
    rounded, plain = tiny_instantrestore("model.round_base_weights_to=bfloat16"), tiny_instantrestore()
    for name, value in plain.reference_unet.state_dict().items():
        ours = rounded.reference_unet.state_dict()[name]
        torch.testing.assert_close(ours, value.to(torch.bfloat16).float(), atol=0, rtol=0)
    base_layer = "conv_out.base_layer.weight"
    assert torch.equal(rounded.unet.state_dict()[base_layer], rounded.reference_unet.state_dict()["conv_out.weight"])
    assert not torch.equal(rounded.unet.state_dict()[base_layer], plain.unet.state_dict()[base_layer])
    with pytest.raises(ConfigError, match="round_base_weights_to"):
        tiny_instantrestore("model.round_base_weights_to=int8")
