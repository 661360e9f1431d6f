"""The command line per the contract: outputs, report.json, exit codes, bad inputs, no input modified."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from instantrestore.cli import main
from instantrestore.imageio import read_image, write_image


def _digest(paths):
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


@pytest.fixture
def photo_batch(shared, tmp_path) -> list[Path]:
    """One real low-quality photo with a face, and four bad inputs."""
    good = tmp_path / "in" / "00.jpg"
    good.parent.mkdir()
    shutil.copy(shared / "data/real-lq/whole_imgs/00.jpg", good)
    (tmp_path / "in" / "empty.jpg").write_bytes(b"")
    data = good.read_bytes()
    (tmp_path / "in" / "truncated.jpg").write_bytes(data[: len(data) // 4])
    (tmp_path / "in" / "text.jpg").write_text("not a photo\n")
    y, x = np.mgrid[0:200, 0:300]
    write_image(tmp_path / "in" / "noface.png", np.stack([x % 256, y % 256, (x * y) % 256], 2).astype(np.uint8))
    return sorted((tmp_path / "in").iterdir())


def test_restore_real_photos_end_to_end(shared, tmp_path):
    inputs = sorted((shared / "data/real-lq/whole_imgs").iterdir())
    before = _digest(inputs)
    assert main(["restore", *map(str, inputs), "-o", str(tmp_path), "--model", "bicubic", "-q"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [entry["status"] for entry in report["inputs"]] == ["ok"] * 3
    assert all(entry["faces"] >= 1 for entry in report["inputs"])
    for path in inputs:
        restored = tmp_path / "restored_imgs" / f"{path.stem}{path.suffix.lower()}"
        assert read_image(restored).shape == read_image(path).shape
        assert (tmp_path / "restored_faces" / f"{path.stem}_0.png").is_file()
        assert (tmp_path / "cropped_faces" / f"{path.stem}_0.png").is_file()
    assert _digest(inputs) == before


def test_restore_real_photos_with_whole_photo_references(shared, tiny_instantrestore_dir, tmp_path):
    """Real low-quality photos, four whole FRLL studio photos of one person as --refs, a model that reads them."""
    inputs = sorted((shared / "data/real-lq/whole_imgs").iterdir())
    refs = [shared / f"data/frll/images/005/005_{view}.jpg" for view in ("03", "08", "02", "04")]
    before = _digest(inputs + refs)
    common = [*map(str, inputs), "--model", str(tiny_instantrestore_dir), "--refs", *map(str, refs),
              "--seed", "0", "-q"]
    assert main(["restore", *common, "-o", str(tmp_path / "refs")]) == 0
    assert main(["restore", *common, "-o", str(tmp_path / "blind"), "--num-refs", "0"]) == 0
    report = json.loads((tmp_path / "refs" / "report.json").read_text())
    assert report["references"]["files"] == list(map(str, refs))
    assert report["references"]["used"] == 4
    blind = json.loads((tmp_path / "blind" / "report.json").read_text())
    assert blind["references"]["used"] == 0
    for entry, blind_entry in zip(report["inputs"], blind["inputs"]):
        assert entry["status"] == blind_entry["status"] == "ok" and entry["faces"] >= 1
        assert all(isinstance(score, float) for score in entry["identity"]) and len(entry["identity"]) == entry["faces"]
        assert blind_entry["identity"] == [None] * blind_entry["faces"]
        # which references the detail stage drew on, per face: a share for each of the 4
        assert len(entry["reference_weights"]) == entry["faces"]
        assert all(len(shares) == 4 and all(0 <= share <= 1 for share in shares) for shares in entry["reference_weights"])
        assert blind_entry["reference_weights"] == [None] * blind_entry["faces"]
    face = f"restored_faces/{inputs[0].stem}_0.png"
    assert not np.array_equal(read_image(tmp_path / "refs" / face), read_image(tmp_path / "blind" / face))
    assert _digest(inputs + refs) == before


def test_bad_inputs_fail_alone(photo_batch, tmp_path, capsys):
    before = _digest(photo_batch)
    out = tmp_path / "out"
    code = main(["restore", *map(str, photo_batch), "-o", str(out), "--model", "bicubic", "-q"])
    assert code == 1
    report = {Path(e["input"]).name: e["status"] for e in json.loads((out / "report.json").read_text())["inputs"]}
    assert report["00.jpg"] == "ok"
    stderr = capsys.readouterr().err
    for name in ("empty.jpg", "truncated.jpg", "text.jpg", "noface.png"):
        assert report[name] != "ok" and name in report[name]
        assert any(name in line for line in stderr.splitlines())
    assert "no face" in report["noface.png"]
    assert (out / "restored_imgs" / "00.jpg").is_file()
    assert _digest(photo_batch) == before


def test_existing_output_needs_overwrite(shared, tmp_path, capsys):
    """The same run again skips the finished photo; other settings do not replace its outputs without --overwrite."""
    photo = shared / "data/real-lq/whole_imgs/00.jpg"
    args = ["restore", str(photo), "-o", str(tmp_path), "--model", "bicubic", "-q"]
    assert main(args) == 0
    written = (tmp_path / "restored_imgs" / "00.jpg").stat().st_mtime_ns
    assert main(args) == 0
    assert "resuming: 1 of 1 photos" in capsys.readouterr().err
    assert (tmp_path / "restored_imgs" / "00.jpg").stat().st_mtime_ns == written
    assert main(args + ["--seed", "1"]) == 1
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(args + ["--seed", "1", "--overwrite"]) == 0
    assert (tmp_path / "restored_imgs" / "00.jpg").stat().st_mtime_ns != written


def test_aligned_crops_with_suffix_and_ext(shared, tmp_path):
    crop = shared / "data/real-lq/cropped_faces/Adele_crop.png"
    args = ["restore", str(crop), "-o", str(tmp_path), "--model", "bicubic", "--aligned",
            "--suffix", "restored", "--ext", "jpg", "-q"]
    assert main(args) == 0
    assert read_image(tmp_path / "restored_imgs" / "Adele_crop_restored.jpg").shape == (512, 512, 3)


def test_a_file_system_error_is_one_line(shared, tmp_path, capsys):
    (tmp_path / "report.json").mkdir()  # where restore writes its report
    crop = shared / "data/real-lq/cropped_faces/Adele_crop.png"
    assert main(["restore", str(crop), "-o", str(tmp_path), "--model", "bicubic", "--aligned", "-q"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'report.json'}: Is a directory"]


@pytest.mark.parametrize("argv", [
    ["restore", "x.jpg", "-o", "out", "--refs", "/nonexistent/refs"],
    ["train", "--config", "/nonexistent.yaml"],
    ["degrade", "x.jpg", "-o", "out", "--preset", "nope"],
    ["restore", "x.jpg", "-o", "out", "--model", "/nonexistent/model_dir"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--detector", "mtcnn"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--device", "gpu"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "-s", "0"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--num-refs", "-1"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--detail-strength", "1.5"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--ext", "bmpx"],
    ["restore", "x.jpg", "-o", "a_file/out", "--model", "bicubic"],
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--workers", "2"],  # applies with --engine ray
    ["restore", "x.jpg", "-o", "out", "--model", "bicubic", "--engine", "ray", "--workers", "0"],
    ["restore", "x.jpg", "--manifest", "photos.csv", "-o", "out", "--model", "bicubic"],
    ["benchmark", "--data", ".", "-o", "out", "--num-refs", "0,four"],
    ["benchmark", "--data", ".", "-o", "out", "--presets", "sr5"],
    ["prepare-data", ".", "-o", "out", "--size", "0"],
])
def test_usage_errors_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder\n")
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bad_flag_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["restore", "x.jpg", "-o", "out", "--bogus-flag"])
    assert info.value.code == 2


def test_benchmark_of_data_without_splits_takes_every_person(shared, tmp_path, capsys):
    """prepare-data on a collection without a splits file puts people in train/val by a hash of their name; these
    two names both hash to train, which used to leave the benchmark's default val split empty (a traceback)."""
    from instantrestore.data.prepare import hash_split

    for person, frll in (("anna", "002"), ("ben", "003")):
        assert hash_split(person) == "train"
        for view in ("03", "08"):
            (tmp_path / "src" / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(shared / f"data/frll/images/{frll}/{frll}_{view}.jpg", tmp_path / "src" / person)
    assert main(["prepare-data", str(tmp_path / "src"), "-o", str(tmp_path / "data"), "--size", "256", "-q"]) == 0
    args = ["benchmark", "--data", str(tmp_path / "data"), "--models", "degraded", "--presets", "sr8",
            "--num-refs", "0,1", "-q"]
    assert main([*args, "-o", str(tmp_path / "bench")]) == 0
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert results["split"] == "all" and results["people"] == ["anna", "ben"]
    assert "without a splits file: benchmarking every person (2)" in capsys.readouterr().err
    # asked for explicitly, the empty split is one line and a usage error
    assert main([*args, "-o", str(tmp_path / "bench_val"), "--split", "val"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: {tmp_path / 'data'}: no person in split 'val' has a target and 1 other photos"


def test_degrade_is_reproducible(shared, tmp_path):
    photo = shared / "data/frll/images/001/001_03.jpg"
    for run in ("a", "b"):
        assert main(["degrade", str(photo), "-o", str(tmp_path / run), "--preset", "codeformer", "--seed", "3"]) == 0
    assert (tmp_path / "a/001_03.png").read_bytes() == (tmp_path / "b/001_03.png").read_bytes()
