"""The GAN-vs-diffusion benchmark: restore one held-out photo per person, blind and with references.

For each person of the split:
  target      ONE photo, held out: FRLL view 03 (neutral, frontal) when the person has it, otherwise the
              first photo by name. It is degraded with each preset from a seed fixed by (seed, person,
              preset), so every method restores the same input bytes.
  references  the person's OTHER photos (never the target), in a fixed order: FRLL views by pose --
              frontal 08, then three-quarter 02, 04, 07, 09, then the profiles -- otherwise by name;
              `k` references are the first k. People with fewer than max(num_refs) other photos are left
              out (and listed), so every row is measured on the same faces.
Methods: `degraded` (the input itself), then restorers. Reference-free ones run once (num_refs 0);
reference-using ones once per k in `num_refs` (k = 0 restores blind).

Every (method, preset, num_refs) cell is saved in OUT/cells/ as soon as it is done; a re-run with the
same data, split, seed and metrics skips finished cells, so an interrupted benchmark resumes. Cells are
keyed by the method's label, not its weights: after retraining a model, use a new OUT (or delete its cells).
"""

from __future__ import annotations

import fnmatch
import gc
import hashlib
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from instantrestore.data.prepare import DataIndex, load_index
from instantrestore.degradations import degrade, get_preset
from instantrestore.errors import ConfigError
from instantrestore.evaluation.metrics import (LMD_SIZE, ResourceMeter, bootstrap_ci95, identity_column,
                                               landmark_distance, lpips_metric, ms_ssim, niqe_at_face_size,
                                               paired_difference, psnr, sharpness, ssim)
from instantrestore.faces import load_identity_model
from instantrestore.faces.identity import ALIGNED_FACE_BOX, FACERES_FETCH_COMMAND, IdentityModel, faceres_available
from instantrestore.faces.mobilefacenet import MOBILEFACENET_FETCH_COMMAND, mobilefacenet_available
from instantrestore.faces.landmarks import LandmarkPredictor
from instantrestore.imageio import read_image, write_bytes, write_image
from instantrestore.models.base import Restorer
from instantrestore.pipeline import FaceRestorationPipeline, as_pipeline

DEGRADED = "degraded"
DEFAULT_MODELS = (DEGRADED, "bicubic", "gfpgan", "default")
# FRLL photo names end in the view number; views.csv: 03/08 front, 02/04/07/09 three-quarter, rest profile.
_FRLL_NAME = re.compile(r"_(\d\d)$")
FRLL_TARGET_VIEW = "03"
FRLL_REFERENCE_VIEWS = ("08", "02", "04", "07", "09", "01", "05", "06", "10")
# Which way each metric is better, for the paired comparisons.
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "lpips": False, "lmd": False, "niqe": False}
GRID_THUMB = 160


# --------------------------------------------------------------------------------------------- the cases
def _frll_view(name: str) -> str | None:
    match = _FRLL_NAME.search(name)
    return match.group(1) if match else None


def choose_target(photos: Sequence[str]) -> str:
    """The held-out photo: FRLL view 03 (frontal, neutral) if present, else the first name in sorted order."""
    names = sorted(photos)
    frontal = [name for name in names if _frll_view(name) == FRLL_TARGET_VIEW]
    return frontal[0] if frontal else names[0]


def order_references(photos: Sequence[str], target: str) -> list[str]:
    """The person's other photos, best references first: FRLL frontal, three-quarter, profile; else by name."""
    others = sorted(name for name in photos if name != target)

    def pose_rank(name: str) -> int:
        view = _frll_view(name)
        return FRLL_REFERENCE_VIEWS.index(view) if view in FRLL_REFERENCE_VIEWS else len(FRLL_REFERENCE_VIEWS)

    return sorted(others, key=pose_rank)  # stable: names in order within a rank


@dataclass(frozen=True)
class Case:
    """One person of the benchmark: the held-out target and the ordered reference photos."""

    person: str
    target: str
    references: tuple[str, ...]


