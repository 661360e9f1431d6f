"""`instantrestore app`: restore a family photo in the browser (a gradio `Blocks` page).

Each press of Restore runs the restore job of `instantrestore restore` itself (`job.encode_reference_files`,
`job.restore_photo`) into a fresh folder, so the page shows and offers for download exactly the files the
command line writes, and a bad input gets the command line's one-line message.

The page loads only the models its owner offered: the packaged ones and those named at start (`--model`); with
`--share` anyone on the internet can press Restore, so a typed path is refused, uploads are capped in size and
references in number.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gradio as gr
import numpy as np

from instantrestore.api import load_restorer, packaged_model_available
from instantrestore.errors import InstantRestoreError
from instantrestore.imageio import read_image, write_bytes
from instantrestore.job import PhotoTask, RestoreSettings, encode_reference_files, new_report, restore_photo
from instantrestore.pipeline import FaceRestorationPipeline
from instantrestore.models.registry import REGISTERED_WEIGHTS, weights_dir
from instantrestore.models.upsampler import REALESRGAN
from instantrestore.references import ReferenceCache

# No telemetry and no version check (gradio reads this when it would send them): the page works offline.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

MAX_REFERENCES = 8
MAX_UPLOAD = "50mb"  # per file; gradio refuses larger uploads before they reach the handler
PHOTO_KINDS = ["auto-detect", "whole photo", "aligned face crop"]
CACHE_SUFFIX = ".safetensors"


def model_choices(offered: list[str] | None = None) -> list[str]:
    """The models the page offers: those named at start (`--model`, first), then those this installation can
    load without a download."""
    names = [name for name in ("default", "gfpgan") if packaged_model_available(name)] + ["bicubic"]
    names += [weights.name for weights in REGISTERED_WEIGHTS.values()
              if weights.name not in REALESRGAN and (weights_dir() / weights.filename).is_file()]  # those upscale photos
    first = list(dict.fromkeys(offered or []))
    return first + [name for name in names if name not in first]


@dataclass
class SessionReferences:
    """One browser session's encoded references: the next photo of the same person skips encoding."""

    key: tuple                  # (model id, number of references, digests of the reference files)
    cache: ReferenceCache | None
    report: dict                # the report.json "references" section
    messages: list[str]
    cache_file: Path | None     # this restore's copy of the cache, for download


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_line(message: str, uploads: list[Path]) -> str:
    """The command line's message, naming each upload by its own name rather than gradio's temp folder."""
    for upload in uploads:
        message = message.replace(f"{upload.parent}{os.sep}", "")
    return message


