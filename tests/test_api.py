"""The Python API of the contract: load_restorer by name or path, references encoded once, whole photos."""

import json

import numpy as np
import pytest
import torch

import instantrestore
from instantrestore.errors import ConfigError, WeightsError
from instantrestore.imageio import read_image
from instantrestore.models.gfpgan import GFPGANv1Clean
from instantrestore.models.gfpgan_restorer import GFPGANRestorer
from instantrestore.models.ir_restorer import InstantRestoreRestorer


@pytest.fixture(scope="module")
def references(shared) -> list[np.ndarray]:
    """Four whole photos of one FRLL person (not the one restored below)."""
    return [read_image(shared / f"data/frll/images/002/002_{view}.jpg")[::3, ::3] for view in ("03", "08", "02", "04")]


def test_load_restorer_dispatches_on_saved_directories(tiny_instantrestore_dir, tiny_gfpgan_config, tmp_path):
    restorer = instantrestore.load_restorer(str(tiny_instantrestore_dir), device="cpu")
    saved = json.loads((tiny_instantrestore_dir / "config.json").read_text())["model"]
    assert isinstance(restorer.restorer, InstantRestoreRestorer) and restorer.face_size == saved["face_size"]
    torch.manual_seed(0)
    gfpgan_dir = GFPGANv1Clean(**tiny_gfpgan_config).save_pretrained(tmp_path / "gfpgan")
    assert isinstance(instantrestore.load_restorer(str(gfpgan_dir), device="cpu").restorer, GFPGANRestorer)
    assert instantrestore.load_restorer("bicubic").name == "bicubic"


@pytest.mark.parametrize("name", ["no-such-model", "/nonexistent/dir"])
def test_unknown_model_is_a_weights_error(name):
    with pytest.raises(WeightsError, match="not a model name"):
        instantrestore.load_restorer(name)


def test_references_encoded_once_serve_every_photo(tiny_instantrestore_dir, references, shared, tmp_path):
    restorer = instantrestore.load_restorer(str(tiny_instantrestore_dir), device="cpu")
    cache = restorer.encode_references(references)
    assert len(cache) == 4 and cache.identity.shape == (4, restorer.identity_model.dim)
    assert cache.features and cache.model_id == restorer.model_id

    photo = read_image(shared / "data/frll/images/002/002_07.jpg")[::2, ::2]
    first = restorer.restore(photo, refs=cache, seed=0)
    loaded = instantrestore.ReferenceCache.load(cache.save(tmp_path / "person.safetensors"))
    again = restorer.restore(photo, refs=loaded, seed=0)
    from_images = restorer.restore(photo, refs=references, seed=0)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.image, from_images.image)
    assert first.image.shape == photo.shape and len(first.faces) == 1
    assert first.faces[0].identity is not None

    blind = restorer.restore(photo, refs=None, seed=0)
    assert blind.faces[0].identity is None
    assert not np.array_equal(blind.faces[0].restored, first.faces[0].restored)


def test_identity_to_the_references_tells_their_person_from_another(references, shared):
    """The identity `restore` reports: above the same-person threshold against the person's own photos, below it
    against another person's (bicubic leaves the face as it is, so only the references differ)."""
    restorer = instantrestore.load_restorer("bicubic")
    photo = read_image(shared / "data/frll/images/002/002_07.jpg")[::2, ::2]
    others = [read_image(shared / f"data/frll/images/001/001_{view}.jpg")[::3, ::3]
              for view in ("03", "08", "02", "04")]
    same = restorer.restore(photo, refs=references).faces[0].identity
    other = restorer.restore(photo, refs=others).faces[0].identity
    assert same > restorer.identity_model.same_person_threshold > other


def test_a_blind_restore_never_loads_the_identity_model(shared, monkeypatch):
    from instantrestore.faces import identity

    monkeypatch.setattr(identity, "load_identity_model", lambda *args: pytest.fail("identity model loaded"))
    restorer = instantrestore.load_restorer("bicubic")
    result = restorer.restore(read_image(shared / "data/frll/images/002/002_07.jpg")[::2, ::2], refs=None)
    assert len(result.faces) == 1 and result.faces[0].identity is None and not result.warnings


def test_a_cache_from_another_model_is_refused(tiny_instantrestore_dir, references, tmp_path):
    restorer = instantrestore.load_restorer(str(tiny_instantrestore_dir), device="cpu")
    cache = restorer.encode_references(references[:1])
    cache.model_id = "instantrestore-someothermodel"
    with pytest.raises(WeightsError, match="reference cache was made by model"):
        restorer.restore_face(np.zeros((restorer.face_size, restorer.face_size, 3), np.uint8), refs=cache)


@pytest.mark.parametrize("name", ["default", "gfpgan"])
def test_packaged_models_ship_small_and_restore(name, references, shared):
    """The default models load by name, offline, from the package, within the 30 MB budget each."""
    from instantrestore.api import PACKAGED, PACKAGED_WEIGHTS, packaged_model_available

    assert packaged_model_available(name)
    size = sum(p.stat().st_size for p in (PACKAGED_WEIGHTS / PACKAGED[name]).rglob("*") if p.is_file())
    assert size <= 30 * 2**20
    restorer = instantrestore.load_restorer(name, device="cpu")
    face = read_image(shared / "data/real-lq/cropped_faces" / sorted(
        p.name for p in (shared / "data/real-lq/cropped_faces").iterdir())[0])
    refs = references if restorer.uses_references else None
    restored = restorer.restore_face(face, refs=refs, seed=0)
    assert restored.shape == face.shape and restored.dtype == np.uint8
    assert np.array_equal(restored, restorer.restore_face(face, refs=refs, seed=0))  # seeded: deterministic
    network_alone = restorer.restore_face(face, refs=refs, seed=0, detail_strength=0)
    assert np.abs(network_alone.astype(int) - face.astype(int)).mean() > 1  # the network did something



def test_every_name_is_one_row_of_the_model_table():
    from instantrestore.api import MODELS, NAMES
    from instantrestore.models.registry import PAPER_ALIASES, PAPER_CHECKPOINTS
    from instantrestore.models.zoo import ZOO_MODELS

    expected = {"default", "instantrestore", "gfpgan", "gfpgan-v1.3", "gfpgan-v1.4", "bicubic", *ZOO_MODELS,
                *PAPER_CHECKPOINTS, *PAPER_ALIASES}
    assert set(MODELS) == expected and set(NAMES) == expected - set(PAPER_ALIASES)
    assert {name for name, model in MODELS.items() if model.takes_fidelity} == set(ZOO_MODELS)
    with pytest.raises(WeightsError, match="--weights applies to gfpgan"):
        instantrestore.load_restorer("default", weights="GFPGANv1.4.pth")
    with pytest.raises(ConfigError, match="fidelity applies to codeformer, not 'gfpgan'"):
        instantrestore.load_restorer("gfpgan", fidelity=0.5)