def benchmark_cases(index: DataIndex, split: str, max_refs: int, max_people: int | None = None,
                    people: str | None = None) -> tuple[list[Case], list[str]]:
    """(cases, people left out for having fewer than `max_refs` other photos), people in sorted order.
    `people`: a glob on person names (e.g. "celeba_*" in a merged set); None takes everyone."""
    cases, left_out = [], []
    for person in index.people(split):
        if people is not None and not fnmatch.fnmatchcase(person, people):
            continue
        photos = index.photos(person)
        target = choose_target(photos)
        references = order_references(photos, target)
        if len(references) < max_refs:
            left_out.append(person)
            continue
        cases.append(Case(person, target, tuple(references)))
        if max_people is not None and len(cases) >= max_people:
            break
    return cases, left_out


def degradation_seed(seed: int, person: str, preset: str) -> np.random.Generator:
    """The same input bytes for every method and every run, independent of which people or presets run."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(person.encode()), zlib.crc32(preset.encode())]))


# --------------------------------------------------------------------------------------------- scoring
FACERES_COLUMN = "identity_faceres"
ARCFACE_COLUMN = "identity_arcface"


def identity_nets(identity_model_path: str | None = None) -> dict[str, IdentityModel | None]:
    """The identity columns and their nets (see `FaceScorer`): None where a net's weights are not fetched."""
    nets: dict[str, IdentityModel | None] = {"identity": load_identity_model("dlib")}
    nets[FACERES_COLUMN] = load_identity_model("faceres") if faceres_available() or identity_model_path == "faceres" else None
    wants_mobilefacenet = mobilefacenet_available() or identity_model_path == "mobilefacenet"
    nets[ARCFACE_COLUMN] = load_identity_model("mobilefacenet") if wants_mobilefacenet else None
    if identity_model_path not in (None, "dlib", "faceres", "mobilefacenet"):
        model = load_identity_model(identity_model_path)
        nets[identity_column(model)] = model
    return nets


