"""Photos per second of `restore --manifest` on one process and on a local Ray cluster (docs/archives.md).

Also the Ray path's overhead per photo.

    python scripts/bench/bench_archive_engines.py --photos 100 --workers 2 [--threads 0 1] [--model default]

An archive of CelebA photos from ../shared (10 per person, each person's first two photos as their references)
is restored into fresh folders by `job.run_local` in this process (with each --threads count of torch threads,
0: every core), then by `ray_engine.run_on_ray` on a new local cluster of WORKERS actors with one CPU (one torch
thread) each. Each entry's arrival is timed. Reported: the wall time with start-up (model load; for Ray, the
cluster and its actors), the steady rate (first entry to last), the job's own seconds per photo (report.json's
`seconds`), and the Ray path's overhead per photo: WORKERS / steady rate - the job's seconds (what a photo costs
an actor beyond restoring it).
The driver encodes the references with one torch thread, as the actors restore, so that the outputs can be
compared byte for byte with those of a one-thread process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from instantrestore.imageio import read_image
from instantrestore.job import (PersonCaches, RestoreSettings, load_pipeline, plan_run, read_manifest,
                                run_local)

SHARED = Path(os.environ.get("INSTANTRESTORE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PHOTOS_PER_PERSON = 10


def build_archive(root: Path, photos: int) -> Path:
    rows = ["photo,refs,output"]
    people = sorted((SHARED / "data/celeba-id/images").iterdir())
    for person in people:
        files = sorted(person.iterdir())
        if len(files) < 2 + PHOTOS_PER_PERSON:
            continue
        (root / "refs" / person.name).mkdir(parents=True)
        for path in files[:2]:
            shutil.copy(path, root / "refs" / person.name)
        rows += [f"{path},refs/{person.name}," for path in files[2:2 + PHOTOS_PER_PERSON]]
        if len(rows) - 1 >= photos:
            break
    manifest = root / "photos.csv"
    manifest.write_text("\n".join(rows[:photos + 1]) + "\n")
    return manifest


def summary(name: str, start: float, arrivals: list[float], entries: list[dict], workers: int) -> dict:
    ok = [e for e in entries if e["status"] == "ok"]
    steady = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    job_seconds = statistics.mean(e["seconds"] for e in ok)
    return {"engine": name, "photos": len(entries), "ok": len(ok), "wall_s": round(arrivals[-1] - start, 1),
            "photos_per_s_with_startup": round(len(entries) / (arrivals[-1] - start), 3),
            "startup_s": round(arrivals[0] - start, 1), "steady_photos_per_s": round(steady, 3),
            "job_s_per_photo": round(job_seconds, 3),
            "overhead_s_per_photo": round(workers / steady - job_seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="torch threads of the one-process runs (0: torch's default, every core)")
    args = parser.parse_args()
    settings = RestoreSettings(model=args.model)
    root = Path(tempfile.mkdtemp(prefix="archive-engines-"))
    try:
        tasks = read_manifest(build_archive(root, args.photos))
        results = []

        cores = torch.get_num_threads()
        for threads in [t or cores for t in args.threads]:
            torch.set_num_threads(threads)
            out = root / f"local-{threads}"
            start = time.monotonic()
            pipeline = load_pipeline(settings, "cpu")
            plan = plan_run(tasks, settings, out, overwrite=False)
            arrivals, entries = [], []
            run_local(pipeline, plan, settings, out, PersonCaches(pipeline, settings.num_refs, print),
                      lambda task, entry, announced: (arrivals.append(time.monotonic()), entries.append(entry)))
            results.append(summary(f"1 process, {threads} torch thread(s)", start, arrivals, entries, 1))
            print(json.dumps(results[-1]), flush=True)
        torch.set_num_threads(1)  # the references encoded as each actor restores: with one thread

        import ray

        from instantrestore.ray_engine import run_on_ray

        start = time.monotonic()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
        cluster_s = time.monotonic() - start
        caches = PersonCaches(pipeline, settings.num_refs, print)  # the driver encodes each person once
        people = {task.person.label: task.person for task in tasks}
        encoded = {label: caches.encode(person)[0] for label, person in people.items()}
        encode_s = time.monotonic() - start - cluster_s
        arrivals, entries = [], []
        run_on_ray(tasks, encoded, settings, root / "ray", "cpu",
                   lambda task, entry, announced: (arrivals.append(time.monotonic()), entries.append(entry)),
                   workers=args.workers)
        results.append({**summary(f"Ray, {args.workers} workers", start, arrivals, entries, args.workers),
                        "cluster_start_s": round(cluster_s, 1), "driver_encode_s": round(encode_s, 1)})
        print(json.dumps(results[-1]), flush=True)
        ray.shutdown()
        ray_files = sorted((root / "ray").rglob("*.*"))
        for threads in [t or cores for t in args.threads]:
            local = root / f"local-{threads}"
            differ = [p for p in ray_files if (local / p.relative_to(root / "ray")).read_bytes() != p.read_bytes()]
            levels = max((int(np.abs(read_image(p).astype(int) - read_image(local / p.relative_to(root / "ray"))).max())
                          for p in differ), default=0)
            print(f"Ray vs 1 process with {threads} torch thread(s): {len(differ)} of {len(ray_files)} files differ"
                  f", by at most {levels} levels")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
