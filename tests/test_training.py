"""The training loop on tiny models and a tiny prepared dataset: config errors, learning, exact resume."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from instantrestore.data.prepare import prepare_dataset
from instantrestore.errors import ConfigError, WeightsError
from instantrestore.faces.landmarks import five_points_from_68
from instantrestore.training.config import OptimConfig, load_config
from instantrestore.training import trainer
from instantrestore.training.trainer import StepBatchSampler, learning_rate_factor, train, train_main

SIZE = 64
TINY_GFPGAN = """model:
  out_size: 64
  num_style_feat: 32
  channel_multiplier: 1
  num_mlp: 2
  input_is_latent: true
  different_w: true
  narrow: 0.0625
  sft_half: true
"""


@dataclass
class _Face:
    box: np.ndarray
    score: float
    landmarks68: np.ndarray
    kps5: np.ndarray
    detector_kps5: np.ndarray | None = None

    def align(self, rgb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        affine = np.array([[size / rgb.shape[1], 0, 0], [0, size / rgb.shape[0], 0]])
        return cv2.warpAffine(rgb, affine, (size, size)), affine


class _WholePhotoIsTheFace:
    """Stands in for the detector: the whole photo is the face, landmarks on a fixed grid."""

    def find_faces(self, rgb: np.ndarray) -> list[_Face]:
        height, width = rgb.shape[:2]
        grid = np.stack(np.meshgrid(np.linspace(0.2, 0.8, 17), np.linspace(0.3, 0.8, 4)), -1).reshape(68, 2)
        landmarks = grid * [width, height]
        return [_Face(np.array([0, 0, width, height], np.float32), 0.9, landmarks, five_points_from_68(landmarks))]


def _photo(seed: int) -> np.ndarray:
    """A smooth 'face': a few soft blobs of colour, so there is structure to restore."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:96, 0:96] / 96.0
    image = np.zeros((96, 96, 3))
    for _ in range(4):
        centre, colour, width = rng.random(2), rng.random(3), 0.1 + 0.2 * rng.random()
        image += colour * np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * width ** 2))[..., None]
    return (255 * image / image.max()).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    images = root / "coll" / "images"
    for p, person in enumerate(["a", "b", "c", "d"]):
        for i in range(3):
            path = images / person / f"{person}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(_photo(10 * p + i), cv2.COLOR_RGB2BGR))
    (root / "coll" / "splits.csv").write_text("face_id,split\na,train\nb,train\nc,train\nd,val\n")
    prepare_dataset(images, root / "data", size=SIZE, progress=False, analyzer=_WholePhotoIsTheFace())
    return root / "data"


@pytest.fixture
def gfpgan_config(tmp_path: Path, tiny_data: Path) -> Path:
    (tmp_path / "tiny_gfpgan.yaml").write_text(TINY_GFPGAN)
    config = tmp_path / "train.yaml"
    config.write_text(f"""recipe: gfpgan
model: {{config: tiny_gfpgan.yaml}}
data: {{data_dir: {tiny_data}, size: {SIZE}, preset: gfpgan, num_refs: 2, batch_size: 2, val_samples: 2}}
out_dir: {tmp_path / 'run'}
steps: 4
ema_decay: 0.9
log_every: 1
val_every: 4
checkpoint_every: 2
optim: {{lr_g: 0.002, lr_d: 0.002, grad_clip: 1.0}}
losses: {{l1: 1.0, pyramid: 1.0, adversarial: 0.1, r1_interval: 2, ms_ssim: 1.0}}
""")
    return config


