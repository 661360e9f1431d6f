"""The authors' released InstantRestore checkpoints (snap-research/InstantRestore), converted to ours.

Their file is `torch.save({"state_dict": FaceReplaceModel.state_dict(), "cfg": <pyrallis-encoded TrainConfig>,
"optimizer": ...})`; with their final recipe every tensor is bf16. Its state dict (after `net.` and
`module.` are stripped) maps onto an `InstantRestoreModel` built on the same base:

    unet.*           restoring UNet: peft LoRA `default` (rank lora_rank_unet, alpha rank // 2), conv_in whole
    vae.*            restoring VAE: peft LoRA `vae_skip` (rank lora_rank_vae, alpha rank // 2), ours `default`
    original_unet.*, original_vae.*, text_encoder.*   the frozen base: checked equal to it, not stored

Every tensor of the file is either loaded (LoRA, conv_in) or checked equal to the base, rounded to the
file's dtype; an unknown, missing, misshapen or differing tensor is an error, and so is a `cfg` setting
that the model here does not implement. What their code hard-codes (FreeU, timesteps 249 and 1, the
prompt, 512 px) is written into the converted config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler

from instantrestore.errors import WeightsError
from instantrestore.models.config import DEFAULT_PROMPT, InstantRestoreConfig
from instantrestore.models.instantrestore import CONFIG_NAME, InstantRestoreModel, _first_line, _from_pretrained
from instantrestore.models.registry import find_paper_checkpoint, weights_dir

SD_TURBO = "stabilityai/sd-turbo"
SD_VAE_FT_MSE = "stabilityai/sd-vae-ft-mse"
AUTHORS_FREEU = [0.9, 0.2, 1.4, 1.6]  # (s1, s2, b1, b2), hard-coded in their Pix2Pix_Turbo on both UNets

# cfg settings whose other value needs code this project does not have: (section, name) -> supported value
SUPPORTED_SETTINGS = {
    ("model", "net_type"): "pix2pix_turbo",
    ("model", "condition_on_face_embeds"): False,
    ("model", "train_reference_networks"): False,
    ("model", "concat_mask_and_landmarks"): False,
    ("model", "train_vae"): True,
    ("model", "use_shortcuts"): False,
}
# the file's adapter name per trained part; ours is `default` for both
TRAINED_PARTS = {"unet": "default", "vae": "vae_skip"}
FROZEN_PARTS = ("original_unet", "original_vae", "text_encoder")


@dataclass
class ConversionReport:
    loaded: int     # LoRA and conv_in tensors taken from the file
    verified: int   # tensors checked equal to the base
    output: Path

    def __str__(self) -> str:
        return (f"{self.loaded} trained tensors loaded, {self.verified} checked equal to the base "
                f"-> {self.output}")


def read_authors_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with `net.`/`module.` stripped, cfg) of an authors' checkpoint, read without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        # mmap: a real file holds ~4 GB of bf16 base copies that are only compared, never kept
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # arbitrary bytes make the unpickler fail in arbitrary ways
        raise WeightsError(f"{path}: not a readable authors' checkpoint ({type(err).__name__}: "
                           f"{_first_line(err)[:160]})") from None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict)
            and isinstance(checkpoint.get("cfg"), dict)):
        raise WeightsError(f"{path}: not an authors' InstantRestore checkpoint (expected 'state_dict' and 'cfg')")
    state = {}
    for key, value in checkpoint["state_dict"].items():
        name = key.removeprefix("net.").removeprefix("module.")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: state_dict entry {key!r} is not a tensor")
        state[name] = value
    return state, checkpoint["cfg"]


def authors_model_config(cfg: dict[str, Any], pretrained: str, vae_pretrained: str,
                         weight_dtype: torch.dtype, where: str = "cfg") -> InstantRestoreConfig:
    """Our InstantRestoreConfig for the authors' `cfg`; a setting it cannot honour is a one-line WeightsError."""
    def setting(section: str, name: str, kind: type) -> Any:
        value = cfg.get(section, {}).get(name) if isinstance(cfg.get(section), dict) else None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WeightsError(f"{where}: {section}.{name} is {value!r}, expected a {kind.__name__}")
        return value

    for (section, name), supported in SUPPORTED_SETTINGS.items():
        value = setting(section, name, type(supported))
        if value != supported:
            raise WeightsError(f"{where}: {section}.{name}={value!r} is not supported by this converter "
                               f"(only {supported!r})")
    unet_rank, vae_rank = setting("model", "lora_rank_unet", int), setting("model", "lora_rank_vae", int)
    scheduler = _from_pretrained(DDPMScheduler, pretrained, "scheduler")
    return InstantRestoreConfig(
        face_size=512, pretrained=pretrained, vae_pretrained=vae_pretrained, embed_base=False,
        prompt=DEFAULT_PROMPT, prompt_encoder="clip",
        scheduler={name: value for name, value in scheduler.config.items() if not name.startswith("_")},
        freeu=list(AUTHORS_FREEU), train_timesteps=[249, 499, 749], inference_timestep=249, reference_timestep=1,
        shared_attention=setting("model", "use_shared_attention", bool),
        train_input=setting("model", "train_input", bool), adain=setting("model", "use_adain", bool),
        unet_lora_rank=unet_rank, unet_lora_alpha=unet_rank // 2,  # alpha = rank // 2 is hard-coded there
        vae_lora_rank=vae_rank, vae_lora_alpha=vae_rank // 2, train_conv_in=True, vae_skip=False,
        round_base_weights_to=None if weight_dtype == torch.float32 else str(weight_dtype).removeprefix("torch."),
        inference_autocast="float16",
    )


