"""Training the reference-detail stage's fusion net (models/detail_fusion.py), top to bottom.

The stage runs after a restorer, on that restorer's output, so its training samples are made once, by the
pipeline itself, and stored (`prepare`): a prepared photo of a train person, degraded by a preset drawn at
random, restored by the packaged default with 4 other photos of the person as references; what the stage's
fusion reads (`ReferenceDetailStage.prepare`) is saved with the ground truth. Training (`train`) then only runs
the small fusion net and the composition at 512 px, which fits a CPU:

    output = start + free * fused detail of the references      (start: the base with the input's own detail)
    loss   = L1 + Laplacian-pyramid L1 (the bands the detail lives in) + identity (MobileFaceNet by default, so
             that dlib and faceres, which judge the benchmark, did not train it)

    python -m instantrestore.training.detail_stage prepare --data data/frll_celeba -o data/detail_train --count 600
    python -m instantrestore.training.detail_stage train --samples data/detail_train -o runs/detail --minutes 30

A run resumes from `OUT/checkpoint.safetensors`; `OUT/final` is a `save_pretrained` directory.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from tqdm import tqdm

from instantrestore import losses
from instantrestore.data.prepare import load_index
from instantrestore.degradations import degrade
from instantrestore.errors import ConfigError, InstantRestoreError, WeightsError
from instantrestore.imageio import read_image, write_bytes
from instantrestore.models.detail_fusion import DetailFusionNet
from instantrestore.reference_detail import (FACE_FEATURES, REFERENCE_FEATURES, DetailInputs, ReferenceDetailStage,
                                             DETAIL_SIZE)

SEVERE_PRESETS = ("sr8", "sr16", "sr32", "codeformer", "instantrestore")
NUM_REFS = 4
_INPUT_NAMES = ("detail", "confidence", "hull", "reference_features", "face_features")  # DetailInputs' fields


class _Recorder(ReferenceDetailStage):
    """The pipeline's stage, recording its arguments instead of adding detail."""

    def __call__(self, base, degraded, input_size, restorer_size, reference_planes=None, reference_landmarks=None,
                 trust=None, strength=1.0):
        self.call = (base, degraded, input_size, restorer_size, reference_planes, reference_landmarks, trust)
        return base, None


def prepare(data_dir: str, out: str, count: int, split: str = "train", presets: tuple[str, ...] = SEVERE_PRESETS,
            seed: int = 0) -> None:
    """Write `count` samples (`OUT/SEED_00000.safetensors`, ...); existing ones are kept, so a run resumes, and
    runs with other seeds can fill the same folder in parallel."""
    from instantrestore import load_restorer

    index = load_index(data_dir)
    people = [person for person in index.people(split) if len(index.photos(person)) > NUM_REFS]
    pipeline = load_restorer("default")
    recorder = _Recorder(predictor=pipeline.detail_stage.predictor)
    pipeline.detail_stage = recorder
    out_dir = Path(out)
    for number in tqdm(range(count), desc="detail samples"):
        path = out_dir / f"{seed}_{number:05d}.safetensors"
        if path.exists():
            continue
        rng = np.random.default_rng([seed, number])
        person = people[rng.integers(len(people))]
        target, *references = rng.permutation(index.photos(person))[:NUM_REFS + 1]
        preset = presets[rng.integers(len(presets))]
        truth = read_image(index.image_path(person, target))
        degraded = degrade(truth, preset, rng)
        cache = pipeline.encode_references([read_image(index.image_path(person, name)) for name in references])
        if cache.crops is None or len(cache) < NUM_REFS:
            continue
        pipeline.restore_faces([degraded], cache, seed=number)
        base, degraded_512, input_size, restorer_size, planes, landmarks, trust = recorder.call
        if planes is None or not len(planes):
            continue  # identity trust gave every reference 0
        stage = ReferenceDetailStage(predictor=recorder.predictor)
        start, free = base.astype(np.float32), np.ones(base.shape[:2], np.float32)
        if input_size > restorer_size:
            change, own_weight = stage.own_detail(degraded_512, base)
            start, free = start + change, 1 - own_weight
        inputs = stage.prepare(base, degraded_512, planes, landmarks, trust, with_features=True)
        # references the identity trust turned away are stored as references with no confidence
        missing = NUM_REFS - len(planes)
        tensors = {name: getattr(inputs, name)[0] for name in _INPUT_NAMES}
        for name in ("detail", "confidence", "reference_features"):
            padding = tensors[name].new_zeros((missing,) + tensors[name].shape[1:])
            tensors[name] = torch.cat([tensors[name], padding])
        tensors["start"] = torch.from_numpy(start).permute(2, 0, 1)
        tensors["free"] = torch.from_numpy(free)
        tensors = {name: tensor.to(torch.float16).contiguous() for name, tensor in tensors.items()}
        tensors["target"] = torch.from_numpy(truth).permute(2, 0, 1).contiguous()
        write_bytes(path, save(tensors, metadata={"person": person, "target": target, "preset": preset}))


