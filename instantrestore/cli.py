"""`instantrestore <command>`: the command line of the contract (docs: README, `--help`).

Flags follow the GFP-GAN command line where one exists. Exit codes: 0 all inputs done, 1 some
inputs failed (each named on stderr and in report.json), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from instantrestore.errors import ConfigError, InstantRestoreError, WeightsError
from instantrestore.imageio import IMAGE_EXTENSIONS, is_image_path, read_image, write_bytes, write_image

if TYPE_CHECKING:  # torch stays unimported until a command needs it
    from instantrestore.pipeline import FaceRestorationPipeline
    from instantrestore.references import ReferenceCache

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad flags or paths: exit 2."""


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _named(path: Path, err: Exception) -> str:
    """One line that names the file."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return message if message.startswith(str(path)) else f"{path}: {message}"


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


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given, directories expanded to their image files (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p)))
        else:
            files.append(path)
    return files


def _reference_files(refs: list[str]) -> list[Path]:
    for raw in refs:
        if not Path(raw).exists():
            raise UsageError(f"--refs {raw}: no such file or directory")
    return expand_inputs(refs)


def _load(args: argparse.Namespace):
    from instantrestore.api import load_restorer

    return load_restorer(args.model, device=args.device, weights=args.weights, bg_upsampler=args.bg_upsampler,
                         bg_tile=args.bg_tile, fidelity=args.fidelity, identity_model_path=args.identity_model,
                         detector=args.detector)


def _read_references(files: list[Path]) -> tuple[list, list[str]]:
    """The readable references, and a warning line for each one that is not."""
    images, warnings = [], []
    for path in files:
        try:
            images.append(read_image(path))
        except InstantRestoreError as err:
            warnings.append(f"warning: reference skipped: {_named(path, err)}")
    return images, warnings


def encode_reference_files(restorer: FaceRestorationPipeline, files: list[Path],
                           num_refs: int) -> tuple[ReferenceCache | None, dict, list[str]]:
    """`restore`'s references (shared with the web app): the cache (None when no face is usable), the
    report.json section, and the lines to show the user."""
    images, messages = _read_references(files)
    cache = restorer.encode_references(images, num_refs=num_refs)
    ref_report = {"files": [str(p) for p in files], "used": len(cache), "notes": cache.notes}
    messages += [f"references: {note}" for note in cache.notes]
    if len(cache) == 0:
        messages.append("warning: no usable reference face; restoring blind")
        cache = None
    return cache, ref_report, messages


def new_report(model: str, ref_report: dict, identity_model: str = "dlib", bg_upsampler: str | None = None) -> dict:
    """report.json of `restore`, before its inputs."""
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": model,
            "identity_model": identity_model, "bg_upsampler": bg_upsampler, "references": ref_report, "inputs": []}


# ----------------------------------------------------------------------------------------- restore
def cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    inputs = expand_inputs(args.input + args.input_flag)
    if not inputs:
        raise UsageError("no input images")
    _at_least("--num-refs", args.num_refs, 0)
    _at_least("--upscale", args.upscale, 1)
    _at_least("--bg-tile", args.bg_tile, 0)
    if args.ext != "auto" and not is_image_path(Path(f"output.{args.ext}")):
        formats = ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))
        raise UsageError(f"--ext {args.ext}: not an image format (auto, {formats})")
    out = _output_dir(args.output)
    input_set = {path.resolve() for path in inputs}
    restorer = _load(args)
    if not args.aligned or args.refs:
        restorer.analyzer  # builds the face detector now: a bad --detector is a usage error, not N failed photos
    upsampler = None
    if not args.aligned:
        upsampler = restorer.background_upsampler(args.upscale)  # loaded now for the same reason
        if args.upscale == 1 and args.bg_upsampler not in ("auto", "none"):
            print("note: --bg-upsampler applies with -s 2 or more; the background keeps its size", file=sys.stderr)

    cache, ref_report = None, {"files": [], "used": 0, "notes": []}
    if args.refs and args.num_refs > 0:
        cache, ref_report, messages = encode_reference_files(restorer, _reference_files(args.refs), args.num_refs)
        for message in messages:
            print(message, file=sys.stderr)

    report = new_report(args.model, ref_report, args.identity_model or "dlib",
                        None if upsampler is None else upsampler.name)
    failed = 0
    for path in tqdm(inputs, desc="restore", unit="photo", disable=args.quiet):
        entry = restore_photo(path, restorer, cache, args, out, input_set)
        if entry["status"] != "ok":
            failed += 1
            _err(entry["status"])
        for warning in entry["warnings"]:
            print(f"warning: {path}: {warning}", file=sys.stderr)
        report["inputs"].append(entry)
        # Rewritten after every photo so an interrupted run still leaves a valid report of what is done.
        write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    done = len(inputs) - failed
    print(f"restored {done}/{len(inputs)} photos -> {out} (report: {out / 'report.json'})")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def restore_photo(path: Path, restorer: FaceRestorationPipeline, cache: ReferenceCache | None, args: argparse.Namespace,
                  out: Path, input_set: set[Path]) -> dict:
    """One input of `restore` (shared with the web app): outputs written under `out`, and its report.json
    entry, with a one-line `status` naming the file when it failed."""
    start = time.perf_counter()
    entry = {"input": str(path), "status": "ok", "faces": 0, "identity": [], "outputs": [], "warnings": []}
    try:
        entry.update(_restore_one(path, restorer, cache, args, out, input_set))
    except (InstantRestoreError, FileExistsError, OSError) as err:
        entry["status"] = _named(path, err)
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return entry


def _output_paths(path: Path, args: argparse.Namespace, out: Path, has_alpha: bool) -> Path:
    ext = path.suffix.lstrip(".").lower() if args.ext == "auto" else args.ext
    if has_alpha and ext in ("jpg", "jpeg"):
        ext = "png"  # keep the alpha channel
    suffix = f"_{args.suffix}" if args.suffix else ""
    return out / "restored_imgs" / f"{path.stem}{suffix}.{ext}"


def _restore_one(path: Path, restorer, cache, args, out: Path, input_set: set[Path]) -> dict:
    image = read_image(path, keep_alpha=True)
    alpha = image[..., 3] if image.shape[2] == 4 else None
    rgb = image[..., :3]
    whole_path = _output_paths(path, args, out, alpha is not None)
    if whole_path.resolve() in input_set:
        raise InstantRestoreError(f"{path}: output {whole_path} would overwrite an input")
    if whole_path.exists() and not args.overwrite:
        raise FileExistsError(f"{path}: output {whole_path} exists; pass --overwrite to replace it")

    if args.aligned:
        restored = restorer.restore_face(rgb, refs=cache, seed=args.seed)
        crops, faces, whole = [rgb], [restored], restored
        identity = restorer.identity_to_references([restored], cache)
        warnings: list[str] = []
    else:
        result = restorer.restore(rgb, refs=cache, seed=args.seed, only_center_face=args.only_center_face,
                                  upscale=args.upscale, alpha=alpha)
        crops = [face.cropped for face in result.faces]
        faces = [face.restored for face in result.faces]
        identity = [face.identity for face in result.faces]
        whole, warnings = result.image, result.warnings

    outputs = []
    for k, (crop, face) in enumerate(zip(crops, faces)):
        outputs.append(write_image(out / "cropped_faces" / f"{path.stem}_{k}.png", crop, args.overwrite))
        outputs.append(write_image(out / "restored_faces" / f"{path.stem}_{k}.png", face, args.overwrite))
    outputs.append(write_image(whole_path, whole, args.overwrite))
    return {"faces": len(faces), "identity": [None if s is None else round(s, 4) for s in identity],
            "outputs": [str(p) for p in outputs], "warnings": warnings}


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
            _err(_named(path, err))
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
    query_crops, notes = analyzer.reference_crops([read_image(args.a)], 512, model)
    if not query_crops:
        raise InstantRestoreError(f"{args.a}: no face found")
    if args.b:
        ref_images = [read_image(args.b)]  # a missing B fails like A
    else:
        ref_images, read_warnings = _read_references(ref_paths)
        for warning in read_warnings:
            print(warning, file=sys.stderr)
    ref_crops, ref_notes = analyzer.reference_crops(ref_images, 512, model)
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
        serve(model=args.model, host=args.host, port=args.port, share=args.share, device=args.device)
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
                            "port, the identity loss's net), faceres (fetched by `python scripts/fetch_faceres.py`), "
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
    p.add_argument("--num-refs", type=int, default=4, help="use up to K references; 0 restores blind")
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
    p.add_argument("--model", default="default", help="model selected first (default, gfpgan, bicubic, DIR, .pth)")
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