class RestoreApp:
    """The page's state across sessions: the models it offers (`model_choices(models)`), those loaded, and a
    work folder, removed on `close`."""

    def __init__(self, models: list[str] | None = None, device: str = "auto", workdir: str | None = None) -> None:
        self.models = model_choices(models)
        self.device = device
        self._workdir = tempfile.TemporaryDirectory(prefix="instantrestore-app-", dir=workdir)
        self.workdir = Path(self._workdir.name)
        self.restorer = lru_cache(maxsize=2)(self._load)  # switching back and forth between two models stays fast

    def _load(self, model: str) -> FaceRestorationPipeline:
        return load_restorer(model, device=self.device)

    def close(self) -> None:
        self._workdir.cleanup()

    def _new_output_folder(self, keep_seconds: float = 3600) -> Path:
        """A fresh folder for one restore; those of restores older than `keep_seconds` are removed (gradio
        has served copies of their files from its own cache by then)."""
        for old in self.workdir.iterdir():
            if time.time() - old.stat().st_mtime > keep_seconds:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.workdir))

    # ------------------------------------------------------------------------------------- references
    def references(self, restorer: FaceRestorationPipeline, files: list[str], num_refs: int,
                   session: SessionReferences | None, out: Path) -> SessionReferences:
        caches = [f for f in files if f.lower().endswith(CACHE_SUFFIX)]
        photos = [f for f in files if not f.lower().endswith(CACHE_SUFFIX)]
        if caches and (photos or len(caches) > 1):
            raise InstantRestoreError("give either reference photos or one saved reference cache (.safetensors), not both")
        if len(photos) > MAX_REFERENCES:
            raise InstantRestoreError(f"{len(photos)} reference photos: give at most {MAX_REFERENCES}")
        if not files or num_refs == 0:
            return SessionReferences((), None, {"files": [], "used": 0, "notes": []}, [], None)
        if caches:
            path = Path(caches[0])
            cache = ReferenceCache.load(path)
            return SessionReferences((), cache, {"files": [path.name], "used": len(cache), "notes": cache.notes},
                                     [f"references: {len(cache)} faces from the saved cache {path.name}"], None)

        key = (restorer.model_id, num_refs, tuple(_digest(f) for f in photos))
        if session is not None and session.key == key:
            reused = f"references: this session's encoding of {session.report['used']} faces reused (not encoded again)"
            cache_file = session.cache.save(out / "references.safetensors") if session.cache is not None else None
            return SessionReferences(key, session.cache, session.report, [reused] + session.messages, cache_file)
        cache, report, messages = encode_reference_files(restorer, [Path(f) for f in photos], num_refs)
        report["files"] = [Path(f).name for f in photos]
        messages = [_one_line(message, [Path(f) for f in photos]) for message in messages]
        cache_file = cache.save(out / "references.safetensors") if cache is not None else None
        return SessionReferences(key, cache, report, messages, cache_file)

    # ---------------------------------------------------------------------------------------- restore
    def restore(self, photo: str | None, kind: str, ref_files: list[str] | None, model: str, num_refs: float,
                detail_strength: float, only_center_face: bool, upscale: float, seed: float,
                session: SessionReferences | None,
                progress: gr.Progress = gr.Progress()):
        """Restore Button: (status, before/after, faces, references used, downloads, session)."""
        empty = (None, [], [], None)
        if not photo:
            return ("error: upload a photo to restore first", *empty, session)
        path = Path(photo)
        if model not in self.models:  # the dropdown offers no other; a request made by hand may name anything
            return (f"error: model {model!r} is not offered by this page (choose one of {', '.join(self.models)})",
                    *empty, session)
        out = self._new_output_folder()
        try:
            progress(0.05, desc=f"loading model {model}")
            restorer = self.restorer(model)
            progress(0.2, desc="encoding references")
            refs = self.references(restorer, list(ref_files or []), int(num_refs), session, out)
            session = refs if refs.key else session
            progress(0.5, desc="restoring")
            settings = RestoreSettings(model=model, num_refs=int(num_refs), detail_strength=float(detail_strength),
                                       seed=int(seed), upscale=int(upscale),
                                       only_center_face=only_center_face,
                                       aligned=self._is_aligned(restorer, path, kind))
            entry = restore_photo(restorer, PhotoTask(0, path, path.stem), refs.cache, settings, out)
        except InstantRestoreError as err:
            return (f"error: {_one_line(str(err), [path, *map(Path, ref_files or [])])}", *empty, session)

        status = _one_line(entry["status"], [path])
        messages = refs.messages + [f"warning: {path.name}: {w}" for w in entry["warnings"]]
        if status != "ok":
            return ("\n".join([f"error: {status}", *messages]), *empty, session)

        progress(0.9, desc="preparing the downloads")
        outputs = [Path(p) for p in entry["outputs"]]
        report = new_report(settings)
        report["references"] = refs.report
        report["inputs"].append({**entry, "input": path.name, "outputs": [str(p.relative_to(out)) for p in outputs]})
        report_file = write_bytes(out / "report.json", json.dumps(report, indent=2).encode())

        threshold = restorer.identity_model.same_person_threshold
        crops, restored, whole = outputs[0:-1:2], outputs[1:-1:2], outputs[-1]
        faces = [(np.concatenate([read_image(crop), read_image(face)], axis=1), _face_caption(k, score, threshold))
                 for k, (crop, face, score) in enumerate(zip(crops, restored, entry["identity"]))]
        before = read_image(crops[0]) if settings.aligned else read_image(path)
        used = [] if refs.cache is None else [(face, f"reference face {k + 1}") for k, face in enumerate(refs.cache.faces)]
        downloads = [str(whole), *map(str, restored), str(report_file)]
        if refs.cache_file is not None:
            downloads.append(str(refs.cache_file))
        summary = f"restored {path.name}: {entry['faces']} face(s) with model '{model}' in {entry['seconds']:.1f} s"
        return ("\n".join([summary, *messages]), (before, str(whole)), faces, used, downloads, session)

    @staticmethod
    def _is_aligned(restorer: FaceRestorationPipeline, path: Path, kind: str) -> bool:
        if kind != "auto-detect":
            return kind == "aligned face crop"
        image = read_image(path)
        if image.shape[0] != image.shape[1]:  # aligned crops are square: skip the detector for other photos
            return False
        return restorer.analyzer.is_aligned_crop(image, restorer.analyzer.find_faces(image))

    # ------------------------------------------------------------------------------------------- page
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="InstantRestore", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
            gr.Markdown("# InstantRestore\nRestore the faces of an old or blurred photo, guided by good photos "
                        "of the same person.")
            session = gr.State(None)
            with gr.Row():
                with gr.Column(scale=2):
                    photo = gr.File(label="Photo to restore", type="filepath", elem_id="photo")
                    kind = gr.Radio(PHOTO_KINDS, value=PHOTO_KINDS[0], label="The photo is", elem_id="kind")
                    refs = gr.File(label=f"Reference photos of the same person (0 to {MAX_REFERENCES}), "
                                         f"or a saved reference cache ({CACHE_SUFFIX})",
                                   file_count="multiple", type="filepath", elem_id="refs")
                    with gr.Accordion("Options", open=False):
                        model = gr.Dropdown(self.models, value=self.models[0], elem_id="model", label="Model")
                        num_refs = gr.Slider(0, MAX_REFERENCES, value=4, step=1, label="References to use")
                        detail_strength = gr.Slider(0, 1, value=1, step=0.1, elem_id="detail-strength",
                                                    label="Detail from the references (0: the model's output alone)")
                        only_center_face = gr.Checkbox(label="Only the centre face")
                        upscale = gr.Slider(1, 4, value=1, step=1, label="Background upscale")
                        seed = gr.Number(value=0, precision=0, label="Seed")
                    button = gr.Button("Restore", variant="primary", elem_id="restore")
                with gr.Column(scale=3):
                    status = gr.Textbox(label="Status", lines=2, interactive=False, elem_id="status")
                    comparison = gr.ImageSlider(label="Before / after", type="filepath", format="png",
                                                elem_id="comparison")
                    faces = gr.Gallery(label="Faces: before | after, identity to the references", columns=2,
                                       height="auto", object_fit="contain", format="png", elem_id="faces")
                    used = gr.Gallery(label="Reference faces used", columns=MAX_REFERENCES, height="auto",
                                      object_fit="contain", format="png", elem_id="references-used")
                    downloads = gr.File(label="Downloads: photo, faces, report.json, reference cache",
                                        file_count="multiple", interactive=False, elem_id="downloads")
            # One restore at a time: the models use every core.
            button.click(self.restore, [photo, kind, refs, model, num_refs, detail_strength, only_center_face, upscale,
                                        seed, session],
                         [status, comparison, faces, used, downloads, session], concurrency_limit=1)
        return page


def _face_caption(k: int, identity: float | None, threshold: float) -> str:
    if identity is None:
        return f"face {k + 1}: no references, identity not scored"
    verdict = "may look like a stranger" if identity < threshold else "same person"
    return f"face {k + 1}: identity {identity:.3f} ({verdict}; threshold {threshold:.3f})"


def serve(models: list[str] | None = None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          device: str = "auto") -> None:
    """Serve the page until SIGINT or SIGTERM, then close the server and remove the work folder. `models`: those
    offered besides the packaged ones, the first selected first."""
    app = RestoreApp(models, device=device)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    page = app.build()
    try:
        page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, ssr_mode=False,
                    theme=gr.themes.Default(), quiet=True, max_file_size=MAX_UPLOAD)
        print(f"instantrestore app: http://{host}:{page.server_port} (Ctrl+C to stop)", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        page.close(verbose=False)
        app.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
