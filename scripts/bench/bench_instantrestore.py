"""CPU speed of the compact InstantRestore: per face, per reference encoded, an album with and without a cache.

Speed of the compact InstantRestore restorer on CPU threads: per face with cached references, per
reference encoded, and an album of photos of one person restored with a reference cache vs without.

    .venv/bin/python scripts/bench/bench_instantrestore.py [--config configs/instantrestore_compact.yaml]
        [--weights CHECKPOINT_DIR] [--threads 2] [--album 10] [--refs 4] [--repeats 5] [--json OUT.json]
        [--person-photos DIR]

`restore_face` is timed as a user calls it (a 512-px uint8 aligned face in, resized to the model's size and
back, 4 cached references); the next timings cover the model only (tensors in and out); the speed does not
depend on the weights, so without --weights a freshly built model is timed. With --person-photos (one
person's whole photos, e.g. ../shared/data/frll/images/005), the album is also timed end to end through
the public API, as a user runs it: the first --refs photos are the references, the others (cycled up to
--album, degraded with sr4) the album; without a cache every `restore(photo, refs=paths)` finds, aligns,
scores and encodes the references again, with one they are done once. Wall-clock times are medians; CPU
seconds (process time, all threads) are reported too, because on a shared machine wall-clock includes
waiting for the cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from instantrestore.models.config import InstantRestoreConfig
from instantrestore.models.instantrestore import InstantRestoreModel
from instantrestore.models.ir_restorer import InstantRestoreRestorer
from instantrestore.pipeline import FaceRestorationPipeline
from instantrestore.references import ReferenceCache

REPO = Path(__file__).resolve().parents[2]


def timed(run: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall-clock and CPU milliseconds of `run` over `repeats` calls, after one warm-up call."""
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return {"wall_ms": 1000 * statistics.median(wall), "cpu_ms": 1000 * statistics.median(cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "instantrestore_compact.yaml"))
    parser.add_argument("--weights", help="an InstantRestore checkpoint directory (default: a fresh model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--album", type=int, default=10, help="photos of one person in the album")
    parser.add_argument("--refs", type=int, default=4, help="references per person")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--person-photos", help="a folder of one person's whole photos: also time the album end to end")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.weights:
        model = InstantRestoreModel.from_pretrained(args.weights)
    else:
        model = InstantRestoreModel.from_config(InstantRestoreConfig.from_yaml(args.config))
    restorer = InstantRestoreRestorer(model, device="cpu")
    pipeline = FaceRestorationPipeline(restorer)
    size = restorer.face_size
    generator = torch.Generator().manual_seed(0)
    references = torch.rand(args.refs, 3, size, size, generator=generator) * 2 - 1  # the restorer's [-1, 1]
    album = torch.rand(args.album, 1, 3, size, size, generator=generator) * 2 - 1
    face = album[0]

    def encode(faces: torch.Tensor) -> ReferenceCache:
        with torch.no_grad():
            features = restorer.reference_features(faces)
        return ReferenceCache(faces=torch.zeros(len(faces), size, size, 3, dtype=torch.uint8).numpy(),
                              features=features, model_id=restorer.model_id)

    cache = encode(references)

    def restore_album(cached: bool) -> None:
        album_cache = encode(references) if cached else None
        for photo in album:
            restorer.restore_tensor(photo, (album_cache if cached else encode(references)).features, None)

    aligned_512 = (torch.rand(512, 512, 3, generator=generator) * 255).byte().numpy()  # what a user passes
    with torch.no_grad():
        per_face_api = timed(lambda: pipeline.restore_face(aligned_512, refs=cache), args.repeats)
        per_face = timed(lambda: restorer.restore_tensor(face, cache.features, None), args.repeats)
        per_face_blind = timed(lambda: restorer.restore_tensor(face, None, None), args.repeats)
        one_reference = timed(lambda: encode(references[:1]), args.repeats)
        all_references = timed(lambda: encode(references), args.repeats)
        album_repeats = max(1, args.repeats // 3)
        with_cache = timed(lambda: restore_album(True), album_repeats)
        without_cache = timed(lambda: restore_album(False), album_repeats)

    results = {
        "config": args.config if not args.weights else args.weights,
        "face_size": size, "threads": args.threads, "refs": args.refs, "album": args.album,
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
        "ms_restore_face_512px_cached_refs": per_face_api,
        "ms_per_face_cached_refs": per_face, "ms_per_face_blind": per_face_blind,
        "ms_encode_one_reference": one_reference, f"ms_encode_{args.refs}_references": all_references,
        "album_ms_with_cache": with_cache, "album_ms_without_cache": without_cache,
        "album_speedup_wall": without_cache["wall_ms"] / with_cache["wall_ms"],
        "album_speedup_cpu": without_cache["cpu_ms"] / with_cache["cpu_ms"],
    }
    print(f"InstantRestore {size}px on {args.threads} CPU threads (load average {results['load_average_1min']:.1f}, "
          f"{os.cpu_count()} cores); wall-clock median / CPU time of all threads")
    for label, key in (("restore_face, 512px uint8", "ms_restore_face_512px_cached_refs"),
                       ("per face, cached refs", "ms_per_face_cached_refs"), ("per face, blind", "ms_per_face_blind"),
                       ("encode 1 reference", "ms_encode_one_reference"),
                       (f"encode {args.refs} references", f"ms_encode_{args.refs}_references"),
                       (f"album of {args.album}, cache", "album_ms_with_cache"),
                       (f"album of {args.album}, no cache", "album_ms_without_cache")):
        print(f"  {label:<24} {results[key]['wall_ms']:9.1f} ms wall {results[key]['cpu_ms']:9.1f} ms cpu")
    print(f"  album speed-up with a cache: {results['album_speedup_wall']:.2f}x wall, "
          f"{results['album_speedup_cpu']:.2f}x cpu")
    if args.person_photos:
        results.update(album_end_to_end(pipeline, Path(args.person_photos), args.refs, args.album, album_repeats))
        print(f"end to end (whole photos: detect, align, restore, paste back, identity), album of {args.album}:")
        for label, key in (("cache", "photos_album_ms_with_cache"), ("no cache", "photos_album_ms_without_cache")):
            print(f"  {label:<24} {results[key]['wall_ms']:9.1f} ms wall {results[key]['cpu_ms']:9.1f} ms cpu")
        print(f"  album speed-up with a cache: {results['photos_album_speedup_wall']:.2f}x wall, "
              f"{results['photos_album_speedup_cpu']:.2f}x cpu")
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def album_end_to_end(restorer: FaceRestorationPipeline, person_dir: Path, refs: int, album: int,
                     repeats: int) -> dict[str, object]:
    """Whole photos through `restore`: references re-done per photo (paths) vs encoded once (a cache)."""
    from instantrestore.degradations import degrade
    from instantrestore.imageio import is_image_path, read_image

    photos = sorted(p for p in person_dir.iterdir() if is_image_path(p))
    if len(photos) <= refs:
        raise SystemExit(f"{person_dir}: needs more than {refs} photos ({refs} references + the album)")
    reference_paths = [str(p) for p in photos[:refs]]
    album_photos = [degrade(read_image(p), "sr4", seed=i)
                    for i, p in enumerate(itertools.islice(itertools.cycle(photos[refs:]), album))]

    def restore_album(cached: bool) -> None:
        cache = restorer.encode_references(reference_paths) if cached else None
        for photo in album_photos:
            restorer.restore(photo, refs=cache if cached else reference_paths, seed=0)

    with_cache = timed(lambda: restore_album(True), repeats)
    without_cache = timed(lambda: restore_album(False), repeats)
    return {"person_photos": str(person_dir), "photos_album_ms_with_cache": with_cache,
            "photos_album_ms_without_cache": without_cache,
            "photos_album_speedup_wall": without_cache["wall_ms"] / with_cache["wall_ms"],
            "photos_album_speedup_cpu": without_cache["cpu_ms"] / with_cache["cpu_ms"]}


if __name__ == "__main__":
    main()
