"""Archives: `restore --manifest`, each person's references encoded once, resuming an interrupted run, bad rows
alone failing; and the same job on a local Ray cluster (`--engine ray`), byte for byte, surviving a killed worker.

The Ray tests share one cluster (`ray.init(num_cpus=2)`, started once: it takes seconds) and restore 12 CelebA
photos of 3 people with the tiny InstantRestore model, which reads the references (so their caches travel).
"""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from instantrestore import job
from instantrestore.cli import main

PEOPLE = ("7201", "7203", "7204")
PHOTOS_PER_PERSON = 4


def _manifest(shared: Path, root: Path, people=PEOPLE, photos_per_person=PHOTOS_PER_PERSON, extra_rows=()) -> Path:
    """root/photos.csv: each person's first two photos as their reference folder (relative paths), the next
    ones to restore, each row's output named after the person."""
    rows = ["photo,refs,output"]
    for person in people:
        files = sorted((shared / "data/celeba-id/images" / person).iterdir())
        (root / "refs" / person).mkdir(parents=True)
        for path in files[:2]:
            shutil.copy(path, root / "refs" / person)
        rows += [f"{path},refs/{person},{person}_{path.stem}" for path in files[2:2 + photos_per_person]]
    manifest = root / "photos.csv"
    manifest.write_text("\n".join([*rows, *extra_rows]) + "\n")
    return manifest


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _files(out: Path) -> dict[str, bytes]:
    """Every file a run wrote but its report (which holds timings)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "report.json"}


# ---------------------------------------------------------------------------------------------- one process
def test_manifest_encodes_each_person_once(shared, tmp_path, monkeypatch):
    from instantrestore.api import load_restorer
    from instantrestore.pipeline import FaceRestorationPipeline
    from instantrestore.references import ReferenceCache

    third = sorted((shared / "data/celeba-id/images" / PEOPLE[2]).iterdir())
    load_restorer("bicubic").encode_references(third[:2]).save(tmp_path / "third.safetensors")  # a saved cache
    encoded = []
    encode = FaceRestorationPipeline.encode_references

    def counted(self, images, num_refs=None):
        if not isinstance(images, ReferenceCache):  # a cache given back is not encoded again
            encoded.append(len(images))
        return encode(self, images, num_refs)

    monkeypatch.setattr(FaceRestorationPipeline, "encode_references", counted)
    manifest = _manifest(shared, tmp_path, people=PEOPLE[:2], photos_per_person=2,
                         extra_rows=[f"{third[2]},third.safetensors,grandpa.png"])  # a name with a format
    out = tmp_path / "out"
    assert main(["restore", "--manifest", str(manifest), "-o", str(out), "--model", "bicubic", "-q"]) == 0
    assert encoded == [2, 2]  # two people, two reference photos each, once each for their two photos; the cache read
    report = _report(out)
    assert list(report["people"]) == [*(str(tmp_path / "refs" / p) for p in PEOPLE[:2]),
                                      str(tmp_path / "third.safetensors")]
    assert [section["used"] for section in report["people"].values()] == [2, 2, 2]
    assert [e["status"] for e in report["inputs"]] == ["ok"] * 5
    names = sorted(p.name for p in (out / "restored_imgs").iterdir())
    assert names[-1] == "grandpa.png" and all(name.startswith(PEOPLE[:2]) for name in names[:4])


def test_bad_photo_and_missing_references_fail_alone(shared, tmp_path, capsys):
    """A photo that is not one fails by name; a row naming a missing reference folder is one line for that
    person; everyone else is restored."""
    (tmp_path / "grandma.jpg").write_text("not a photo\n")
    celeb = sorted((shared / "data/celeba-id/images/7210").iterdir())
    manifest = _manifest(shared, tmp_path, people=PEOPLE[:1], photos_per_person=2,
                         extra_rows=["grandma.jpg,,", f"{celeb[0]},refs/nobody,", f"{celeb[1]},refs/nobody,"])
    out = tmp_path / "out"
    assert main(["restore", "--manifest", str(manifest), "-o", str(out), "--model", "bicubic", "-q"]) == 1
    statuses = {Path(e["input"]).name: e["status"] for e in _report(out)["inputs"]}
    assert len(statuses) == 5 and list(statuses.values()).count("ok") == 2
    assert "grandma.jpg" in statuses["grandma.jpg"] and "not an image" in statuses["grandma.jpg"]
    assert "refs/nobody: no such file or directory" in statuses[celeb[0].name]
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "nobody" in line] == \
        [f"error: refs {tmp_path}/refs/nobody: no such file or directory (the photos of this person are not restored)"]
    assert [line for line in err if "grandma" in line] == [f"error: {statuses['grandma.jpg']}"]


def test_interrupted_run_resumes_with_the_rest(shared, tmp_path, monkeypatch, capsys):
    """Interrupted just after writing the outputs of the fourth photo (the second person's first; before its report
    entry): the rerun restores that one and the rest, and nothing else again."""
    manifest = _manifest(shared, tmp_path, people=PEOPLE[:2], photos_per_person=3)
    out = tmp_path / "out"
    argv = ["restore", "--manifest", str(manifest), "-o", str(out), "--model", "bicubic", "-q"]
    restored = []
    restore_photo = job.restore_photo

    def interrupted_in_the_fourth(*args, **kwargs):
        entry = restore_photo(*args, **kwargs)
        restored.append(entry["input"])
        if len(restored) == 4:
            raise KeyboardInterrupt
        return entry

    monkeypatch.setattr(job, "restore_photo", interrupted_in_the_fourth)
    assert main(argv) == 130
    assert len(_report(out)["inputs"]) == 3  # the fourth was written but not reported
    assert len(list((out / "restored_imgs").iterdir())) == 4

    monkeypatch.setattr(job, "restore_photo", lambda *args, **kwargs: restored.append(args[1].photo) or
                        restore_photo(*args, **kwargs))
    assert main(argv) == 0
    assert len(restored) == 4 + 3  # six photos: three finished before, three now (the fourth again)
    assert "resuming: 3 of 6 photos" in capsys.readouterr().err
    report = _report(out)
    assert [e["status"] for e in report["inputs"]] == ["ok"] * 6
    # the first person, not encoded again, keeps the earlier run's section
    assert [section["used"] for section in report["people"].values()] == [2, 2]
    assert sorted(e["input"] for e in report["inputs"]) == sorted({*map(str, restored)})
    assert len(list((out / "restored_imgs").iterdir())) == 6


@pytest.mark.parametrize("content, message", [
    ("photo,output\na.jpg,b\n", "the first row must be the header photo,refs,output"),
    ("photo,refs,output\na.jpg,,sub/b.jpg\n", "row 2: output 'sub/b.jpg' must be a file name, not a path"),
    ("photo,refs,output\na.jpg,refs\n", "row 2 has 2 cells, not 3"),
    ("photo,refs,output\n", "no photos in it"),
])
def test_unusable_manifest_is_one_line(tmp_path, capsys, content, message):
    manifest = tmp_path / "photos.csv"
    manifest.write_text(content)
    assert main(["restore", "--manifest", str(manifest), "-o", str(tmp_path / "out"), "--model", "bicubic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --manifest {manifest}") and message in err[0]


def test_engine_ray_without_the_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    assert main(["restore", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--engine", "ray"]) == 2
    assert capsys.readouterr().err.strip() == "error: --engine ray needs Ray: pip install 'instantrestore[ray]'"


# ----------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray
    except ImportError:
        message = "the ray extra is not installed (make test installs it): pip install -e '.[ray]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(shared, tiny_instantrestore_dir, tmp_path_factory):
    """The manifest, the restore command without -o, and what one process writes for it."""
    root = tmp_path_factory.mktemp("archive")
    manifest = _manifest(shared, root)
    argv = ["restore", "--manifest", str(manifest), "--model", str(tiny_instantrestore_dir), "--num-refs", "2", "-q"]
    assert main([*argv, "-o", str(root / "one-process")]) == 0
    return argv, root / "one-process"


def _descends_from_this_process(pid: int) -> bool:
    """Whether `pid` belongs to the cluster this test started (another cluster may run on the machine)."""
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _map_workers() -> list[int]:
    """The process ids of this cluster's Ray Data actors (their title: ray::MapWorker(...))."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::MapWorker"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in pids if _descends_from_this_process(pid)]


