"""The PyTorch port of dlib's face descriptor against dlib itself, and the identity loss built on it."""

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from instantrestore import losses
from instantrestore.errors import WeightsError
from instantrestore.faces import FaceAnalyzer
from instantrestore.faces.dlib_resnet import CHIP_SIZE, SAME_PERSON_DISTANCE, WEIGHTS_PATH, DlibDescriptor, load_dlib_resnet
from instantrestore.faces.identity import DlibIdentity, DlibTorchIdentity
from instantrestore.faces.landmarks import dlib_model_files
from instantrestore.imageio import read_image
from instantrestore.training import recipes
from instantrestore.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
PEOPLE = ("005", "010", "016", "021", "027", "033")   # the first six FRLL `val` people
VIEWS = ("03", "08")                                # frontal, neutral and smiling
CROP = 256


@pytest.fixture(scope="module")
def faces(shared) -> list[dict]:
    """Per photo: dlib's chip and descriptor (its own pipeline, on our 68 landmarks) and our aligned crop."""
    analyzer = FaceAnalyzer("yunet")
    recognition = dlib.face_recognition_model_v1(dlib_model_files().face_recognition_model_location())
    found = []
    for person in PEOPLE:
        for view in VIEWS:
            photo = read_image(shared / f"data/frll/images/{person}/{person}_{view}.jpg")
            photo = cv2.resize(photo, (384, 384), interpolation=cv2.INTER_AREA)
            (face,) = analyzer.find_faces(photo)
            box = dlib.rectangle(*(int(round(float(v))) for v in face.box))
            shape = dlib.full_object_detection(box, [dlib.point(int(x), int(y)) for x, y in face.landmarks68])
            found.append({
                "person": person,
                "chip": dlib.get_face_chip(photo, shape, size=CHIP_SIZE, padding=0.25),
                "dlib": np.array(recognition.compute_face_descriptor(photo, shape), np.float32),
                "crop": face.align(photo, CROP)[0],
            })
    return found


@pytest.fixture(scope="module")
def descriptor() -> DlibDescriptor:
    return DlibDescriptor()


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def pair_distances(descriptors: np.ndarray) -> np.ndarray:
    upper = np.triu_indices(len(descriptors), 1)
    return np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)[upper]


def test_port_reproduces_dlib_on_its_own_chips(faces, descriptor):
    with torch.no_grad():
        ours = descriptor.network(to_tensor([face["chip"] for face in faces])).numpy()
    theirs = np.stack([face["dlib"] for face in faces])
    assert cosine(ours, theirs).min() > 0.999
    assert np.linalg.norm(ours - theirs, axis=1).max() < 0.06
    # the same person / different person decisions, at dlib's own threshold, on all 66 pairs
    ours_d, theirs_d = pair_distances(ours), pair_distances(theirs)
    assert np.abs(ours_d - theirs_d).max() < 0.02
    assert np.array_equal(ours_d < SAME_PERSON_DISTANCE, theirs_d < SAME_PERSON_DISTANCE)
    # the set holds both kinds of pair, and dlib gets them all right (else the check above says little)
    same = pair_distances(np.array([[int(face["person"])] for face in faces], np.float32)) == 0
    assert same.any() and np.array_equal(theirs_d < SAME_PERSON_DISTANCE, same)


def test_chip_cut_from_the_aligned_crop_matches_dlib_on_the_photo(faces, descriptor):
    """The fixed affine stands in for dlib's per-face chip: the descriptor hardly moves."""
    with torch.no_grad():
        ours = descriptor(to_tensor([face["crop"] for face in faces]) / 255).numpy()
    theirs = np.stack([face["dlib"] for face in faces])
    assert cosine(ours, theirs).min() > 0.99
    assert np.array_equal(pair_distances(ours) < SAME_PERSON_DISTANCE, pair_distances(theirs) < SAME_PERSON_DISTANCE)


