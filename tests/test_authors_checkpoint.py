"""The authors' released checkpoint format: converted, then proven against the authors' own forward pass.

`shared/authors-fixture` (see its README) holds a tiny SD-Turbo-shaped base, a checkpoint written by the
authors' code on it, and their forward pass on fixed inputs with explicit noise (`golden.safetensors`).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from instantrestore.cli import main
from instantrestore.errors import WeightsError
from instantrestore.models.authors_checkpoint import convert_authors_checkpoint
from instantrestore.models.instantrestore import InstantRestoreModel
from tests.conftest import SHARED

FIXTURE = SHARED / "authors-fixture"
LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"  # the layer whose attention golden holds
OUTPUT_TOLERANCE = 1e-4  # the fixture README: 1 vs 2 threads moves the output 5.4e-6; the smallest mistake, 7e-3
ATTENTION_TOLERANCE = 1e-7  # probabilities ~1e-3; 1 vs 2 threads moves them 9.2e-9

pytestmark = pytest.mark.skipif(not (FIXTURE / "golden.safetensors").is_file(), reason=f"{FIXTURE} is absent")


def convert(output: Path, checkpoint: Path = FIXTURE / "authors_ckpt.pt"):
    return convert_authors_checkpoint(checkpoint, output, str(FIXTURE / "base"), str(FIXTURE / "base" / "vae"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return convert(tmp_path_factory.mktemp("authors") / "converted").output


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "golden.safetensors"))


def as_model_input(images_u8: torch.Tensor) -> torch.Tensor:
    return (images_u8.float() / 255 - 0.5) / 0.5  # the authors' ToTensor + Normalize(0.5, 0.5)


def authors_forward(model: InstantRestoreModel, golden: dict[str, torch.Tensor]):
    """Our forward on the golden inputs, each noise tensor where the fixture README says the authors' enters."""
    with torch.no_grad():
        kv = model.encode_references(as_model_input(golden["refs_u8"]),
                                     noise=(golden["noise_vae_refs"], golden["noise_t1_refs"]))
        restored, attention = model(as_model_input(golden["input_u8"]), kv, capture_attention_layer=LAYER,
                                    noise=(golden["noise_vae_input"], golden["noise_t249_input"]))
    return kv, restored.clamp(-1, 1), attention


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_converted_checkpoint_reproduces_the_authors_forward(converted, golden):
    assert {"config.json", "unet_lora.safetensors", "vae_lora.safetensors", "trained.safetensors"} <= {
        path.name for path in converted.iterdir()}
    model = InstantRestoreModel.from_pretrained(converted).eval()
    assert max_difference(model.prompt_embeds, golden["caption_enc"]) < 1e-5  # transformers 5 vs 4.37: 1.2e-6
    kv, restored, attention = authors_forward(model, golden)

    assert list(model.shared_layers) == list(kv)
    keys, values = kv[LAYER][:, 0]  # (2, B, K, N, C) -> this face's references
    assert max_difference(keys, golden["ref_keys"][0]) < 1e-4 and max_difference(values, golden["ref_values"][0]) < 1e-4
    assert attention.self_tokens == 0 and attention.probs.shape == golden["attn_probs"].shape
    assert max_difference(attention.probs, golden["attn_probs"]) < ATTENTION_TOLERANCE
    assert max_difference(restored, golden["output"]) < OUTPUT_TOLERANCE

    # the tolerance tells a faithful forward from a small mistake: AdaIN left out at one of the 9 layers
    model.shared_layers[LAYER].adain = False
    with torch.no_grad():
        mistaken = model(as_model_input(golden["input_u8"]), kv,
                         noise=(golden["noise_vae_input"], golden["noise_t249_input"])).clamp(-1, 1)
    assert max_difference(mistaken, golden["output"]) > 10 * OUTPUT_TOLERANCE


def test_unsupported_cfg_flag_and_tampered_key_are_refused_in_one_line(tmp_path, capsys):
    original = torch.load(FIXTURE / "authors_ckpt.pt", map_location="cpu", weights_only=True)
    flagged = {**original, "cfg": {**original["cfg"], "model": {**original["cfg"]["model"], "condition_on_face_embeds": True}}}
    torch.save(flagged, tmp_path / "flagged.pt")
    state = dict(original["state_dict"])
    state["net.unet.conv_out.lora_A.extra.weight"] = state.pop("net.unet.conv_out.lora_A.default.weight")
    torch.save({**original, "state_dict": state}, tmp_path / "tampered.pt")
    changed = dict(original["state_dict"])
    changed["net.original_vae.decoder.conv_out.weight"] = changed["net.original_vae.decoder.conv_out.weight"] * 2
    torch.save({**original, "state_dict": changed}, tmp_path / "changed_base.pt")

    expected = {"flagged.pt": "model.condition_on_face_embeds=True is not supported",
                "tampered.pt": "unet.conv_out.lora_A.extra.weight: LoRA tensor of an unknown adapter",
                "changed_base.pt": "original_vae.decoder.conv_out.weight: differs from the base weights"}
    for name, message in expected.items():
        code = main(["convert-authors", str(tmp_path / name), "-o", str(tmp_path / f"out_{name}"),
                     "--pretrained", str(FIXTURE / "base"), "--vae-pretrained", str(FIXTURE / "base" / "vae")])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and message in errors[0], (name, errors)
        assert not (tmp_path / f"out_{name}").exists()
    with pytest.raises(WeightsError, match="not a readable authors' checkpoint"):
        (tmp_path / "truncated.pt").write_bytes((FIXTURE / "authors_ckpt.pt").read_bytes()[:5000])
        convert(tmp_path / "out", tmp_path / "truncated.pt")


def test_paper_name_downloads_converts_once_and_loads(tmp_path, monkeypatch, golden):
    import huggingface_hub

    from instantrestore import load_restorer
    from instantrestore.models import authors_checkpoint

    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    monkeypatch.setattr(authors_checkpoint, "SD_TURBO", str(FIXTURE / "base"))
    monkeypatch.setattr(authors_checkpoint, "SD_VAE_FT_MSE", str(FIXTURE / "base" / "vae"))

    def offline(repo_id, filename, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(WeightsError) as err:
        load_restorer("hwdz15508/InstantRestore", device="cpu")
    assert "\n" not in str(err.value) and "hf download hwdz15508/InstantRestore final_model_ckpt.pt" in str(err.value)

    downloads = []

    def from_the_fixture(repo_id, filename, **kwargs):
        downloads.append((repo_id, filename))
        return str(FIXTURE / "authors_ckpt.pt")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", from_the_fixture)
    restorer = load_restorer("instantrestore-paper", device="cpu")
    assert downloads == [("hwdz15508/InstantRestore", "final_model_ckpt.pt")]
    assert (tmp_path / "weights" / "instantrestore-paper" / "config.json").is_file()
    config = restorer.restorer.model.config
    assert (config.freeu, config.inference_timestep, config.reference_timestep) == ([0.9, 0.2, 1.4, 1.6], 249, 1)
    assert config.round_base_weights_to == "bfloat16" and config.inference_autocast == "float16"
    assert config.scheduler["clip_sample"] is False and config.adain and not config.train_input
    load_restorer("hwdz15508/InstantRestore", device="cpu")  # cached: no second download
    assert len(downloads) == 1
