"""The identity nets by name: the TF.js graph executor, faceres against TF.js itself, and its absence."""

from __future__ import annotations

import base64
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantrestore.cli import main
from instantrestore.errors import WeightsError
from instantrestore.faces import FaceAnalyzer, load_identity_model
from instantrestore.faces.identity import IDENTITY_BACKENDS, FaceResIdentity, faceres_available
from instantrestore.faces.tfjs_graph import TFJSGraphModel
from instantrestore.imageio import read_image

FIXTURE = Path(__file__).parent / "fixtures" / "faceres_tfjs.json"


def _node(name: str, op: str, inputs: list[str], **attrs) -> dict:
    encode = {"strides": lambda v: {"list": {"i": [str(i) for i in v]}},
              "padding": lambda v: {"s": base64.b64encode(v.encode()).decode()},
              "keep_dims": lambda v: {"b": v}}
    return {"name": name, "op": op, "input": inputs, "attr": {key: encode[key](value) for key, value in attrs.items()}}


def _tiny_graph(directory: Path) -> Path:
    """x (1x4x4x1) -> 3x3 conv, stride 2, SAME (weights of ones, stored as float16) -> min(max(., 0), 6)
    -> x + bias -> Mean over H, W; weights in a .bin shard as the TF.js converter writes them."""
    nodes = [
        _node("x", "Placeholder", []),
        _node("kernel", "Const", []), _node("six", "Const", []), _node("zero", "Const", []),
        _node("bias", "Const", []), _node("axes", "Const", []),
        _node("conv", "Conv2D", ["x", "kernel"], strides=[1, 2, 2, 1], padding="SAME"),
        _node("clip_top", "Minimum", ["conv", "six"]), _node("clip", "Maximum", ["clip_top", "zero"]),
        _node("shifted", "Add", ["clip", "bias"]),
        _node("mean", "Mean", ["shifted", "axes"], keep_dims=False),
    ]
    half = {"dtype": "float32", "quantization": {"dtype": "float16", "original_dtype": "float32"}}
    weights = [{"name": "kernel", "shape": [3, 3, 1, 1], **half}, {"name": "six", "shape": [], **half},
               {"name": "zero", "shape": [], **half}, {"name": "bias", "shape": [1], "dtype": "float32"},
               {"name": "axes", "shape": [2], "dtype": "int32"}]
    data = (np.ones(9, np.float16).tobytes() + np.float16(6).tobytes() + np.float16(0).tobytes()
            + np.float32(0.5).tobytes() + np.array([1, 2], np.int32).tobytes())
    (directory / "tiny.bin").write_bytes(data)
    spec = {"format": "graph-model", "modelTopology": {"node": nodes},
            "weightsManifest": [{"paths": ["tiny.bin"], "weights": weights}]}
    (directory / "tiny.json").write_text(json.dumps(spec))
    return directory / "tiny.json"


def test_tfjs_executor_pads_like_tensorflow(tmp_path):
    graph = TFJSGraphModel(_tiny_graph(tmp_path))
    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4, 1) / 10
    conv = graph(x, "conv")[0, :, :, 0]
    image = x[0, :, :, 0]
    # SAME with stride 2 on 4 px pads 0 before and 1 after (TensorFlow), not 1 on both sides (PyTorch).
    expected = torch.tensor([[image[0:3, 0:3].sum(), image[0:3, 2:4].sum()],
                             [image[2:4, 0:3].sum(), image[2:4, 2:4].sum()]])
    torch.testing.assert_close(conv, expected)
    torch.testing.assert_close(graph(x, "mean"), (expected.clamp(0, 6) + 0.5).mean().reshape(1, 1))


def test_tfjs_executor_rejects_truncated_weights(tmp_path):
    path = _tiny_graph(tmp_path)
    (tmp_path / "tiny.bin").write_bytes((tmp_path / "tiny.bin").read_bytes()[:-4])
    with pytest.raises(WeightsError, match="truncated"):
        TFJSGraphModel(path)


def test_identity_backends_by_name(tmp_path, monkeypatch):
    assert {"dlib", "faceres"} <= set(IDENTITY_BACKENDS)
    assert load_identity_model("dlib").name == "dlib"
    with pytest.raises(WeightsError, match="unknown identity net"):
        load_identity_model("vggface")
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="scripts/data/fetch_faceres.py"):
        load_identity_model("faceres")


