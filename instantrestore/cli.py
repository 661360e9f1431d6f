"""`instantrestore <command>`: the command line of the contract (docs: README, `--help`).

Flags follow the GFP-GAN command line where one exists. Exit codes: 0 all inputs done, 1 some
inputs failed (each named on stderr and in report.json), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

from instantrestore.errors import ConfigError, InstantRestoreError, WeightsError
from instantrestore.imageio import IMAGE_EXTENSIONS, is_image_path, read_image, write_image
from instantrestore.job import (REPORT_NAME, Person, PhotoTask, RestoreSettings, expand_inputs,
                                load_pipeline, one_line, read_manifest, read_references, run_local, run_restore,
                                tasks_from_inputs)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad flags or paths: exit 2."""


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _output_dir(raw: str) -> Path:
    """The -o folder, created now: an unusable one is a usage error before any work is done."""
    path = Path(raw)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"-o {raw}: cannot create the output folder ({err.strerror})") from None
    return path


def _at_least(flag: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise UsageError(f"{flag} {value}: must be at least {minimum}")
    return value


def _reference_files(refs: list[str]) -> list[Path]:
    for raw in refs:
        if not Path(raw).exists():
            raise UsageError(f"--refs {raw}: no such file or directory")
    return expand_inputs(refs)


# ----------------------------------------------------------------------------------------- restore
def _restore_settings(args: argparse.Namespace) -> RestoreSettings:
    _at_least("--num-refs", args.num_refs, 0)
    if not 0 <= args.detail_strength <= 1:
        raise UsageError(f"--detail-strength {args.detail_strength}: expected a number from 0 to 1")
    _at_least("--upscale", args.upscale, 1)
    _at_least("--bg-tile", args.bg_tile, 0)
    if args.ext != "auto" and not is_image_path(Path(f"output.{args.ext}")):
        formats = ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))
        raise UsageError(f"--ext {args.ext}: not an image format (auto, {formats})")
    return RestoreSettings(model=args.model, weights=args.weights, fidelity=args.fidelity, detector=args.detector,
                           identity_model=args.identity_model, bg_upsampler=args.bg_upsampler, bg_tile=args.bg_tile,
                           num_refs=args.num_refs, detail_strength=args.detail_strength, aligned=args.aligned, only_center_face=args.only_center_face,
                           upscale=args.upscale, ext=args.ext, suffix=args.suffix, seed=args.seed)


def _restore_tasks(args: argparse.Namespace) -> list[PhotoTask]:
    """The run's photos, each with the person whose references restore it."""
    inputs = args.input + args.input_flag
    if args.manifest is not None:
        if inputs or args.refs:
            raise UsageError("--manifest names the photos and their references: give no INPUT nor --refs with it")
        tasks = read_manifest(args.manifest)
        if not tasks:
            raise UsageError(f"--manifest {args.manifest}: no photos in it")
        return tasks
    photos = expand_inputs(inputs)
    if not photos:
        raise UsageError("no input images")
    person = Person("")
    if args.refs and args.num_refs > 0:
        person = Person("", files=tuple(_reference_files(args.refs)))
    return tasks_from_inputs(photos, person)


def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    settings = _restore_settings(args)
    tasks = _restore_tasks(args)
    engine = run_local
    if args.engine == "ray":
        from instantrestore.ray_engine import RayEngine, import_ray

        import_ray()  # a missing extra is one line before any model loads
        if args.workers is not None:
            _at_least("--workers", args.workers, 1)
        if args.num_cpus <= 0 or args.num_gpus < 0:
            raise UsageError("--num-cpus must be above 0 and --num-gpus at least 0")
        engine = RayEngine(args.device, args.address, args.workers, args.num_cpus, args.num_gpus)
    elif args.address is not None or args.workers is not None or args.num_cpus != 1 or args.num_gpus != 0:
        raise UsageError("--address, --workers, --num-cpus and --num-gpus apply with --engine ray")
    out = _output_dir(args.output)
    pipeline = load_pipeline(settings, args.device)
    # the face detector and background upsampler built now: a bad --detector is a usage error, not N failed photos
    if not settings.aligned or any(task.person.files for task in tasks):
        pipeline.analyzer
    if not settings.aligned:
        pipeline.background_upsampler(settings.upscale)
        if settings.upscale == 1 and settings.bg_upsampler not in ("auto", "none"):
            print("note: --bg-upsampler applies with -s 2 or more; the background keeps its size", file=sys.stderr)

    def progress(items, total: int):
        return tqdm(items, total=total, desc="restore", unit="photo", disable=args.quiet, dynamic_ncols=True)

    summary = run_restore(pipeline, tasks, settings, out, lambda line: print(line, file=sys.stderr),
                          manifest=args.manifest is not None, overwrite=args.overwrite, engine=engine,
                          progress=progress)
    print(f"restored {summary.total - summary.failed}/{summary.total} photos -> {out} (report: {out / REPORT_NAME})")
    return EXIT_OK if summary.failed == 0 else EXIT_FAILED


