"""Other papers' face restorers through spandrel (the `zoo` extra): CodeFormer and RestoreFormer++ built from
synthetic checkpoints in the official release layouts (random weights, made here), restored through the API
and the CLI; and the one-line errors."""

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from instantrestore.api import load_restorer
from instantrestore.cli import main
from instantrestore.errors import ConfigError, WeightsError
from instantrestore.evaluation import benchmark
from instantrestore.imageio import read_image, write_image
from instantrestore.models import registry
from instantrestore.models.zoo import ZooRestorer, import_spandrel

FACE_SIZE = 512


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _randomize(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random weights, drawn here: zero-initialised tensors (position embeddings, biases) must matter too."""
    generator = torch.Generator().manual_seed(seed)
    return {key: (value + 0.02 * torch.randn(value.shape, generator=generator)).contiguous()
            for key, value in state.items()}


@pytest.fixture(scope="module")
def codeformer_file(spandrel, tmp_path_factory) -> Path:
    """codeformer.pth's layout (`params_ema`; the release's 515 tensors at full size), with a one-layer, 64-wide
    transformer and a 64-entry codebook: the sizes spandrel reads from the keys. The VQ autoencoder around
    them has fixed sizes in CodeFormer, so this file is ~300 MB."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    with torch.device("meta"):
        assert len(CodeFormer().state_dict()) == 515  # the official release's tensor count
    torch.manual_seed(0)
    state = _randomize(CodeFormer(dim_embd=64, n_layers=1, codebook_size=64).state_dict(), seed=1)
    path = tmp_path_factory.mktemp("zoo") / "codeformer.pth"
    torch.save({"params_ema": state}, path)
    return path