def convert_authors_checkpoint(path: str | os.PathLike, output: str | os.PathLike, pretrained: str = SD_TURBO,
                               vae_pretrained: str = SD_VAE_FT_MSE, overwrite: bool = False) -> ConversionReport:
    """Write our checkpoint directory (`save_pretrained` layout) for an authors' checkpoint file.

    pretrained / vae_pretrained: the base their model was trained on (hub id or local directory), used
    for the frozen weights and checked against every base tensor the file holds.
    """
    path, output = Path(path), Path(output)
    if output.exists() and not overwrite:
        raise WeightsError(f"{output}: exists; pass --overwrite to replace it")
    state, cfg = read_authors_checkpoint(path)
    dtypes = {value.dtype for value in state.values() if value.is_floating_point()}
    if len(dtypes) != 1:
        raise WeightsError(f"{path}: expected one floating-point dtype for all tensors, found {sorted(map(str, dtypes))}")
    config = authors_model_config(cfg, pretrained, vae_pretrained, dtypes.pop(), where=f"{path}: cfg")

    from transformers import CLIPTextModel

    model = InstantRestoreModel.from_config(config)
    text_encoder = _from_pretrained(CLIPTextModel, pretrained, "text_encoder")
    parts = {"unet": model.unet, "vae": model.vae, "original_unet": model.reference_unet,
             "original_vae": model.reference_vae, "text_encoder": text_encoder}
    unknown = sorted({name.split(".", 1)[0] for name in state} - set(parts))
    if unknown:
        raise WeightsError(f"{path}: unknown part {unknown[0]!r} in the state dict (known: {', '.join(parts)})")
    loaded = verified = 0
    for part, module in parts.items():
        part_state = {name.removeprefix(f"{part}."): value for name, value in state.items()
                      if name.startswith(f"{part}.")}
        if part == "text_encoder" and not any(name.startswith("text_model.") for name in module.state_dict()):
            # transformers 5 dropped the `text_model.` level of CLIPTextModel's names; the authors' 4.37 has it
            part_state = {name.removeprefix("text_model."): value for name, value in part_state.items()}
        part_loaded, part_verified = _take_part(module, part_state, TRAINED_PARTS.get(part), f"{path}: {part}.")
        loaded, verified = loaded + part_loaded, verified + part_verified
    _save_atomically(model, output, overwrite, source={"file": str(path), "authors_cfg": cfg})
    return ConversionReport(loaded, verified, output)


