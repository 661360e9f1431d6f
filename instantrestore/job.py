"""The restore job: one photo in, its outputs and report entry out; the same steps for the command line, the
web page and a Ray cluster.

    plan (once per run):    photos and their people -> `PhotoTask`s, each with its output name; what an earlier
                            run with the same settings finished in OUT is skipped (`plan_run`)
    per person:             references read and encoded once -> `ReferenceCache` (`load_person_references`)
    per photo:              read, detect, restore with the person's cache, write atomically, identity
                            (`restore_photo`)
    report:                 one report.json for the run, rewritten atomically as entries arrive (`RunReport`)

`RestoreSettings` holds every option that changes what a restore writes: its fields are also what "the same
settings" means when a rerun resumes.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from instantrestore.errors import ConfigError, InstantRestoreError
from instantrestore.imageio import is_image_path, read_image, write_bytes, write_image

if TYPE_CHECKING:  # torch stays unimported until a restore needs it
    from instantrestore.pipeline import FaceRestorationPipeline
    from instantrestore.references import ReferenceCache

MANIFEST_COLUMNS = ("photo", "refs", "output")
CACHE_SUFFIX = ".safetensors"
REPORT_NAME = "report.json"
OUTPUT_FOLDERS = ("restored_imgs", "restored_faces", "cropped_faces")


@dataclass(frozen=True)
class RestoreSettings:
    """What a restore writes depends on these and on nothing else but the photo and its references."""

    model: str = "default"
    weights: str | None = None
    fidelity: float | None = None
    detector: str = "default"
    identity_model: str | None = None
    bg_upsampler: str = "auto"
    bg_tile: int = 400  # as models.upsampler.DEFAULT_TILE, without importing torch here
    num_refs: int = 4
    detail_strength: float = 1.0
    aligned: bool = False
    only_center_face: bool = False
    upscale: int = 1
    ext: str = "auto"
    suffix: str | None = None
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def load_pipeline(settings: RestoreSettings, device: str = "auto") -> FaceRestorationPipeline:
    from instantrestore.api import load_restorer

    return load_restorer(settings.model, device=device, weights=settings.weights, bg_upsampler=settings.bg_upsampler,
                         bg_tile=settings.bg_tile, fidelity=settings.fidelity,
                         identity_model_path=settings.identity_model, detector=settings.detector,
                         detail_strength=settings.detail_strength)


def one_line(path: str | os.PathLike, err: Exception) -> str:
    """The error's first line, naming the file."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return message if message.startswith(str(path)) else f"{path}: {message}"


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, directories expanded to their image files (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p)))
        else:
            files.append(path)
    return files


# ------------------------------------------------------------------------------------------------ people
@dataclass(frozen=True)
class Person:
    """One person's references as a run names them: reference files, one saved cache, or nothing (blind)."""

    label: str                  # how a manifest's report and messages name them ("" for blind, and for --refs)
    files: tuple[Path, ...] = ()
    cache_file: Path | None = None

    @classmethod
    def from_refs(cls, refs: str | os.PathLike | None) -> "Person":
        """A manifest's `refs` cell: a folder of photos, a saved cache (.safetensors) or empty."""
        if not refs:
            return cls("")
        path = Path(refs)
        if path.suffix.lower() == CACHE_SUFFIX:
            return cls(str(refs), cache_file=path)
        return cls(str(refs), files=(path,))


def read_references(files: list[Path]) -> tuple[list, list[str]]:
    """The readable references, and a warning line for each one that is not."""
    images, warnings = [], []
    for path in files:
        try:
            images.append(read_image(path))
        except InstantRestoreError as err:
            warnings.append(f"warning: reference skipped: {one_line(path, err)}")
    return images, warnings


def encode_reference_files(pipeline: FaceRestorationPipeline, files: list[Path],
                           num_refs: int) -> tuple[ReferenceCache | None, dict, list[str]]:
    """Reference photos encoded: the cache (None when no face is usable), the report.json section, and the
    lines to show the user."""
    images, messages = read_references(files)
    cache = pipeline.encode_references(images, num_refs=num_refs)
    section = {"files": [str(p) for p in files], "used": len(cache), "notes": cache.notes}
    messages += [f"references: {note}" for note in cache.notes]
    if len(cache) == 0:
        messages.append("warning: no usable reference face; restoring blind")
        cache = None
    return cache, section, messages