def load_samples(samples_dir: str) -> dict[str, torch.Tensor]:
    """Every sample of a folder, stacked (float16 and uint8 as stored)."""
    files = sorted(Path(samples_dir).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{samples_dir}: no samples (python -m instantrestore.training.detail_stage prepare)")
    loaded = [load_file(file) for file in files]
    return {name: torch.stack([sample[name] for sample in loaded]) for name in loaded[0]}


def compose(stage: ReferenceDetailStage, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(restored faces in [0, 1], targets in [0, 1]), (B, 3, S, S), from a batch of stored samples."""
    inputs = DetailInputs(**{name: batch[name].float() for name in _INPUT_NAMES})
    detail, _ = stage.fuse(inputs)
    output = batch["start"].float() + (batch["free"].float() * detail * 255)[:, None]
    return output.clamp(0, 255) / 255, batch["target"].float() / 255


def laplacian_l1(output: torch.Tensor, target: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 between the Laplacian pyramids' bands (each image minus its 2x-downsampled, re-upsampled self)."""
    total = output.new_zeros(())
    for _ in range(levels):
        smaller = [torch.nn.functional.avg_pool2d(image, 2) for image in (output, target)]
        bands = [image - torch.nn.functional.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
                 for image, small in zip((output, target), smaller)]
        total = total + losses.l1_loss(*bands)
        output, target = smaller
    return total


def train(samples_dir: str, out: str, minutes: float, batch_size: int = 4, lr: float = 1e-3,
          laplacian_weight: float = 1.0, identity_weight: float = 0.1, identity_net: str = "mobilefacenet",
          width: int = 24, seed: int = 0, log_every: int = 20, checkpoint_every: int = 100) -> Path:
    out_dir = Path(out)
    torch.manual_seed(seed)
    samples = load_samples(samples_dir)
    count = len(samples["target"])
    net = DetailFusionNet(REFERENCE_FEATURES, FACE_FEATURES, bands=3, width=width)
    stage = ReferenceDetailStage(fusion=net)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    identity = losses.IdentityLoss(identity_net) if identity_weight > 0 else None
    if identity is not None and not identity.available:
        raise WeightsError(f"identity loss: {identity.reason}")
    step, elapsed = 0, 0.0
    checkpoint = out_dir / "checkpoint.safetensors"
    if checkpoint.exists():
        state = load_file(checkpoint)
        step, elapsed = int(state.pop("step")), float(state.pop("elapsed"))
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        optimizer.load_state_dict(torch.load(out_dir / "optimizer.pt", weights_only=True))
    settings = {"samples": str(samples_dir), "count": count, "batch_size": batch_size, "lr": lr,
                "laplacian_weight": laplacian_weight, "identity_weight": identity_weight,
                "identity_net": identity_net if identity is not None else None, "width": width, "seed": seed}
    write_bytes(out_dir / "settings.json", (json.dumps(settings, indent=2) + "\n").encode())
    log_path = out_dir / "log.csv"
    if not log_path.exists():
        log_path.write_text("step,seconds,l1,laplacian" + (",identity" if identity is not None else "") + "\n")
    began = time.time() - elapsed
    while time.time() - began < minutes * 60:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100003 + step))[:batch_size]
        output, target = compose(stage, {name: tensor[order] for name, tensor in samples.items()})
        terms = {"l1": losses.l1_loss(output, target), "laplacian": laplacian_l1(output, target)}
        loss = terms["l1"] + laplacian_weight * terms["laplacian"]
        if identity is not None:
            terms["identity"] = identity(output, target)
            loss = loss + identity_weight * terms["identity"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % log_every == 0:
            with open(log_path, "a") as log:
                log.write(f"{step},{time.time() - began:.0f}," + ",".join(f"{v.item():.5f}" for v in terms.values()) + "\n")
        if step % checkpoint_every == 0:
            _checkpoint(out_dir, net, optimizer, step, time.time() - began)
    _checkpoint(out_dir, net, optimizer, step, time.time() - began)
    return net.save_pretrained(out_dir / "final")


def _checkpoint(out_dir: Path, net: DetailFusionNet, optimizer: torch.optim.Optimizer, step: int,
                elapsed: float) -> None:
    state = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    state["step"], state["elapsed"] = torch.tensor(step), torch.tensor(elapsed)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    write_bytes(out_dir / "optimizer.pt", buffer.getvalue())
    write_bytes(out_dir / "checkpoint.safetensors", save(state))


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the reference-detail stage's fusion net.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("--data", required=True)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--count", type=int, default=600)
    p.add_argument("--split", default="train")
    p.add_argument("--seed", type=int, default=0)
    t = commands.add_parser("train")
    t.add_argument("--samples", required=True)
    t.add_argument("-o", "--out", required=True)
    t.add_argument("--minutes", type=float, default=30)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--laplacian-weight", type=float, default=1.0)
    t.add_argument("--identity-weight", type=float, default=0.1)
    t.add_argument("--identity-net", default="mobilefacenet")
    t.add_argument("--width", type=int, default=24)
    t.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.command == "prepare":
            prepare(args.data, args.out, args.count, args.split, seed=args.seed)
        else:
            print(train(args.samples, args.out, args.minutes, args.batch_size, args.lr, args.laplacian_weight,
                        args.identity_weight, args.identity_net, args.width, args.seed))
    except InstantRestoreError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
