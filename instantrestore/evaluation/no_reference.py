"""`benchmark --no-reference DIR`: restore real low-quality photos that have no ground truth, as the papers do
on WebPhoto, LFW-Test, CelebChild or Wider.

Each image of DIR is an aligned face crop (`aligned=True`) or a whole photo, whose faces are found and aligned
at 512 px as `restore` does. Every face is restored blind (no references: none exist for these photos) by each
model, then scored without a ground truth:
  niqe         NIQE of the restored face at 512 px (lower is better), and of the input itself (`input` row);
  identity*    cosine similarity of the restored face to its own input under each available identity net
               (dlib; faceres and the ArcFace-trained net when fetched, else null): how much of the person
               the restorer kept.
Writes OUT/results.json, results.md, grid.png and faces/<model>/<face>.png.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from instantrestore.errors import ConfigError
from instantrestore.evaluation.benchmark import ARCFACE_COLUMN, FACERES_COLUMN, GRID_THUMB, _labelled, _load, identity_nets
from instantrestore.evaluation.metrics import NIQE_SIZE, ResourceMeter, bootstrap_ci95, niqe_at_face_size, paired_difference
from instantrestore.faces import FaceAnalyzer
from instantrestore.imageio import is_image_path, read_image, write_bytes, write_image
from instantrestore.models.base import Restorer
from instantrestore.pipeline import FaceRestorationPipeline, as_pipeline

INPUT = "input"
DEFAULT_MODELS = ("bicubic", "gfpgan", "default")


def input_faces(photos_dir: Path, aligned: bool, detector: str = "default") -> tuple[dict[str, np.ndarray], list[str]]:
    """({face name: 512-px aligned crop}, notes on the images that gave no face), images in name order."""
    paths = sorted(path for path in photos_dir.iterdir() if is_image_path(path))
    if not paths:
        raise ConfigError(f"--no-reference {photos_dir}: no images there")
    faces, notes = {}, []
    analyzer = None if aligned else FaceAnalyzer(detector=detector)
    for path in paths:
        image = read_image(path)
        if aligned:
            if image.shape[0] != image.shape[1]:
                notes.append(f"{path.name}: not square ({image.shape[1]}x{image.shape[0]}), so not an aligned crop; skipped")
                continue
            faces[path.stem] = np.asarray(Image.fromarray(image).resize((NIQE_SIZE, NIQE_SIZE), Image.BICUBIC))
            continue
        found = analyzer.find_faces(image)
        if not found:
            notes.append(f"{path.name}: no face found")
        for number, face in enumerate(found):
            faces[f"{path.stem}_{number}"] = face.align(image, NIQE_SIZE)[0]
    if not faces:
        raise ConfigError(f"--no-reference {photos_dir}: no face in any image ({'; '.join(notes)})")
    return faces, notes


def _score(restored: np.ndarray, source: np.ndarray | None, nets: dict, source_embeddings: dict) -> dict[str, float | None]:
    scores: dict[str, float | None] = {"niqe": niqe_at_face_size(restored)}
    for column, net in nets.items():
        if net is None or source is None:
            scores[column] = None
            continue
        scores[column] = float(np.dot(net.embed([restored])[0].astype(np.float64), source_embeddings[column]))
    return scores


def run_no_reference_benchmark(photos_dir: str | os.PathLike, out_dir: str | os.PathLike,
                               models: Sequence[str | Restorer | FaceRestorationPipeline] | dict | None = None,
                               aligned: bool = False, device: str = "auto", identity_model_path: str | None = None,
                               detector: str = "default", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Restore and score every face of `photos_dir` with each model; returns the results.json content."""
    photos_dir, out = Path(photos_dir), Path(out_dir)
    if not photos_dir.is_dir():
        raise ConfigError(f"--no-reference {photos_dir}: not a directory")
    faces, notes = input_faces(photos_dir, aligned, detector)
    nets = identity_nets(identity_model_path)
    methods = dict(models) if isinstance(models, dict) else dict(_labelled(m) for m in (models or DEFAULT_MODELS))
    if INPUT in methods:
        raise ConfigError(f"'{INPUT}' names the unrestored faces' row: choose another model label")

    source_embeddings = {name: {column: net.embed([face])[0].astype(np.float64)
                                for column, net in nets.items() if net is not None} for name, face in faces.items()}
    records: dict[str, dict[str, dict]] = {INPUT: {name: _score(face, None, nets, {}) for name, face in faces.items()}}
    seconds: dict[str, float | None] = {INPUT: None}
    loss_models: dict[str, str | None] = {}
    for name, face in faces.items():
        write_image(out / "faces" / INPUT / f"{name}.png", face, overwrite=True)
    bar = tqdm(total=len(faces) * len(methods), desc="no-reference benchmark", unit="face", disable=not progress)
    for method, model in methods.items():
        restorer = as_pipeline(model) if isinstance(model, (Restorer, FaceRestorationPipeline)) else _load(model, device)
        meter, records[method] = ResourceMeter(), {}
        for name, face in faces.items():
            with meter.measure():
                restored = restorer.restore_faces([face], refs=None, seed=seed)[0]
            write_image(out / "faces" / method / f"{name}.png", restored, overwrite=True)
            records[method][name] = _score(restored, face, nets, source_embeddings[name])
            bar.update(1)
        seconds[method] = meter.seconds / len(faces)
        loss_models[method] = restorer.identity_loss_model
        del restorer
    bar.close()

    metric_names = ["niqe", *nets]
    rows = []
    for method, scores in records.items():
        row: dict[str, Any] = {"method": method, "n": len(scores)}
        for metric in metric_names:
            values = [face[metric] for face in scores.values() if face[metric] is not None]
            row[metric] = float(np.mean(values)) if values else None
            row[f"{metric}_ci95"] = bootstrap_ci95(values, seed=seed) if values else None
        row["sec_per_face"] = seconds[method]
        rows.append(row)
    paired = [{"method": method, "baseline": INPUT, "metric": "niqe",
               **paired_difference([records[method][n]["niqe"] for n in faces],
                                   [records[INPUT][n]["niqe"] for n in faces], higher_is_better=False, seed=seed).as_dict()}
              for method in methods]
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": str(photos_dir), "aligned": aligned, "faces": list(faces), "notes": notes,
        "identity_models": {column: net.name if net is not None else None for column, net in nets.items()},
        "identity_loss_models": loss_models,
        "rows": rows, "paired": paired,
        "per_face": {method: scores for method, scores in records.items()},
    }
    write_bytes(out / "results.json", json.dumps(results, indent=1, allow_nan=False).encode())
    write_bytes(out / "results.md", no_reference_markdown(results).encode())
    write_image(out / "grid.png", no_reference_grid(out, list(faces), [INPUT, *methods]), overwrite=True)
    return results