def load_person_references(pipeline: FaceRestorationPipeline, person: Person,
                           num_refs: int) -> tuple[ReferenceCache | None, dict, list[str]]:
    """`encode_reference_files` for one person, or their saved cache checked against the model. A missing
    folder or file raises a one-line `InstantRestoreError` naming it."""
    from instantrestore.references import ReferenceCache

    if num_refs == 0 or (not person.files and person.cache_file is None):
        return None, {"files": [], "used": 0, "notes": []}, []
    if person.cache_file is not None:
        cache = pipeline.reference_cache(ReferenceCache.load(person.cache_file))  # raises on another model's cache
        section = {"files": [str(person.cache_file)], "used": 0 if cache is None else len(cache), "notes": []}
        return cache, section, []
    for path in person.files:
        if not path.exists():
            raise InstantRestoreError(f"refs {path}: no such file or directory")
    return encode_reference_files(pipeline, expand_inputs(person.files), num_refs)


# ------------------------------------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class PhotoTask:
    """One photo of a run, with the name its outputs take and the person whose references restore it."""

    index: int                  # its place in the run: the report lists inputs in this order
    photo: Path
    name: str                   # stem of its outputs: restored_imgs/<name><suffix>.<ext>, restored_faces/<name>_<k>.png
    person: Person = field(default_factory=lambda: Person(""))
    ext: str | None = None      # the manifest's output extension, overriding --ext

    def key(self) -> list:
        """What identifies the task across runs (an entry in an earlier report is this task when equal)."""
        person = self.person
        return [str(self.photo), self.name, [str(p) for p in person.files], str(person.cache_file or "")]


def tasks_from_inputs(photos: list[Path], person: Person) -> list[PhotoTask]:
    return [PhotoTask(k, path, path.stem, person) for k, path in enumerate(photos)]


def read_manifest(path: str | os.PathLike) -> list[PhotoTask]:
    """A manifest's rows as tasks: a CSV with the header photo,refs,output; relative paths are relative to the
    manifest. Raises `ConfigError` (one line, naming the file and row) when it cannot be used."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"--manifest {path}: cannot read it ({reason})") from None
    if not rows or tuple(cell.strip() for cell in rows[0]) != MANIFEST_COLUMNS:
        raise ConfigError(f"--manifest {path}: the first row must be the header {','.join(MANIFEST_COLUMNS)}")
    base = path.parent
    people: dict[str, Person] = {}
    tasks = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(MANIFEST_COLUMNS):
            raise ConfigError(f"--manifest {path}: row {line} has {len(row)} cells, not {len(MANIFEST_COLUMNS)} "
                              f"({','.join(MANIFEST_COLUMNS)})")
        photo, refs, output = (cell.strip() for cell in row)
        if not photo:
            raise ConfigError(f"--manifest {path}: row {line} names no photo")
        if output and Path(output).name != output:
            raise ConfigError(f"--manifest {path}: row {line}: output {output!r} must be a file name, not a path")
        refs_path = str(base / refs) if refs else ""
        person = people.setdefault(refs_path, Person.from_refs(refs_path))
        ext = Path(output).suffix.lstrip(".").lower() if output and is_image_path(output) else None
        name = Path(output).stem if ext else (output or Path(photo).stem)
        tasks.append(PhotoTask(len(tasks), base / photo, name, person, ext))
    return tasks


def output_path(task: PhotoTask, settings: RestoreSettings, out: Path, has_alpha: bool) -> Path:
    """The restored whole photo's path."""
    ext = task.ext or (task.photo.suffix.lstrip(".").lower() if settings.ext == "auto" else settings.ext)
    if has_alpha and ext in ("jpg", "jpeg"):
        ext = "png"  # keep the alpha channel
    suffix = f"_{settings.suffix}" if settings.suffix else ""
    return out / "restored_imgs" / f"{task.name}{suffix}.{ext}"


def _possible_outputs(task: PhotoTask, settings: RestoreSettings, out: Path) -> list[Path]:
    """Paths the task may write, before its photo is read (whether it has alpha is not known yet)."""
    return [output_path(task, settings, out, False), output_path(task, settings, out, True),
            out / "restored_faces" / f"{task.name}_0.png", out / "cropped_faces" / f"{task.name}_0.png"]


