import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from instantrestore.data.dataset import FaceRestorationDataset
from instantrestore.data.prepare import load_index, prepare_dataset, read_splits
from instantrestore.errors import ConfigError
from instantrestore.faces.landmarks import five_points_from_68

SHARED = Path(os.environ.get("INSTANTRESTORE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FRLL = SHARED / "data" / "frll"
needs_shared = pytest.mark.skipif(not (FRLL / "images").is_dir(), reason=f"shared data not found at {SHARED}")


# ------------------------------------------------------------------ a fake face analyzer (no detector)
@dataclass
class FakeFace:
    box: np.ndarray
    score: float
    landmarks68: np.ndarray
    kps5: np.ndarray  # alignment points, derived from the 68 as FaceAnalyzer does
    detector_kps5: np.ndarray | None = None

    def align(self, rgb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """'Align' by cropping the box and scaling it to size: a known affine to check landmarks against."""
        x0, y0, x1, y1 = self.box
        scale = size / (x1 - x0)
        affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
        return cv2.warpAffine(rgb, affine, (size, size)), affine


class FakeAnalyzer:
    """Two faces per photo (the larger listed second); none in a photo darker than 10 on average; a
    photo whose first pixel is 255 gets 5 detector points 8 px off its 68 landmarks (a 'profile')."""

    def __init__(self) -> None:
        self.calls = 0

    def find_faces(self, rgb: np.ndarray) -> list[FakeFace]:
        self.calls += 1
        if rgb.mean() < 10:
            return []
        grid = np.stack(np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 4)), -1).reshape(68, 2)
        faces = [FakeFace(np.array([x0, x0, x0 + side, x0 + side], np.float32), score, x0 + grid * side,
                          x0 + five_points_from_68(grid * side)) for x0, side, score in ((0, 10, 0.9), (8, 32, 0.8))]
        if rgb[0, 0, 0] == 255:
            faces[1].detector_kps5 = faces[1].kps5 + 8
        return faces


def _photo(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 250, (size, size, 3), dtype=np.uint8)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _digests(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fake_collection(tmp_path: Path) -> Path:
    """coll/images/<person>/ with 4, 3 and 2 photos, a corrupt file, a face-less photo, a non-image;
    coll/splits.csv puts p1, p2 in train and p3 in val."""
    images = tmp_path / "coll" / "images"
    counts = {"p1": 4, "p2": 3, "p3": 2}
    for person, count in counts.items():
        for i in range(count):
            _write(images / person / f"{person}_{i}.png", _photo(10 * int(person[1:]) + i))
    (images / "p1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _write(images / "p2" / "dark.png", np.zeros((48, 48, 3), np.uint8))
    (images / "p2" / "notes.txt").write_text("not a photo")
    (tmp_path / "coll" / "splits.csv").write_text("face_id,split\np1,train\np2,train\np3,val\n")
    return images


def test_prepare_writes_crops_landmarks_manifest_and_skips(fake_collection, tmp_path):
    before = _digests(fake_collection.parent)
    out = tmp_path / "out"
    analyzer = FakeAnalyzer()
    summary = prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=analyzer)

    assert (summary.people, summary.photos, summary.processed, summary.cached) == (3, 9, 11, 0)
    assert sorted(Path(s["source"]).name for s in summary.skipped) == ["broken.jpg", "dark.png"]
    skipped = {Path(s["source"]).name: s["reason"] for s in json.loads((out / "skipped.json").read_text())}
    assert "broken.jpg" in skipped["broken.jpg"] and "no face" in skipped["dark.png"]

    record = json.loads((out / "p1" / "p1_0.json").read_text())
    crop = cv2.imread(str(out / "p1" / "p1_0.png"))
    assert crop.shape == (64, 64, 3)
    # The larger face (box 8..40) was kept; its landmarks span the whole 64-px crop after the 2x affine.
    assert record["box"] == [8, 8, 40, 40] and record["faces_found"] == 2
    landmarks = np.array(record["landmarks68"])
    assert landmarks.shape == (68, 2)
    np.testing.assert_allclose(landmarks.min(0), [0, 0]) and np.testing.assert_allclose(landmarks.max(0), [64, 64])
    np.testing.assert_allclose(record["kps5"], five_points_from_68(landmarks), atol=1e-3)
    assert "detector_kps5" not in record  # the fake detector gives no points of its own here

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits_csv"] == str(fake_collection.parent / "splits.csv")  # found beside SRC's parent
    assert {p: e["split"] for p, e in manifest["people"].items()} == {"p1": "train", "p2": "train", "p3": "val"}
    assert manifest["people"]["p2"]["photos"] == ["p2_0", "p2_1", "p2_2"]
    assert _digests(fake_collection.parent) == before  # sources untouched


def test_faces_whose_landmarks_disagree_with_the_detector(fake_collection, tmp_path):
    turned = _photo(1)
    turned[0, 0, 0] = 255
    _write(fake_collection / "p3" / "p3_turned.png", turned)
    # Kept by default, but its landmarks are flagged as unreliable for the landmark loss.
    summary = prepare_dataset(fake_collection, tmp_path / "out", size=64, progress=False, analyzer=FakeAnalyzer())
    assert summary.photos == 10
    index = load_index(tmp_path / "out")
    assert index.landmarks("p3", "p3_turned")[1] is False and index.landmarks("p3", "p3_0")[1] is True
    # Dropped when asked.
    summary = prepare_dataset(fake_collection, tmp_path / "out", size=64, progress=False, max_landmark_error=0.06,
                              analyzer=FakeAnalyzer())
    reasons = {Path(s["source"]).name: s["reason"] for s in summary.skipped}
    # 8 px off in a 32-px box = 16 px in the 64-px crop = 0.35 of its side.
    assert "disagree with the detector's 5 points (0.354" in reasons["p3_turned.png"]
    assert (tmp_path / "out" / "p3" / "p3_turned.png").is_file()  # written, just not in the manifest
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "p3_turned" not in manifest["people"]["p3"]["photos"] and summary.photos == 9
    # The check is judged from the records: changing it needs no new detection.
    analyzer = FakeAnalyzer()
    summary = prepare_dataset(fake_collection, tmp_path / "out", size=64, progress=False, max_landmark_error=None,
                              analyzer=analyzer)
    assert analyzer.calls == 0 and summary.photos == 10
    assert "p3_turned" in load_index(tmp_path / "out").photos("p3")


def test_prepare_rerun_is_resumable(fake_collection, tmp_path):
    out = tmp_path / "out"
    prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=FakeAnalyzer())
    (out / "p3" / "p3_1.json").unlink()  # as if killed before this photo's record was written

    analyzer = FakeAnalyzer()
    summary = prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=analyzer)
    assert analyzer.calls == 1 and summary.processed == 1 and summary.cached == 10
    assert summary.photos == 9 and len(summary.skipped) == 2

    # A changed source file is processed again; other settings (size) invalidate every record.
    _write(fake_collection / "p2" / "dark.png", _photo(5))
    analyzer = FakeAnalyzer()
    assert prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=analyzer).photos == 10
    assert analyzer.calls == 1
    assert prepare_dataset(fake_collection, out, size=32, progress=False, analyzer=FakeAnalyzer()).processed == 11


