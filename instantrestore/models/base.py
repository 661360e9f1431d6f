"""The restorer interface every model implements, and the whole-photo pipeline built on it.

A subclass only restores batches of aligned crops (`restore_tensor`) and, if it uses references,
says what to remember of them (`reference_features`). Detection, alignment, reference handling,
identity scoring and paste-back are shared here, so GFP-GAN, InstantRestore and classical methods
are compared on equal terms.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
from PIL import Image

from instantrestore.errors import ConfigError, NoFaceError, WeightsError
from instantrestore.imageio import to_rgb_array
from instantrestore.references import ReferenceCache

if TYPE_CHECKING:  # upsampler.py imports this module
    from instantrestore.models.upsampler import BackgroundUpsampler

DEFAULT_TILE = 400  # background upsampler tile side in input pixels (as GFP-GAN's --bg_tile)

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike]  # a path is read with imageio.read_image


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" takes CUDA when present; a device this machine lacks is a one-line ConfigError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {str(device)!r}: not a device (auto, cpu, cuda, cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: CUDA is not available on this machine; use cpu or auto")
    return resolved


def image_to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 RGB arrays -> (B, 3, H, W) float in [0, 1]."""
    stacked = np.stack([np.asarray(image) for image in images]).astype(np.float32) / 255.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def tensor_to_image(batch: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) float in [0, 1] -> uint8 HxWx3 RGB arrays."""
    array = batch.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return list(array)


@dataclass
class RestoredFace:
    box: np.ndarray            # (4,) x0, y0, x1, y1 in the input photo
    affine: np.ndarray         # (2, 3) photo -> aligned crop
    cropped: np.ndarray        # aligned input crop, uint8
    restored: np.ndarray       # restored crop, uint8
    identity: float | None     # cosine similarity to the references (None without references)


@dataclass
class RestoreResult:
    image: np.ndarray                      # the whole photo with faces pasted back (RGB, or RGBA if the input had alpha)
    faces: list[RestoredFace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Restorer(ABC):
    """Aligned crops in, restored aligned crops out; `restore` adds the whole-photo pipeline."""

    name: str = "restorer"
    face_size: int = 512
    uses_references: bool = False
    # The identity net whose loss trained this model (its config.json's "identity_loss_model"), None if none:
    # the benchmark says so, since that net's score is then partly the training target.
    identity_loss_model: str | None = None

    def __init__(self, device: str | torch.device = "auto", identity_model_path: str | None = None,
                 detector: str = "default") -> None:
        self.device = resolve_device(device)
        self._identity_model_path = identity_model_path
        self._detector_name = detector
        self._analyzer = None
        self._identity = None
        # the background of whole photos when upscaling (`restore(upscale > 1)`): "auto" (Lanczos, the
        # measured best of what ships), "none" (Lanczos), a name or path, or a BackgroundUpsampler
        self.bg_upsampler: str | BackgroundUpsampler = "auto"
        self.bg_tile = DEFAULT_TILE
        self._loaded_upsamplers: dict[str, BackgroundUpsampler | None] = {}

    # ----------------------------------------------------------------- what a model provides
    @abstractmethod
    def restore_tensor(self, faces: torch.Tensor, refs: ReferenceCache | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] on `self.device` -> restored, same shape and range."""

    def reference_features(self, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        """What to cache of (K, 3, S, S) aligned references; nothing for reference-free models."""
        return {}

    @property
    def model_id(self) -> str:
        """Names the weights that `reference_features` depends on; caches from other models are refused."""
        return self.name

    # ----------------------------------------------------------------- shared pieces, built lazily
    @property
    def analyzer(self):
        if self._analyzer is None:
            from instantrestore.faces import FaceAnalyzer

            self._analyzer = FaceAnalyzer(detector=self._detector_name)
        return self._analyzer

    @property
    def identity_model(self):
        if self._identity is None:
            from instantrestore.faces.identity import load_identity_model

            self._identity = load_identity_model(self._identity_model_path)
        return self._identity

    # ----------------------------------------------------------------- the contract API
    def encode_references(self, images: Sequence[ImageLike] | ReferenceCache | None,
                          num_refs: int | None = None) -> ReferenceCache:
        """Align (if needed), score and encode reference photos once; reuse the cache for every photo."""
        if isinstance(images, ReferenceCache):
            return images
        images = [] if images is None else [to_rgb_array(image) for image in images]
        faces, notes = self.analyzer.reference_crops(images, self.face_size, self.identity_model)
        if num_refs is not None:
            faces = faces[:num_refs]
        if not faces:
            empty = ReferenceCache.empty(self.face_size, self.model_id)
            empty.notes = notes  # why no reference was usable
            return empty
        identity = self.identity_model.embed(faces)
        features = {}
        if self.uses_references:
            with torch.no_grad():
                features = self.reference_features(image_to_tensor(faces).to(self.device))
        return ReferenceCache(faces=np.stack(faces), identity=identity, features=features,
                              model_id=self.model_id, notes=notes)

    def _as_cache(self, refs) -> ReferenceCache | None:
        if refs is None:
            return None
        cache = self.encode_references(refs)
        if self.uses_references and len(cache) and cache.model_id != self.model_id:
            raise WeightsError(f"reference cache was made by model {cache.model_id!r}, not {self.model_id!r}; "
                               "encode the references again with this model")
        return cache if len(cache) else None

    def restore_faces(self, crops: Sequence[np.ndarray], refs=None, seed: int | None = None) -> list[np.ndarray]:
        """Restore aligned crops (any square size; resized to `face_size` and back)."""
        cache = self._as_cache(refs)
        sizes = [crop.shape[0] for crop in crops]
        inputs = [to_rgb_array(crop) for crop in crops]
        inputs = [crop if crop.shape[0] == self.face_size else
                  np.asarray(Image.fromarray(crop).resize((self.face_size,) * 2, Image.BICUBIC)) for crop in inputs]
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        with torch.no_grad():
            out = self.restore_tensor(image_to_tensor(inputs).to(self.device), cache, generator)
        restored = tensor_to_image(out)
        return [face if size == self.face_size else
                np.asarray(Image.fromarray(face).resize((size, size), Image.BICUBIC))
                for face, size in zip(restored, sizes)]

    def restore_face(self, aligned_face: ImageLike, refs=None, seed: int | None = None) -> np.ndarray:
        return self.restore_faces([to_rgb_array(aligned_face)], refs, seed)[0]

    def identity_to_references(self, faces: Sequence[np.ndarray], cache: ReferenceCache | None) -> list[float | None]:
        """Mean cosine similarity of each face to the references (None without references)."""
        if cache is None or cache.identity is None or len(cache) == 0:
            return [None] * len(faces)
        embeddings = self.identity_model.embed(list(faces))
        return [float(np.mean(cache.identity @ embedding)) for embedding in embeddings]

    def background_upsampler(self, upscale: int, choice: str | BackgroundUpsampler | None = None
                             ) -> BackgroundUpsampler | None:
        """The net that upscales whole photos by `upscale` (`choice`, else `self.bg_upsampler`); None
        means Lanczos interpolation, which is also all there is to do at `upscale` 1."""
        from instantrestore.models.upsampler import AUTO_UPSAMPLER, BackgroundUpsampler, load_upsampler

        choice = self.bg_upsampler if choice is None else choice
        if upscale <= 1:
            return None
        if isinstance(choice, BackgroundUpsampler):
            return choice
        name = AUTO_UPSAMPLER if choice == "auto" else str(choice)
        if name not in self._loaded_upsamplers:
            self._loaded_upsamplers[name] = load_upsampler(name, self.device, tile=self.bg_tile)
        return self._loaded_upsamplers[name]

    def restore(self, image: ImageLike, refs=None, seed: int | None = None, only_center_face: bool = False,
                upscale: int = 1, alpha: np.ndarray | None = None,
                bg_upsampler: str | BackgroundUpsampler | None = None) -> RestoreResult:
        """Detect, align, restore each face with the references, paste back into the whole photo.

        With `upscale` > 1 the background is upscaled by `bg_upsampler` (default: `self.bg_upsampler`,
        see `background_upsampler`) and the restored faces are pasted on top.
        """
        from instantrestore.faces import paste_back

        rgb = to_rgb_array(image)
        cache = self._as_cache(refs)
        found = self.analyzer.find_faces(rgb, only_center_face=only_center_face)
        if not found:
            raise NoFaceError("no face found")
        aligned = [face.align(rgb, self.face_size) for face in found]
        restored = self.restore_faces([crop for crop, _ in aligned], cache, seed)
        identities = self.identity_to_references(restored, cache)
        upsampler = self.background_upsampler(upscale, bg_upsampler)
        background = None if upsampler is None else upsampler.upsample(rgb, upscale)
        result = RestoreResult(image=paste_back(rgb, restored, [affine for _, affine in aligned], upscale, alpha,
                                                background))
        threshold = self.identity_model.same_person_threshold
        for face, (crop, affine), out, identity in zip(found, aligned, restored, identities):
            result.faces.append(RestoredFace(face.box, affine, crop, out, identity))
            if identity is not None and identity < threshold:
                result.warnings.append(
                    f"face at {face.box.round().astype(int).tolist()}: identity {identity:.2f} to the references "
                    f"is below {threshold:.2f}; the result may look like a different person")
        return result