# ------------------------------------------------------------------------------------------------- photo
def restore_photo(pipeline: FaceRestorationPipeline, task: PhotoTask, cache: ReferenceCache | None,
                  settings: RestoreSettings, out: Path, replace: bool = False) -> dict:
    """One photo restored: its outputs written under `out` (replacing existing ones only when `replace`), and
    its report.json entry, with a one-line `status` naming the file when it failed."""
    start = time.perf_counter()
    entry = {"input": str(task.photo), "status": "ok", "faces": 0, "identity": [], "outputs": [], "warnings": []}
    try:
        entry.update(_restore(pipeline, task, cache, settings, out, replace))
    except (InstantRestoreError, FileExistsError, OSError) as err:
        entry["status"] = one_line(task.photo, err)
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return entry


def _restore(pipeline: FaceRestorationPipeline, task: PhotoTask, cache: ReferenceCache | None,
             settings: RestoreSettings, out: Path, replace: bool) -> dict:
    image = read_image(task.photo, keep_alpha=True)
    alpha = image[..., 3] if image.shape[2] == 4 else None
    rgb = image[..., :3]
    whole_path = output_path(task, settings, out, alpha is not None)
    if whole_path.exists() and not replace:
        raise FileExistsError(f"{task.photo}: output {whole_path} exists; pass --overwrite to replace it")

    if settings.aligned:
        faces, weights = pipeline.restore_faces_with_weights([rgb], refs=cache, seed=settings.seed,
                                                             detail_strength=settings.detail_strength)
        crops, whole = [rgb], faces[0]
        identity = pipeline.identity_to_references(faces, cache)
        warnings: list[str] = []
    else:
        result = pipeline.restore(rgb, refs=cache, seed=settings.seed, only_center_face=settings.only_center_face,
                                  upscale=settings.upscale, alpha=alpha, detail_strength=settings.detail_strength)
        crops = [face.cropped for face in result.faces]
        faces = [face.restored for face in result.faces]
        identity = [face.identity for face in result.faces]
        weights = [face.reference_weights for face in result.faces]
        whole, warnings = result.image, result.warnings

    outputs = []
    for k, (crop, face) in enumerate(zip(crops, faces)):
        outputs.append(write_image(out / "cropped_faces" / f"{task.name}_{k}.png", crop, replace))
        outputs.append(write_image(out / "restored_faces" / f"{task.name}_{k}.png", face, replace))
    outputs.append(write_image(whole_path, whole, replace))
    return {"faces": len(faces), "identity": [None if s is None else round(s, 4) for s in identity],
            "reference_weights": weights, "outputs": [str(p) for p in outputs], "warnings": warnings}


# ------------------------------------------------------------------------------------------------ report
def new_report(settings: RestoreSettings, bg_upsampler: str | None = None) -> dict:
    """report.json of a run, before its inputs."""
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": settings.model,
            "identity_model": settings.identity_model or "dlib", "bg_upsampler": bg_upsampler,
            "settings": settings.as_dict(), "inputs": []}


class RunReport:
    """report.json of a run, rewritten atomically as entries arrive (at most every `interval` seconds, and on
    `write`): a crash leaves a valid report of the photos it lists. Inputs are listed in task order."""

    def __init__(self, path: Path, report: dict, interval: float = 2.0) -> None:
        self.path = path
        self.report = report
        self.interval = interval
        self._entries: dict[int, dict] = {}
        self._last_write = 0.0

    def add(self, task: PhotoTask, entry: dict) -> None:
        self._entries[task.index] = {**entry, "key": task.key()}
        if time.monotonic() - self._last_write >= self.interval:
            self.write()

    def write(self) -> None:
        self.report["inputs"] = [self._entries[k] for k in sorted(self._entries)]
        write_bytes(self.path, json.dumps(self.report, indent=2).encode())
        self._last_write = time.monotonic()


@dataclass
class RunPlan:
    """What a run does: the tasks to restore (grouped by person), and the entries already known (finished by an
    earlier run, or refused before starting)."""

    to_restore: list[PhotoTask]
    known: list[tuple[PhotoTask, dict]]       # (task, entry): skipped as done, or an error found by planning
    resumed: int                              # how many of `known` an earlier run finished
    earlier_report: dict | None               # that run's report.json (same settings), if any


