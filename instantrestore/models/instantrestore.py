"""InstantRestore (Zhang et al. 2024): a single-step diffusion restorer with shared-image attention.

    degraded face --VAE enc--> latent --noise t--> UNet (LoRA) --eps->x0--> VAE dec --> restored face
                                                    ^ up-block self-attention also attends to
    references --frozen VAE enc--> noise t=1 --> frozen UNet --> keys/values of the same 9 layers

One class at both scales: `configs/instantrestore_sd_turbo.yaml` (stabilityai/sd-turbo UNet with LoRA, the
sd-vae-ft-mse VAE, the fixed CLIP prompt, 512 px) and `configs/instantrestore_compact.yaml` (a small
UNet2DConditionModel trained whole on pixels: lossless space-to-depth in place of the VAE, no input
noise, a residual x0 from a zero-initialised output layer; a fixed random prompt embedding, 256 px).

Checkpoint directory (`save_pretrained`):
    config.json              {"restorer": "instantrestore", "model": InstantRestoreConfig}
    unet_lora.safetensors    LoRA of the restoring UNet (diffusers `save_lora_adapter`, LoraConfig in metadata)
    unet/                    or, with `finetune: full`, the whole restoring UNet (a diffusers folder, so a
                             later training stage can name this checkpoint as its `pretrained` base)
    vae_lora.safetensors     LoRA of its VAE (codec vae)
    trained.safetensors      the fully trained UNet conv_in (LoRA), the VAE skip convolutions (with
                             `vae_skip`) and the stored prompt embedding
    base/unet, base/vae      the base weights, only with `embed_base` (compact); otherwise `pretrained` names them
The reference branch is rebuilt from the base weights: it is never trained.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from peft import LoraConfig
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from instantrestore.errors import ConfigError, WeightsError
from instantrestore.models.attention import (AttentionCapture, ReferenceRecordProcessor, ReferenceStore,
                                             SharedAttnProcessor, install_processors)
from instantrestore.models.config import InstantRestoreConfig

CONFIG_NAME = "config.json"
UNET_LORA_NAME = "unet_lora.safetensors"
VAE_LORA_NAME = "vae_lora.safetensors"
TRAINED_NAME = "trained.safetensors"
RESTORING_UNET = "unet"  # the whole restoring UNet, with `finetune: full`
EMBEDDED_BASE = "base"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# --------------------------------------------------------------------------- base components
def _from_pretrained(model_class, name: str, subfolder: str | None):
    """Load a diffusers/transformers component from a local directory or the hub; WeightsError if it cannot."""
    where = f"{name}/{subfolder}" if subfolder else name
    if Path(name).is_dir() or not _HUB_ID.match(name):
        if not Path(where).is_dir():
            raise WeightsError(f"{where}: no such directory (expected {model_class.__name__} weights there)")
        try:
            loaded = model_class.from_pretrained(name, subfolder=subfolder)
        except (OSError, ValueError, RuntimeError) as err:
            raise WeightsError(f"{where}: cannot load {model_class.__name__} ({_first_line(err)})") from None
        # weights stored in half precision (the packaged compact model) compute in float32
        return loaded.float() if isinstance(loaded, torch.nn.Module) else loaded
    from huggingface_hub import constants

    try:  # the local Hugging Face cache first: no network needed once downloaded
        return model_class.from_pretrained(name, subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError):
        if constants.HF_HUB_OFFLINE:
            raise WeightsError(f"{where}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it "
                               f"(`huggingface-cli download {name}`) or set model.pretrained to a local directory") from None
    try:
        return model_class.from_pretrained(name, subfolder=subfolder)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{where}: cannot download {model_class.__name__} ({_first_line(err)}); set model.pretrained "
                           f"to a local directory with unet/ and vae/ subfolders") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _resolve(name: str | None, root: Path | None) -> str | None:
    """A relative path inside a checkpoint (the embedded base) resolves against the checkpoint directory."""
    if name is not None and root is not None and (root / name).is_dir():
        return str(root / name)
    return name


def build_base_components(config: InstantRestoreConfig, root: Path | None = None, with_prompt: bool = True
                          ) -> tuple[UNet2DConditionModel, AutoencoderKL | None, torch.Tensor | None]:
    """The pretrained UNet, VAE and prompt embedding (random compact ones when `pretrained` is None).
    The VAE is None with the weightless pixel_unshuffle codec. A fresh UNet predicting residuals gets a
    zero output convolution, so the restorer starts as the identity.
    """
    pretrained = _resolve(config.pretrained, root)
    vae_pretrained = _resolve(config.vae_pretrained, root)
    if pretrained is None:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(config.init_seed)
            try:
                unet = UNet2DConditionModel(**config.unet)
                vae = AutoencoderKL(**config.vae) if config.codec == "vae" else None
            except (TypeError, ValueError) as err:
                raise ConfigError(f"model.unet / model.vae: {_first_line(err)}") from None
        if config.prediction == "residual":
            torch.nn.init.zeros_(unet.conv_out.weight)
            torch.nn.init.zeros_(unet.conv_out.bias)
    else:
        unet = _from_pretrained(UNet2DConditionModel, pretrained, "unet")
        vae = None
    if config.codec != "vae":
        vae = None
    elif vae_pretrained is not None:
        vae = _from_pretrained(AutoencoderKL, vae_pretrained, None)
    elif vae is None:
        vae = _from_pretrained(AutoencoderKL, pretrained, "vae")

    prompt_embeds = None
    if with_prompt and config.prompt_encoder == "clip":
        prompt_embeds = encode_prompt(pretrained, config.prompt)
    elif with_prompt:
        generator = torch.Generator().manual_seed(config.init_seed)
        prompt_embeds = torch.randn(1, config.prompt_tokens, unet.config.cross_attention_dim, generator=generator)
    if config.round_base_weights_to is not None:
        with torch.no_grad():
            for tensor in [*unet.state_dict().values(), *vae.state_dict().values()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(getattr(torch, config.round_base_weights_to)))
    return unet, vae, prompt_embeds


@torch.no_grad()
def encode_prompt(pretrained: str, prompt: str) -> torch.Tensor:
    """(1, 77, dim) CLIP text embedding of the fixed prompt; computed once and stored with the weights."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = _from_pretrained(CLIPTokenizer, pretrained, "tokenizer")
    text_encoder = _from_pretrained(CLIPTextModel, pretrained, "text_encoder")
    tokens = tokenizer(prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                       return_tensors="pt").input_ids
    return text_encoder(tokens)[0]


