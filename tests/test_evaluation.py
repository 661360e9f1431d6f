"""Metrics against hand-computed values, and the benchmark on a tiny prepared FRLL subset."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantrestore.evaluation import metrics
from instantrestore.evaluation.benchmark import choose_target, order_references, run_benchmark
from instantrestore.evaluation.no_reference import run_no_reference_benchmark
from instantrestore.imageio import read_image
from instantrestore.models.base import Restorer
from instantrestore.models.classical import BicubicRestorer
from instantrestore.pipeline import FaceRestorationPipeline


# ------------------------------------------------------------------------------------------------ metrics
def test_psnr_of_known_noise(rng):
    clean = np.full((32, 32, 3), 128, np.uint8)
    noisy = (clean.astype(int) + rng.choice([-5, 5], clean.shape)).astype(np.uint8)  # MSE exactly 25
    assert metrics.psnr(noisy, clean) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert metrics.psnr(clean, clean) == math.inf


def test_ssim_and_ms_ssim(rng):
    image = rng.integers(0, 256, (176, 176, 3), dtype=np.uint8)
    noise = rng.normal(0, 1, image.shape)
    slightly, very = (np.clip(image + sigma * noise, 0, 255).astype(np.uint8) for sigma in (10, 60))
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    assert metrics.ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    assert 0 < metrics.ssim(very, image) < metrics.ssim(slightly, image) < 1
    assert 0 < metrics.ms_ssim(very, image) < metrics.ms_ssim(slightly, image) < 1
    with pytest.raises(ValueError, match="larger than 160"):
        metrics.ms_ssim(image[:64, :64], image[:64, :64])


def test_sharpness_is_detail_relative_to_the_ground_truth(rng):
    import cv2

    face = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    softer = cv2.GaussianBlur(face, (0, 0), 1.5)
    assert metrics.sharpness(face, face) == pytest.approx(1.0)
    assert 0 < metrics.sharpness(softer, face) < 0.5
    assert metrics.sharpness(face, softer) > 2
    assert metrics.sharpness(np.full_like(face, 90), face) == 0.0


def test_niqe_matches_basicsr():
    """Golden values written by basicsr 1.4.2's own niqe.py (scripts/measure/make_niqe_fixture.py); the residue is
    basicsr's float32 resize, whose rounding moves the AGGD table look-up."""
    from skimage import data

    golden = json.loads((Path(__file__).parent / "fixtures" / "niqe_basicsr.json").read_text())["niqe"]
    assert set(golden) == {"astronaut", "coffee"}
    for name, value in golden.items():
        assert metrics.niqe(getattr(data, name)()) == pytest.approx(value, abs=1e-3)


def test_niqe_rises_with_blur_and_refuses_small_images(rng):
    import cv2
    from skimage import data

    photo = data.astronaut()
    assert metrics.niqe(cv2.GaussianBlur(photo, (0, 0), 2)) > metrics.niqe(photo) + 1
    with pytest.raises(ValueError, match="at least 192 px"):
        metrics.niqe(photo[:128, :128])
    with pytest.raises(ValueError, match="uint8 RGB"):
        metrics.niqe(photo.astype(np.float32))
    face = photo[:128, 192:320]  # a 128-px crop is scored at 512 px, as faces in the benchmark are
    assert metrics.niqe_at_face_size(face) == metrics.niqe(np.asarray(Image.fromarray(face).resize((512, 512), Image.BICUBIC)))


def test_bootstrap_ci(rng):
    assert metrics.bootstrap_ci95([0.7] * 10) == 0.0
    assert metrics.bootstrap_ci95([0.7]) is None
    sample = rng.normal(0, 1, 400)
    normal_theory = 1.96 * sample.std(ddof=1) / math.sqrt(len(sample))
    assert metrics.bootstrap_ci95(sample, seed=3) == pytest.approx(normal_theory, rel=0.15)
    assert metrics.bootstrap_ci95(sample, seed=3) == metrics.bootstrap_ci95(sample, seed=3)  # seeded


def test_paired_difference_sign():
    blind = [0.80, 0.85, 0.90, 0.70]
    guided = [value + 0.05 for value in blind]
    comparison = metrics.paired_difference(guided, blind)
    assert comparison.mean_diff == pytest.approx(0.05)
    assert comparison.a_better == 1.0
    assert comparison.ci95 == pytest.approx(0.0, abs=1e-12)  # identical differences
    # Lower is better (LMD): a larger distance is worse for A.
    worse = metrics.paired_difference([2.0, 3.0, 4.0], [1.0, 1.0, 5.0], higher_is_better=False)
    assert worse.mean_diff == pytest.approx(2 / 3) and worse.a_better == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same faces"):
        metrics.paired_difference([1.0], [1.0, 2.0])


