"""`prepare-data`: detect, align and landmark an identity-grouped photo collection, once.

Input (SRC): one folder per person, e.g. `frll/images/001/001_03.jpg`. The identity-disjoint split
comes from a CSV with columns `face_id` or `identity`, and `split` (`--splits`, or `splits.csv` in
SRC's parent, as in the shared data layout). Without one, people are split 80/20 by a hash of
their folder name, so the split never depends on which photos happened to be processed.

Output (OUT):

    OUT/<person>/<stem>.png    the largest face of the photo, aligned to size x size
    OUT/<person>/<stem>.json   the record of the photo: status "ok" with source, faces_found,
                               box and score (photo px) of the largest face, affine (2x3, photo -> crop),
                               landmarks68 (68x2) and kps5 (5x2) in crop px;
                               or status "skipped" with the reason
    OUT/skipped.json           [{"source", "reason"}] unreadable files and photos without a face (and,
                               with `max_landmark_error`, faces whose 68 landmarks disagree with the
                               detector; their crop and record are still written)
    OUT/manifest.json          {"version", "source", "size", "detector", "splits_csv", "split_source",
                                "max_landmark_error",
                                "people": {person: {"split", "photos": [stem, ...]}}, "n_photos", "n_skipped"}

Each record is written atomically after its crop, so a photo with a record is finished; a re-run
(same size and detector, unchanged source file) reuses it, which makes an interrupted run resumable.
Photos skipped for a reason are not retried unless the source file changes; the landmark criterion is
judged from the records, so changing it needs no re-detection. Sources are only read.
"""

from __future__ import annotations

import csv
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from instantrestore.errors import ConfigError, ImageReadError
from instantrestore.imageio import is_image_path, read_image, write_bytes, write_image

MANIFEST_NAME = "manifest.json"
SKIPPED_NAME = "skipped.json"
SPLITS_NAME = "splits.csv"
MANIFEST_VERSION = 1
# Bump when detection, landmarks or alignment change what a record holds: older records are then redone
# instead of silently mixing crops from two versions of the face pipeline.
RECORD_VERSION = 2
_VAL_PERCENT = 20  # hash split when no splits CSV exists
# dlib's 68-point predictor fails on profiles and strongly turned faces while the detector's 5 points
# stay right; their disagreement (mean distance between the 5 points derived from the 68 and the
# detector's, as a fraction of the crop side) tells the two apart. On FRLL (YuNet + dlib, 1,020 photos)
# frontal views measure 0.006-0.032, profiles 0.103-0.214, and half the three-quarter views exceed 0.06.
# Every detected face is kept by default (references in users' albums are turned too; dropping them left
# 7 of 20 FRLL val people with the 5 photos a 4-reference benchmark needs), but landmarks are trusted
# (landmark attention loss) only up to RELIABLE_LANDMARK_ERROR, beyond which the jaw and mouth points
# visibly drift. `max_landmark_error` drops such photos altogether when asked.
# With the dlib HOG detector the 5 points come from the 68, so the check always passes.
RELIABLE_LANDMARK_ERROR = 0.06


class FaceFinder(Protocol):
    """What prepare needs from `instantrestore.faces.FaceAnalyzer`."""

    def find_faces(self, image: np.ndarray) -> list: ...


@dataclass
class PrepareSummary:
    """What one `prepare_dataset` run did."""

    out: Path
    people: int
    photos: int  # aligned photos in the manifest (new + cached)
    processed: int  # photos detected and aligned in this run
    cached: int  # photos (aligned or skipped) reused from an earlier run
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"prepared {self.photos} photos of {self.people} people in {self.out} "
                f"({self.processed} new, {self.cached} cached, {len(self.skipped)} skipped "
                f"-> {self.out / SKIPPED_NAME}) in {self.seconds:.1f} s")


def _box_area(box: Any) -> float:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return (x2 - x1) * (y2 - y1)


def find_splits_csv(src: Path) -> Path | None:
    """`splits.csv` in SRC's parent (the shared layout: data/frll/images + data/frll/splits.csv)."""
    candidate = src.parent / SPLITS_NAME
    return candidate if candidate.is_file() else None


