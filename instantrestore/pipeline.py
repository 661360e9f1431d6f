"""`FaceRestorationPipeline`: whole photos and aligned crops through one restorer.

    photo -> faces (detect, align) -> restorer (aligned faces + reference features -> restored faces)
          -> faces (paste back) -> photo;   identity: which reference face to use, how close the result is

The pipeline owns everything around the model: images in and out (uint8 RGB <-> the restorer's [-1, 1]
tensors, one conversion each way), the face analyzer, the identity model, reference caches and the
background upsampler. A `Restorer` (models/base.py) only maps tensors, so GFP-GAN, InstantRestore and
classical methods are compared on equal terms. The analyzer and the identity model load on first use: a
blind restore never loads the identity model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
from PIL import Image

from instantrestore.errors import NoFaceError, WeightsError
from instantrestore.faces.align import resize_face
from instantrestore.imageio import to_rgb_array
from instantrestore.models.base import Restorer
from instantrestore.models.upsampler import AUTO_UPSAMPLER, DEFAULT_TILE, BackgroundUpsampler, load_upsampler
from instantrestore.reference_detail import DETAIL_SIZE, ReferenceDetailStage, landmarks_of_aligned
from instantrestore.references import ReferenceCache

if TYPE_CHECKING:  # built on first use
    from instantrestore.faces import FaceAnalyzer
    from instantrestore.faces.identity import IdentityModel

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike]  # a path is read with imageio.read_image


def faces_to_tensor(faces: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 RGB arrays -> (B, 3, H, W) float in [-1, 1], the restorers' range."""
    stacked = np.stack([np.asarray(face) for face in faces]).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def tensor_to_faces(batch: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) float in [-1, 1] (clamped) -> uint8 HxWx3 RGB arrays."""
    scaled = batch.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return list(scaled.permute(0, 2, 3, 1).cpu().numpy())


def _restorer_attribute(name: str) -> property:
    """A read-only attribute of the pipeline that is its restorer's."""
    return property(lambda pipeline: getattr(pipeline.restorer, name), doc=f"the restorer's `{name}`")


@dataclass
class RestoredFace:
    box: np.ndarray            # (4,) x0, y0, x1, y1 in the input photo
    affine: np.ndarray         # (2, 3) photo -> aligned crop
    cropped: np.ndarray        # aligned input crop, uint8
    restored: np.ndarray       # restored crop, uint8
    identity: float | None     # cosine similarity to the references (None without references)
    reference_weights: list[float] | None = None  # each reference's share in the face's detail (None: none given)