def test_prepare_without_splits_csv_uses_a_stable_hash_split(fake_collection, tmp_path):
    (fake_collection.parent / "splits.csv").unlink()
    out = tmp_path / "out"
    prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=FakeAnalyzer())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits_csv"] is None and manifest["split_source"].startswith("hash")
    assert all(entry["split"] in ("train", "val") for entry in manifest["people"].values())


def test_prepare_and_index_errors(tmp_path, fake_collection):
    with pytest.raises(ConfigError, match="no photos found"):
        prepare_dataset(tmp_path / "coll", tmp_path / "out", progress=False, analyzer=FakeAnalyzer())
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("person,fold\np1,0\n")
    with pytest.raises(ConfigError, match="bad.csv: a splits CSV needs columns"):
        prepare_dataset(fake_collection, tmp_path / "out", splits_csv=bad_csv, progress=False,
                        analyzer=FakeAnalyzer())
    with pytest.raises(ConfigError, match="no manifest.json; run `instantrestore prepare-data"):
        load_index(tmp_path)


# -------------------------------------------------------------------------------------------- dataset
@pytest.fixture
def prepared(fake_collection, tmp_path) -> Path:
    out = tmp_path / "out"
    prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=FakeAnalyzer())
    return out


def test_dataset_sample_shapes_and_references(prepared):
    dataset = FaceRestorationDataset(prepared, split="all", size=32, num_refs=3, preset="sr4")
    assert len(dataset) == 9 and dataset.people() == ["p1", "p2", "p3"]
    assert dataset.photos("p3") == ("p3_0", "p3_1")
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["degraded"].shape == sample["target"].shape == (3, 32, 32)
        assert sample["references"].shape == (3, 3, 32, 32)
        assert sample["target_landmarks"].shape == (68, 2) and sample["reference_landmarks"].shape == (3, 68, 2)
        assert -1.0 <= float(sample["degraded"].min()) and float(sample["degraded"].max()) <= 1.0
        names = [n for n in sample["reference_names"] if n]
        # Same person, never the target, as many as exist up to K; padding is zeros and masked off.
        assert sample["name"] not in names and len(set(names)) == len(names)
        assert set(names) <= set(dataset.photos(sample["person"]))
        assert len(names) == min(3, len(dataset.photos(sample["person"])) - 1)
        assert sample["reference_mask"].tolist() == [True] * len(names) + [False] * (3 - len(names))
        assert not sample["references"][len(names):].any()
        for k, name in enumerate(names):
            reference = cv2.resize(cv2.imread(str(prepared / sample["person"] / f"{name}.png"))[..., ::-1],
                                   (32, 32), interpolation=cv2.INTER_AREA)
            expected = torch.from_numpy(np.ascontiguousarray(reference)).permute(2, 0, 1).float() / 127.5 - 1
            assert torch.equal(sample["references"][k], expected)
    # Crop landmarks span 0..64; at S=32 they span -0.25..31.75 (pixel centres at integers).
    landmarks = dataset[0]["target_landmarks"]
    np.testing.assert_allclose(landmarks.min(0).values, [-0.25, -0.25])
    np.testing.assert_allclose(landmarks.max(0).values, [31.75, 31.75])