def test_peak_rss_is_measured():
    meter = metrics.ResourceMeter()
    with meter.measure():
        block = np.ones(50 * 2**20, np.uint8)  # 50 MB touched inside the measured section
        del block
    assert meter.peak_rss_mb > 50 and meter.seconds > 0


# ------------------------------------------------------------------------------------------------ selection
def test_target_and_reference_rules():
    frll = [f"005_{view:02d}" for view in range(1, 11)]
    assert choose_target(frll) == "005_03"
    assert order_references(frll, "005_03")[:5] == ["005_08", "005_02", "005_04", "005_07", "005_09"]
    assert "005_03" not in order_references(frll, "005_03")
    assert choose_target(["b.jpg", "a.jpg", "c.jpg"]) == "a.jpg"
    assert order_references(["c", "a", "b"], "a") == ["b", "c"]


# ------------------------------------------------------------------------------------------------ on faces
@pytest.fixture(scope="module")
def tiny_data(shared, tmp_path_factory):
    """2 FRLL val people x 2 frontal photos (the views alignment never rejects), downscaled to 256 px and
    prepared at 192 px: the target and one reference each."""
    from instantrestore.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("tiny")
    for person in ("005", "010"):
        (root / "images" / person).mkdir(parents=True)
        for view in ("03", "08"):
            photo = Image.open(shared / "data" / "frll" / "images" / person / f"{person}_{view}.jpg")
            photo.resize((256, 256), Image.LANCZOS).save(root / "images" / person / f"{person}_{view}.jpg")
    (root / "splits.csv").write_text("face_id,split\n005,val\n010,val\n")
    prepare_dataset(root / "images", root / "data", size=192, progress=False)
    return root / "data"


def test_people_glob_picks_cases_from_a_merged_set(tiny_data):
    from instantrestore.data.prepare import load_index
    from instantrestore.evaluation.benchmark import benchmark_cases

    index = load_index(tiny_data)
    assert [c.person for c in benchmark_cases(index, "val", 1)[0]] == ["005", "010"]
    assert [c.person for c in benchmark_cases(index, "val", 1, people="01*")[0]] == ["010"]
    assert benchmark_cases(index, "val", 1, people="celeba_*") == ([], [])


def test_identity_and_lmd_of_identical_faces(tiny_data):
    from instantrestore.evaluation.benchmark import FaceScorer

    scorer = FaceScorer()
    face = read_image(tiny_data / "005" / "005_03.png")
    other_person = read_image(tiny_data / "010" / "010_03.png")
    identity = scorer.identity_models["identity"]
    assert metrics.identity_similarity([face], [face], identity)[0] == pytest.approx(1.0, abs=1e-5)
    assert metrics.identity_similarity([other_person], [face], identity)[0] < 0.95
    assert metrics.landmark_distance(face, face, scorer.landmarks_68) == 0.0
    assert metrics.landmark_distance(other_person, face, scorer.landmarks_68) > 1.0


class MeanReferenceBlend(Restorer):
    """A toy reference-using restorer: half the input, half the mean reference face."""

    name = "blend"
    uses_references = True
    face_size = 192

    def reference_features(self, faces):
        return {"mean_face": faces.mean(0, keepdim=True)}

    def restore_tensor(self, faces, reference_features, generator):
        if not reference_features:
            return faces
        return 0.5 * faces + 0.5 * reference_features["mean_face"].to(faces)