# --------------------------------------------------------------------------- the model
class InstantRestoreModel(torch.nn.Module):
    """Single-step restorer whose up-block self-attention also attends to reference keys/values.

    Args:
        config:        the InstantRestoreConfig it is built from (saved with it).
        unet, vae:     the pretrained (base) components, without adapters (vae None with the pixel codec).
                       Frozen copies become the reference branch; the originals become the restoring
                       branch, with LoRA (`finetune: lora`) or trained whole (`finetune: full`).
        prompt_embeds: (1, tokens, cross_attention_dim) fixed prompt embedding for both UNets.

    Trainable (`trainable_parameters`): UNet LoRA, the whole UNet conv_in, VAE LoRA (or, with
    `finetune: full`, the whole restoring UNet). Frozen: the whole reference branch (`reference_unet`,
    `reference_vae`).
    """

    def __init__(self, config: InstantRestoreConfig, unet: UNet2DConditionModel, vae: AutoencoderKL | None,
                 prompt_embeds: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        # diffusers defaults clip_sample to True; here an absent key means unclipped, as models were trained
        self.scheduler = DDPMScheduler(**{"clip_sample": False, **config.scheduler})
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone())

        # frozen reference branch: the pretrained UNet and VAE as they are
        self.reference_unet = copy.deepcopy(unet).requires_grad_(False).eval()
        self.reference_vae = None if vae is None else copy.deepcopy(vae).requires_grad_(False).eval()

        # restoring branch: LoRA on attention, convs and feed-forward, conv_in trained whole; or all of it
        unet.requires_grad_(config.finetune == "full")
        if config.finetune == "lora":
            unet.add_adapter(LoraConfig(r=config.unet_lora_rank, lora_alpha=config.unet_lora_alpha,
                                        init_lora_weights="gaussian", target_modules=config.unet_lora_targets))
            unet.conv_in.requires_grad_(config.train_conv_in)
        if vae is not None:
            vae.requires_grad_(False)
            vae.add_adapter(LoraConfig(r=config.vae_lora_rank, lora_alpha=config.vae_lora_alpha,
                                       init_lora_weights="gaussian", target_modules=config.vae_lora_targets))
        self.unet, self.vae = unet, vae
        self.vae_skip = VAESkipConnections(vae) if config.vae_skip else None
        if config.freeu is not None:
            for model in (self.unet, self.reference_unet):
                model.enable_freeu(*config.freeu)

        # shared-image attention on the up-block self-attention layers
        self.store = ReferenceStore()
        self.shared_layers: dict[str, SharedAttnProcessor] = {}
        if config.shared_attention:
            install_processors(self.reference_unet, lambda layer: ReferenceRecordProcessor(self.store, layer),
                               config.shared_layers)
            self.shared_layers = install_processors(self.unet, lambda layer: SharedAttnProcessor(
                self.store, layer, train_input=config.train_input, adain=config.adain,
                locality=config.reference_locality), config.shared_layers)
        self._fingerprint: str | None = None

    # ----------------------------------------------------------------- construction and saving
    @classmethod
    def from_config(cls, config: InstantRestoreConfig) -> "InstantRestoreModel":
        """A fresh model: base weights from `config.pretrained` (or random compact ones), new LoRA."""
        unet, vae, prompt_embeds = build_base_components(config)
        return cls(config, unet, vae, prompt_embeds)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "InstantRestoreModel":
        """Load a directory written by `save_pretrained`."""
        path = Path(path)
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise WeightsError(f"{path}: not an InstantRestore checkpoint (no {CONFIG_NAME})")
        try:
            config = InstantRestoreConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))["model"],
                                                    CONFIG_NAME)
        except (ValueError, KeyError, ConfigError) as err:
            raise WeightsError(f"{config_path}: unreadable model config ({_first_line(err)})") from None
        unet, vae, _ = build_base_components(config, root=path, with_prompt=False)
        trained = _load_safetensors(path / TRAINED_NAME)
        if "prompt_embeds" not in trained:
            raise WeightsError(f"{path / TRAINED_NAME}: no prompt_embeds tensor")
        model = cls(config, unet, vae, trained.pop("prompt_embeds"))
        if config.finetune == "lora":
            _load_adapter(model.unet, path / UNET_LORA_NAME)
        else:
            restoring_unet = _from_pretrained(UNet2DConditionModel, str(path), RESTORING_UNET)
            try:
                model.unet.load_state_dict(restoring_unet.state_dict(), strict=True)
            except RuntimeError as err:
                raise WeightsError(f"{path / RESTORING_UNET}: does not fit the model ({_first_line(err)})") from None
        if model.vae is not None:
            _load_adapter(model.vae, path / VAE_LORA_NAME)
        parts = {"unet.conv_in.": model.unet.conv_in if config.finetune == "lora" else None,
                 "vae_skip.": model.vae_skip}
        for prefix, module in parts.items():
            state = {name.removeprefix(prefix): value for name, value in trained.items() if name.startswith(prefix)}
            if module is None:
                if state:
                    raise WeightsError(f"{path / TRAINED_NAME}: holds {prefix.rstrip('.')} weights, which this "
                                       f"model config does not have")
                continue
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise WeightsError(f"{path / TRAINED_NAME}: {prefix.rstrip('.')} does not fit the model "
                                   f"({_first_line(err)})") from None
        return model

    def save_pretrained(self, path: str | Path, unet_dtype: torch.dtype | None = None) -> Path:
        """Write the checkpoint directory; `unet_dtype` (e.g. torch.float16) stores the whole UNets in that
        dtype (to ship a compact model in half the space; `from_pretrained` loads them back as float32)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.config

        def save_unet(unet: UNet2DConditionModel, where: Path) -> None:
            (copy.deepcopy(unet).to(unet_dtype) if unet_dtype is not None else unet).save_pretrained(where)

        if config.embed_base:
            save_unet(self.reference_unet, path / EMBEDDED_BASE / "unet")
            if self.reference_vae is not None:
                self.reference_vae.save_pretrained(path / EMBEDDED_BASE / "vae")
            config = dataclasses.replace(config, pretrained=EMBEDDED_BASE, vae_pretrained=None)
        config_json = {"restorer": "instantrestore", "model": dataclasses.asdict(config)}
        (path / CONFIG_NAME).write_text(json.dumps(config_json, indent=2), encoding="utf-8")
        trained = {}
        if config.finetune == "lora":
            self.unet.save_lora_adapter(path, weight_name=UNET_LORA_NAME)
            trained.update({f"unet.conv_in.{name}": value for name, value in self.unet.conv_in.state_dict().items()})
        else:  # a diffusers folder, so a later stage can start from it as `pretrained`
            save_unet(self.unet, path / RESTORING_UNET)
        if self.vae is not None:
            self.vae.save_lora_adapter(path, weight_name=VAE_LORA_NAME)
        if self.vae_skip is not None:
            trained.update({f"vae_skip.{name}": value for name, value in self.vae_skip.state_dict().items()})
        trained["prompt_embeds"] = self.prompt_embeds
        save_file({name: value.detach().cpu().contiguous() for name, value in trained.items()}, path / TRAINED_NAME)
        return path

    def train(self, mode: bool = True) -> "InstantRestoreModel":
        """Training mode for the restoring branch; the reference branch stays in eval mode."""
        super().train(mode)
        self.reference_unet.eval()
        if self.reference_vae is not None:
            self.reference_vae.eval()
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        parts = [module for module in (self.unet, self.vae, self.vae_skip) if module is not None]
        return [p for module in parts for p in module.parameters() if p.requires_grad]

    def fuse_lora(self) -> "InstantRestoreModel":
        """Merge the LoRA weights into the base layers for inference: same output, no adapter branch to
        run. The adapters are kept, so `save_pretrained` still writes them; do not train afterwards."""
        if self.config.finetune == "lora":
            self.unet.fuse_lora()
        if self.vae is not None:
            self.vae.fuse_lora()
        return self

    def reference_fingerprint(self) -> str:
        """sha256 of what reference K/V depend on: the reference branch, prompt and reference noise level."""
        if self._fingerprint is None:
            config = self.config
            digest = hashlib.sha256(json.dumps([config.reference_timestep, config.freeu, config.shared_attention,
                                                config.codec, config.codec_factor, config.input_noise,
                                                config.shared_layers]).encode())
            reference_vae = self.reference_vae.state_dict() if self.reference_vae is not None else {}
            tensors = {"prompt_embeds": self.prompt_embeds,
                       **{f"unet.{k}": v for k, v in self.reference_unet.state_dict().items()},
                       **{f"vae.{k}": v for k, v in reference_vae.items()}}
            for name in sorted(tensors):
                digest.update(name.encode())
                digest.update(tensors[name].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    # ----------------------------------------------------------------- the method
    def encode(self, images: torch.Tensor, vae: AutoencoderKL | None, generator: torch.Generator | None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Faces in [-1, 1] -> the UNet's input space: a scaled VAE latent sample (with explicit `noise` if
        given), or the pixels space-to-depth."""
        if self.config.codec == "pixel_unshuffle":
            return F.pixel_unshuffle(images, self.config.codec_factor)
        return _sample(vae.encode(images).latent_dist, generator, noise) * vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.config.codec == "pixel_unshuffle":
            return F.pixel_shuffle(latents, self.config.codec_factor)
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    @torch.no_grad()
    def encode_references(self, references: torch.Tensor, generator: torch.Generator | None = None,
                          noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Reference faces in [-1, 1], (K, 3, S, S) shared by a batch or (B, K, 3, S, S) per face ->
        layer -> (2, 1 or B, K, N, C) keys and values of the frozen UNet's up-block self-attention.
        Empty when shared attention is off. `noise`: explicit (VAE sample, t=1) noise instead of drawing
        it, each shaped like the latents ((B*K or B, K), 4, h, w)."""
        if not self.shared_layers:
            return {}
        if references.ndim == 4:
            references = references[None]
        batch_size, num_refs = references.shape[:2]
        flat = references.flatten(0, 1).to(self.prompt_embeds.dtype)
        vae_noise, step_noise = noise if noise is not None else (None, None)
        latents = self.encode(flat, self.reference_vae, generator, vae_noise)
        timesteps = torch.full((latents.shape[0],), self.config.reference_timestep, device=latents.device)
        if self.config.input_noise:
            latents = self._add_noise(latents, timesteps, generator, step_noise)
        self.store.recorded.clear()
        try:
            self.reference_unet(latents, timesteps, encoder_hidden_states=self._prompt(latents.shape[0]))
            return {layer: kv.unflatten(1, (batch_size, num_refs)) for layer, kv in self.store.recorded.items()}
        finally:
            self.store.recorded.clear()

    def forward(self, degraded: torch.Tensor, reference_kv: dict[str, torch.Tensor] | None = None,
                reference_mask: torch.Tensor | None = None, timestep: int | torch.Tensor | None = None,
                generator: torch.Generator | None = None, capture_attention_layer: str | None = None,
                noise: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, AttentionCapture]:
        """Restore (B, 3, S, S) faces in [-1, 1]; returns (B, 3, S, S), not clamped.

        reference_kv:   from `encode_references` (a ReferenceCache's features); None or {} = blind.
        reference_mask: (B, K) bool, False drops reference k for face b (reference dropout); a face with
                        every reference dropped is restored blind.
        timestep:       noise level; default: the inference timestep in eval mode, in training mode one drawn
                        per face from `train_timesteps`.
        capture_attention_layer: a shared layer name; also return its AttentionCapture (landmark loss).
        noise:          explicit (VAE sample, timestep) noise, each (B, 4, h, w), instead of drawing it.
        """
        batch_size = degraded.shape[0]
        timesteps = self._timesteps(timestep, batch_size, degraded.device, generator)
        with self._skipping():
            # encode (and noise) the degraded face
            vae_noise, step_noise = noise if noise is not None else (None, None)
            latents = self.encode(degraded, self.vae, generator, vae_noise)
            noisy = self._add_noise(latents, timesteps, generator, step_noise) if self.config.input_noise else latents

            # one UNet step, sharing attention with the references
            with self._sharing(reference_kv, reference_mask, capture_attention_layer, degraded.device) as capture_layer:
                noise_pred = self.unet(noisy, timesteps, encoder_hidden_states=self._prompt(batch_size)).sample
                captured = capture_layer.captured if capture_layer is not None else None

            # prediction -> clean latent -> image (plus the encoder's skips, with vae_skip)
            if self.config.prediction == "residual":
                clean = latents + noise_pred
            else:
                clean = predicted_clean_latents(self.scheduler, noise_pred, noisy, timesteps)
            restored = self.decode(clean)
        return restored if capture_attention_layer is None else (restored, captured)

    # ----------------------------------------------------------------- pieces of forward
    def _prompt(self, batch_size: int) -> torch.Tensor:
        return self.prompt_embeds.expand(batch_size, -1, -1)

    def _add_noise(self, latents: torch.Tensor, timesteps: torch.Tensor, generator: torch.Generator | None,
                   noise: torch.Tensor | None = None):
        if noise is None:
            noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        return self.scheduler.add_noise(latents, _like(noise, latents), timesteps)

    def _timesteps(self, timestep, batch_size: int, device: torch.device, generator) -> torch.Tensor:
        if timestep is None and self.training:
            choices = torch.tensor(self.config.train_timesteps)
            index = torch.randint(len(choices), (batch_size,), generator=_cpu(generator))
            return choices[index].to(device)
        if timestep is None:
            timestep = self.config.inference_timestep
        return torch.as_tensor(timestep, device=device).long().expand(batch_size)

    @contextmanager
    def _skipping(self) -> Iterator[None]:
        """The VAE skips of one forward: recorded by its encode, used by its decode, then dropped."""
        if self.vae_skip is None:
            yield
            return
        self.vae_skip.features.clear()
        try:
            yield
        finally:
            self.vae_skip.features.clear()

    @contextmanager
    def _sharing(self, reference_kv, reference_mask, capture_attention_layer, device) -> Iterator[SharedAttnProcessor | None]:
        capture_layer = None
        if capture_attention_layer is not None:
            if capture_attention_layer not in self.shared_layers:
                raise ValueError(f"{capture_attention_layer!r} is not a shared layer; choose from {list(self.shared_layers)}")
            capture_layer = self.shared_layers[capture_attention_layer]
        if reference_kv and set(reference_kv) != set(self.shared_layers):
            raise ValueError("reference keys/values do not come from this model's layers")
        self.store.kv = {layer: kv.to(device) for layer, kv in (reference_kv or {}).items()}
        self.store.mask = None if reference_mask is None or not reference_kv else reference_mask.to(device)
        if capture_layer is not None:
            capture_layer.capture, capture_layer.captured = True, None
        try:
            yield capture_layer
        finally:
            self.store.kv, self.store.mask = {}, None
            if capture_layer is not None:
                capture_layer.capture, capture_layer.captured = False, None


class VAESkipConnections(torch.nn.Module):
    """Encoder -> decoder skips of the restoring VAE (`InstantRestoreConfig.vae_skip`).

    Attached with forward pre-hooks, so diffusers' Encoder and Decoder run unchanged: the input of each
    encoder down-block is recorded, and a zero-initialised 1x1 convolution of it is added to the input of
    the decoder up-block at the same resolution. At initialisation the VAE is exactly the base one.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        encoder_channels = [block.resnets[0].in_channels for block in vae.encoder.down_blocks][::-1]
        decoder_channels = [block.resnets[0].in_channels for block in vae.decoder.up_blocks]
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(c_in, c_out, 1)
                                         for c_in, c_out in zip(encoder_channels, decoder_channels))
        for conv in self.convs:
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.zeros_(conv.bias)
        self.features: list[torch.Tensor] = []
        for block in vae.encoder.down_blocks:
            block.register_forward_pre_hook(self._record)
        for index, block in enumerate(vae.decoder.up_blocks):
            block.register_forward_pre_hook(functools.partial(self._add, index))

    def _record(self, module: torch.nn.Module, args: tuple) -> None:
        self.features.append(args[0])

    def _add(self, index: int, module: torch.nn.Module, args: tuple) -> tuple | None:
        if len(self.features) != len(self.convs):  # a decode outside `forward`: no encoder features to add
            return None
        skip = self.convs[index](self.features[-1 - index])
        return (args[0] + skip.to(args[0].dtype), *args[1:])


def predicted_clean_latents(scheduler: DDPMScheduler, noise_pred: torch.Tensor, noisy: torch.Tensor,
                            timesteps: torch.Tensor) -> torch.Tensor:
    """x0 as `scheduler.step(...).pred_original_sample` makes it (the epsilon formula, then the config's
    thresholding or clipping), for one timestep per face, which `step` cannot take."""
    if scheduler.config.prediction_type != "epsilon":
        raise ConfigError(f"model.scheduler.prediction_type {scheduler.config.prediction_type!r}: only 'epsilon' is supported")
    alphas = scheduler.alphas_cumprod.to(noisy.device, noisy.dtype)[timesteps].view(-1, 1, 1, 1)
    clean = (noisy - (1 - alphas).sqrt() * noise_pred) / alphas.sqrt()
    if scheduler.config.thresholding:
        return scheduler._threshold_sample(clean)
    if scheduler.config.clip_sample:
        return clean.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)
    return clean