@dataclass
class RestoreResult:
    image: np.ndarray                      # the whole photo with faces pasted back (RGB, or RGBA if the input had alpha)
    faces: list[RestoredFace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class FaceRestorationPipeline:
    """Faces + identity + one restorer: what `load_restorer` returns.

    Args:
        restorer:            the model (a `Restorer`).
        detector:            the face detector of `FaceAnalyzer` ("default" or a name it knows).
        identity_model_path: an ArcFace ONNX file, or None for the packaged default identity model.
        bg_upsampler:        the background of whole photos when upscaling (`restore(upscale > 1)`): "auto"
                             (Lanczos, the measured best of what ships), "none" (Lanczos), a name or path, or
                             a BackgroundUpsampler; loaded on first use.
        bg_tile:             its tile side in input pixels (0: whole photos at once).
        detail_strength:     the reference-detail stage (reference_detail.py) after the restorer: 0 is the
                             restorer's output alone, 1 the full detail of the references and of a large input.
    """

    def __init__(self, restorer: Restorer, detector: str = "default", identity_model_path: str | None = None,
                 bg_upsampler: str | BackgroundUpsampler = "auto", bg_tile: int = DEFAULT_TILE,
                 detail_strength: float = 1.0) -> None:
        self.restorer = restorer
        self.detail_strength = detail_strength
        self.detector = detector
        self.identity_model_path = identity_model_path
        self.bg_upsampler = bg_upsampler
        self.bg_tile = bg_tile
        self._analyzer: FaceAnalyzer | None = None
        self._identity: IdentityModel | None = None
        self._detail_stage: ReferenceDetailStage | None = None
        self._loaded_upsamplers: dict[str, BackgroundUpsampler | None] = {}

    # the restorer's description, read through
    name = _restorer_attribute("name")
    face_size = _restorer_attribute("face_size")
    uses_references = _restorer_attribute("uses_references")
    model_id = _restorer_attribute("model_id")
    identity_loss_model = _restorer_attribute("identity_loss_model")
    device = _restorer_attribute("device")

    # ----------------------------------------------------------------- faces and identity, built lazily
    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            from instantrestore.faces import FaceAnalyzer

            self._analyzer = FaceAnalyzer(detector=self.detector)
        return self._analyzer

    @property
    def identity_model(self) -> IdentityModel:
        if self._identity is None:
            from instantrestore.faces.identity import load_identity_model

            self._identity = load_identity_model(self.identity_model_path)
        return self._identity

    @property
    def detail_stage(self) -> ReferenceDetailStage:
        if self._detail_stage is None:
            self._detail_stage = ReferenceDetailStage()
        return self._detail_stage

    @detail_stage.setter
    def detail_stage(self, stage: ReferenceDetailStage) -> None:
        self._detail_stage = stage

    # ----------------------------------------------------------------- references
    def encode_references(self, images: Sequence[ImageLike] | ReferenceCache | None,
                          num_refs: int | None = None) -> ReferenceCache:
        """Align (if needed), score and encode reference photos once; reuse the cache for every photo."""
        if isinstance(images, ReferenceCache):
            return images
        images = [] if images is None else [to_rgb_array(image) for image in images]
        crops, notes = self.analyzer.reference_crops(images, self.identity_model)
        if num_refs is not None:
            crops = crops[:num_refs]
        if not crops:
            empty = ReferenceCache.empty(self.face_size, self.model_id)
            empty.notes = notes  # why no reference was usable
            return empty
        faces = [resize_face(crop, self.face_size) for crop in crops]
        detail_crops = [resize_face(crop, DETAIL_SIZE) for crop in crops]
        identity = self.identity_model.embed(faces)
        features = {}
        if self.uses_references:
            with torch.no_grad():
                features = self.restorer.reference_features(faces_to_tensor(faces).to(self.device))
        landmarks = np.stack([landmarks_of_aligned(self.detail_stage.predictor, crop) for crop in detail_crops])
        return ReferenceCache(faces=np.stack(faces), identity=identity, features=features, model_id=self.model_id,
                              notes=notes, crops=np.stack(detail_crops), landmarks=landmarks)

    def reference_cache(self, refs: Sequence[ImageLike] | ReferenceCache | None) -> ReferenceCache | None:
        """`refs` (images, a cache or None) as a cache this restorer can use; None when there is nothing."""
        if refs is None:
            return None
        cache = self.encode_references(refs)
        if self.uses_references and len(cache) and cache.model_id != self.model_id:
            raise WeightsError(f"reference cache was made by model {cache.model_id!r}, not {self.model_id!r}; "
                               "encode the references again with this model")
        return cache if len(cache) else None

    def identity_to_references(self, faces: Sequence[np.ndarray], cache: ReferenceCache | None) -> list[float | None]:
        """Mean cosine similarity of each face to the references (None without references)."""
        if cache is None or cache.identity is None or len(cache) == 0:
            return [None] * len(faces)
        embeddings = self.identity_model.embed(list(faces))
        return [float(np.mean(cache.identity @ embedding)) for embedding in embeddings]

    # ----------------------------------------------------------------- aligned faces
    def restore_faces(self, crops: Sequence[np.ndarray], refs: Sequence[ImageLike] | ReferenceCache | None = None,
                      seed: int | None = None, detail_strength: float | None = None) -> list[np.ndarray]:
        """Restore aligned crops (any square size; resized to `face_size` and back, with the detail stage
        at 512 px when it applies). `detail_strength` overrides the pipeline's for this call."""
        return self.restore_faces_with_weights(crops, refs, seed, detail_strength)[0]

    def restore_faces_with_weights(self, crops: Sequence[np.ndarray],
                                   refs: Sequence[ImageLike] | ReferenceCache | None = None, seed: int | None = None,
                                   detail_strength: float | None = None
                                   ) -> tuple[list[np.ndarray], list[list[float] | None]]:
        """`restore_faces`, and for each face the share of each reference in its detail (None without
        references): 0 for a reference not used (a stranger's, or one that fits the face nowhere)."""
        inputs = [to_rgb_array(crop) for crop in crops]
        return self._restore_crops(inputs, [crop.shape[0] for crop in inputs], self.reference_cache(refs), seed,
                                   detail_strength)

    def restore_face(self, aligned_face: ImageLike, refs: Sequence[ImageLike] | ReferenceCache | None = None,
                     seed: int | None = None, detail_strength: float | None = None) -> np.ndarray:
        return self.restore_faces([to_rgb_array(aligned_face)], refs, seed, detail_strength)[0]

    def _adds_detail(self, input_size: int, cache: ReferenceCache | None, strength: float) -> bool:
        """Whether the detail stage runs on a face: references with full-resolution crops, or an input face
        larger than the restorer's size (whose own finer detail the restorer cannot draw)."""
        has_crops = cache is not None and cache.crops is not None
        return strength > 0 and (has_crops or input_size > self.face_size)

    def _restore_crops(self, crops: Sequence[np.ndarray], input_sizes: Sequence[int], cache: ReferenceCache | None,
                       seed: int | None, detail_strength: float | None
                       ) -> tuple[list[np.ndarray], list[list[float] | None]]:
        """(restored crops at their sizes, each face's reference weights or None). `input_sizes`: the side in
        photo pixels each crop was cut from (its own size for an aligned crop)."""
        size = self.face_size
        strength = self.detail_strength if detail_strength is None else detail_strength
        inputs = [crop if crop.shape[0] == size else
                  np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC)) for crop in crops]
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        features = cache.features if cache is not None and self.uses_references else None
        with torch.no_grad():
            out = tensor_to_faces(self.restorer.restore_tensor(faces_to_tensor(inputs).to(self.device), features,
                                                               generator))
        outliers = self._album_outliers(cache)
        restored, weights = [], []
        for crop, face, input_size in zip(crops, out, input_sizes):
            crop_size = crop.shape[0]
            if not self._adds_detail(input_size, cache, strength):
                restored.append(face if crop_size == size else
                                np.asarray(Image.fromarray(face).resize((crop_size, crop_size), Image.BICUBIC)))
                weights.append(None)
                continue
            base = np.asarray(Image.fromarray(face).resize((DETAIL_SIZE, DETAIL_SIZE), Image.BICUBIC))
            trust = self._reference_trust(cache, face, outliers)
            if trust is None:
                detailed, _ = self.detail_stage(base, resize_face(crop, DETAIL_SIZE), input_size, size,
                                                strength=strength)
                weights.append(None)
            else:
                usable = trust > 0  # a stranger's references are not even warped
                settings = self.detail_stage.settings
                if settings not in cache.detail_planes:  # once per album
                    cache.detail_planes[settings] = self.detail_stage.reference_planes(cache.crops)
                detailed, used = self.detail_stage(base, resize_face(crop, DETAIL_SIZE), input_size, size,
                                                   cache.detail_planes[settings][torch.from_numpy(usable)],
                                                   cache.landmarks[usable], trust[usable],
                                                   strength=strength)
                shares = np.zeros(len(usable))
                shares[usable] = 0 if used is None else used
                weights.append([round(float(share), 3) for share in shares])
            restored.append(resize_face(detailed, crop_size))
        return restored, weights

    def _album_outliers(self, cache: ReferenceCache | None) -> np.ndarray | None:
        """(K,) bool: the references that are another person's photo among the album's
        (`IdentityModel.album_outliers`), found once for all faces of a call; None without descriptors."""
        if cache is None or cache.identity is None or not len(cache):
            return None
        return self.identity_model.album_outliers(cache.identity)

    def _reference_trust(self, cache: ReferenceCache | None, restored: np.ndarray,
                         outliers: np.ndarray | None) -> np.ndarray | None:
        """(K,) weight in [0, 1] of each reference for this face by identity: the cosine ramp to the restored face
        (`IdentityModel.reference_weights`), 0 for an album outlier; None without full-resolution references."""
        if cache is None or cache.crops is None or not len(cache):
            return None
        if cache.identity is None:
            return np.ones(len(cache))
        trust = self.identity_model.reference_weights(cache.identity @ self.identity_model.embed([restored])[0])
        return np.where(outliers, 0.0, trust)

    # ----------------------------------------------------------------- whole photos
    def background_upsampler(self, upscale: int, choice: str | BackgroundUpsampler | None = None
                             ) -> BackgroundUpsampler | None:
        """The net that upscales whole photos by `upscale` (`choice`, else `self.bg_upsampler`); None
        means Lanczos interpolation, which is also all there is to do at `upscale` 1."""
        choice = self.bg_upsampler if choice is None else choice
        if upscale <= 1:
            return None
        if isinstance(choice, BackgroundUpsampler):
            return choice
        name = AUTO_UPSAMPLER if choice == "auto" else str(choice)
        if name not in self._loaded_upsamplers:
            self._loaded_upsamplers[name] = load_upsampler(name, self.device, tile=self.bg_tile)
        return self._loaded_upsamplers[name]

    def restore(self, image: ImageLike, refs: Sequence[ImageLike] | ReferenceCache | None = None,
                seed: int | None = None, only_center_face: bool = False, upscale: int = 1,
                alpha: np.ndarray | None = None, bg_upsampler: str | BackgroundUpsampler | None = None,
                detail_strength: float | None = None) -> RestoreResult:
        """Detect, align, restore each face with the references, paste back into the whole photo.

        With `upscale` > 1 the background is upscaled by `bg_upsampler` (default: `self.bg_upsampler`,
        see `background_upsampler`) and the restored faces are pasted on top.
        At `upscale` 1, a face larger in the photo than its 512-px crop also keeps the photo's own finer detail,
        less its noise.
        """
        from instantrestore.faces import paste_back
        from instantrestore.faces.paste import add_photo_band

        rgb = to_rgb_array(image)
        cache = self.reference_cache(refs)
        found = self.analyzer.find_faces(rgb, only_center_face=only_center_face)
        if not found:
            raise NoFaceError("no face found")
        strength = self.detail_strength if detail_strength is None else detail_strength
        # a face is cut at 512 px when the detail stage will draw on it, else at the restorer's size as before
        input_sizes = [face.side_in_photo() for face in found]
        aligned = [face.align(rgb, DETAIL_SIZE if self._adds_detail(side, cache, strength) else self.face_size)
                   for face, side in zip(found, input_sizes)]
        restored, weights = self._restore_crops([crop for crop, _ in aligned], input_sizes, cache, seed, strength)
        identities = self.identity_to_references(restored, cache)
        upsampler = self.background_upsampler(upscale, bg_upsampler)
        background = None if upsampler is None else upsampler.upsample(rgb, upscale)
        result = RestoreResult(image=paste_back(rgb, restored, [affine for _, affine in aligned], upscale, alpha,
                                                background))
        for (crop, affine), side in zip(aligned, input_sizes):
            if upscale == 1 and strength > 0 and side > crop.shape[0]:
                add_photo_band(result.image, rgb, crop, affine, strength, self.detail_stage.less_noise)
        for face, (crop, affine), out, identity, shares in zip(found, aligned, restored, identities, weights):
            result.faces.append(RestoredFace(face.box, affine, crop, out, identity, shares))
            if identity is None:  # blind: the identity model is not needed
                continue
            threshold = self.identity_model.same_person_threshold
            if identity < threshold:
                result.warnings.append(
                    f"face at {face.box.round().astype(int).tolist()}: identity {identity:.2f} to the references "
                    f"is below {threshold:.2f}; the result may look like a different person")
        return result


def as_pipeline(model: Restorer | FaceRestorationPipeline) -> FaceRestorationPipeline:
    """A pipeline around a bare restorer (default faces and identity); a pipeline as it is."""
    return model if isinstance(model, FaceRestorationPipeline) else FaceRestorationPipeline(model)