def test_benchmark_results_schema_and_resume(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    models = {"degraded": "degraded", "bicubic": BicubicRestorer(device="cpu"), "blend": MeanReferenceBlend(device="cpu")}
    results = run_benchmark(tiny_data, out, models=models, presets=["sr8"], num_refs=[0, 1], progress=False)

    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == results["rows"]
    assert {"created", "data", "rows"} <= set(saved)
    cells = [(row["method"], row["num_refs"]) for row in saved["rows"]]
    assert cells == [("degraded", 0), ("bicubic", 0), ("blend", 0), ("blend", 1)]
    for row in saved["rows"]:
        for key in ("method", "num_refs", "preset", "n", "psnr", "ssim", "identity", "lmd", "lpips",
                    "sec_per_face", "peak_rss_mb"):
            assert key in row
        assert row["n"] == 2 and row["preset"] == "sr8"
        for metric in ("psnr", "ssim", "identity", "lmd", "sharpness", "niqe"):
            assert isinstance(row[metric], float) and isinstance(row[f"{metric}_ci95"], float)
    rows = {(row["method"], row["num_refs"]): row for row in saved["rows"]}
    # Bicubic restores nothing: its fidelity is the degraded input's (up to the 192->512->192 resize).
    assert rows[("bicubic", 0)]["psnr"] == pytest.approx(rows[("degraded", 0)]["psnr"], abs=0.5)
    assert rows[("degraded", 0)]["sharpness"] < 1  # an 8x-downscaled face has less detail than its original
    assert rows[("blend", 0)]["psnr"] == rows[("degraded", 0)]["psnr"]  # blind and at its own size: the input
    assert rows[("blend", 1)]["psnr"] != rows[("blend", 0)]["psnr"]  # the references were used
    paired = [p for p in saved["paired"] if p["metric"] == "psnr"]
    assert len(paired) == 1 and paired[0]["a_num_refs"] == 1 and paired[0]["n"] == 2
    assert paired[0]["mean_diff"] == pytest.approx(rows[("blend", 1)]["psnr"] - rows[("blend", 0)]["psnr"])
    versus = [v for v in saved["versus"] if v["metric"] == "psnr"]
    assert [(v["method"], v["num_refs"], v["baseline"]) for v in versus] == [("blend", 1, "bicubic")]
    assert versus[0]["mean_diff"] == pytest.approx(rows[("blend", 1)]["psnr"] - rows[("bicubic", 0)]["psnr"])
    assert (out / "grid.png").is_file() and "| blend | 1 |" in (out / "results.md").read_text()
    assert read_image(out / "faces" / "sr8" / "005" / "blend_r1.png").shape == (192, 192, 3)

    # A re-run finds every cell finished: nothing is restored again, and the numbers are the same.
    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was restored again")

    monkeypatch.setattr(FaceRestorationPipeline, "restore_faces", fail)
    again = run_benchmark(tiny_data, out, models=models, presets=["sr8"], num_refs=[0, 1], progress=False)
    assert again["rows"] == results["rows"]


def test_model_labels():
    from instantrestore.evaluation.benchmark import _labelled

    assert _labelled("ir=/runs/ir/final") == ("ir", "/runs/ir/final")
    assert _labelled("/runs/ir/final") == ("final", "/runs/ir/final")
    assert _labelled("bicubic") == ("bicubic", "bicubic")


# ------------------------------------------------------------------------------------------------ identity nets
def test_identity_nets_columns_are_null_without_their_weights(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "home"))  # no faceres files there
    results = run_benchmark(tiny_data, tmp_path / "bench", models=["degraded"], presets=["sr8"], num_refs=[0],
                            progress=False)
    row = results["rows"][0]
    assert isinstance(row["identity"], float)
    assert row["identity_faceres"] is None and row["identity_faceres_ci95"] is None
    assert row["identity_arcface"] is None and row["identity_arcface_ci95"] is None
    assert results["identity_models"] == {"identity": "dlib", "identity_faceres": None, "identity_arcface": None}
    report = (tmp_path / "bench" / "results.md").read_text()
    assert "ID (faceres)↑" in report and "ID (faceres): not computed" in report
    assert "ID (arcface)↑" in report and "ID (arcface): not computed" in report


def test_both_identity_nets_scored_and_compared(tiny_data, tmp_path, monkeypatch, faceres_weights):
    blend = MeanReferenceBlend(device="cpu")
    blend.identity_loss_model = "dlib-torch"  # as if trained with the dlib port's loss
    results = run_benchmark(tiny_data, tmp_path / "bench", models={"blend": blend}, presets=["sr8"],
                            num_refs=[0, 1], progress=False)
    for row in results["rows"]:
        assert 0 < row["identity_faceres"] <= 1 and isinstance(row["identity_faceres_ci95"], float)
    blind = results["rows"][0]
    assert blind["identity_faceres"] != blind["identity"]  # two different nets, two different numbers
    assert {p["metric"] for p in results["paired"]} >= {"identity", "identity_faceres"}
    assert results["identity_loss_models"] == {"blend": "dlib-torch"}
    report = (tmp_path / "bench" / "results.md").read_text()
    assert "blend: dlib-torch" in report and "| blend | sr8 | 1 | identity_faceres |" in report