# ----------------------------------------------------------------------------------------- degrade
def cmd_degrade(args: argparse.Namespace) -> int:
    from instantrestore.degradations import PRESETS, degrade

    if args.preset not in PRESETS:
        raise UsageError(f"--preset {args.preset}: unknown (choose from {', '.join(PRESETS)})")
    inputs = expand_inputs(args.input)
    out = _output_dir(args.output)
    failed = 0
    for path in inputs:
        target = out / f"{path.stem}.png"  # lossless, so the degradation is exactly what the preset made
        try:
            if target.exists() and not args.overwrite:
                raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
            # The seed mixes in the file name: the same photo degrades the same way in any batch.
            seed = zlib.crc32(path.name.encode()) ^ args.seed
            write_image(target, degrade(read_image(path), args.preset, seed), args.overwrite)
        except (InstantRestoreError, FileExistsError, OSError) as err:
            failed += 1
            _err(one_line(path, err))
    print(f"degraded {len(inputs) - failed}/{len(inputs)} photos with '{args.preset}' -> {out}")
    return EXIT_OK if failed == 0 else EXIT_FAILED


# ------------------------------------------------------------------------------------ prepare-data
def cmd_prepare_data(args: argparse.Namespace) -> int:
    from instantrestore.data.prepare import prepare_dataset

    if not Path(args.src).is_dir():
        raise UsageError(f"{args.src}: not a directory (expected one folder per person)")
    _at_least("--size", args.size, 1)
    summary = prepare_dataset(args.src, _output_dir(args.output), size=args.size, detector=args.detector,
                              splits_csv=args.splits, progress=not args.quiet,
                              max_landmark_error=args.max_landmark_error)
    print(summary)
    return EXIT_OK


# ------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from instantrestore.training.trainer import train_main

    if not Path(args.config).is_file():
        raise UsageError(f"--config {args.config}: no such file")
    final = train_main(args.config, args.overrides)
    print(f"trained model: {final}")
    return EXIT_OK


# --------------------------------------------------------------------------------------- benchmark
def cmd_benchmark(args: argparse.Namespace) -> int:
    from instantrestore.data.prepare import load_index
    from instantrestore.degradations import PRESETS
    from instantrestore.evaluation.benchmark import run_benchmark

    if (args.data is None) == (args.no_reference is None):
        raise UsageError("give either --data (a prepare-data directory) or --no-reference DIR (real photos)")
    if args.no_reference is not None:
        return _no_reference_benchmark(args)
    if not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data}: not a prepared data directory (see `prepare-data`)")
    try:
        num_refs = [_at_least("--num-refs", int(k), 0) for k in args.num_refs.split(",")]
    except ValueError:
        raise UsageError(f"--num-refs {args.num_refs}: expected counts separated by commas, e.g. 0,1,2,4") from None
    for preset in args.presets:
        if preset not in PRESETS:
            raise UsageError(f"--presets {preset}: unknown (choose from {', '.join(PRESETS)})")
    split = args.split
    if split is None:
        index = load_index(args.data)
        split = "val" if index.split_source == "csv" else "all"
        if split == "all":
            print(f"note: {args.data} was prepared without a splits file: benchmarking every person "
                  f"({len(index.people())}); --split val takes only the people its hash split holds out",
                  file=sys.stderr)
    models = args.models if args.models is not None else ["degraded", *_shipped_models()]
    run_benchmark(args.data, _output_dir(args.output), models=models, presets=args.presets, num_refs=num_refs,
                  split=split, max_people=args.max_people, seed=args.seed, device=args.device,
                  identity_model_path=args.identity_model, progress=not args.quiet, people=args.people)
    print(f"benchmark -> {Path(args.output) / 'results.md'}")
    return EXIT_OK