def no_reference_markdown(results: dict[str, Any]) -> str:
    identity_columns = [column for column in results["identity_models"]]
    header = ["NIQE↓", *("ID to input (dlib)↑" if c == "identity" else f"ID to input ({c[9:]})↑" for c in identity_columns)]
    lines = [f"# No-reference benchmark ({results['created']})", "",
             f"Data: `{results['data']}` ({'aligned crops' if results['aligned'] else 'whole photos, faces aligned at 512'}),"
             f" {len(results['faces'])} faces, restored blind (no references).",
             "NIQE: naturalness of the face alone at 512 px, lower is better (no ground truth exists). ID to input: "
             "cosine similarity of the restored face to its own input under the named net: how much of the person "
             "was kept. Values: mean ± half-width of the 95% bootstrap interval.", ""]
    nets = results["identity_models"]
    if nets.get(FACERES_COLUMN) is None:
        lines += ["ID (faceres): not computed (its weights are not fetched).", ""]
    if nets.get(ARCFACE_COLUMN) is None:
        lines += ["ID (arcface): not computed (MobileFaceNet's weights are not fetched).", ""]
    else:
        lines += [f"ID (arcface): `{nets[ARCFACE_COLUMN]}`, a net trained with the ArcFace loss.", ""]
    trained_on = {method: net for method, net in results.get("identity_loss_models", {}).items() if net}
    if trained_on:
        lines += ["Identity nets used as a training loss: " + ", ".join(f"{m}: {n}" for m, n in trained_on.items())
                  + "; read the other columns as the independent ones.", ""]
    lines += ["| Method | " + " | ".join(header) + " | Time (s) |", "|---|" + "---:|" * (len(header) + 1)]
    for row in results["rows"]:
        cells = [f"{row[m]:.3f} ± {row[m + '_ci95']:.3f}" if row[m] is not None and row[m + "_ci95"] is not None
                 else ("–" if row[m] is None else f"{row[m]:.3f}") for m in ["niqe", *identity_columns]]
        time = "–" if row["sec_per_face"] is None else f"{row['sec_per_face']:.3f}"
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {time} |")
    lines += ["", "## NIQE against the input, face by face", "",
              "| Method | Mean difference | Better (lower NIQE) |", "|---|---:|---:|"]
    for row in results["paired"]:
        ci = "" if row["ci95"] is None else f" ± {row['ci95']:.3f}"
        lines.append(f"| {row['method']} | {row['mean_diff']:.3f}{ci} | {row['a_better']:.0%} |")
    for note in results["notes"]:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def no_reference_grid(out: Path, faces: list[str], methods: list[str], max_rows: int = 8) -> np.ndarray:
    """Rows: faces; columns: the input, then each method's restoration."""
    header_height = 20
    rows = faces[:max_rows]
    grid = Image.new("RGB", (GRID_THUMB * len(methods), header_height + GRID_THUMB * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for column, method in enumerate(methods):
        draw.text((column * GRID_THUMB + 4, 4), method, fill="black")
        for row, name in enumerate(rows):
            thumb = Image.fromarray(read_image(out / "faces" / method / f"{name}.png")).resize((GRID_THUMB, GRID_THUMB),
                                                                                                Image.BICUBIC)
            grid.paste(thumb, (column * GRID_THUMB, header_height + row * GRID_THUMB))
    return np.asarray(grid)
