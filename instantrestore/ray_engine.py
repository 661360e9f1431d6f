"""`restore --engine ray`: the restore job on a Ray cluster (the `ray` extra, Ray Data).

    tasks -> ray.data.from_items -> map_batches(RestoreWorker, actor pool) -> entries streamed back to the driver

Each actor loads one pipeline (`job.load_pipeline`) and calls `job.restore_photo`, the function the single
process calls, so the outputs are the same files. The driver encodes each person's references once and puts
the cache in the object store; an actor fetches a person's cache the first time one of their photos reaches
it. Workers write the outputs themselves, so OUT must be a path every node sees (local, or a shared folder).
Ray restarts an actor that dies and retries its batches; a retried photo replaces what its first try wrote.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from instantrestore.errors import ConfigError, InstantRestoreError
from instantrestore.job import (OnEntry, Person, PersonCaches, PhotoTask, Progress, RestoreSettings, RunPlan,
                                failed_entry, load_pipeline, restore_photo)

if TYPE_CHECKING:
    from instantrestore.pipeline import FaceRestorationPipeline
    from instantrestore.references import ReferenceCache

INSTALL_HINT = "--engine ray needs Ray: pip install 'instantrestore[ray]'"
# How many people's caches an actor keeps; its photos come grouped by person (job.plan_run), so a few suffice.
CACHES_PER_ACTOR = 8


def import_ray():
    """Ray, or a one-line error saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401  the extra is ray[data]: a bare ray lacks pyarrow
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None  # a set-up problem: exit 2, like a missing model
    return ray


class RestoreWorker:
    """One Ray actor: one loaded pipeline, restoring batches of tasks (rows) into `out`."""

    def __init__(self, settings: dict, device: str, out: str, caches: dict, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # as many as the actor reserved (--num-cpus)
        self.settings = RestoreSettings(**settings)
        self.out = Path(out)
        self.pipeline = load_pipeline(self.settings, device)
        self.cache_refs = caches
        self.cache = lru_cache(maxsize=CACHES_PER_ACTOR)(self._fetch_cache)

    def _fetch_cache(self, label: str):
        import ray

        ref = self.cache_refs.get(label)
        return None if ref is None else ray.get(ref)

    def __call__(self, batch: dict) -> dict:
        entries = []
        for index, photo, name, person, ext in zip(batch["index"], batch["photo"], batch["name"], batch["person"],
                                                   batch["ext"]):
            task = PhotoTask(int(index), Path(photo), str(name), Person(str(person)), str(ext) or None)
            entry = restore_photo(self.pipeline, task, self.cache(task.person.label), self.settings, self.out,
                                  replace=True)
            entries.append(json.dumps(entry))
        return {"index": batch["index"], "entry": entries}


def cluster_workers(ray, num_cpus: float, num_gpus: float) -> int:
    """As many actors as the cluster has room for."""
    resources = ray.cluster_resources()
    if num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // num_cpus))


def run_on_ray(tasks: list[PhotoTask], caches: dict[str, object], settings: RestoreSettings, out: Path,
               device: str, on_entry: OnEntry,
               progress: Progress = lambda rows, total: rows, address: str | None = None,
               workers: int | None = None, num_cpus: float = 1, num_gpus: float = 0) -> None:
    """Restore `tasks` on a Ray cluster: the one this process already joined, else the one at `address`
    ("auto": the `ray start --head` of this machine), else a new local one. `caches` maps each person's label
    to their encoded references (or None). Each entry reaches `on_entry` as its photo is done."""
    if not tasks:  # everything was done by an earlier run (or refused): no cluster to start
        return
    ray = import_ray()
    if not ray.is_initialized():
        new_cluster = address is None and not os.environ.get("RAY_ADDRESS")
        options = {"include_dashboard": False} if new_cluster else {}  # joining a cluster, Ray refuses the option
        try:
            ray.init(address=address, logging_level=logging.ERROR, **options)
        except ConnectionError as err:
            # Ray 2.5x's `ray start` turns token authentication on; a driver only sends the token when told to
            hint = "" if os.environ.get("RAY_AUTH_MODE") else " (a cluster of `ray start` may want RAY_AUTH_MODE=token)"
            where = address or os.environ.get("RAY_ADDRESS")
            raise InstantRestoreError(f"--address {where}: {str(err).splitlines()[0]}{hint}") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows its own (`progress`)

    out_abs = out.resolve()  # workers do not run in this process's folder
    by_index = {task.index: task for task in tasks}
    cache_refs = {label: ray.put(cache) for label, cache in caches.items() if cache is not None}
    rows = [{"index": task.index, "photo": str(task.photo.resolve()), "name": task.name,
             "person": task.person.label, "ext": task.ext or ""} for task in tasks]
    size = workers or cluster_workers(ray, num_cpus, num_gpus)
    # One photo a block: Ray Data returns a block when all of it is done, so each entry comes back (and the report
    # and the progress bar move) as its photo is restored, and a retry after a lost actor redoes one photo.
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    results = dataset.map_batches(
        RestoreWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=size), num_cpus=num_cpus,
        num_gpus=num_gpus,
        fn_constructor_kwargs={"settings": settings.as_dict(), "device": "cuda" if num_gpus > 0 else device,
                               "out": str(out_abs), "caches": cache_refs, "threads": max(1, int(num_cpus))})
    try:
        for row in progress(results.iter_rows(), len(tasks)):
            task = by_index[int(row["index"])]
            entry = json.loads(row["entry"])
            # the report names files as this process was given them, as the single process does
            entry["input"] = str(task.photo)
            entry["outputs"] = [str(out / Path(path).relative_to(out_abs)) for path in entry["outputs"]]
            on_entry(task, entry, False)
    except ray.exceptions.RayError as err:  # the cluster, not a photo: what is done stays done
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InstantRestoreError(f"the Ray run stopped ({type(err).__name__}: {reason}); run the same command "
                                  "again to restore the rest") from None


@dataclass(frozen=True)
class RayEngine:
    """`--engine ray`, a `job.Engine`: each person's references are encoded here, once (the photos of people
    whose references failed are not sent), then the photos run on the cluster (`run_on_ray`)."""

    device: str = "auto"
    address: str | None = None
    workers: int | None = None
    num_cpus: float = 1
    num_gpus: float = 0

    def __call__(self, pipeline: FaceRestorationPipeline, plan: RunPlan, settings: RestoreSettings, out: Path,
                 caches: PersonCaches, on_entry: OnEntry, progress: Progress) -> None:
        encoded: dict[str, tuple[ReferenceCache | None, str | None]] = {}
        sent = []
        for task in plan.to_restore:
            if task.person.label not in encoded:
                encoded[task.person.label] = caches.encode(task.person)
            error = encoded[task.person.label][1]
            if error is not None:
                on_entry(task, failed_entry(task, f"{task.photo}: {error}"), True)
            else:
                sent.append(task)
        run_on_ray(sent, {label: cache for label, (cache, _) in encoded.items()}, settings, out, self.device,
                   on_entry, progress, address=self.address, workers=self.workers, num_cpus=self.num_cpus,
                   num_gpus=self.num_gpus)