def _sample(distribution, generator: torch.Generator | None, noise: torch.Tensor | None) -> torch.Tensor:
    """A draw from the VAE's latent distribution: mean + std * noise, the noise given or drawn."""
    if noise is None:
        return distribution.sample(generator)
    return distribution.mean + distribution.std * _like(noise, distribution.mean)


def _like(noise: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Explicit noise, (B, K, ...) flattened as the references are, checked against the latents' shape."""
    noise = noise.reshape(-1, *noise.shape[-3:])
    if noise.shape != latents.shape:
        raise ValueError(f"noise of shape {tuple(noise.shape)} does not fit latents of shape {tuple(latents.shape)}")
    return noise.to(latents.device, latents.dtype)


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """Index draws happen on the CPU; a CUDA generator cannot drive them."""
    return generator if generator is None or generator.device.type == "cpu" else None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: missing weight file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None


def _load_adapter(model: torch.nn.Module, path: Path) -> None:
    """Load LoRA weights written by `save_lora_adapter` into the model's existing adapter (`load_lora_adapter`
    with hotswap). diffusers only warns about tensors that do not fit; a checkpoint must fit exactly."""
    expected = {name.replace(".default.", "."): tuple(value.shape)
                for name, value in model.named_parameters() if "lora_" in name}
    found = {name: tuple(value.shape) for name, value in _load_safetensors(path).items()}
    if found != expected:
        reshaped = sum(found[name] != shape for name, shape in expected.items() if name in found)
        raise WeightsError(f"{path}: LoRA weights do not fit the model ({len(found.keys() - expected.keys())} "
                           f"unexpected, {len(expected.keys() - found.keys())} missing, {reshaped} of another shape)")
    try:
        model.load_lora_adapter(str(path.parent), weight_name=path.name, prefix=None, adapter_name="default",
                                hotswap=True)
    except (ValueError, RuntimeError) as err:
        raise WeightsError(f"{path}: LoRA weights do not fit the model ({_first_line(err)})") from None