def read_splits(path: str | os.PathLike) -> dict[str, str]:
    """person -> split from a CSV with columns (face_id | identity), split."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read splits CSV ({err.strerror})") from None
    columns = set(rows[0]) if rows else set()
    id_column = next((c for c in ("face_id", "identity") if c in columns), None)
    if id_column is None or "split" not in columns:
        raise ConfigError(f"{path}: a splits CSV needs columns face_id (or identity) and split")
    return {row[id_column].strip(): row["split"].strip() for row in rows}


def hash_split(person: str) -> str:
    return "val" if zlib.crc32(person.encode()) % 100 < _VAL_PERCENT else "train"


def _source_photos(src: Path) -> list[tuple[str, Path]]:
    photos = []
    for person_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(person_dir.iterdir()):
            if path.is_file() and not path.name.startswith(".") and is_image_path(path):
                photos.append((person_dir.name, path))
    return photos


def _is_current(record_path: Path, source: Path, size: int, detector: str) -> dict | None:
    """The earlier record of this photo if it is still valid for this source file and settings."""
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    stat = source.stat()
    still_valid = (record.get("source") == str(source) and record.get("source_bytes") == stat.st_size
                   and record.get("source_mtime_ns") == stat.st_mtime_ns and record.get("size") == size
                   and record.get("detector") == detector and record.get("version") == RECORD_VERSION)
    if still_valid and (record.get("status") == "skipped" or record_path.with_suffix(".png").is_file()):
        return record
    return None


def landmark_error(record: dict[str, Any]) -> float:
    """Mean distance between the 5 points derived from the record's 68 landmarks and its detector's 5
    points, as a fraction of the crop side (0 for detectors without points of their own, e.g. dlib)."""
    from instantrestore.faces.landmarks import five_points_from_68

    derived = five_points_from_68(np.asarray(record["landmarks68"]))
    detected = np.asarray(record.get("detector_kps5", record["kps5"]))
    return float(np.linalg.norm(derived - detected, axis=1).mean() / record["size"])


def _skip_reason(record: dict[str, Any], max_landmark_error: float | None) -> str | None:
    if record["status"] != "ok":
        return record["reason"]
    error = landmark_error(record)
    if max_landmark_error is not None and error > max_landmark_error:
        return (f"68-point landmarks disagree with the detector's 5 points ({error:.3f} of the crop side > "
                f"{max_landmark_error}): likely a profile or strongly turned face")
    return None


def _align_photo(source: Path, analyzer: FaceFinder, size: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(crop, record fields) for the largest face of one photo; crop is None when it is skipped."""
    from instantrestore.faces.align import transform_points

    try:
        image = read_image(source)
    except ImageReadError as err:
        return None, {"status": "skipped", "reason": str(err)}
    faces = analyzer.find_faces(image)
    if not faces:
        return None, {"status": "skipped", "reason": "no face found"}
    face = max(faces, key=lambda f: _box_area(f.box))
    crop, affine = face.align(image, size)
    return crop, {
        "status": "ok",
        "faces_found": len(faces),
        "box": [float(v) for v in face.box[:4]],
        "score": float(face.score),
        "affine": np.asarray(affine).tolist(),
        "landmarks68": transform_points(face.landmarks68, affine).round(3).tolist(),
        "kps5": transform_points(face.kps5, affine).round(3).tolist(),
        **({} if face.detector_kps5 is None else
           {"detector_kps5": transform_points(face.detector_kps5, affine).round(3).tolist()}),
    }