def test_dataset_is_deterministic_and_varies_with_sample_seed(prepared):
    dataset = FaceRestorationDataset(prepared, split="all", size=32, num_refs=2,
                                     preset=["instantrestore", "codeformer"], seed=1)
    again = FaceRestorationDataset(prepared, split="all", size=32, num_refs=2,
                                   preset=["instantrestore", "codeformer"], seed=1)
    first, second = dataset.sample(0, 5), again.sample(0, 5)
    assert torch.equal(first["degraded"], second["degraded"])
    assert first["reference_names"] == second["reference_names"]
    assert torch.equal(dataset[0]["degraded"], dataset.sample(0, 0)["degraded"])
    assert not torch.equal(dataset.sample(0, 6)["degraded"], first["degraded"])
    assert torch.equal(dataset.sample(0, 6)["target"], first["target"])
    other_seed = FaceRestorationDataset(prepared, split="all", size=32, num_refs=2, preset="instantrestore", seed=2)
    assert not torch.equal(other_seed.sample(0, 5)["degraded"], first["degraded"])
    assert {dataset.sample(0, s)["preset"] for s in range(20)} == {"instantrestore", "codeformer"}
    # p1 has 3 other photos and K=2: the choice of references varies with the seed.
    assert len({tuple(dataset.sample(0, s)["reference_names"]) for s in range(20)}) > 1


def test_dataset_splits_and_batching(prepared):
    train = FaceRestorationDataset(prepared, split="train", size=16, preset="sr4")
    val = FaceRestorationDataset(prepared, split="val", size=16, preset="sr4")
    assert train.people() == ["p1", "p2"] and val.people() == ["p3"]
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch["references"].shape == (4, 4, 3, 16, 16) and batch["reference_mask"].shape == (4, 4)
    with pytest.raises(ConfigError, match="no people in split 'test'.*train, val"):
        FaceRestorationDataset(prepared, split="test")
    with pytest.raises(ConfigError, match="unknown degradation preset"):
        FaceRestorationDataset(prepared, preset="nope")