def test_cli_faceres_absent_is_one_line(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    photo = str(shared / "data/frll/images/005/005_03.jpg")
    assert main(["identity", photo, photo, "--identity-model", "faceres"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fetch_faceres.py" in err[0]


def _frll_crops(shared: Path, names: list[str]) -> list[np.ndarray]:
    analyzer = FaceAnalyzer()
    crops = []
    for name in names:
        photo = read_image(shared / "data" / "frll" / "images" / name)
        crops.append(analyzer.find_faces(photo)[0].align(photo, 512)[0])
    return crops


def test_faceres_matches_tfjs(shared, faceres_weights):
    """Our PyTorch run of the graph against TF.js's own outputs (scripts/convert/make_faceres_fixture.py)."""
    fixture = json.loads(FIXTURE.read_text())
    model = FaceResIdentity(faceres_weights)
    crops = _frll_crops(shared, [photo.removeprefix("data/frll/images/") for photo in fixture["photos"]])
    ours = model.descriptors([model.chip(crop) for crop in crops])
    reference = np.array(fixture["descriptors"])
    assert ours.shape == reference.shape == (3, 1024)
    cosine = np.sum(ours * reference, 1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.9999
    assert np.abs(ours - reference).max() < 1e-3  # the fixture keeps 4 significant digits


def test_faceres_ranks_same_person_above_different(shared, faceres_weights, monkeypatch):
    """5 FRLL val people x 2 views: every same-person pair above every different-person pair, and the
    threshold between them."""
    people, views = ("005", "010", "016", "021", "027"), ("03", "08")
    names = [f"{person}/{person}_{view}.jpg" for person in people for view in views]
    embeddings = FaceResIdentity(faceres_weights).embed(_frll_crops(shared, names))
    same, different = [], []
    for i, j in combinations(range(len(names)), 2):
        (same if names[i][:3] == names[j][:3] else different).append(float(embeddings[i] @ embeddings[j]))
    assert len(same) == 5 and len(different) == 40
    assert min(same) > FaceResIdentity.same_person_threshold > max(different)


def test_restore_report_scores_with_the_chosen_net(shared, faceres_weights, tmp_path):
    images = shared / "data" / "frll" / "images" / "010"
    argv = ["restore", str(images / "010_03.jpg"), "--refs", str(images / "010_08.jpg"), str(images / "010_02.jpg"),
            "--model", "bicubic", "--identity-model", "faceres", "-o", str(tmp_path), "-q"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["identity_model"] == "faceres"
    [score] = report["inputs"][0]["identity"]
    assert FaceResIdentity.same_person_threshold < score <= 1  # bicubic leaves the face as it was


def test_faceres_loss_is_differentiable_and_agrees_with_the_landmark_chip(shared, faceres_weights):
    """The training loss's faceres: the chip cut by dlib's fixed affine gives nearly the descriptor of the
    landmark-fitted chip, every same-person pair scores a lower loss than every different-person pair,
    and a step along the gradient lowers the loss."""
    from instantrestore import losses
    from instantrestore.faces.identity import FaceResDescriptor

    people, views = ("005", "010", "016"), ("03", "08")
    crops = _frll_crops(shared, [f"{person}/{person}_{view}.jpg" for person in people for view in views])
    fitted = FaceResIdentity(faceres_weights).embed(crops)
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        fixed = torch.nn.functional.normalize(FaceResDescriptor(faceres_weights)(images), dim=-1).numpy()
    assert np.sum(fitted * fixed, 1).min() > 0.93

    loss = losses.IdentityLoss("faceres")
    assert loss.available and loss.model_name == "faceres"
    pair_loss = 1 - fixed @ fixed.T
    person = np.repeat(np.arange(len(people)), len(views))
    same, different = person[:, None] == person[None], person[:, None] != person[None]
    assert pair_loss[same & ~np.eye(len(person), dtype=bool)].max() < pair_loss[different].min()
    output = images[1:2].clone().requires_grad_(True)
    value = loss(output, images[0:1])
    value.backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
    with torch.no_grad():
        assert loss(output - 0.01 * output.grad / output.grad.abs().max(), images[0:1]) < value


def test_faceres_loss_without_weights_is_off_with_the_reason(monkeypatch, tmp_path):
    from instantrestore import losses

    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    loss = losses.IdentityLoss("faceres")
    assert not loss.available and "fetch_faceres.py" in loss.reason


# ------------------------------------------------------------------------------------------------ MobileFaceNet
def test_mobilefacenet_equals_the_tflite_model(mobilefacenet_weights):
    """The repaired TF.js graph against the same weights as a TF Lite file, run by LiteRT itself
    (scripts/measure/make_mobilefacenet_fixture.py); the graph as converted, unrepaired, is far off."""
    from instantrestore.faces.identity import MobileFaceNetIdentity
    from instantrestore.faces.mobilefacenet import OUTPUT_NODE, normalise

    fixture = np.load(Path(__file__).parent / "fixtures" / "mobilefacenet_tflite.npz")
    reference = fixture["outputs"]
    ours = MobileFaceNetIdentity(mobilefacenet_weights).descriptors(list(fixture["chips"]))
    assert ours.shape == reference.shape == (2, 192)
    assert np.abs(ours - reference).max() < 1e-4 * np.abs(reference).max()
    as_converted = TFJSGraphModel(mobilefacenet_weights / "mobilefacenet.json")
    with torch.no_grad():
        broken = as_converted(normalise(torch.from_numpy(fixture["chips"].astype(np.float32))), OUTPUT_NODE).numpy()
    cosine = np.sum(broken * reference, 1) / np.linalg.norm(broken, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.max() < 0.9


def test_mobilefacenet_ranks_same_person_above_different(shared, mobilefacenet_weights):
    """8 FRLL val people x 2 views (frontal, three-quarter): same-person pairs above different-person pairs."""
    from instantrestore.faces.identity import MobileFaceNetIdentity

    people = ("005", "010", "016", "021", "027", "031", "038", "043")
    names = [f"{person}/{person}_{view}.jpg" for person in people for view in ("03", "02")]
    model = load_identity_model("mobilefacenet")
    assert isinstance(model, MobileFaceNetIdentity) and model.dim == 192
    embeddings = model.embed(_frll_crops(shared, names))
    same, different = [], []
    for i, j in combinations(range(len(names)), 2):
        (same if names[i][:3] == names[j][:3] else different).append(float(embeddings[i] @ embeddings[j]))
    auc = np.mean([s > d for s in same for d in different])
    assert len(same) == 8 and auc > 0.99
    assert np.mean(np.array(same) > model.same_person_threshold) >= 0.875
    assert np.mean(np.array(different) < model.same_person_threshold) >= 0.95


def test_mobilefacenet_wrong_or_truncated_files_are_one_line(mobilefacenet_weights, tmp_path, monkeypatch, capsys):
    import shutil

    from instantrestore.faces.mobilefacenet import load_graph

    for damage in ("truncate", "other"):
        directory = tmp_path / damage
        shutil.copytree(mobilefacenet_weights, directory)
        weights = directory / "mobilefacenet.bin"
        data = weights.read_bytes()
        weights.write_bytes(data[:1000] if damage == "truncate" else data[::-1])
        with pytest.raises(WeightsError, match="sha256 differs") as error:
            load_graph(directory)
        assert "\n" not in str(error.value)
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="fetch_mobilefacenet.py"):
        load_identity_model("mobilefacenet")
    photo = tmp_path / "face.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(photo)
    assert main(["identity", str(photo), str(photo), "--identity-model", "mobilefacenet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fetch_mobilefacenet.py" in err[0]


def test_mobilefacenet_loss_is_differentiable_and_agrees_with_the_scored_chip(shared, mobilefacenet_weights):
    from instantrestore import losses
    from instantrestore.faces.identity import MobileFaceNetIdentity
    from instantrestore.faces.mobilefacenet import MobileFaceNetDescriptor

    people, views = ("005", "010", "016"), ("03", "08")
    crops = _frll_crops(shared, [f"{person}/{person}_{view}.jpg" for person in people for view in views])
    scored = MobileFaceNetIdentity(mobilefacenet_weights).embed(crops)
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        fixed = torch.nn.functional.normalize(MobileFaceNetDescriptor(mobilefacenet_weights)(images), dim=-1).numpy()
    assert np.sum(scored * fixed, 1).min() > 0.97

    loss = losses.IdentityLoss("mobilefacenet")
    assert loss.available and loss.model_name == "mobilefacenet"
    output = images[1:2].clone().requires_grad_(True)
    value = loss(output, images[0:1])
    value.backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0
    with torch.no_grad():
        assert loss(output - 0.01 * output.grad / output.grad.abs().max(), images[0:1]) < value