def test_arcface_column_scores_a_model_trained_against_mobilefacenet(tiny_data, tmp_path, mobilefacenet_weights):
    """The ArcFace-trained net fills `identity_arcface` (with CIs and paired rows), and results.md names the net a
    model was trained with, so its other columns (dlib, faceres) are the independent judges."""
    blend = MeanReferenceBlend(device="cpu")
    blend.identity_loss_model = "mobilefacenet"
    results = run_benchmark(tiny_data, tmp_path / "bench", models={"blend": blend}, presets=["sr8"],
                            num_refs=[0, 1], progress=False)
    assert results["identity_models"]["identity_arcface"] == "mobilefacenet"
    for row in results["rows"]:
        assert -1 <= row["identity_arcface"] <= 1 and isinstance(row["identity_arcface_ci95"], float)
        assert row["identity_arcface"] != row["identity"]
    assert "identity_arcface" in {p["metric"] for p in results["paired"]}
    report = (tmp_path / "bench" / "results.md").read_text()
    assert "blend: mobilefacenet" in report and "ID (arcface): cosine under `mobilefacenet`" in report


def test_identity_loss_model_is_read_from_the_model_config(tmp_path):
    import json
    import shutil

    from instantrestore.api import PACKAGED_WEIGHTS, load_restorer
    from instantrestore.training.trainer import record_identity_loss_model

    model_dir = tmp_path / "gfpgan"
    shutil.copytree(PACKAGED_WEIGHTS / "gfpgan_compact", model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("identity_loss_model", None)  # the packaged model records its loss net: start without one
    (model_dir / "config.json").write_text(json.dumps(config))
    assert load_restorer(str(model_dir), device="cpu").identity_loss_model is None
    record_identity_loss_model(model_dir, "dlib-torch")
    assert load_restorer(str(model_dir), device="cpu").identity_loss_model == "dlib-torch"


# ------------------------------------------------------------------------------------------------ no reference
def test_no_reference_benchmark_on_real_photos(shared, tmp_path, monkeypatch, capsys):
    """Real low-quality faces without ground truth: aligned crops and a whole photo, restored blind, scored by
    NIQE and by identity to their own input; nets whose weights are absent give null, not numbers."""
    from instantrestore.cli import main

    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "home"))  # no faceres, no MobileFaceNet
    crops = tmp_path / "crops"
    crops.mkdir()
    for name in ("Adele_crop.png", "Julia_Roberts_crop.png"):
        Image.open(shared / "data/real-lq/cropped_faces" / name).resize((256, 256), Image.LANCZOS).save(crops / name)
    Image.new("RGB", (64, 48)).save(crops / "not_a_crop.png")
    out = tmp_path / "aligned"
    assert main(["benchmark", "--no-reference", str(crops), "--aligned", "-o", str(out), "--models", "bicubic",
                 "gfpgan", "-q"]) == 0
    assert "not_a_crop.png: not square" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    rows = {row["method"]: row for row in results["rows"]}
    assert list(rows) == ["input", "bicubic", "gfpgan"] and all(row["n"] == 2 for row in rows.values())
    assert all(isinstance(row["niqe"], float) for row in rows.values())
    assert rows["input"]["identity"] is None and rows["input"]["sec_per_face"] is None
    assert rows["bicubic"]["identity"] > 0.95  # bicubic keeps the face as it was, give or take a resize
    assert rows["gfpgan"]["identity"] < rows["bicubic"]["identity"]
    for row in rows.values():
        assert row["identity_faceres"] is None and row["identity_arcface"] is None
    assert [p["method"] for p in results["paired"]] == ["bicubic", "gfpgan"]
    assert read_image(out / "grid.png").shape == (20 + 2 * 160, 3 * 160, 3)
    assert "| gfpgan |" in (out / "results.md").read_text()

    photos = tmp_path / "photos"
    photos.mkdir()
    photo = Image.open(shared / "data/real-lq/whole_imgs/Blake_Lively.jpg")
    photo.resize((photo.width * 35 // 100, photo.height * 35 // 100), Image.LANCZOS).save(photos / "blake.png")
    results = run_no_reference_benchmark(photos, tmp_path / "whole", models=["bicubic"], progress=False)
    assert results["faces"] == ["blake_0", "blake_1"] and not results["aligned"]


@pytest.mark.parametrize("flags", [[], ["--data", "x", "--no-reference", "y"], ["--no-reference", "/nonexistent"]])
def test_benchmark_needs_one_of_data_or_no_reference(flags, tmp_path, capsys):
    from instantrestore.cli import main

    assert main(["benchmark", "-o", str(tmp_path), *flags]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