@needs_shared
def test_frll_splits_are_identity_disjoint_through_the_manifest(tmp_path):
    splits = read_splits(FRLL / "splits.csv")
    assert set(splits.values()) == {"train", "val"}
    assert {p.name for p in (FRLL / "images").iterdir() if p.is_dir()} == set(splits)
    # A tiny collection named like FRLL people: the manifest and dataset carry the CSV's split.
    chosen = [p for p in splits if splits[p] == "train"][:2] + [p for p in splits if splits[p] == "val"][:2]
    for person in chosen:
        for i in range(2):
            _write(tmp_path / "images" / person / f"{person}_{i}.png", _photo(i))
    out = tmp_path / "out"
    prepare_dataset(tmp_path / "images", out, size=32, splits_csv=FRLL / "splits.csv", progress=False,
                    analyzer=FakeAnalyzer())
    index = load_index(out)
    train, val = set(index.people("train")), set(index.people("val"))
    assert not train & val and train | val == set(chosen)
    assert all(splits[p] == "train" for p in train) and all(splits[p] == "val" for p in val)
    train_people = {FaceRestorationDataset(out, "train", size=32, preset="sr4")[i]["person"] for i in range(4)}
    assert train_people == train


# --------------------------------------------------------------------- the real face analyzer, on FRLL
@needs_shared
def test_prepare_real_frll_photos(tmp_path):
    pytest.importorskip("instantrestore.faces", reason="instantrestore.faces not importable")
    from instantrestore.faces.align import ffhq_template

    src = tmp_path / "frll" / "images"
    people = ["001", "002"]
    for person in people:
        for view in ("03", "08", "02"):
            photo = cv2.imread(str(FRLL / "images" / person / f"{person}_{view}.jpg"))
            (src / person).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(src / person / f"{person}_{view}.jpg"),
                        cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA))
    (src / "001" / "truncated.jpg").write_bytes((src / "001" / "001_03.jpg").read_bytes()[:300])
    _write(src / "002" / "wall.png", np.full((256, 256, 3), 180, np.uint8))
    (tmp_path / "frll" / "splits.csv").write_text("face_id,split\n001,train\n002,val\n")
    before = _digests(src)

    out = tmp_path / "out"
    summary = prepare_dataset(src, out, size=128, progress=False)
    assert sorted(Path(s["source"]).name for s in summary.skipped) == ["truncated.jpg", "wall.png"]
    assert summary.photos == 6 and summary.people == 2
    for person in people:
        for view in ("03", "08", "02"):
            record = json.loads((out / person / f"{person}_{view}.json").read_text())
            assert cv2.imread(str(out / person / f"{person}_{view}.png")).shape == (128, 128, 3)
            landmarks = np.array(record["landmarks68"])
            # Aligned to the FFHQ template: the eye centres land near the template's (at 128 px: within
            # 6 px on frontal views, 13 on the three-quarter view 02, where dlib and YuNet disagree more).
            eyes = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
            tolerance = 13 if view == "02" else 6
            assert np.abs(eyes - ffhq_template(128)[:2]).max() < tolerance, (person, view, eyes)
    assert _digests(src) == before

    again = prepare_dataset(src, out, size=128, progress=False)
    assert again.processed == 0 and again.cached == 8 and again.photos == 6


def test_records_from_an_older_face_pipeline_are_redone(fake_collection, tmp_path):
    out = tmp_path / "out"
    prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=FakeAnalyzer())
    record_path = out / "p1" / "p1_0.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "version": record["version"] - 1}))
    analyzer = FakeAnalyzer()
    prepare_dataset(fake_collection, out, size=64, progress=False, analyzer=analyzer)
    assert analyzer.calls == 1 and json.loads(record_path.read_text())["version"] == record["version"]