def prepare_dataset(src: str | os.PathLike, out: str | os.PathLike, size: int = 512, detector: str = "default",
                    splits_csv: str | os.PathLike | None = None, progress: bool = True,
                    max_landmark_error: float | None = None,
                    analyzer: FaceFinder | None = None) -> PrepareSummary:
    """Align every photo of SRC/<person>/ into OUT (layout in the module docstring); resumable.

    `max_landmark_error`: skip faces whose 68 landmarks disagree more with the detector (None keeps
    every detected face; see RELIABLE_LANDMARK_ERROR). `analyzer` replaces `FaceAnalyzer(detector)` (tests);
    `detector` is still recorded in the records.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    src, out = Path(src).resolve(), Path(out)  # absolute sources: records stay valid from any cwd
    if not src.is_dir():
        raise ConfigError(f"{src}: not a directory (expected one folder per person)")
    if out.resolve() == src or src in out.resolve().parents:
        raise ConfigError(f"{out}: the output must not be inside the source collection {src}")
    photos = _source_photos(src)
    if not photos:
        raise ConfigError(f"{src}: no photos found in person folders (expected SRC/<person>/<photo>.jpg)")

    splits_path = Path(splits_csv) if splits_csv is not None else find_splits_csv(src)
    splits = read_splits(splits_path) if splits_path is not None else None

    people: dict[str, list[str]] = {}
    skipped: list[dict[str, str]] = []
    processed = cached = 0
    seen: set[tuple[str, str]] = set()
    bar = tqdm(photos, desc="prepare-data", unit="photo", disable=not progress)
    for person, source in bar:
        stem = source.stem
        if (person, stem) in seen:  # e.g. a.jpg and a.png: both would be OUT/<person>/a.png
            skipped.append({"source": str(source), "reason": f"another photo of {person} is also named {stem}"})
            continue
        seen.add((person, stem))
        record_path = out / person / f"{stem}.json"
        record = _is_current(record_path, source, size, detector)
        if record is not None:
            cached += 1
        else:
            if analyzer is None:
                from instantrestore.faces import FaceAnalyzer

                analyzer = FaceAnalyzer(detector=detector)
            crop, fields = _align_photo(source, analyzer, size)
            stat = source.stat()
            record = {"source": str(source), "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
                      "size": size, "detector": detector, "version": RECORD_VERSION, **fields}
            if crop is not None:
                write_image(record_path.with_suffix(".png"), crop, overwrite=True)
            write_bytes(record_path, json.dumps(record).encode())  # last: marks the photo done
            processed += 1
        reason = _skip_reason(record, max_landmark_error)  # judged from the record, so a changed criterion needs no re-detection
        if reason is None:
            people.setdefault(person, []).append(stem)
        else:
            skipped.append({"source": str(source), "reason": reason})
        bar.set_postfix(skipped=len(skipped), refresh=False)
    bar.close()

    manifest = {
        "version": MANIFEST_VERSION,
        "source": str(src),
        "size": size,
        "detector": detector,
        "splits_csv": str(splits_path) if splits_path is not None else None,
        "split_source": "csv" if splits is not None else f"hash ({_VAL_PERCENT}% val)",
        "max_landmark_error": max_landmark_error,
        # People missing from a given CSV are kept but fall in no train/val split.
        "people": {person: {"split": splits.get(person, "unlisted") if splits is not None else hash_split(person),
                            "photos": stems} for person, stems in people.items()},
        "n_photos": sum(len(stems) for stems in people.values()),
        "n_skipped": len(skipped),
    }
    write_bytes(out / SKIPPED_NAME, json.dumps(skipped, indent=1).encode())
    write_bytes(out / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
    return PrepareSummary(out=out, people=len(people), photos=manifest["n_photos"], processed=processed,
                          cached=cached, skipped=skipped, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class DataIndex:
    """A prepared data directory, read from its manifest."""

    root: Path
    size: int
    splits: dict[str, str]  # person -> split
    photos_by_person: dict[str, tuple[str, ...]]
    split_source: str  # "csv", or "hash (20% val)" when prepared without a splits file

    def people(self, split: str = "all") -> list[str]:
        """People of a split ("all" for every person), sorted."""
        return sorted(p for p, s in self.splits.items() if split == "all" or s == split)

    def photos(self, person: str) -> tuple[str, ...]:
        return self.photos_by_person[person]

    def image_path(self, person: str, name: str) -> Path:
        return self.root / person / f"{name}.png"

    def record(self, person: str, name: str) -> dict[str, Any]:
        return json.loads((self.root / person / f"{name}.json").read_text())

    def landmarks(self, person: str, name: str) -> tuple[np.ndarray, bool]:
        """(68, 2) float32 landmarks in crop pixels at `size`, and whether they are reliable
        (see RELIABLE_LANDMARK_ERROR)."""
        record = self.record(person, name)
        return np.asarray(record["landmarks68"], np.float32), landmark_error(record) <= RELIABLE_LANDMARK_ERROR


def load_index(data_dir: str | os.PathLike) -> DataIndex:
    """Read DATA/manifest.json written by `prepare_dataset`."""
    root = Path(data_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(f"{root}: no {MANIFEST_NAME}; run `instantrestore prepare-data SRC -o {root}` first")
    try:
        manifest = json.loads(path.read_text())
        people = manifest["people"]
        return DataIndex(root=root, size=int(manifest["size"]),
                         splits={person: entry["split"] for person, entry in people.items()},
                         photos_by_person={person: tuple(entry["photos"]) for person, entry in people.items()},
                         split_source=manifest["split_source"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a prepare-data manifest ({err})") from None
