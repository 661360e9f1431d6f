"""`make demo`: the main job end to end, offline, on photos that ship with the package or an installed one.

1. The mission: a damaged photo of one person (FRLL 033, CC BY 4.0, in `assets/`) restored blind and with four
   other photos of them as references, side by side with the original.
2. A group photo (insightface's sample) restored blind: several faces found, restored and pasted back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from instantrestore.errors import WeightsError
from instantrestore.imageio import read_image, write_image

DEMO_PERSON = Path(__file__).parent / "assets" / "frll_033"
DEMO_PHOTO = "033_03.jpg"
DEMO_REFERENCES = ("033_08.jpg", "033_02.jpg", "033_04.jpg", "033_07.jpg")
DEMO_DAMAGE = "codeformer"  # blur, downsampling, noise and JPEG, from a fixed seed


def demo_photo() -> Path:
    """insightface ships a group photo (t1.jpg) with its package: real faces, no download."""
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: insightface's sample photo is missing; reinstall insightface")
    return path


def _face_box(result, image: np.ndarray, margin: float = 0.35) -> tuple[slice, slice]:
    """The first face's box, widened by `margin`, as slices of the photo."""
    x0, y0, x1, y1 = result.faces[0].box
    pad_x, pad_y = margin * (x1 - x0), margin * (y1 - y0)
    height, width = image.shape[:2]
    return (slice(max(0, int(y0 - pad_y)), min(height, int(y1 + pad_y))),
            slice(max(0, int(x0 - pad_x)), min(width, int(x1 + pad_x))))


def run_demo(out: Path, device: str = "auto") -> Path:
    from instantrestore.api import load_restorer
    from instantrestore.degradations import degrade

    try:
        restorer, model = load_restorer("default", device=device), "default"
    except WeightsError as err:
        print(f"note: {err}\nnote: showing the classical bicubic baseline instead", file=sys.stderr)
        restorer, model = load_restorer("bicubic", device=device), "bicubic"
    out.mkdir(parents=True, exist_ok=True)

    original = read_image(DEMO_PERSON / DEMO_PHOTO)
    old_photo = degrade(original, DEMO_DAMAGE, seed=0)
    references = restorer.encode_references([read_image(DEMO_PERSON / name) for name in DEMO_REFERENCES])
    blind = restorer.restore(old_photo)
    with_references = restorer.restore(old_photo, refs=references)
    rows = [np.concatenate([old_photo, blind.image, with_references.image, original], axis=1)]
    face = _face_box(with_references, original)
    rows.append(np.concatenate([image[face] for image in (old_photo, blind.image, with_references.image, original)],
                               axis=1))
    write_image(out / "old_photo.png", old_photo, overwrite=True)
    write_image(out / "restored_blind.png", blind.image, overwrite=True)
    write_image(out / "restored_with_references.png", with_references.image, overwrite=True)
    person = write_image(out / "with_references.png", rows[0], overwrite=True)
    faces = write_image(out / "with_references_faces.png", rows[1], overwrite=True)
    used = with_references.faces[0].reference_weights
    print(f"demo 1: FRLL person 033 (CC BY 4.0) damaged ({DEMO_DAMAGE}), restored with model '{model}' blind and "
          f"with {len(references)} other photos of them (their weights in the face: {used})")
    print(f"old photo | blind | with references | original: {person.resolve()}")
    print(f"the face, larger:                                {faces.resolve()}")

    group = read_image(demo_photo())
    degraded = degrade(group, "sr4", seed=0)
    result = restorer.restore(degraded)
    write_image(out / "degraded.png", degraded, overwrite=True)
    write_image(out / "restored.png", result.image, overwrite=True)
    path = write_image(out / "before_after.png", np.concatenate([degraded, result.image], axis=1), overwrite=True)
    print(f"demo 2: a group photo, {len(result.faces)} faces restored blind")
    print(f"before/after: {path.resolve()}")
    return person