def test_ray_equals_one_process_with_a_worker_killed_mid_run(ray_cluster, archive, tmp_path, monkeypatch):
    """An actor is killed once the first photo is back: Ray restarts it and retries its photos. Every output is
    written once, byte for byte what one process writes, and the report lists each photo once, as one process's
    does. (One run checks both: each Ray run starts its actors, the slow part of this test.)"""
    argv, one_process = archive
    killed = []
    add = job.RunReport.add

    def add_then_kill(report, task, entry):
        if not killed:
            pids = _map_workers()
            assert len(pids) == 2, pids
            os.kill(pids[0], signal.SIGKILL)
            killed.append(len(report._entries))
        add(report, task, entry)

    monkeypatch.setattr(job.RunReport, "add", add_then_kill)
    assert main([*argv, "-o", str(tmp_path), "--engine", "ray", "--workers", "2"]) == 0
    assert killed == [0]  # killed when the first of the 12 photos was back: the others were still to do
    expected = _files(one_process)
    assert len(expected) == 3 * len(PEOPLE) * PHOTOS_PER_PERSON
    assert _files(tmp_path) == expected  # no temporary file of an interrupted write left either
    report, expected_report = _report(tmp_path), _report(one_process)
    assert report["people"] == expected_report["people"]
    assert [e["status"] for e in report["inputs"]] == ["ok"] * len(PEOPLE) * PHOTOS_PER_PERSON
    for entry, expected_entry in zip(report["inputs"], expected_report["inputs"], strict=True):
        assert {**entry, "seconds": 0} == {**expected_entry, "seconds": 0, "outputs": [
            str(tmp_path / Path(p).relative_to(one_process)) for p in expected_entry["outputs"]]}