def _shipped_models() -> list[str]:
    """The default comparison, less the packaged models this build does not ship."""
    from instantrestore.api import packaged_model_available

    models = ["bicubic"]
    for name in ("gfpgan", "default"):
        if packaged_model_available(name):
            models.append(name)
        else:
            print(f"note: model '{name}' is not shipped in this build; left out of the benchmark", file=sys.stderr)
    return models


def _no_reference_benchmark(args: argparse.Namespace) -> int:
    from instantrestore.evaluation.no_reference import run_no_reference_benchmark

    if not Path(args.no_reference).is_dir():
        raise UsageError(f"--no-reference {args.no_reference}: not a directory of photos")
    models = args.models if args.models is not None else _shipped_models()
    results = run_no_reference_benchmark(args.no_reference, _output_dir(args.output), models=models,
                                         aligned=args.aligned, device=args.device, detector=args.detector,
                                         identity_model_path=args.identity_model, seed=args.seed,
                                         progress=not args.quiet)
    for note in results["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"benchmark -> {Path(args.output) / 'results.md'}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------- identity
def cmd_identity(args: argparse.Namespace) -> int:
    import numpy as np

    from instantrestore.faces import FaceAnalyzer, load_identity_model

    if (args.b is None) == (not args.refs):
        raise UsageError("give either a second image B or --refs")
    model = load_identity_model(args.identity_model)
    analyzer = FaceAnalyzer(detector=args.detector)
    ref_paths = [Path(args.b)] if args.b else _reference_files(args.refs)
    query_crops, notes = analyzer.reference_crops([read_image(args.a)], model)
    if not query_crops:
        raise InstantRestoreError(f"{args.a}: no face found")
    if args.b:
        ref_images = [read_image(args.b)]  # a missing B fails like A
    else:
        ref_images, read_warnings = read_references(ref_paths)
        for warning in read_warnings:
            print(warning, file=sys.stderr)
    ref_crops, ref_notes = analyzer.reference_crops(ref_images, model)
    if not ref_crops:
        raise InstantRestoreError("no face found in the references")
    for note in notes + ref_notes:
        print(f"note: {note}", file=sys.stderr)
    scores = model.embed(ref_crops) @ model.embed(query_crops)[0]
    print(json.dumps({"a": args.a, "refs": [str(p) for p in ref_paths], "model": model.name,
                      "identity": round(float(np.mean(scores)), 4),
                      "per_reference": [round(float(s), 4) for s in scores],
                      "same_person_threshold": model.same_person_threshold}, indent=2))
    return EXIT_OK


# --------------------------------------------------------------------------------- convert-authors
def cmd_convert_authors(args: argparse.Namespace) -> int:
    from instantrestore.models.authors_checkpoint import SD_TURBO, SD_VAE_FT_MSE, convert_authors_checkpoint

    report = convert_authors_checkpoint(args.checkpoint, args.output, args.pretrained or SD_TURBO,
                                        args.vae_pretrained or SD_VAE_FT_MSE, overwrite=args.overwrite)
    print(f"converted {args.checkpoint}: {report}")
    return EXIT_OK


# -------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from instantrestore.demo import run_demo

    run_demo(_output_dir(args.output), device=args.device)
    return EXIT_OK


# --------------------------------------------------------------------------------------------- app
def cmd_app(args: argparse.Namespace) -> int:
    try:
        from instantrestore.app import serve
    except ImportError as err:
        if err.name != "gradio":
            raise
        raise UsageError("the web app needs gradio: pip install 'instantrestore[app]'") from None
    try:
        serve(models=args.model, host=args.host, port=args.port, share=args.share, device=args.device)
    except OSError as err:  # the port is taken, or the address is not this machine's
        raise UsageError(f"cannot serve on {args.host}:{args.port} ({str(err).split('. ')[0]})") from None
    return EXIT_OK


# ------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instantrestore", description="Reference-guided, personalized face restoration.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, model: bool = False) -> None:
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        p.add_argument("--detector", default="default", help="face detector: default (YuNet), dlib, or an .onnx path (YuNet or SCRFD)")
        p.add_argument("--identity-model", default=None, metavar="NAME|PATH",
                       help="identity net for the scores: dlib (default, offline), dlib-torch (its PyTorch "
                            "port, the identity loss's net), faceres (fetched by `python scripts/data/fetch_faceres.py`), "
                            "mobilefacenet (ArcFace-trained; `python scripts/convert/fetch_mobilefacenet.py`), "
                            "or an ArcFace .onnx file")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        if model:
            p.add_argument("--model", default="default",
                           help="model name or path: default, gfpgan, bicubic, instantrestore-paper, DIR, .pth; "
                                "with the zoo extra (pip install 'instantrestore[zoo]'): codeformer (S-Lab License "
                                "1.0: non-commercial use only) and restoreformer++ (Apache-2.0), official release "
                                "weights downloaded once")
            p.add_argument("--weights", default=None, metavar="PATH",
                           help="weight file for --model gfpgan (GFPGANv1.4.pth), codeformer (codeformer.pth) or "
                                "restoreformer++ (RestoreFormer++.ckpt)")
            p.add_argument("--fidelity", type=float, default=None, metavar="W",
                           help="CodeFormer's fidelity weight w in [0, 1] (default 0.5): lower gives a cleaner face, "
                                "higher keeps closer to the input")

    p = sub.add_parser("restore", help="restore faces in whole photos (or aligned crops) with references")
    p.add_argument("input", nargs="*", help="photos or directories")
    p.add_argument("-i", "--input", dest="input_flag", action="append", default=[], help="as GFP-GAN: a photo or directory")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--refs", nargs="+", default=None, help="reference photos of the same person (files or a directory)")
    p.add_argument("--manifest", default=None, metavar="CSV",
                   help="an archive: a CSV with the header photo,refs,output, one photo a row (refs: a folder of the "
                        "person's photos or a saved reference cache, may be empty; output: optional name; relative "
                        "paths are relative to the CSV). A rerun into the same -o with the same settings skips "
                        "what is done")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray cluster, one loaded model per actor (pip install "
                        "'instantrestore[ray]'; -o must be a folder every node sees)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="with --engine ray: the cluster to join (auto: the `ray start --head` of this machine); "
                        "default: RAY_ADDRESS, else a new cluster on this machine")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --engine ray: actors, each with one loaded model (default: as many as the cluster "
                        "has room for)")
    p.add_argument("--num-cpus", type=float, default=1, metavar="C", help="with --engine ray: CPUs per actor")
    p.add_argument("--num-gpus", type=float, default=0, metavar="G",
                   help="with --engine ray: GPUs per actor (0.5: two actors share a GPU)")
    p.add_argument("--num-refs", type=int, default=4, help="use up to K references; 0 restores blind")
    p.add_argument("--detail-strength", type=float, default=1.0, metavar="S",
                   help="full-resolution detail from the references (and from a large input face itself), after "
                        "the restorer: 0 = the restorer's output alone, 1 = full (default)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops")
    p.add_argument("--only-center-face", action="store_true")
    p.add_argument("-s", "--upscale", type=int, default=1, help="upscale factor of the whole photo")
    p.add_argument("--bg-upsampler", default="auto", metavar="NAME|PATH",
                   help="background upsampler with -s > 1: auto or none (Lanczos interpolation; auto is the "
                        "measured best of what ships), esrgan-x2 / esrgan-x4 (packaged nets, MIT, offline; measured "
                        "below Lanczos, see README), realesrgan-x2 / realesrgan-x4 (official Real-ESRGAN weights, "
                        "BSD-3-Clause, downloaded once), or a model directory / RRDBNet .pth")
    p.add_argument("--bg-tile", type=int, default=400, metavar="N",
                   help="background upsampler tile size in pixels (overlapping tiles); 0 for whole photos at once")
    p.add_argument("--ext", default="auto", help="output extension: auto (as input), png, jpg")
    p.add_argument("--suffix", default=None, help="suffix of restored whole photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    common(p, model=True)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("degrade", help="reproducible synthetic degradation")
    p.add_argument("input", nargs="+")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("prepare-data", help="detect, align and landmark an identity-grouped collection")
    p.add_argument("src", help="one folder per person")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--splits", default=None, help="CSV of person,split (default: splits.csv beside SRC)")
    p.add_argument("--max-landmark-error", type=float, default=None,
                   help="drop faces whose 68 landmarks disagree with the detector by more than this fraction "
                        "of the crop (profiles measure > 0.1); default keeps every face")
    common(p)
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("train", help="train a restorer from a YAML recipe")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("benchmark", help="GAN vs diffusion, with and without references")
    p.add_argument("--data", default=None, help="a prepare-data directory")
    p.add_argument("--no-reference", metavar="DIR", default=None,
                   help="instead of --data: real low-quality photos without ground truth, restored blind and "
                        "scored by NIQE and identity to the input (as papers report on WebPhoto)")
    p.add_argument("--aligned", action="store_true", help="with --no-reference: the photos are aligned face crops")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--models", nargs="+", default=None,
                   help="names, model directories or LABEL=PATH (default: degraded bicubic gfpgan default, as "
                        "shipped); also codeformer (non-commercial) and restoreformer++ with the zoo extra")
    p.add_argument("--presets", nargs="+", default=["sr8"])
    p.add_argument("--num-refs", default="0,4")
    p.add_argument("--split", default=None,
                   help="val, train, all, ... (default: val, or every person when DATA has no splits file)")
    p.add_argument("--max-people", type=int, default=None)
    p.add_argument("--people", metavar="GLOB", default=None,
                   help="only people whose name matches, e.g. 'celeba_*' in a merged data set")
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("identity", help="identity similarity between faces")
    p.add_argument("a")
    p.add_argument("b", nargs="?", default=None)
    p.add_argument("--refs", nargs="+", default=None)
    common(p)
    p.set_defaults(func=cmd_identity)

    p = sub.add_parser("convert-authors", help="convert an InstantRestore authors' checkpoint (.pt) to a model directory")
    p.add_argument("checkpoint", help="e.g. final_model_ckpt.pt from hwdz15508/InstantRestore")
    p.add_argument("-o", "--output", required=True, help="model directory to write (for --model DIR)")
    p.add_argument("--pretrained", default=None, metavar="BASE",
                   help="the SD-Turbo base it was trained on: hub id or directory (default: stabilityai/sd-turbo)")
    p.add_argument("--vae-pretrained", default=None, metavar="VAE",
                   help="its VAE: hub id or directory (default: stabilityai/sd-vae-ft-mse)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert_authors)

    p = sub.add_parser("demo", help="what `make demo` runs")
    p.add_argument("-o", "--output", default="demo_out")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("app", help="the web page: restore a photo in the browser (needs instantrestore[app])")
    p.add_argument("--model", action="append", default=None, metavar="NAME|PATH",
                   help="a model to offer besides the packaged ones (repeatable; the first is selected first): a "
                        "name, a model directory or a GFP-GAN .pth. The page loads no other")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: the local network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link (online only)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        _err(str(err))
        return EXIT_USAGE
    except (ConfigError, WeightsError) as err:  # nothing could run: a set-up problem, like a bad flag
        _err(str(err))
        return EXIT_USAGE
    except InstantRestoreError as err:
        _err(str(err))
        return EXIT_FAILED
    except OSError as err:  # the disk or the file system, not the program: one line naming the file
        path = err.filename2 or err.filename  # a failed atomic rename names its temporary file first
        _err(f"{path}: {err.strerror}" if path and err.strerror else str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted; outputs written so far are complete (atomic writes)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
