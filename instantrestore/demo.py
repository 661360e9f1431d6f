"""`make demo`: the main job end to end, offline, on a photo that ships with an installed package."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from instantrestore.errors import WeightsError
from instantrestore.imageio import read_image, write_image


def demo_photo() -> Path:
    """insightface ships a group photo (t1.jpg) with its package: real faces, no download."""
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: insightface's sample photo is missing; reinstall insightface")
    return path


def run_demo(out: Path, device: str = "auto") -> Path:
    from instantrestore.api import load_restorer
    from instantrestore.degradations import degrade

    photo = read_image(demo_photo())
    degraded = degrade(photo, "sr4", seed=0)
    try:
        restorer = load_restorer("default", device=device)
        model = "default"
    except WeightsError as err:
        print(f"note: {err}\nnote: showing the classical bicubic baseline instead", file=sys.stderr)
        restorer, model = load_restorer("bicubic", device=device), "bicubic"
    print("note: no photos of the same person ship with the package, so the demo restores blind "
          "(see README: `instantrestore restore photo.jpg --refs my_refs/ -o out`)", file=sys.stderr)
    result = restorer.restore(degraded)
    before_after = np.concatenate([degraded, result.image], axis=1)
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "degraded.png", degraded, overwrite=True)
    write_image(out / "restored.png", result.image, overwrite=True)
    path = write_image(out / "before_after.png", before_after, overwrite=True)
    print(f"demo: {len(result.faces)} faces restored with model '{model}'")
    print(f"before/after: {path.resolve()}")
    return path
