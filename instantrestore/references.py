"""`ReferenceCache`: one person's reference photos, encoded once and reused for every photo of them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from instantrestore.errors import WeightsError
from instantrestore.imageio import write_bytes

_FEATURE_PREFIX = "features."
_FORMAT_VERSION = 1


@dataclass
class ReferenceCache:
    """Aligned reference faces plus what a restorer derived from them.

    faces:    (K, S, S, 3) uint8 RGB aligned crops, S = the restorer's face size.
    crops:    (K, 512, 512, 3) uint8 RGB aligned crops at full resolution, for the reference-detail stage,
              or None (a cache saved before the stage existed).
    landmarks: (K, 68, 2) float32 landmarks of `crops`, or None.
    identity: (K, D) float32 unit descriptors for the identity score, or None.
    features: model-specific tensors by name (InstantRestore: the self-attention keys and values of
              each up-block layer); empty for restorers that do not use references.
    model_id: fingerprint of the model that computed `features`; a cache is only valid for that model.
    notes:    what the encoder chose and why (e.g. which face of a group photo was taken).
    detail_planes: what the reference-detail stage samples from `crops`, by the stage's settings; made on first
              use, not saved.
    """

    faces: np.ndarray
    identity: np.ndarray | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    model_id: str = ""
    crops: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    detail_planes: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.faces.shape[0])

    @classmethod
    def empty(cls, face_size: int, model_id: str = "") -> "ReferenceCache":
        return cls(faces=np.zeros((0, face_size, face_size, 3), np.uint8), model_id=model_id)

    def save(self, path: str | os.PathLike) -> Path:
        """Save as one safetensors file (no pickle), atomically."""
        tensors = {"faces": torch.from_numpy(np.ascontiguousarray(self.faces))}
        if self.identity is not None:
            tensors["identity"] = torch.from_numpy(np.ascontiguousarray(self.identity, dtype=np.float32))
        if self.crops is not None:
            tensors["crops"] = torch.from_numpy(np.ascontiguousarray(self.crops))
            tensors["landmarks"] = torch.from_numpy(np.ascontiguousarray(self.landmarks, dtype=np.float32))
        for name, value in self.features.items():
            tensors[_FEATURE_PREFIX + name] = value.detach().cpu().contiguous()
        metadata = {"format": str(_FORMAT_VERSION), "model_id": self.model_id, "notes": json.dumps(self.notes)}
        return write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceCache":
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{path}: no such reference cache")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path}: not a readable reference cache ({err})") from None
        if "faces" not in tensors:
            raise WeightsError(f"{path}: not a reference cache (no 'faces' tensor)")
        features = {k[len(_FEATURE_PREFIX):]: v for k, v in tensors.items() if k.startswith(_FEATURE_PREFIX)}
        identity = tensors["identity"].numpy() if "identity" in tensors else None
        return cls(
            faces=tensors["faces"].numpy(),
            identity=identity,
            crops=tensors["crops"].numpy() if "crops" in tensors else None,
            landmarks=tensors["landmarks"].numpy() if "landmarks" in tensors else None,
            features=features,
            model_id=metadata.get("model_id", ""),
            notes=json.loads(metadata.get("notes", "[]")),
        )