def test_config_errors_are_one_line(gfpgan_config: Path):
    with pytest.raises(ConfigError, match="unknown key 'losses.l3'"):
        load_config(gfpgan_config, ["losses.l3=1"])
    with pytest.raises(ConfigError, match="'steps' must be int"):
        load_config(gfpgan_config, ["steps=many"])
    with pytest.raises(ConfigError, match="'recipe' must be one of"):
        load_config(gfpgan_config, ["recipe=vae"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(gfpgan_config.with_name("absent.yaml"))
    config = load_config(gfpgan_config, ["optim.betas=[0.5, 0.9]", "data.batch_size=3", "model.overrides.narrow=0.1"])
    assert config.optim.betas == (0.5, 0.9) and config.data.batch_size == 3
    assert config.model.overrides == {"narrow": 0.1}
    # the model YAML's section with the run's overrides, dotted keys reaching into sections
    assert config.architecture()["narrow"] == 0.1 and config.architecture()["num_mlp"] == 2
    nested = load_config(gfpgan_config, ["model.overrides={extra.depth: 3}"]).architecture()
    assert nested["extra"] == {"depth": 3}
    assert load_config(gfpgan_config, ["data.preset=[sr8, gfpgan]"]).data.preset == ["sr8", "gfpgan"]
    with pytest.raises(ConfigError, match="'data.preset' must be"):
        load_config(gfpgan_config, ["data.preset=[sr8, 3]"])
    with pytest.raises(ConfigError) as err:
        load_config(gfpgan_config, ["losses=3"])
    assert "\n" not in str(err.value)


def test_batches_depend_only_on_seed_and_step():
    full = list(StepBatchSampler(10, 3, 2, seed=7, start_step=0, steps=5))
    resumed = list(StepBatchSampler(10, 3, 2, seed=7, start_step=3, steps=5))
    assert resumed == full[3 * 2:]
    # every item once per epoch, and every draw its own sample seed
    positions = [item for batch in full for item in batch]
    assert sorted(index for index, _ in positions[:10]) == list(range(10))
    assert [seed for _, seed in positions] == list(range(30))
    # the second process of two gets other samples
    other = list(StepBatchSampler(10, 3, 2, seed=7, start_step=0, steps=5, rank=1, world_size=2))
    assert other[0] != full[0]


def test_learning_rate_warms_up_holds_then_decays_to_zero():
    optim = OptimConfig(warmup_steps=4, decay_steps=10)
    rates = [learning_rate_factor(step, optim, steps=30) for step in range(30)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4:20] == [1.0] * 16
    assert rates[24] == pytest.approx(0.5)  # half way through the cosine
    assert all(a > b for a, b in zip(rates[19:], rates[20:]))
    assert rates[29] == 0.0
    assert learning_rate_factor(5, OptimConfig(), steps=30) == 1.0


def test_gfpgan_loss_goes_down(tmp_path: Path, gfpgan_config: Path):
    """L1 + pyramid (no GAN) on the 9 training faces, fresh degradations each step: the loss drops clearly."""
    out = train_main(str(gfpgan_config), ["steps=20", "losses.adversarial=0", "losses.ms_ssim=0", "data.batch_size=1",
                                          "val_every=1000", "checkpoint_every=1000", "ema_decay=0",
                                          f"out_dir={tmp_path / 'overfit'}", "data.preset=sr4", "optim.lr_g=0.003"])
    losses = [float(row["g_loss"]) for row in _metrics_without_time(tmp_path / "overfit") if row["g_loss"]]
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_gfpgan_run_starts_from_pretrained_weights(tmp_path: Path, gfpgan_config: Path):
    from instantrestore.models.gfpgan import GFPGANv1Clean
    from instantrestore.training.recipes import build_recipe

    torch.manual_seed(3)
    earlier = GFPGANv1Clean(**load_config(gfpgan_config).architecture())
    with torch.no_grad():
        for parameter in earlier.parameters():
            parameter.add_(torch.randn_like(parameter))
    earlier.save_pretrained(tmp_path / "earlier")
    config = load_config(gfpgan_config, [f"model.overrides.pretrained={tmp_path / 'earlier'}"])
    started = build_recipe(config).build_generator()
    for (name, expected), actual in zip(earlier.state_dict().items(), started.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert all(parameter.requires_grad for parameter in started.parameters())
    missing = load_config(gfpgan_config, [f"model.overrides.pretrained={tmp_path / 'absent'}"])
    with pytest.raises(WeightsError, match="absent") as error:
        build_recipe(missing).build_generator()
    assert "\n" not in str(error.value)


def test_gradient_accumulation_steps_each_optimiser_once_per_step(tmp_path: Path, gfpgan_config: Path):
    """grad_accum 2: two micro-batches per step, one generator and one discriminator update per step."""
    train_main(str(gfpgan_config), ["steps=2", "grad_accum=2", "data.batch_size=1", "val_every=1000",
                                    f"out_dir={tmp_path / 'accum'}"])
    optimizers = torch.load(tmp_path / "accum" / "checkpoint" / "optimizers.pt", weights_only=True)
    for name in ("g", "d"):
        assert {float(state["step"]) for state in optimizers[name]["state"].values()} == {2.0}, name


def _metrics_without_time(run: Path) -> list[dict[str, str]]:
    """The training-loss rows (a run that ends early also validates at its end) less the wall time."""
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in ("seconds", "val_psnr")}
                for row in csv.DictReader(handle) if row["g_loss"]]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = run / "checkpoint"
    return {f"{name}.{key}": value for name in ("generator", "discriminator", "ema")
            if (checkpoint / f"{name}.safetensors").is_file()
            for key, value in load_file(str(checkpoint / f"{name}.safetensors")).items()}


def _record_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps whose generator forward the next training run computes, in order."""
    steps: list[int] = []
    build_recipe = trainer.build_recipe

    def recording_recipe(config):
        recipe = build_recipe(config)
        generator_step = recipe.generator_step

        def recorded(generator, discriminator, batch, step, rng):
            steps.append(step)
            return generator_step(generator, discriminator, batch, step, rng)

        recipe.generator_step = recorded
        return recipe

    monkeypatch.setattr(trainer, "build_recipe", recording_recipe)
    return steps


def _assert_same_training_state(straight: Path, resumed: Path) -> None:
    """Weights, discriminator and EMA (with its update count) where the run has them, optimiser moments and
    step counts, metrics."""
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    optimizers_a, optimizers_b = (torch.load(run / "checkpoint" / "optimizers.pt", weights_only=True)
                                  for run in (straight, resumed))
    assert optimizers_a.keys() == optimizers_b.keys()
    for name in optimizers_a:
        assert optimizers_a[name]["param_groups"] == optimizers_b[name]["param_groups"]
        state_a, state_b = optimizers_a[name]["state"], optimizers_b[name]["state"]
        assert state_a.keys() == state_b.keys() and state_a
        for index in state_a:
            for key, value in state_a[index].items():
                assert torch.equal(value, state_b[index][key]), (name, index, key)
    assert _metrics_without_time(straight) == _metrics_without_time(resumed)
    state_a, state_b = (torch.load(run / "checkpoint" / "state.pt", weights_only=True) for run in (straight, resumed))
    assert (state_a["step"], state_a["ema_step"]) == (state_b["step"], state_b["ema_step"])


def _resume_without_rng_state(run: Path, copy: Path, seed: int) -> Path:
    """A copy of RUN whose checkpoint holds freshly seeded RNG states, as if they had not been restored."""
    shutil.copytree(run, copy)
    fresh = torch.Generator().manual_seed(seed).get_state()
    torch.save({"torch": fresh, "train": fresh, "cuda": []}, copy / "checkpoint" / "rng_0.pt")
    return copy


def _generators_differ(run_a: Path, run_b: Path) -> bool:
    a, b = _weights(run_a), _weights(run_b)
    return any(not torch.equal(a[key], b[key]) for key in a if key.startswith("generator."))


def test_gfpgan_resume_is_bit_identical(tmp_path: Path, gfpgan_config: Path, monkeypatch: pytest.MonkeyPatch):
    """4 steps in one go == 2 steps, stop, resume to 4 (weights, D, EMA, optimisers, metrics all equal), and
    the resumed run computes only steps 2 and 3: the state it continues from came from the checkpoint."""
    straight = tmp_path / "straight"
    train_main(str(gfpgan_config), [f"out_dir={straight}"])
    interrupted = tmp_path / "interrupted"
    train_main(str(gfpgan_config), [f"out_dir={interrupted}", "steps=2"])
    without_rng = _resume_without_rng_state(interrupted, tmp_path / "without_rng", load_config(gfpgan_config).seed)
    # the resumed run takes the same config with steps=4; the checkpoint at 2 is its starting point
    steps = _record_steps(monkeypatch)
    train(load_config(gfpgan_config, [f"out_dir={interrupted}"]))
    assert steps == [2, 3]
    _assert_same_training_state(straight, interrupted)
    weights = _weights(straight)
    assert {key.split(".")[0] for key in weights} == {"generator", "discriminator", "ema"}
    # the EMA averages every trainable weight, and has taken one update per step
    assert {key.removeprefix("ema.") for key in weights if key.startswith("ema.")} == {
        key.removeprefix("generator.") for key in weights if key.startswith("generator.") and ".noises." not in key}
    assert torch.load(straight / "checkpoint" / "state.pt", weights_only=True)["ema_step"] == 4
    assert (straight / "val" / "step_0000004.png").is_file()
    # the generator's noise comes from the saved RNG: without it, the same two steps end elsewhere
    train(load_config(gfpgan_config, [f"out_dir={without_rng}"]))
    assert _generators_differ(straight, without_rng)


def test_adversarial_term_turned_on_at_resume_starts_a_fresh_discriminator(tmp_path: Path, gfpgan_config: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A run without the adversarial term, resumed with it: the generator continues from the checkpoint, the
    discriminator starts fresh, trains, and is in the next checkpoint; notes.txt says so."""
    run = tmp_path / "turned_on"
    train_main(str(gfpgan_config), [f"out_dir={run}", "steps=2", "losses.adversarial=0"])
    assert not (run / "checkpoint" / "discriminator.safetensors").is_file()
    generator_at_2 = load_file(str(run / "checkpoint" / "generator.safetensors"))
    steps = _record_steps(monkeypatch)
    train_main(str(gfpgan_config), [f"out_dir={run}"])
    assert steps == [2, 3]
    rows = _metrics_without_time(run)
    assert [bool(row["d_loss"]) for row in rows] == [False, False, True, True]
    assert "fresh discriminator" in (run / "notes.txt").read_text()
    assert (run / "checkpoint" / "discriminator.safetensors").is_file()
    generator_at_4 = load_file(str(run / "checkpoint" / "generator.safetensors"))
    assert any(not torch.equal(value, generator_at_4[key]) for key, value in generator_at_2.items())


TINY_INSTANTRESTORE = """model:
  face_size: 64
  embed_base: true
  prompt_encoder: random
  prompt_tokens: 2
  unet: {sample_size: 8, in_channels: 4, out_channels: 4, block_out_channels: [8, 16, 16],
         down_block_types: [CrossAttnDownBlock2D, CrossAttnDownBlock2D, DownBlock2D],
         up_block_types: [UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D], layers_per_block: 1,
         attention_head_dim: 2, cross_attention_dim: 8, use_linear_projection: true, norm_num_groups: 8}
  vae: {in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 8, 8, 8],
        down_block_types: [DownEncoderBlock2D, DownEncoderBlock2D, DownEncoderBlock2D, DownEncoderBlock2D],
        up_block_types: [UpDecoderBlock2D, UpDecoderBlock2D, UpDecoderBlock2D, UpDecoderBlock2D],
        layers_per_block: 1, norm_num_groups: 8, sample_size: 64}
  unet_lora_rank: 2
  unet_lora_alpha: 2
  vae_lora_rank: 2
  vae_lora_alpha: 2
"""


@pytest.fixture
def instantrestore_config(tmp_path: Path, tiny_data: Path) -> Path:
    (tmp_path / "tiny_ir.yaml").write_text(TINY_INSTANTRESTORE)
    config = tmp_path / "train_ir.yaml"
    config.write_text(f"""recipe: instantrestore
model: {{config: tiny_ir.yaml}}
data: {{data_dir: {tiny_data}, size: {SIZE}, preset: gfpgan, num_refs: 2, batch_size: 2, val_samples: 2}}
out_dir: {tmp_path / 'run_ir'}
steps: 2
ema_decay: 0.9
reference_dropout: 0.3
log_every: 1
val_every: 2
checkpoint_every: 1
optim: {{lr_g: 0.001, lr_d: 0.001, betas: [0.9, 0.999], grad_clip: 1.0}}
losses: {{ms_ssim: 1.0, lpips: 5.0, lpips_fallback_l1: 1.0, adversarial: 0.5, r1_interval: 2, landmark: 5000.0,
          landmark_layer: up_blocks.2.attentions.0.transformer_blocks.0.attn1}}
""")
    return config


def test_instantrestore_resume_is_bit_identical(tmp_path: Path, instantrestore_config: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    straight, interrupted = tmp_path / "ir_straight", tmp_path / "ir_interrupted"
    final = train_main(str(instantrestore_config), [f"out_dir={straight}"])
    train_main(str(instantrestore_config), [f"out_dir={interrupted}", "steps=1"])
    without_rng = _resume_without_rng_state(interrupted, tmp_path / "ir_without_rng",
                                            load_config(instantrestore_config).seed)
    steps = _record_steps(monkeypatch)
    train_main(str(instantrestore_config), [f"out_dir={interrupted}"])
    assert steps == [1]
    _assert_same_training_state(straight, interrupted)
    weights = _weights(straight)
    assert {key.split(".")[0] for key in weights} == {"generator", "discriminator", "ema"}
    # the EMA covers the trainable weights only: LoRA and conv_in, never the frozen reference branch
    ema_keys = [key for key in weights if key.startswith("ema.")]
    assert ema_keys and all("lora_" in key or ".conv_in." in key for key in ema_keys)
    # reference dropout, the diffusion noise and the timestep are drawn from the saved RNG
    train_main(str(instantrestore_config), [f"out_dir={without_rng}"])
    assert _generators_differ(straight, without_rng)
    header = (straight / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "landmark" in header and "l1_for_lpips" in header and "d_loss" in header
    notes = (straight / "notes.txt").read_text()
    assert "lpips: off" in notes or "lpips: on" in notes
    from instantrestore.models.instantrestore import InstantRestoreModel
    assert isinstance(InstantRestoreModel.from_pretrained(final), InstantRestoreModel)




TINY_COMPACT = """model:
  face_size: 64
  embed_base: true
  prompt_encoder: random
  prompt_tokens: 2
  codec: pixel_unshuffle
  codec_factor: 4
  input_noise: false
  prediction: residual
  finetune: full
  train_timesteps: [249]
  reference_timestep: 249
  train_input: true
  unet: {sample_size: 16, in_channels: 48, out_channels: 48, block_out_channels: [8, 16, 16],
         down_block_types: [CrossAttnDownBlock2D, CrossAttnDownBlock2D, DownBlock2D],
         up_block_types: [UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D], layers_per_block: 1,
         attention_head_dim: 2, cross_attention_dim: 8, use_linear_projection: true, norm_num_groups: 8}
"""


def _tiny_compact_blind_config(tmp_path: Path, tiny_data: Path) -> Path:
    """A blind compact InstantRestore run on the tiny data, writing to tmp_path/blind."""
    (tmp_path / "compact.yaml").write_text(TINY_COMPACT)
    config = tmp_path / "train.yaml"
    config.write_text(f"""recipe: instantrestore
model: {{config: compact.yaml, overrides: {{shared_attention: false}}}}
data: {{data_dir: {tiny_data}, size: {SIZE}, preset: sr8, num_refs: 0, batch_size: 2, val_samples: 2}}
out_dir: {tmp_path / 'blind'}
steps: 2
ema_decay: 0.0
reference_dropout: 0.0
log_every: 1
val_every: 2
checkpoint_every: 1
optim: {{lr_g: 0.001, betas: [0.9, 0.999], grad_clip: 1.0}}
losses: {{ms_ssim: 1.0, lpips: 5.0, lpips_fallback_l1: 5.0}}
""")
    return config


def test_compact_two_stages_blind_then_cached_references_resume_exactly(tmp_path: Path, tiny_data: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    config = _tiny_compact_blind_config(tmp_path, tiny_data)
    blind = train_main(str(config), [])
    stage2 = [f"model.overrides={{pretrained: {blind}}}", "data.num_refs=2", "cache_reference_features=true",
              "losses.landmark=1.0", "reference_dropout=0.3", "steps=3"]
    straight = train_main(str(config), stage2 + [f"out_dir={tmp_path / 'refs'}"])
    train_main(str(config), stage2 + [f"out_dir={tmp_path / 'resumed'}", "steps=1"])
    steps = _record_steps(monkeypatch)
    train_main(str(config), stage2 + [f"out_dir={tmp_path / 'resumed'}"])
    assert steps == [1, 2]
    _assert_same_training_state(tmp_path / "refs", tmp_path / "resumed")
    rows = _metrics_without_time(tmp_path / "refs")
    assert any(row.get("landmark") for row in rows)
    from instantrestore.models.instantrestore import InstantRestoreModel
    model = InstantRestoreModel.from_pretrained(straight)
    blind_unet = InstantRestoreModel.from_pretrained(blind).unet.state_dict()
    assert all(torch.equal(value, blind_unet[key]) for key, value in model.reference_unet.state_dict().items())
    assert any(not torch.equal(value, blind_unet[key]) for key, value in model.unet.state_dict().items())


def test_both_recipes_honour_the_l1_weight():
    """`losses.l1` adds L1 on [-1, 1] in either recipe (InstantRestore's once ignored it)."""
    from instantrestore.training.recipes import Recipe

    for config_name in ("train_instantrestore_compact.yaml", "train_gfpgan_compact.yaml"):
        overrides = ["losses.identity=0", "losses.lpips=0", "losses.ms_ssim=0", "losses.l1=2"]
        config = load_config(Path(__file__).parents[1] / "configs" / config_name, overrides)
        images = torch.rand(2, 3, 64, 64) * 2 - 1
        total, logs = Recipe(config).quality_terms(images, images.flip(0))
        assert total.item() == pytest.approx(2 * (images - images.flip(0)).abs().mean().item())
        assert logs["l1"] == pytest.approx((images - images.flip(0)).abs().mean().item())


def test_init_from_continues_an_exported_model(tmp_path: Path, tiny_data: Path):
    """`init_from` starts a run from a `save_pretrained` export (how a session continues the packaged model):
    at learning rate 0 the export comes out unchanged; a model of another shape is a one-line error."""
    from instantrestore.models.instantrestore import InstantRestoreModel

    config = _tiny_compact_blind_config(tmp_path, tiny_data)
    trained = train_main(str(config), [])
    frozen = ["steps=1", f"init_from={trained}", "optim.lr_g=0.0"]
    continued = train_main(str(config), frozen + [f"out_dir={tmp_path / 'continued'}"])
    fresh = train_main(str(config), ["steps=1", "optim.lr_g=0.0", f"out_dir={tmp_path / 'fresh'}"])

    def unet(path: Path) -> dict[str, torch.Tensor]:
        return InstantRestoreModel.from_pretrained(path).unet.state_dict()

    expected = unet(trained)
    assert all(torch.equal(value, expected[key]) for key, value in unet(continued).items())
    assert any(not torch.equal(value, expected[key]) for key, value in unet(fresh).items())
    assert "init_from" in (tmp_path / "continued" / "notes.txt").read_text()
    with pytest.raises(ConfigError, match="init_from does not fit") as err:
        other_width = "model.overrides.unet.cross_attention_dim=16"
        train_main(str(config), frozen + [f"out_dir={tmp_path / 'other'}", other_width])
    assert "\n" not in str(err.value)