def test_descriptor_takes_either_range_and_any_size(faces):
    crops01 = to_tensor([face["crop"] for face in faces[:2]]) / 255
    in_01 = DlibDescriptor()
    in_pm1 = DlibDescriptor(input_range=(-1.0, 1.0))
    with torch.no_grad():
        reference = in_01(crops01)
        assert torch.allclose(in_pm1(crops01 * 2 - 1), reference, atol=1e-4)
        larger = torch.nn.functional.interpolate(crops01, size=512, mode="bicubic", align_corners=False)
        assert torch.nn.functional.cosine_similarity(in_01(larger), reference).min() > 0.99


def test_dlib_torch_identity_model_scores_like_dlib(faces):
    """The port as a scoring model (no landmarks per crop) gives dlib's scores on crops of mixed sizes."""
    crops = [face["crop"] if index % 2 else cv2.resize(face["crop"], (512, 512)) for index, face in enumerate(faces)]
    ours, theirs = DlibTorchIdentity().embed(crops), DlibIdentity().embed(crops)
    assert ours.shape == (len(crops), 128) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert cosine(ours, theirs).min() > 0.99
    threshold = DlibTorchIdentity.same_person_threshold
    assert np.array_equal(ours @ ours.T >= threshold, theirs @ theirs.T >= threshold)
    assert DlibTorchIdentity().embed([]).shape == (0, 128)


def test_identity_loss_is_differentiable_and_knows_people(faces):
    loss = losses.IdentityLoss()
    assert loss.available and "dlib" in loss.name
    crops = to_tensor([face["crop"] for face in faces]) / 255
    anchor, same_person, other_person = crops[0:1], crops[1:2], crops[2:3]   # 005/03, 005/08, 010/03
    assert loss(anchor, anchor).item() == pytest.approx(0.0, abs=1e-5)
    output = same_person.clone().requires_grad_(True)
    same = loss(output, anchor)
    same.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0 and torch.isfinite(output.grad).all()
    # the gradient lowers the loss: one small step along it brings the face closer to the anchor's identity
    with torch.no_grad():
        assert loss(output - 0.01 * output.grad / output.grad.abs().max(), anchor) < same
        assert same < loss(other_person, anchor)
        # over all 66 pairs: every same-person pair scores a lower loss than any different-person pair
        embeddings = loss.embed(crops)
    pair_loss = pair_distances(embeddings.numpy()) ** 2 / 2            # = 1 - cosine for unit vectors
    same = pair_distances(np.array([[int(face["person"])] for face in faces], np.float32)) == 0
    assert pair_loss[same].max() < pair_loss[~same].min()


def test_recipe_builds_the_identity_term_offline():
    config = load_config(REPO / "configs/train_instantrestore_compact.yaml", ["losses.lpips=0", "losses.ms_ssim=0"])
    recipe = recipes.Recipe(config)
    assert any(note.startswith("identity: on, dlib-resnet") for note in recipe.notes)
    images = torch.rand(2, 3, 64, 64) * 2 - 1  # [-1, 1], as batches arrive
    total, logs = recipe.quality_terms(images, images.flip(0))
    assert logs["identity"] > 0 and total.item() == pytest.approx(config.losses.identity * logs["identity"])


def test_arcface_file_missing_is_off_with_the_reason():
    missing = losses.IdentityLoss("/nonexistent/arcface.onnx")
    assert not missing.available and "no such ArcFace ONNX file" in missing.reason


@pytest.mark.parametrize("damage", ["missing", "truncated", "not safetensors", "wrong tensors", "wrong shape"])
def test_bad_weight_file_is_one_line_weights_error(tmp_path, damage):
    path = tmp_path / "model.safetensors"
    good = WEIGHTS_PATH.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "not safetensors":
        path.write_bytes(b"<html>404</html>")
    elif damage == "wrong tensors":
        save_file({"weight": torch.zeros(3)}, str(path))
    elif damage == "wrong shape":
        state = {name: value.clone() for name, value in load_dlib_resnet().state_dict().items()}
        state["fc.weight"] = torch.zeros(64, 256)
        save_file(state, str(path))
    with pytest.raises(WeightsError) as err:
        load_dlib_resnet(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_dlib_torch_is_an_identity_model_by_name():
    from instantrestore.faces.identity import load_identity_model

    model = load_identity_model("dlib-torch")
    assert model.name == "dlib-torch" and model.dim == 128
