"""What differs between the two restorers inside the one training loop: the generator, how a batch goes
through it and its losses, the GAN update (the generator's adversarial term and the discriminator's step,
side by side), and how the result is saved. The loop (`trainer.py`) owns everything else: data,
optimisers, gradient accumulation, EMA, validation and checkpoints.

A recipe builds its generator from `TrainConfig.architecture()` (the model YAML's `model` section with the
run's `model.overrides`), keeps the optional pretrained losses (LPIPS, identity) and reports which are on,
and why not. Everything random in a generator forward is drawn from the `torch.Generator` the trainer
passes in, so a resumed run replays the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from instantrestore import losses
from instantrestore.errors import ConfigError
from instantrestore.models.attention import AttentionCapture
from instantrestore.models.discriminator import StyleGAN2Discriminator
from instantrestore.training.config import TrainConfig


@dataclass
class GeneratorStep:
    loss: torch.Tensor                          # weighted sum, what is backpropagated
    fake: torch.Tensor                          # restored faces, for the discriminator
    real: torch.Tensor                          # the targets
    logs: dict[str, float] = field(default_factory=dict)


class Recipe:
    """The interface the trainer sees. Images are in [-1, 1] throughout: the dataset's batches, the
    generators' inputs and outputs, the discriminator's; only `quality_terms` looks at [0, 1]."""

    name = "recipe"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.perceptual = losses.PerceptualLoss() if config.losses.lpips > 0 else None
        self.identity = losses.IdentityLoss(config.losses.identity_net) if config.losses.identity > 0 else None
        self.notes: list[str] = []
        if self.perceptual is not None:
            self.notes.append("lpips: " + ("on" if self.perceptual.available else f"off: {self.perceptual.reason}"))
            if not self.perceptual.available and config.losses.lpips_fallback_l1 > 0:
                self.notes.append(f"lpips is replaced by L1 x {config.losses.lpips_fallback_l1} (losses.lpips_fallback_l1)")
        if self.identity is not None:
            self.notes.append("identity: " + (f"on, {self.identity.name}" if self.identity.available
                                              else f"off: {self.identity.reason}"))

    def build_generator(self) -> nn.Module:
        raise NotImplementedError

    def load_exported(self, path: str) -> nn.Module:
        """A generator exported by `save_pretrained` (e.g. the packaged weights), on the CPU."""
        raise NotImplementedError

    def start_from_exported(self, generator: nn.Module, path: str) -> None:
        """`init_from`: copy an exported generator's weights into the fresh one (same architecture), so a run
        continues a packaged model; optimiser, EMA and discriminator start fresh."""
        try:
            generator.load_state_dict(self.load_exported(path).state_dict(), strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"{path}: init_from does not fit this run's model ({first})") from None

    def build_discriminator(self) -> nn.Module | None:
        """A StyleGAN2 discriminator at the training size when the adversarial weight is > 0."""
        if self.config.losses.adversarial <= 0:
            return None
        return StyleGAN2Discriminator(self.config.data.size, **self.discriminator_size())

    def discriminator_size(self) -> dict[str, Any]:
        return {"channel_multiplier": 1, "narrow": 0.25}

    def trainable_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return [p for p in generator.parameters() if p.requires_grad]

    def generator_step(self, generator: nn.Module, discriminator: nn.Module | None, batch: dict[str, Any],
                       step: int, rng: torch.Generator) -> GeneratorStep:
        raise NotImplementedError

    def restore(self, generator: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Deterministic restoration of a batch for validation: (B, 3, S, S) in [-1, 1]."""
        raise NotImplementedError

    def save_pretrained(self, generator: nn.Module, out_dir: Path) -> Path:
        """Both generators save themselves as `load_restorer` reads them, leaving the training model as it is."""
        return generator.save_pretrained(out_dir)

    # shared terms ------------------------------------------------------------------------------
    def quality_terms(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 (on [-1, 1], as GFP-GAN's), MS-SSIM, LPIPS (or its L1 stand-in) and identity of `output` against
        `target` ([-1, 1]); all but the first are defined on [0, 1] images, so the one conversion is here."""
        weights = self.config.losses
        total = output.new_zeros(())
        logs: dict[str, float] = {}
        if weights.l1 > 0:
            term = losses.l1_loss(output, target)
            total = total + weights.l1 * term
            logs["l1"] = term.item()
        output01, target01 = (output + 1) / 2, (target + 1) / 2
        if weights.ms_ssim > 0:
            term = losses.ms_ssim_loss(output01, target01)
            total = total + weights.ms_ssim * term
            logs["ms_ssim"] = term.item()
        if self.perceptual is not None:
            if self.perceptual.available:
                term = self.perceptual(output01, target01)
                total = total + weights.lpips * term
                logs["lpips"] = term.item()
            elif weights.lpips_fallback_l1 > 0:
                term = losses.l1_loss(output01, target01)
                total = total + weights.lpips_fallback_l1 * term
                logs["l1_for_lpips"] = term.item()
        if self.identity is not None and self.identity.available:
            term = self.identity(output01, target01)
            total = total + weights.identity * term
            logs["identity"] = term.item()
        return total, logs

    # the GAN update: the generator's adversarial term, and the discriminator's step on the same images
    def adversarial_term(self, discriminator: nn.Module | None, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if discriminator is None:
            return fake.new_zeros(()), {}
        term = losses.generator_adversarial_loss(discriminator(fake))
        return self.config.losses.adversarial * term, {"g_adv": term.item()}

    def discriminator_step(self, discriminator: nn.Module, fake: torch.Tensor, real: torch.Tensor,
                           step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Logistic loss on a generator step's (detached) `fake` against `real`, plus lazy R1 on the reals
        every `r1_interval` steps, scaled by the interval (StyleGAN2)."""
        weights = self.config.losses
        with_r1 = step % weights.r1_interval == 0
        real = real.detach().requires_grad_(with_r1)
        real_logits = discriminator(real)
        loss = losses.discriminator_adversarial_loss(real_logits, discriminator(fake.detach()))
        logs = {"d_loss": loss.item()}
        if with_r1:
            r1 = losses.r1_penalty(real_logits.float(), real)
            loss = loss + weights.r1_gamma / 2 * weights.r1_interval * r1
            logs["r1"] = r1.item()
        return loss, logs


class GFPGANRecipe(Recipe):
    """GFP-GAN: L1 + image pyramid + adversarial (+ identity, perceptual when their weights exist).

    The facial-component discriminators of the paper need per-face eye/mouth boxes and are left out.
    """

    name = "gfpgan"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.arch = config.architecture()
        # a StyleGAN2 prior trained here from scratch must learn; GFP-GAN freezes only a pretrained one
        self.arch.setdefault("fix_decoder", bool(self.arch.get("decoder_load_path")))
        if self.arch.get("out_size") != config.data.size:
            raise ConfigError(f"{config.config_path}: data.size {config.data.size} differs from the model's "
                              f"out_size {self.arch.get('out_size')}")

    def build_generator(self) -> nn.Module:
        """`pretrained` (a `save_pretrained` directory or an official checkpoint) starts the run from those
        weights, as GFP-GAN's `pretrain_network_g`; the discriminator then starts fresh."""
        from instantrestore.models.gfpgan import GFPGANv1Clean

        arch = dict(self.arch)
        pretrained = arch.pop("pretrained", None)
        try:
            if pretrained is None:
                return GFPGANv1Clean(**arch)
            return GFPGANv1Clean.from_pretrained(pretrained, **arch)
        except TypeError as err:
            raise ConfigError(f"{self.config.model_config_path()}: {err}") from None

    def load_exported(self, path: str) -> nn.Module:
        from instantrestore.models.gfpgan import GFPGANv1Clean

        arch = {key: value for key, value in self.arch.items() if key != "pretrained"}
        return GFPGANv1Clean.from_pretrained(path, **arch)

    def discriminator_size(self) -> dict[str, Any]:
        return {"channel_multiplier": self.arch.get("channel_multiplier", 2), "narrow": self.arch.get("narrow", 1.0)}

    def generator_step(self, generator, discriminator, batch, step, rng) -> GeneratorStep:
        weights = self.config.losses
        degraded, target = batch["degraded"], batch["target"]
        output, rgb_outputs = generator(degraded, return_rgb=True, randomize_noise=True, generator=rng)
        logs: dict[str, float] = {}
        total = output.new_zeros(())
        if weights.pyramid > 0 and (weights.pyramid_until == 0 or step < weights.pyramid_until):
            term = losses.pyramid_l1_loss(rgb_outputs, target)
            total = total + weights.pyramid * term
            logs["pyramid"] = term.item()
        quality, quality_logs = self.quality_terms(output, target)
        adversarial, adversarial_logs = self.adversarial_term(discriminator, output)
        total = total + quality + adversarial
        logs.update(quality_logs, **adversarial_logs)
        return GeneratorStep(loss=total, fake=output, real=target, logs=logs)

    def restore(self, generator, batch) -> torch.Tensor:
        output, _ = generator(batch["degraded"])
        return output.clamp(-1, 1)


class InstantRestoreRecipe(Recipe):
    """InstantRestore: a single-step diffusion restorer reading reference K/V through shared attention.

    Losses (paper): LPIPS 5, 1 - MS-SSIM 1, identity 1, adversarial 0.5, landmark attention 5000;
    LPIPS only where its weights are on disk, else replaced by `losses.lpips_fallback_l1` (say so in the
    config). The paper's discriminator (vision-aided, DINOv2) needs hub weights; the StyleGAN2
    discriminator of the GFP-GAN recipe stands in. References are dropped with probability
    `reference_dropout` so one model also restores blind.

    The landmark attention loss reads one shared layer (`losses.landmark_layer`, or one drawn per step)
    and, per sample, one reference drawn among those whose landmarks, like the target's, are reliable.
    The architecture is an `InstantRestoreConfig`; loss weights and the optimisation recipe come from the
    training config only.
    """

    name = "instantrestore"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        from instantrestore.models.config import InstantRestoreConfig

        self.model_config = InstantRestoreConfig.from_dict(config.architecture(), str(config.model_config_path()))
        if self.model_config.face_size != config.data.size:
            raise ConfigError(f"{config.config_path}: data.size {config.data.size} differs from the model's "
                              f"face_size {self.model_config.face_size}")
        self.reference_features = None
        if config.cache_reference_features:
            if self.model_config.input_noise:
                raise ConfigError(f"{config.config_path}: cache_reference_features needs a noise-free reference "
                                  f"branch (model.input_noise: false)")
            self.reference_features = TrainingReferenceFeatures()

    def build_generator(self) -> nn.Module:
        from instantrestore.models.instantrestore import InstantRestoreModel

        return InstantRestoreModel.from_config(self.model_config)

    def load_exported(self, path: str) -> nn.Module:
        from instantrestore.models.instantrestore import InstantRestoreModel

        return InstantRestoreModel.from_pretrained(path)

    def trainable_parameters(self, generator: nn.Module) -> list[nn.Parameter]:
        return list(extract_model_from_parallel(generator).trainable_parameters())

    def generator_step(self, generator, discriminator, batch, step, rng) -> GeneratorStep:
        weights = self.config.losses
        model = extract_model_from_parallel(generator)
        reference_mask = drop_references(batch["reference_mask"], self.config.reference_dropout, rng)
        # the reference branch is frozen: its keys/values carry no gradient
        if self.reference_features is not None:
            reference_kv = self.reference_features(model, batch)
        else:
            reference_kv = model.encode_references(batch["references"], generator=rng)
        layer = None
        if weights.landmark > 0 and model.shared_layers:
            layers = list(model.shared_layers)
            layer = weights.landmark_layer or layers[int(torch.randint(len(layers), (), generator=rng, device=rng.device))]
        result = generator(batch["degraded"], reference_kv=reference_kv, reference_mask=reference_mask,
                           generator=rng, capture_attention_layer=layer)
        output, captured = result if layer is not None else (result, None)
        total, logs = self.quality_terms(output, batch["target"])
        if captured is not None and captured.num_refs > 0:
            term = landmark_term(captured, batch, reference_mask, self.config.data.size, rng)
            total = total + weights.landmark * term
            logs["landmark"] = term.item()
        adversarial, adversarial_logs = self.adversarial_term(discriminator, output)
        logs.update(adversarial_logs)
        return GeneratorStep(loss=total + adversarial, fake=output, real=batch["target"], logs=logs)

    def restore(self, generator, batch) -> torch.Tensor:
        seeded = torch.Generator(device=batch["degraded"].device).manual_seed(0)
        reference_kv = generator.encode_references(batch["references"], generator=seeded)
        output = generator(batch["degraded"], reference_kv=reference_kv,
                           reference_mask=batch["reference_mask"], generator=seeded)
        return output.clamp(-1, 1)


class TrainingReferenceFeatures:
    """The reference keys/values of training photos, each computed once per run (`cache_reference_features`).

    Kept per (person, photo) in fp16 (about 0.7 MB a photo at compact scale), so after the first epoch a
    step's four references cost a lookup instead of four passes through the reference branch.
    """

    def __init__(self) -> None:
        self.features: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """layer -> (2, B, K, N, C) for the batch's references; zeros in padded slots."""
        references, present = batch["references"], batch["reference_mask"]
        batch_size, num_refs = present.shape
        keys = [[(batch["person"][b], batch["reference_names"][k][b]) for k in range(num_refs)]
                for b in range(batch_size)]
        missing = {keys[b][k]: references[b, k] for b in range(batch_size) for k in range(num_refs)
                   if present[b, k] and keys[b][k] not in self.features}
        # one reference per pass: batched, the last bits would depend on which photos happened to be
        # missing together, and a resumed run (empty cache) would drift from an uninterrupted one
        for key, reference in missing.items():
            encoded = model.encode_references(reference[None])  # layer -> (2, 1, 1, N, C)
            self.features[key] = {layer: kv[:, 0, 0].to(torch.float16).clone() for layer, kv in encoded.items()}
        stacked = {}
        for layer in model.shared_layers:
            example = next(self.features[keys[b][k]][layer] for b in range(batch_size) for k in range(num_refs)
                           if present[b, k]) if present.any() else None
            if example is None:
                return {}
            slots = [[self.features[keys[b][k]][layer] if present[b, k] else torch.zeros_like(example)
                      for k in range(num_refs)] for b in range(batch_size)]
            stacked[layer] = torch.stack([torch.stack(row, dim=1) for row in slots], dim=1).float()
        return stacked


def landmark_term(captured: AttentionCapture, batch: dict[str, Any], reference_mask: torch.Tensor, image_size: int,
                  rng: torch.Generator) -> torch.Tensor:
    """Landmark attention loss of one captured layer against one reference per sample, drawn among those
    whose landmarks, like the target's, are reliable; samples without such a reference weigh 0."""
    usable = reference_mask & batch["reference_landmarks_valid"] & batch["target_landmarks_valid"][:, None]
    draw = torch.rand(usable.shape, generator=rng, device=rng.device).to(usable.device)
    chosen = draw.masked_fill(~usable, -1.0).argmax(dim=1)                           # (B,)
    rows = torch.arange(usable.shape[0], device=usable.device)
    attention = captured.references().mean(1)[rows, :, chosen]                      # (B, Nq, N), heads averaged
    return losses.landmark_attention_loss(
        attention[:, None].float(), batch["target_landmarks"], batch["reference_landmarks"][rows, chosen][:, None],
        captured.side, image_size, reference_mask=usable.any(dim=1)[:, None])


def drop_references(reference_mask: torch.Tensor, probability: float, rng: torch.Generator) -> torch.Tensor:
    """Reference dropout: with `probability`, a sample keeps none of its references (trains blind use)."""
    keep = torch.rand(reference_mask.shape[0], generator=rng, device=rng.device) >= probability
    return reference_mask & keep.to(reference_mask.device)[:, None]


RECIPES: dict[str, type[Recipe]] = {"gfpgan": GFPGANRecipe, "instantrestore": InstantRestoreRecipe}


def build_recipe(config: TrainConfig) -> Recipe:
    return RECIPES[config.recipe](config)