def paper_model_directory(name: str, pretrained: str | None = None, vae_pretrained: str | None = None) -> Path:
    """The converted directory of a released checkpoint (`instantrestore-paper`, `hwdz15508/InstantRestore`,
    ...): converted once into the weights cache, after downloading the file (the base comes through diffusers).
    """
    entry = find_paper_checkpoint(name)
    if entry is None:
        raise WeightsError(f"{name}: not a released InstantRestore checkpoint")
    target = weights_dir() / entry.name
    if (target / CONFIG_NAME).is_file():
        return target
    from huggingface_hub import hf_hub_download

    try:
        checkpoint = hf_hub_download(entry.repo_id, entry.filename)
    except Exception as err:  # offline, missing file, hub errors: they come in many types
        raise WeightsError(f"{entry.name}: cannot download {entry.filename} from {entry.repo_id} "
                           f"({_first_line(err)[:120]}); fetch it (`hf download {entry.repo_id} {entry.filename}`) "
                           f"and run `instantrestore convert-authors FILE -o {target}`") from None
    convert_authors_checkpoint(checkpoint, target, pretrained or SD_TURBO, vae_pretrained or SD_VAE_FT_MSE)
    return target


def _take_part(module: torch.nn.Module, state: dict[str, torch.Tensor], adapter: str | None,
               where: str) -> tuple[int, int]:
    """Load the trained tensors of one part into `module`, check the others equal its base weights.

    adapter: the file's LoRA adapter name for a trained part (its tensors and conv_in are loaded, and every
    one of them must be in the file); None for a frozen part, where the file may hold only base weights.
    """
    ours = module.state_dict()
    trained = {name for name in ours if "lora_" in name or (adapter is not None and name.startswith("conv_in."))}
    loaded = verified = 0
    seen = set()
    for name, value in state.items():
        our_name = name
        if adapter is not None and "lora_" in name:
            our_name, renamed = re.subn(rf"\.(lora_[AB])\.{re.escape(adapter)}\.", r".\1.default.", name)
            if not renamed:
                raise WeightsError(f"{where}{name}: LoRA tensor of an unknown adapter (expected {adapter!r})")
        if our_name not in ours:
            raise WeightsError(f"{where}{name}: unknown tensor, not in the model this converter builds")
        target = ours[our_name]
        if value.shape != target.shape:
            raise WeightsError(f"{where}{name}: shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        seen.add(our_name)
        if our_name in trained:
            with torch.no_grad():
                target.copy_(value)
            loaded += 1
        elif torch.equal(value, target.to(value.dtype)):
            verified += 1
        else:
            difference = (value.float() - target.float()).abs().max().item()
            raise WeightsError(f"{where}{name}: differs from the base weights (max |diff| {difference:.3g}); "
                               f"trained on another base, or trained beyond LoRA and conv_in")
    missing = sorted(trained - seen) if adapter is not None else []
    if missing:
        raise WeightsError(f"{where}{missing[0]}: missing from the file ({len(missing)} trained tensors missing)")
    return loaded, verified


def _save_atomically(model: InstantRestoreModel, output: Path, overwrite: bool, source: dict[str, Any]) -> None:
    """save_pretrained into a temporary directory beside `output`, renamed onto it when complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent))
    try:
        model.save_pretrained(staging)
        config_path = staging / CONFIG_NAME
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["converted_from"] = source
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        replaced = None
        if output.exists() and overwrite:  # moved aside, not deleted, until the new one is in place
            replaced = output.rename(output.parent / f"{staging.name}.old")
        os.replace(staging, output)
        if replaced is not None:
            shutil.rmtree(replaced)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