def _earlier_report(out: Path, settings: RestoreSettings) -> dict | None:
    """report.json of an earlier run in `out` with the same settings; None when there is no such run (no
    report, another version of it, or other settings)."""
    try:
        report = json.loads((out / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("settings") != settings.as_dict():
        return None
    return report


def _finished_entries(report: dict) -> dict[str, dict]:
    """An earlier report's finished entries (all outputs still there), by task key."""
    return {json.dumps(entry["key"]): entry for entry in report.get("inputs", [])
            if isinstance(entry, dict) and entry.get("status") == "ok" and "key" in entry
            and all(Path(p).is_file() for p in entry.get("outputs", []))}


def plan_run(tasks: list[PhotoTask], settings: RestoreSettings, out: Path, overwrite: bool) -> RunPlan:
    """Which tasks to restore. A rerun into the same OUT with the same settings skips the photos the earlier run
    finished and may replace whatever else it left (it was interrupted mid-photo). Otherwise an existing output
    is an error for its photo unless `overwrite` (which also restores finished photos again). Two photos with
    the same output name, or an output that would replace an input, are errors for the later photo. Tasks are
    grouped by person, in order of first appearance, so that each person's cache is needed for one stretch of
    the run. Every task to restore may replace what is at its outputs: planning checked what was there before."""
    earlier_report = None if overwrite else _earlier_report(out, settings)
    earlier = None if earlier_report is None else _finished_entries(earlier_report)
    inputs = {task.photo.resolve() for task in tasks}
    named: dict[str, PhotoTask] = {}
    to_restore, known = [], []
    resumed = 0
    for task in tasks:
        if earlier is not None and json.dumps(task.key()) in earlier:
            known.append((task, {**earlier[json.dumps(task.key())], "resumed": True}))
            resumed += 1
            named[task.name] = task
            continue
        problem = None
        if task.name in named:
            problem = (f"{task.photo}: output name '{task.name}' is also that of {named[task.name].photo}; "
                       "give it its own name (a manifest's output column)")
        else:
            named[task.name] = task
            paths = _possible_outputs(task, settings, out)
            if any(p.resolve() in inputs for p in paths[:2]):
                problem = f"{task.photo}: output {paths[0]} would overwrite an input"
            elif earlier is None and not overwrite:
                existing = next((p for p in paths if p.exists()), None)
                if existing is not None:
                    problem = f"{task.photo}: output {existing} exists; pass --overwrite to replace it"
        if problem is None:
            to_restore.append(task)
        else:
            known.append((task, failed_entry(task, problem)))
    order = {}
    for task in to_restore:
        order.setdefault(task.person.label, len(order))
    to_restore.sort(key=lambda task: (order[task.person.label], task.index))
    return RunPlan(to_restore, known, resumed, earlier_report)


def failed_entry(task: PhotoTask, status: str) -> dict:
    return {"input": str(task.photo), "status": status, "faces": 0, "identity": [], "outputs": [], "warnings": [],
            "seconds": 0.0}


def remove_partial_files(out: Path) -> None:
    """Temporary files of atomic writes that a killed worker left behind (its retry wrote the file again)."""
    for folder in OUTPUT_FOLDERS:
        for partial in (out / folder).glob(".*.part"):
            partial.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------- one process
class PersonCaches:
    """Each person's references encoded once: the cache is kept while their photos are restored. Tasks come
    grouped by person (`plan_run`), so only the current person's cache is held."""

    def __init__(self, pipeline: FaceRestorationPipeline, num_refs: int, notify: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self.num_refs = num_refs
        self.notify = notify
        self.sections: dict[str, dict] = {}
        self._current: tuple[Person, ReferenceCache | None, str | None] | None = None

    def get(self, person: Person) -> tuple[ReferenceCache | None, str | None]:
        """(the person's cache or None, the one-line error that stops their photos or None)."""
        if self._current is None or self._current[0] != person:
            self._current = (person, *self.encode(person))
        return self._current[1], self._current[2]

    def encode(self, person: Person) -> tuple[ReferenceCache | None, str | None]:
        try:
            cache, section, messages = load_person_references(self.pipeline, person, self.num_refs)
        except InstantRestoreError as err:
            message = str(err).splitlines()[0]
            self.sections[person.label] = {"files": [], "used": 0, "notes": [], "error": message}
            self.notify(f"error: {message} (the photos of this person are not restored)")
            return None, message
        self.sections[person.label] = section
        for message in messages:
            self.notify(f"{message} ({person.label})" if person.label else message)
        return cache, None


# on_entry(task, entry, announced): announced when the entry's error was already shown (its person's line)
OnEntry = Callable[[PhotoTask, dict, bool], None]
# progress(items, total): the items, shown as they pass (the command line's bar with rate and ETA)
Progress = Callable[[Iterable, int], Iterable]


def run_local(pipeline: FaceRestorationPipeline, plan: RunPlan, settings: RestoreSettings, out: Path,
              caches: PersonCaches, on_entry: OnEntry, progress: Progress = lambda items, total: items) -> None:
    """Restore the plan's tasks in this process, one after the other."""
    for task in progress(plan.to_restore, len(plan.to_restore)):
        cache, error = caches.get(task.person)
        if error is not None:
            on_entry(task, failed_entry(task, f"{task.photo}: {error}"), True)
            continue
        on_entry(task, restore_photo(pipeline, task, cache, settings, out, replace=True), False)


# engine(pipeline, plan, settings, out, caches, on_entry, progress): restores the plan's tasks somewhere
# (`run_local` here, one after the other; `ray_engine.RayEngine` on a cluster) and hands each entry to on_entry
Engine = Callable[["FaceRestorationPipeline", RunPlan, RestoreSettings, Path, PersonCaches, OnEntry, Progress], None]


@dataclass
class RunSummary:
    total: int
    failed: int
    resumed: int


def run_restore(pipeline: FaceRestorationPipeline, tasks: list[PhotoTask], settings: RestoreSettings, out: Path,
                notify: Callable[[str], None], *, manifest: bool = False, overwrite: bool = False,
                engine: Engine = run_local, progress: Progress = lambda items, total: items) -> RunSummary:
    """A whole run: plan (resume), restore each photo with `engine` (here, or on Ray), report.json in `out` as
    photos finish. Each failure and warning is one line to `notify`. `manifest`: the report has a `people` section
    (refs -> what was used) rather than the one `references` section of --refs."""
    plan = plan_run(tasks, settings, out, overwrite)
    upsampler = None if settings.aligned else pipeline.background_upsampler(settings.upscale)
    report = RunReport(out / REPORT_NAME, new_report(settings, None if upsampler is None else upsampler.name))
    caches = PersonCaches(pipeline, settings.num_refs, notify)
    failed = 0

    def on_entry(task: PhotoTask, entry: dict, announced: bool = False) -> None:
        nonlocal failed
        if entry["status"] != "ok":
            failed += 1
            if not announced:
                notify(f"error: {entry['status']}")
        for warning in entry["warnings"]:
            notify(f"warning: {task.photo}: {warning}")
        report.add(task, entry)

    if plan.resumed:
        notify(f"resuming: {plan.resumed} of {len(tasks)} photos were restored with the same settings by an earlier "
               f"run into {out}; restoring the other {len(tasks) - plan.resumed}")
    try:
        for task, entry in plan.known:  # done by an earlier run, or refused by planning (reported like failures)
            if entry["status"] == "ok":
                report.add(task, entry)
            else:
                on_entry(task, entry)
        report.write()  # at once: a rerun after a crash in the first photo resumes
        engine(pipeline, plan, settings, out, caches, on_entry, progress)
    finally:
        report.report.update(_reference_sections(plan, caches, manifest))
        report.write()
        remove_partial_files(out)
    return RunSummary(len(tasks), failed, plan.resumed)


def _reference_sections(plan: RunPlan, caches: PersonCaches, manifest: bool) -> dict:
    """report.json's `people` (refs -> section) for a manifest, else its one `references` section; those of
    people whose photos an earlier run finished come from its report."""
    earlier = plan.earlier_report or {}
    if manifest:
        sections = {**earlier.get("people", {}), **caches.sections}
        labels = {task.person.label for task in plan.to_restore} | {task.person.label for task, _ in plan.known}
        return {"people": {label: sections[label] for label in sorted(labels) if label and label in sections}}
    nothing = {"files": [], "used": 0, "notes": []}
    return {"references": caches.sections.get("", earlier.get("references", nothing))}