def _attention_block(channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One `MultiHeadAttnBlock` of the authors' vqvae_arch.py: two GroupNorms and four 1x1 convs."""
    block = {}
    for norm in ("norm1", "norm2"):
        block[f"{norm}.weight"], block[f"{norm}.bias"] = torch.ones(channels), torch.zeros(channels)
    for conv in ("q", "k", "v", "proj_out"):
        block[f"{conv}.weight"] = 0.05 * torch.randn(channels, channels, 1, 1, generator=generator)
        block[f"{conv}.bias"] = torch.zeros(channels)
    return block


@pytest.fixture(scope="module")
def restoreformer_plus_plus_file(spandrel, tmp_path_factory) -> Path:
    """RestoreFormer++.ckpt's layout, small: a pytorch-lightning checkpoint whose `state_dict` holds the net under
    `vqvae.` beside training-only modules. The net is RestoreFormer's layout (made with spandrel's RestoreFormer,
    32 channels, one res block per level) plus what ++ adds: decoder attention blocks at 32 px (level 4)."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    levels, channels, blocks = 6, 32, 1
    net = RestoreFormer(ch=channels, ch_mult=(1,) * levels, num_res_blocks=blocks, n_embed=64, embed_dim=32,
                        z_channels=32)
    state = _randomize(net.state_dict(), seed=2)
    assert "decoder.up.5.attn.0.q.weight" in state and "decoder.up.4.attn.0.q.weight" not in state
    generator = torch.Generator().manual_seed(3)
    for block in range(blocks + 1):  # the decoder has one res block more per level, each followed by attention
        for key, value in _attention_block(channels, generator).items():
            state[f"decoder.up.4.attn.{block}.{key}"] = value
    checkpoint = {"epoch": 100, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
                  "state_dict": {**{f"vqvae.{key}": value for key, value in state.items()},
                                 "loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4)}}
    path = tmp_path_factory.mktemp("zoo") / "RestoreFormer++.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 512-px aligned face stand-in: smooth, so a restorer has structure to work on."""
    y, x = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE] / FACE_SIZE
    return (np.stack([x, y, 1 - x * y], axis=-1) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------- restoring through the API
def test_codeformer_restores_and_fidelity_matters(codeformer_file, face):
    restorer = load_restorer("codeformer", weights=str(codeformer_file), device="cpu", fidelity=0.0)
    assert isinstance(restorer.restorer, ZooRestorer) and restorer.name == "codeformer" and not restorer.uses_references
    quality = restorer.restore_face(face)
    restorer.restorer.fidelity = 1.0
    faithful = restorer.restore_face(face)
    for restored in (quality, faithful):
        assert restored.shape == face.shape and restored.dtype == np.uint8
        assert 0 < restored.std() and len(np.unique(restored)) > 16  # an image, not a constant or saturated
    assert np.abs(quality.astype(int) - faithful.astype(int)).mean() > 1  # w fuses the input's features back


def test_restoreformer_plus_plus_restores(restoreformer_plus_plus_file, face):
    restorer = load_restorer("restoreformer++", weights=str(restoreformer_plus_plus_file), device="cpu")
    assert restorer.name == "restoreformer++" and restorer.restorer.fidelity is None
    decoder = restorer.restorer.net.decoder
    assert len(decoder.up[4].attn) == 2 and len(decoder.up[3].attn) == 0  # ++'s 32-px attention, loaded
    assert decoder.up[4].attn[0].head_size == 4  # the release config (RestoreFormer has 8)
    restored = restorer.restore_face(face)
    assert restored.shape == face.shape and restored.dtype == np.uint8 and restored.std() > 0
    assert np.array_equal(restored, restorer.restore_face(face))  # deterministic
    # the same file by path, as the benchmark's LABEL=PATH passes it
    by_path = load_restorer(str(restoreformer_plus_plus_file), device="cpu")
    assert by_path.name == "restoreformer++"


def test_the_benchmark_loads_a_zoo_checkpoint_by_path(restoreformer_plus_plus_file):
    assert benchmark._labelled(f"rf++={restoreformer_plus_plus_file}") == ("rf++", str(restoreformer_plus_plus_file))
    assert benchmark._load(str(restoreformer_plus_plus_file), "cpu").name == "restoreformer++"


def test_cli_restores_with_codeformer(codeformer_file, face, tmp_path):
    write_image(tmp_path / "face.png", face)
    out = tmp_path / "out"
    code = main(["restore", str(tmp_path / "face.png"), "--aligned", "-o", str(out), "--model", "codeformer",
                 "--weights", str(codeformer_file), "--fidelity", "0.7", "--device", "cpu", "-q"])
    assert code == 0
    restored = read_image(out / "restored_faces" / "face_0.png")
    assert restored.shape == face.shape and not np.array_equal(restored, face)
    assert json.loads((out / "report.json").read_text())["model"] == "codeformer"


# ---------------------------------------------------------------- one-line errors
def test_wrong_or_missing_weights_are_one_line(codeformer_file, restoreformer_plus_plus_file, tmp_path, capsys):
    with pytest.raises(WeightsError) as err:
        load_restorer("restoreformer++", weights=str(codeformer_file), device="cpu")
    assert "a codeformer checkpoint, not restoreformer++" in one_line(err)
    with pytest.raises(ConfigError) as err:
        load_restorer("restoreformer++", weights=str(restoreformer_plus_plus_file), fidelity=0.5, device="cpu")
    assert "CodeFormer" in one_line(err)
    checkpoint = torch.load(restoreformer_plus_plus_file, weights_only=True)
    del checkpoint["state_dict"]["vqvae.decoder.up.4.attn.1.q.weight"]  # a truncated or edited file
    torch.save(checkpoint, tmp_path / "broken.ckpt")
    with pytest.raises(WeightsError) as err:
        load_restorer(str(tmp_path / "broken.ckpt"), device="cpu")
    assert "broken.ckpt: weights do not fit RestoreFormer++: 1 missing" in one_line(err)
    write_image(tmp_path / "face.png", np.zeros((64, 64, 3), np.uint8))
    base = ["restore", str(tmp_path / "face.png"), "--aligned", "-o", str(tmp_path / "out"), "--device", "cpu", "-q"]
    cases = [(["--model", "codeformer", "--weights", str(tmp_path / "nope.pth")], "nope.pth"),
             (["--model", "codeformer", "--weights", str(codeformer_file), "--fidelity", "1.5"], "between 0 and 1"),
             (["--model", "bicubic", "--fidelity", "0.5"], "fidelity applies to codeformer")]
    for flags, expected in cases:
        assert main(base + flags) == 2, flags
        stderr = capsys.readouterr().err.strip()
        assert expected in stderr and len(stderr.splitlines()) == 1, stderr


def test_offline_the_error_names_the_release_file(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(registry.urllib.request, "urlopen", offline)
    for name in ("codeformer", "restoreformer++"):
        with pytest.raises(WeightsError) as err:
            load_restorer(name, device="cpu")
        message = one_line(err)
        weights = registry.REGISTERED_WEIGHTS[name]
        assert weights.url in message and str(tmp_path / "weights" / weights.filename) in message


def test_without_spandrel_the_error_says_what_to_install(tmp_path, monkeypatch):
    torch.save({"params_ema": {"position_emb": torch.zeros(256, 8)}}, tmp_path / "codeformer.pth")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as where the zoo extra is not installed
    with pytest.raises(WeightsError) as err:
        load_restorer("codeformer", weights=str(tmp_path / "codeformer.pth"), device="cpu")
    assert "spandrel" in one_line(err) and "pip install 'instantrestore[zoo]'" in one_line(err)
    with pytest.raises(WeightsError) as err:
        import_spandrel()
    assert "instantrestore[zoo]" in one_line(err)


def test_torchvision_diffusers_and_spandrel_import_in_a_fresh_interpreter(spandrel):
    """Once instantrestore.models is imported, torchvision imports (and with it diffusers, which imports it
    lazily, and spandrel), whether or not its compiled ops load beside this torch; nms itself then raises
    torchvision's own error instead of running."""
    script = """
import torch, instantrestore.models, torchvision, spandrel
from diffusers import AutoencoderKL
from torchvision.transforms.functional import normalize
x = torch.rand(1, 3, 4, 4)
assert torch.allclose(normalize(x, [0.5] * 3, [0.5] * 3), x * 2 - 1)
try:
    torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)
    print("nms ran")
except RuntimeError as err:
    print("nms raised:", str(err).splitlines()[0])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import torchvision.extension

    ops_loaded = torchvision.extension._has_ops()
    # `instantrestore train` imports accelerate and diffusers' training utilities first of all
    trainer = subprocess.run([sys.executable, "-c", "import instantrestore.training.trainer"], capture_output=True,
                             text=True, timeout=300)
    assert trainer.returncode == 0, trainer.stderr[-2000:]
    assert ("nms ran" if ops_loaded else "nms raised: Couldn't load custom C++ ops") in result.stdout