class FaceScorer:
    """Every per-face metric of the benchmark, with the models they need loaded once.

    Identity is scored by three unrelated nets: dlib (`identity`, the contract's default), faceres
    (`identity_faceres`) and an ArcFace-trained net (`identity_arcface`: MobileFaceNet, or the ArcFace ONNX
    file `identity_model_path` names); the last two are None when their weights are not fetched, never a number
    from random weights. Another net `identity_model_path` names (of IDENTITY_BACKENDS) gets its own column.
    """

    def __init__(self, identity_model_path: str | None = None, device: str = "cpu") -> None:
        self.identity_models = identity_nets(identity_model_path)
        self._target_embeddings: dict[tuple[str, bytes], np.ndarray] = {}
        predictor = LandmarkPredictor()
        # Crops are aligned: dlib's predictor runs in the fixed box where the face sits (faces/identity.py).
        self.landmarks_68 = lambda crop: predictor(crop, ALIGNED_FACE_BOX * LMD_SIZE)
        self.lpips = lpips_metric(device)

    @property
    def metric_names(self) -> list[str]:
        return ["psnr", "ssim", "ms_ssim", *self.identity_models, "lmd", "lpips", "sharpness", "niqe"]

    @property
    def measured_names(self) -> list[str]:
        """The metric names less identity columns without a net: cached cells are reused only while
        the same nets score them, so fetching faceres later fills its column on the next run."""
        return [name for name in self.metric_names if self.identity_models.get(name, True) is not None]

    def identity(self, column: str, restored: np.ndarray, target: np.ndarray) -> float:
        """Cosine similarity of unit descriptors, as `identity_similarity`; each ground truth is embedded once
        per net, not once per cell (every method and k is scored against the same targets)."""
        model = self.identity_models[column]
        key = (column, hashlib.sha1(np.ascontiguousarray(target)).digest())
        if key not in self._target_embeddings:
            self._target_embeddings[key] = model.embed([target])[0]
        return float(np.dot(model.embed([restored])[0].astype(np.float64), self._target_embeddings[key]))

    def score(self, restored: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
        scores: dict[str, float | None] = {"psnr": psnr(restored, target), "ssim": ssim(restored, target)}
        try:
            scores["ms_ssim"] = ms_ssim(restored, target)
        except ValueError:  # crops too small for five scales
            scores["ms_ssim"] = None
        for column, model in self.identity_models.items():
            scores[column] = self.identity(column, restored, target) if model is not None else None
        scores["lmd"] = landmark_distance(restored, target, self.landmarks_68)
        scores["lpips"] = self.lpips(restored, target) if self.lpips is not None else None
        scores["sharpness"] = sharpness(restored, target)
        scores["niqe"] = niqe_at_face_size(restored)
        return scores


# --------------------------------------------------------------------------------------------- running
def _label(model: str | Restorer | FaceRestorationPipeline, key: str | None = None) -> str:
    if key is not None:
        return key
    if isinstance(model, (Restorer, FaceRestorationPipeline)):
        return model.name
    return Path(model).name if os.sep in str(model) else str(model)


def _labelled(model: str | Restorer | FaceRestorationPipeline) -> tuple[str, str | Restorer | FaceRestorationPipeline]:
    """`LABEL=PATH` names a model directory in the tables (two trained models are often both `final/`)."""
    if isinstance(model, str) and "=" in model:
        label, path = model.split("=", 1)
        return label, path
    return _label(model), model


def _cell_path(out: Path, method: str, preset: str, num_refs: int) -> Path:
    return out / "cells" / preset / f"{method}_r{num_refs}.json"


def _face_path(out: Path, preset: str, person: str, name: str) -> Path:
    return out / "faces" / preset / person / f"{name}.png"


def _run_cell(method: str, restorer: FaceRestorationPipeline | None, preset: str, num_refs: int, cases: list[Case],
              index: DataIndex, inputs: dict, scorer: FaceScorer, out: Path, seed: int, bar: tqdm) -> dict[str, Any]:
    """Restore and score every case for one (method, preset, num_refs); returns the cell record."""
    meter = ResourceMeter()
    encode_seconds = 0.0
    faces = []
    for case in cases:
        target, degraded = inputs[(case.person, preset)]
        if restorer is None:
            restored = degraded
        else:
            refs = None
            if num_refs > 0:
                references = [read_image(index.image_path(case.person, name)) for name in case.references[:num_refs]]
                encoder = ResourceMeter()
                with encoder.measure():
                    refs = restorer.encode_references(references, num_refs=num_refs)
                encode_seconds += encoder.seconds
                meter.peak_rss_mb = max(meter.peak_rss_mb, encoder.peak_rss_mb)
            with meter.measure():  # one face at a time: seconds per face as a user restoring one photo sees it
                restored = restorer.restore_faces([degraded], refs=refs, seed=seed)[0]
        write_image(_face_path(out, preset, case.person, f"{method}_r{num_refs}"), restored, overwrite=True)
        faces.append({"person": case.person, "target": case.target, "references": list(case.references[:num_refs]),
                      **scorer.score(restored, target)})
        bar.update(1)
    n = len(cases)
    timed = restorer is not None
    return {"method": method, "preset": preset, "num_refs": num_refs, "faces": faces,
            "identity_loss_model": restorer.identity_loss_model if restorer is not None else None,
            "sec_per_face": meter.seconds / n if timed else 0.0,
            "sec_encode_refs_per_face": encode_seconds / n if timed and num_refs > 0 else None,
            "peak_rss_mb": round(meter.peak_rss_mb, 1) if timed else None}


def _summarise(cell: dict[str, Any], metric_names: list[str], seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {"method": cell["method"], "num_refs": cell["num_refs"], "preset": cell["preset"],
                           "n": len(cell["faces"])}
    for metric in metric_names:
        values = [face.get(metric) for face in cell["faces"] if face.get(metric) is not None]
        row[metric] = float(np.mean(values)) if values else None
        row[f"{metric}_ci95"] = bootstrap_ci95(values, seed=seed) if values else None
    for key in ("sec_per_face", "sec_encode_refs_per_face", "peak_rss_mb"):
        row[key] = cell[key]
    return row


def _paired_rows(cells: dict[tuple[str, str, int], dict], reference_methods: list[str], presets: list[str],
                 num_refs: list[int], metric_names: list[str], seed: int) -> list[dict[str, Any]]:
    """Do references help? Each reference-using method with k references against itself blind, face by face."""
    rows = []
    for method in reference_methods:
        for preset in presets:
            blind = cells.get((method, preset, 0))
            for k in (k for k in num_refs if k > 0):
                guided = cells.get((method, preset, k))
                if blind is None or guided is None:
                    continue
                for metric, comparison in _compare_faces(guided, blind, metric_names, seed):
                    rows.append({"method": method, "preset": preset, "metric": metric, "a_num_refs": k,
                                 "b_num_refs": 0, **comparison})
    return rows


def _versus_rows(cells: dict[tuple[str, str, int], dict], reference_methods: list[str], presets: list[str],
                 num_refs: list[int], metric_names: list[str], seed: int) -> list[dict[str, Any]]:
    """Each reference-using method with its most references against each reference-free restorer (not the
    degraded input itself), face by face: e.g. InstantRestore with 4 references vs GFP-GAN."""
    rows = []
    k = max(num_refs)
    baselines = sorted({m for m, _, _ in cells if m not in reference_methods and m != DEGRADED})
    for method in reference_methods:
        for baseline in baselines:
            for preset in presets:
                guided, other = cells.get((method, preset, k)), cells.get((baseline, preset, 0))
                if guided is None or other is None:
                    continue
                for metric, comparison in _compare_faces(guided, other, metric_names, seed):
                    rows.append({"method": method, "num_refs": k, "baseline": baseline, "preset": preset,
                                 "metric": metric, **comparison})
    return rows


def _compare_faces(cell_a: dict, cell_b: dict, metric_names: list[str], seed: int) -> list[tuple[str, dict]]:
    """(metric, paired difference a - b as a dict) for each metric either cell measured, face by face."""
    comparisons = []
    for metric in metric_names:
        a = [face.get(metric) for face in cell_a["faces"]]
        b = [face.get(metric) for face in cell_b["faces"]]
        if all(v is None for v in a + b):
            continue
        higher = HIGHER_IS_BETTER.get(metric, True)  # identity columns: higher is better
        comparisons.append((metric, paired_difference(a, b, higher_is_better=higher, seed=seed).as_dict()))
    return comparisons


def run_benchmark(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  models: dict[str, str | Restorer | FaceRestorationPipeline]
                  | Sequence[str | Restorer | FaceRestorationPipeline] | None = None,
                  presets: Sequence[str] = ("sr8",), num_refs: Sequence[int] = (0, 4), split: str = "val",
                  max_people: int | None = None, seed: int = 0, progress: bool = True, device: str = "auto",
                  identity_model_path: str | None = None, people: str | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark; writes OUT/results.json, results.md, grid.png, faces/ and cells/.

    `models`: restorers by label (a dict), or a list of names/paths for `instantrestore.load_restorer`
    and restorer objects; "degraded" stands for the input itself. Returns the results.json content.
    """
    out = Path(out_dir)
    index = load_index(data_dir)
    presets = [get_preset(p).name for p in presets]
    num_refs = sorted(set(int(k) for k in num_refs))
    if any(k < 0 for k in num_refs):
        raise ConfigError(f"num_refs must be >= 0, got {num_refs}")
    if models is None:
        models = list(DEFAULT_MODELS)
    methods = dict(models) if isinstance(models, dict) else dict(_labelled(m) for m in models)

    cases, left_out = benchmark_cases(index, split, max(num_refs), max_people, people)
    if not cases:
        chosen = f" matching {people!r}" if people is not None else ""
        raise ConfigError(f"{data_dir}: no person{chosen} in split {split!r} has a target and {max(num_refs)} "
                          f"other photos")
    scorer = FaceScorer(identity_model_path, device="cpu")
    fingerprint = {"data": str(Path(data_dir).resolve()), "split": split, "seed": seed,
                   "cases": [[c.person, c.target, list(c.references)] for c in cases],
                   "metrics": scorer.measured_names}

    # Inputs: ground truth and its degraded copies, the same for every method.
    inputs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for case in cases:
        target = read_image(index.image_path(case.person, case.target))
        for preset in presets:
            write_image(_face_path(out, preset, case.person, "ground_truth"), target, overwrite=True)
            degraded = degrade(target, preset, degradation_seed(seed, case.person, preset))
            inputs[(case.person, preset)] = (target, degraded)
            write_image(_face_path(out, preset, case.person, "input"), degraded, overwrite=True)

    cells: dict[tuple[str, str, int], dict] = {}
    reference_methods: list[str] = []
    # The total grows method by method: which models take references is known once they load.
    bar = tqdm(total=0, desc="benchmark", unit="face", disable=not progress)
    for method, model in methods.items():
        restorer = as_pipeline(model) if isinstance(model, (Restorer, FaceRestorationPipeline)) else None
        uses_references = _uses_references(method, restorer, out, presets[0], fingerprint)
        if uses_references is None:  # a named model with nothing cached: load it to find out
            restorer = _load(model, device)
            uses_references = restorer.uses_references
        if uses_references:
            reference_methods.append(method)
        plan = [(preset, k) for preset in presets for k in (num_refs if uses_references else [0])]
        missing = [(p, k) for p, k in plan if _cached_cell(_cell_path(out, method, p, k), fingerprint) is None]
        bar.total += len(cases) * len(missing)
        bar.refresh()
        if missing and restorer is None and method != DEGRADED:
            restorer = _load(model, device)
        for preset, k in plan:
            path = _cell_path(out, method, preset, k)
            cell = _cached_cell(path, fingerprint)
            if cell is None:
                bar.set_postfix_str(f"{method} {preset} refs={k}")
                cell = _run_cell(method, restorer, preset, k, cases, index, inputs, scorer, out, seed, bar)
                write_bytes(path, json.dumps({"fingerprint": fingerprint, "uses_references": uses_references,
                                              **cell}, indent=1).encode())
            cells[(method, preset, k)] = cell
        del restorer  # a loaded model is freed before the next one loads, so peak memory is per method
        gc.collect()
    bar.close()

    metric_names = scorer.metric_names
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": str(data_dir),
        "split": split,
        "seed": seed,
        "presets": presets,
        "num_refs": num_refs,
        "people": [case.person for case in cases],
        "left_out": left_out,
        "selection": "target: FRLL view 03 if present, else first photo by name; references: the other photos, "
                     "FRLL views 08, 02, 04, 07, 09, then profiles, else by name; the first k are used",
        "identity_models": {column: model.name if model is not None else None
                            for column, model in scorer.identity_models.items()},
        # which identity net trained each method (its loss), so no one reads a training target as a measurement
        "identity_loss_models": {method: cell.get("identity_loss_model") for (method, _, _), cell in cells.items()},
        "rows": [_summarise(cells[key], metric_names, seed) for key in cells],
        "paired": _paired_rows(cells, reference_methods, presets, num_refs, metric_names, seed),
        "versus": _versus_rows(cells, reference_methods, presets, num_refs, metric_names, seed),
    }
    write_bytes(out / "results.json", json.dumps(results, indent=1, allow_nan=False).encode())
    write_bytes(out / "results.md", results_markdown(results, index).encode())
    for number, preset in enumerate(presets):
        grid = make_grid(out, preset, cases, [key for key in cells if key[1] == preset], max(num_refs), index)
        name = "grid.png" if number == 0 else f"grid_{preset}.png"
        write_image(out / name, grid, overwrite=True)
    return results


def _load(name: str, device: str) -> FaceRestorationPipeline:
    """A model by name or path, with options after colons: `:detail=S` its detail strength (`default:detail=0`:
    the restorer alone), `:gates=0` the detail stage without its confidence gates (the untrained transfer),
    `:fusion=DIR` the stage's fusion net from a `save_pretrained` folder (`:fusion=none`: the rule-based one)."""
    import instantrestore
    from instantrestore.models.detail_fusion import DetailFusionNet
    from instantrestore.reference_detail import DetailSettings, ReferenceDetailStage

    name, *options = name.split(":")
    try:
        settings = dict(option.split("=", 1) for option in options)
        detail_strength = float(settings.pop("detail", 1.0))
        gates = settings.pop("gates", "1") != "0"
        fusion = settings.pop("fusion", None)
    except ValueError:
        raise ConfigError(f"{name}:{':'.join(options)}: expected options detail=S (0 to 1), gates=0|1 and "
                          "fusion=DIR|none") from None
    if settings:
        raise ConfigError(f"{name}: unknown model options {sorted(settings)} (detail, gates, fusion)")
    pipeline = instantrestore.load_restorer(name, device=device, detail_strength=detail_strength)
    if not gates or fusion is not None:
        net = None if fusion in (None, "none") else DetailFusionNet.from_pretrained(fusion)
        pipeline.detail_stage = ReferenceDetailStage(DetailSettings(gates=gates), fusion=net)
    return pipeline


def _uses_references(method: str, restorer: FaceRestorationPipeline | None, out: Path, preset: str,
                     fingerprint: dict) -> bool | None:
    """Whether a method takes references: from the object, from its cached blind cell, or None (unknown)."""
    if method == DEGRADED:
        return False
    if restorer is not None:
        return restorer.uses_references
    cell = _cached_cell(_cell_path(out, method, preset, 0), fingerprint)
    return None if cell is None else bool(cell["uses_references"])


def _cached_cell(path: Path, fingerprint: dict) -> dict | None:
    """A finished cell from an earlier run with the same data, cases, seed and metrics, else None."""
    if not path.is_file():
        return None
    try:
        cell = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return cell if cell.get("fingerprint") == fingerprint else None


# --------------------------------------------------------------------------------------------- reporting
def _fmt(value: float | None, ci: float | None, digits: int) -> str:
    if value is None:
        return "–"
    if ci is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {ci:.{digits}f}"


def _comparison_section(title: str, explanation: str, columns: list[tuple[str, str]],
                        rows: list[dict[str, Any]]) -> list[str]:
    """A results.md table of paired comparisons: the identifying columns, then mean difference and share better."""
    if not rows:
        return []
    lines = [f"## {title}", "", explanation, "",
             "| " + " | ".join(header for header, _ in columns) + " | Mean difference | Better |",
             "|" + "---|" * len(columns) + "---:|---:|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row[key]) for _, key in columns)
                     + f" | {_fmt(row['mean_diff'], row['ci95'], 4)} | {row['a_better']:.0%} |")
    return lines + [""]


def results_markdown(results: dict[str, Any], index: DataIndex | None = None) -> str:
    """results.md: the paper-style table per preset and the paired "do references help" rows."""
    identity_columns = [key for key in results["rows"][0] if key.startswith("identity") and not key.endswith("_ci95")]
    columns = [("psnr", "PSNR↑", 2), ("ssim", "SSIM↑", 3), ("ms_ssim", "MS-SSIM↑", 3), ("lpips", "LPIPS↓", 3),
               *[(c, "ID (dlib)↑" if c == "identity" else f"ID ({c[9:]})↑", 3) for c in identity_columns], ("lmd", "LMD↓", 2),
               ("sharpness", "Sharpness", 2), ("niqe", "NIQE↓", 2)]
    lines = [f"# Benchmark ({results['created']})", "",
             f"Data: `{results['data']}`, split `{results['split']}`, {len(results['people'])} people, "
             f"one held-out photo each; seed {results['seed']}.",
             f"Selection: {results['selection']}.",
             "Values: mean over faces ± half-width of the 95% bootstrap interval. ID: cosine similarity of "
             "restored and ground-truth descriptors under the named net (dlib, faceres and the ArcFace-trained "
             "net are unrelated: independent opinions). LMD: mean distance of 68 landmarks, "
             "pixels at 512. Sharpness: mean absolute Laplacian over the ground truth's (1: as much fine detail; "
             "noise counts as detail, so read it beside PSNR). NIQE: no-reference naturalness of the restored face "
             "alone, at 512 px (lower is better; it does not look at the ground truth). "
             "Time: seconds per face restored (reference encoding not included); "
             "peak RSS: resident memory of the benchmark process while the method ran.", ""]
    if results["left_out"]:
        lines += [f"Left out (too few other photos): {', '.join(results['left_out'])}.", ""]
    if any(get_preset(preset).sr_factor for preset in results["presets"]):
        lines += ["The `sr*` inputs are already resized back to full size (bicubic), so `bicubic` differs from "
                  "`degraded` only by the resize to and from its face size.", ""]
    identity_models = results.get("identity_models", {})
    if FACERES_COLUMN in identity_models and identity_models[FACERES_COLUMN] is None:
        lines += [f"ID (faceres): not computed (its weights are not on this machine; `{FACERES_FETCH_COMMAND}` "
                  "fetches them). The second identity net is left out, never replaced by random weights.", ""]
    if ARCFACE_COLUMN in identity_models:
        if identity_models[ARCFACE_COLUMN] is None:
            lines += [f"ID (arcface): not computed (MobileFaceNet's weights are not on this machine; "
                      f"`{MOBILEFACENET_FETCH_COMMAND}` fetches them).", ""]
        else:
            lines += [f"ID (arcface): cosine under `{identity_models[ARCFACE_COLUMN]}`, a net trained with the ArcFace "
                      "loss, the kind of identity net the papers score with.", ""]
    trained_on = {method: net for method, net in results.get("identity_loss_models", {}).items() if net}
    if trained_on:
        listed = ", ".join(f"{method}: {net}" for method, net in trained_on.items())
        lines += [f"Identity nets used as a training loss ({listed}): a method's score under the same net (or a "
                  "port of it: dlib-torch is dlib's) partly measures its own training target; the other column is "
                  "the independent one.", ""]
    else:
        lines += ["No method here was trained with an identity loss (as recorded in its config), so every ID "
                  "column is an independent measurement.", ""]
    if any(row["lpips"] is None for row in results["rows"]):
        lines += ["LPIPS: not computed (the `lpips` package or its AlexNet weights are not on this machine).", ""]
    for preset in results["presets"]:
        lines += [f"## Preset `{preset}`", "",
                  "| Method | Refs | " + " | ".join(c[1] for c in columns) + " | Time (s) | Peak RSS (MB) |",
                  "|---|---:|" + "---:|" * len(columns) + "---:|---:|"]
        for row in (r for r in results["rows"] if r["preset"] == preset):
            cells = [_fmt(row[key], row[f"{key}_ci95"], digits) for key, _, digits in columns]
            rss = "–" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
            lines.append(f"| {row['method']} | {row['num_refs']} | " + " | ".join(cells)
                         + f" | {row['sec_per_face']:.3f} | {rss} |")
        lines.append("")
    lines += _comparison_section(
        "Do references help?", "Per-face difference (k references − blind) of the same method on the same faces; "
        "'better' is the share of faces that improved.",
        [("Method", "method"), ("Preset", "preset"), ("k", "a_num_refs"), ("Metric", "metric")], results["paired"])
    lines += _comparison_section(
        "Against the reference-free methods", "Per-face difference (method with its most references − baseline) "
        "on the same faces; 'better' is the share of faces where the method was better.",
        [("Method", "method"), ("k", "num_refs"), ("Baseline", "baseline"), ("Preset", "preset"), ("Metric", "metric")],
        results.get("versus", []))
    source = ""
    if index is not None:
        manifest = json.loads((index.root / "manifest.json").read_text())
        source = str(manifest.get("source", ""))
    if "frll" in (source + results["data"]).lower():
        lines += ["Faces: Face Research Lab London Set, CC BY 4.0 — DeBruine, L. & Jones, B. (2017), "
                  "figshare, doi:10.6084/m9.figshare.5047666.v5.", ""]
    return "\n".join(lines)


def make_grid(out: Path, preset: str, cases: list[Case], cell_keys: list[tuple[str, str, int]],
              max_refs: int, index: DataIndex, max_rows: int = 8) -> np.ndarray:
    """Rows: people; columns: input, each method (and k), ground truth, the references (tiled)."""
    restored_keys = [key for key in cell_keys if key[0] != DEGRADED]
    headers = [f"input ({preset})"] + [f"{m}" + (f" k={k}" if k else "") for m, _, k in restored_keys]
    headers += ["ground truth", f"references ({max_refs})" if max_refs else "references"]
    header_height = 20
    rows = cases[:max_rows]
    grid = Image.new("RGB", (GRID_THUMB * len(headers), header_height + GRID_THUMB * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for column, header in enumerate(headers):
        draw.text((column * GRID_THUMB + 4, 4), header, fill="black")

    def thumb(image: np.ndarray, side: int = GRID_THUMB) -> Image.Image:
        return Image.fromarray(image).resize((side, side), Image.BICUBIC)

    for row, case in enumerate(rows):
        top = header_height + row * GRID_THUMB
        names = ["input"] + [f"{m}_r{k}" for m, _, k in restored_keys]
        images = [read_image(_face_path(out, preset, case.person, name)) for name in names]
        images.append(read_image(index.image_path(case.person, case.target)))
        for column, image in enumerate(images):
            grid.paste(thumb(image), (column * GRID_THUMB, top))
        references = case.references[:max_refs]
        if references:  # tiled in one cell: 2x2 for four references
            per_side = math.ceil(math.sqrt(len(references)))
            side = GRID_THUMB // per_side
            for number, name in enumerate(references):
                x = len(images) * GRID_THUMB + (number % per_side) * side
                y = top + (number // per_side) * side
                grid.paste(thumb(read_image(index.image_path(case.person, name)), side), (x, y))
    return np.asarray(grid)
