"""The training loop shared by GFP-GAN and InstantRestore, readable top to bottom (nanoGPT style):

    config -> data -> model (via a recipe) -> optimisers -> for step in range(...):
        generator forward / loss / backward (gradient accumulation, clipping) -> step
        discriminator step (logistic loss, lazy R1) when the recipe has one
        EMA of the generator, log (CSV + progress bar), validation images, checkpoint

Exact resume: a checkpoint holds the weights, optimisers, EMA, step and RNG states, and the batch of
step s is a pure function of (seed, s) (`StepBatchSampler`), so a run stopped at step k and resumed
reaches the same weights as one that never stopped. `accelerate launch` adds devices and mixed precision
(multi-GPU is written for but untested here: no GPU on the development machine).

Checkpoints are written here rather than by `accelerator.save_state`: its custom states
(`register_for_checkpointing`, needed for the training `torch.Generator` and the EMA) are unpickled with
`weights_only=False`, and a failure to restore the RNG states is only logged, which would make an exact
resume silently inexact.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from instantrestore.data.dataset import FaceRestorationDataset
from instantrestore.errors import ConfigError
from instantrestore.imageio import write_bytes, write_image
from instantrestore.training.config import OptimConfig, TrainConfig, load_config
from instantrestore.training.recipes import Recipe, build_recipe

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.csv"


# ----------------------------------------------------------------------------- data by step
class StepBatchSampler(Sampler):
    """The batches of steps [start_step, steps): lists of (dataset index, sample seed).

    Sample number p of the whole run (counting every micro-batch of every process) is item
    perm_e[p mod n] of epoch e = p // n, perm_e a permutation seeded by (seed, e), and gets sample seed p.
    Nothing depends on what was drawn before, so a resumed run draws exactly the batches it would have.
    """

    def __init__(self, num_items: int, batch_size: int, grad_accum: int, seed: int, start_step: int, steps: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.num_items, self.batch_size, self.grad_accum = num_items, batch_size, grad_accum
        self.seed, self.start_step, self.steps = seed, start_step, steps
        self.rank, self.world_size = rank, world_size
        self._epoch, self._permutation = -1, None

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.grad_accum

    def position(self, step: int, micro: int, j: int) -> int:
        return ((step * self.grad_accum + micro) * self.world_size + self.rank) * self.batch_size + j

    def item(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.num_items)
        if epoch != self._epoch:
            rng = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.num_items, generator=rng)
        return int(self._permutation[offset]), position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.steps):
            for micro in range(self.grad_accum):
                yield [self.item(self.position(step, micro, j)) for j in range(self.batch_size)]


class SeededSamples(Dataset):
    """`dataset.sample(index, seed)` addressed by the (index, seed) pairs of `StepBatchSampler`."""

    def __init__(self, dataset: FaceRestorationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        return self.dataset.sample(index, seed)


def learning_rate_factor(step: int, optim: OptimConfig, steps: int) -> float:
    """The generator's learning rate at optimiser step `step` (0-based), as a fraction of `optim.lr_g`: a
    linear warmup over the first `warmup_steps`, then constant, then a half cosine to 0 over the last
    `decay_steps` of `steps`. A function of the step alone, so a resumed run gets the same rates."""
    factor = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps > 0 else 1.0
    if optim.decay_steps > 0:
        progress = min(1.0, max(0.0, (step + 1 - (steps - optim.decay_steps)) / optim.decay_steps))
        factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(directory: Path, step: int, elapsed: float, generator: nn.Module, discriminator: nn.Module | None,
                    ema: TrainableEMA | None, optimizers: dict[str, torch.optim.Optimizer],
                    rng: torch.Generator, accelerator: Accelerator) -> None:
    """Weights as safetensors, optimiser and RNG states as plain tensors (loadable with weights_only=True).

    Written to a temporary folder, then swapped in, so a kill never leaves a half checkpoint.
    """
    temporary = directory.with_name(directory.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        save_model(accelerator.unwrap_model(generator), str(temporary / "generator.safetensors"))
        if discriminator is not None:
            save_model(accelerator.unwrap_model(discriminator), str(temporary / "discriminator.safetensors"))
        if ema is not None:
            save_file(ema.named_shadow(), str(temporary / "ema.safetensors"))
        torch.save({name: optimizer.state_dict() for name, optimizer in optimizers.items()},
                   temporary / "optimizers.pt")
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else {}
        ema_step = ema.optimization_step if ema is not None else 0
        torch.save({"step": step, "elapsed": elapsed, "scaler": scaler, "ema_step": ema_step}, temporary / "state.pt")
    accelerator.wait_for_everyone()
    rng_states = {"torch": torch.get_rng_state(), "train": rng.get_state(),
                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save(rng_states, temporary / f"rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(directory, ignore_errors=True)
        temporary.rename(directory)
    accelerator.wait_for_everyone()


def load_checkpoint(directory: Path, generator: nn.Module, discriminator: nn.Module | None,
                    ema: TrainableEMA | None, optimizers: dict[str, torch.optim.Optimizer],
                    rng: torch.Generator, accelerator: Accelerator) -> tuple[int, float]:
    """Restore everything `save_checkpoint` wrote; returns the step to continue from and the seconds spent.
    A checkpoint of a run without the adversarial term leaves a discriminator fresh (the term turned on)."""
    load_model(accelerator.unwrap_model(generator), str(directory / "generator.safetensors"))
    if discriminator is not None and (directory / "discriminator.safetensors").is_file():
        load_model(accelerator.unwrap_model(discriminator), str(directory / "discriminator.safetensors"))
    states = torch.load(directory / "optimizers.pt", weights_only=True, map_location="cpu")
    for name, optimizer in optimizers.items():
        if name in states:
            optimizer.load_state_dict(states[name])
    state = torch.load(directory / "state.pt", weights_only=True)
    if ema is not None:
        ema.load_named_shadow(load_file(str(directory / "ema.safetensors")), int(state["ema_step"]))
    if accelerator.scaler is not None and state["scaler"]:
        accelerator.scaler.load_state_dict(state["scaler"])
    rng_states = torch.load(directory / f"rng_{accelerator.process_index}.pt", weights_only=True)
    torch.set_rng_state(rng_states["torch"])
    rng.set_state(rng_states["train"])
    if rng_states["cuda"]:
        torch.cuda.set_rng_state_all(rng_states["cuda"])
    return int(state["step"]), float(state["elapsed"])


# ----------------------------------------------------------------------------- EMA
class TrainableEMA(EMAModel):
    """diffusers' EMAModel over the generator's trainable parameters only (the frozen reference branch of
    InstantRestore is not copied), at a fixed decay: `min_decay = decay` turns off its warm-up, and its
    first step copies the weights."""

    def __init__(self, generator: nn.Module, parameters: list[nn.Parameter], decay: float) -> None:
        super().__init__(parameters, decay=decay, min_decay=decay)
        names = {id(parameter): name for name, parameter in generator.named_parameters()}
        self.names = [names[id(parameter)] for parameter in parameters]

    def named_shadow(self) -> dict[str, torch.Tensor]:
        return {name: shadow.detach().cpu().contiguous() for name, shadow in zip(self.names, self.shadow_params)}

    def load_named_shadow(self, tensors: dict[str, torch.Tensor], optimization_step: int) -> None:
        for name, shadow in zip(self.names, self.shadow_params):
            shadow.copy_(tensors[name])
        self.optimization_step = optimization_step

    @contextmanager
    def applied(self, parameters: list[nn.Parameter]):
        """The averaged weights in `parameters` for the duration (validation, export), then the trained ones."""
        self.store(parameters)
        self.copy_to(parameters)
        try:
            yield
        finally:
            self.restore(parameters)


# ----------------------------------------------------------------------------- logging
class MetricsLog:
    """metrics.csv: one row per logged step (training losses, or val_psnr at validation steps). A new
    column rewrites the small file with the wider header. On resume, rows past the checkpoint's step
    are dropped, so the file matches an uninterrupted run."""

    def __init__(self, path: Path, resume_step: int, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        if not enabled:
            return
        if resume_step > 0 and path.is_file():
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or [])
                self.rows = [row for row in reader if int(row["step"]) <= resume_step]
        self._rewrite()

    def _rewrite(self) -> None:
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        new_columns = [name for name in row if name not in self.columns]
        if new_columns:
            self.columns += new_columns
            self._rewrite()
            return
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, restval="").writerow(row)


@torch.no_grad()
def validate(recipe: Recipe, generator: nn.Module, batch: dict[str, Any], path: Path) -> float:
    """Restore the fixed validation faces; save rows of degraded | restored | target | first reference;
    return the mean PSNR of restored vs target (on [0, 1] images)."""
    generator.eval()
    restored = recipe.restore(generator, batch)
    generator.train()
    columns = [batch["degraded"], restored, batch["target"]]
    if batch["references"].shape[1] > 0:
        columns.append(batch["references"][:, 0])
    columns = [(column.clamp(-1, 1) + 1) / 2 for column in columns]  # [-1, 1] -> [0, 1]
    mse = (columns[1] - columns[2]).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    psnr = (10 * torch.log10(1 / mse)).mean().item()
    grid = torch.cat([torch.cat(list(column), dim=1) for column in columns], dim=2)  # rows = faces
    image = grid.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    write_image(path, image, overwrite=True)
    return psnr


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig) -> Path:
    """Train `config.recipe`; returns OUT/final (the exported generator, EMA weights when EMA is on)."""
    out_dir = Path(config.out_dir)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum)
    device = accelerator.device
    torch.manual_seed(config.seed)

    # data
    train_set = FaceRestorationDataset(config.data.data_dir, "train", config.data.size, config.data.preset,
                                       config.data.num_refs, config.seed)
    try:
        val_set = FaceRestorationDataset(config.data.data_dir, "val", config.data.size, config.data.preset,
                                         config.data.num_refs, config.seed)
    except ConfigError:  # no validation people in this data directory
        val_set = None

    # model, via the recipe
    recipe = build_recipe(config)
    checkpoint = out_dir / CHECKPOINT_DIR
    resuming = config.resume and (checkpoint / "state.pt").is_file()
    generator = recipe.build_generator()
    if config.init_from and not resuming:  # a checkpoint replaces the weights anyway
        recipe.start_from_exported(generator, config.init_from)
    generator = generator.to(device).train()
    discriminator = recipe.build_discriminator()
    trainable = recipe.trainable_parameters(generator)
    ema = TrainableEMA(generator, trainable, config.ema_decay) if config.ema_decay > 0 else None

    # optimisers (AdamW with weight_decay 0 is Adam, GFP-GAN's choice)
    optim = config.optim
    optimizers = {"g": torch.optim.AdamW(trainable, lr=optim.lr_g, betas=optim.betas,
                                         weight_decay=optim.weight_decay)}
    if discriminator is not None:
        discriminator = discriminator.to(device)
        # lazy R1 regularisation: lr and betas corrected as in StyleGAN2
        ratio = config.losses.r1_interval / (config.losses.r1_interval + 1)
        optimizers["d"] = torch.optim.Adam(discriminator.parameters(), lr=optim.lr_d * ratio,
                                           betas=(optim.betas[0] ** ratio, optim.betas[1] ** ratio))
    generator, optimizers["g"] = accelerator.prepare(generator, optimizers["g"])
    if discriminator is not None:
        discriminator, optimizers["d"] = accelerator.prepare(discriminator, optimizers["d"])
    rng = torch.Generator(device=device).manual_seed(config.seed + accelerator.process_index)

    # resume
    start_step, elapsed = 0, 0.0
    if resuming:
        start_step, elapsed = load_checkpoint(checkpoint, generator, discriminator, ema, optimizers, rng, accelerator)
        if discriminator is not None and not (checkpoint / "discriminator.safetensors").is_file():
            recipe.notes.append("adversarial: on from here, with a fresh discriminator (none in the checkpoint)")
    elif config.init_from:
        recipe.notes.append(f"generator: from {config.init_from} (init_from); optimisers and EMA fresh")
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))
        for note in recipe.notes:
            accelerator.print(f"[{recipe.name}] {note}")
            with open(out_dir / "notes.txt", "a") as handle:
                handle.write(f"step {start_step}: {note}\n")
    metrics = MetricsLog(out_dir / METRICS_FILE, start_step, accelerator.is_main_process)

    sampler = StepBatchSampler(len(train_set), config.data.batch_size, config.grad_accum, config.seed, start_step,
                               config.steps, accelerator.process_index, accelerator.num_processes)
    loader = iter(DataLoader(SeededSamples(train_set), batch_sampler=sampler, num_workers=config.data.num_workers))
    val_batch = None
    if val_set is not None:
        picks = np.linspace(0, len(val_set) - 1, min(config.data.val_samples, len(val_set))).round().astype(int)
        val_batch = to_device(torch.utils.data.default_collate([val_set.sample(int(i), 0) for i in picks]), device)

    started = time.perf_counter() - elapsed  # max_minutes counts the time of earlier, resumed runs too
    progress = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
                    desc=f"train {recipe.name}", disable=not accelerator.is_local_main_process)
    for step in progress:
        # generator: forward / loss / backward over the micro-batches, then one clipped step
        if discriminator is not None:
            discriminator.requires_grad_(False)
        optimizers["g"].zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        fakes, reals = [], []
        for _ in range(config.grad_accum):
            batch = to_device(next(loader), device)
            with accelerator.accumulate(generator):  # gradients sync on the last micro-batch only
                with accelerator.autocast():
                    result = recipe.generator_step(generator, discriminator, batch, step, rng)
                accelerator.backward(result.loss)  # divided by grad_accum there
            fakes.append(result.fake.detach())
            reals.append(result.real)
            for name, value in result.logs.items():
                logs[name] = logs.get(name, 0.0) + value / config.grad_accum
            logs["g_loss"] = logs.get("g_loss", 0.0) + result.loss.item() / config.grad_accum
        if optim.grad_clip > 0:
            logs["g_grad_norm"] = float(accelerator.clip_grad_norm_(trainable, optim.grad_clip))
        for group in optimizers["g"].param_groups:
            group["lr"] = optim.lr_g * learning_rate_factor(step, optim, config.steps)
        optimizers["g"].step()

        # discriminator: the recipe's loss on the same micro-batches, then one step
        if discriminator is not None:
            discriminator.requires_grad_(True)
            optimizers["d"].zero_grad(set_to_none=True)
            for fake, real in zip(fakes, reals):
                with accelerator.accumulate(discriminator):
                    with accelerator.autocast():
                        d_loss, d_logs = recipe.discriminator_step(discriminator, fake, real, step)
                    accelerator.backward(d_loss)
                for name, value in d_logs.items():
                    logs[name] = logs.get(name, 0.0) + value / config.grad_accum
            optimizers["d"].step()

        # EMA of the generator's trainable weights
        if ema is not None:
            ema.step(trainable)

        done = step + 1
        out_of_time = config.max_minutes > 0 and (time.perf_counter() - started) / 60 >= config.max_minutes
        last = done == config.steps or out_of_time
        if done % config.log_every == 0 or last:
            logs = {name: accelerator.reduce(torch.tensor(value, device=device), "mean").item()
                    for name, value in logs.items()}
            metrics.write({"step": done, "seconds": round(time.perf_counter() - started, 2), **logs})
            progress.set_postfix(g=f"{logs['g_loss']:.4f}", refresh=False)
        if val_batch is not None and accelerator.is_main_process and (done % config.val_every == 0 or last):
            with ema.applied(trainable) if ema is not None else nullcontext():
                psnr = validate(recipe, accelerator.unwrap_model(generator), val_batch,
                                out_dir / "val" / f"step_{done:07d}.png")
            metrics.write({"step": done, "val_psnr": round(psnr, 3)})
        if done % config.checkpoint_every == 0 or last:
            save_checkpoint(checkpoint, done, time.perf_counter() - started, generator, discriminator, ema,
                            optimizers, rng, accelerator)
        if out_of_time:
            accelerator.print(f"stopping at step {done}: max_minutes {config.max_minutes} reached")
            break
    progress.close()

    # export the (EMA) generator
    final = out_dir / "final"
    if accelerator.is_main_process:
        with ema.applied(trainable) if ema is not None else nullcontext():
            recipe.save_pretrained(accelerator.unwrap_model(generator), final)
        if recipe.identity is not None and recipe.identity.available:
            record_identity_loss_model(final, recipe.identity.model_name)
    accelerator.wait_for_everyone()
    return final


def record_identity_loss_model(model_dir: Path, identity_net: str) -> None:
    """Mark the exported model's config.json with the identity net its loss used; the benchmark reports it
    next to that net's scores, which are then partly the training target, not an independent measurement."""
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["identity_loss_model"] = identity_net
    write_bytes(config_file, json.dumps(config, indent=1).encode())


def train_main(config_path: str, overrides: list[str]) -> Path:
    """`instantrestore train --config X.yaml key=value ...`: returns the exported model's folder."""
    return train(load_config(config_path, overrides))

