"""`InstantRestoreRestorer`: the InstantRestore model behind the common `Restorer` interface.

The reference cache holds the references' self-attention keys/values (`reference_features`), so an
album encodes its references once and every photo after that costs one single-step restore.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from instantrestore.models.base import Restorer
from instantrestore.models.instantrestore import InstantRestoreModel

REFERENCE_SEED = 0


class InstantRestoreRestorer(Restorer):
    """Aligned faces in [-1, 1] -> restored faces, guided by cached reference keys/values (none = blind).

    Args:
        model:  an InstantRestoreModel.
        device: "auto", "cpu", "cuda", ...
        fuse:   merge its LoRA into the base weights for faster inference (the adapters stay saveable);
                pass False to evaluate a model that is still being trained.
    """

    name = "instantrestore"
    uses_references = True

    def __init__(self, model: InstantRestoreModel, device: str | torch.device = "auto", fuse: bool = True) -> None:
        super().__init__(device)
        self.model = model.to(self.device).eval()
        if fuse:
            self.model.requires_grad_(False).fuse_lora()
        self.face_size = model.config.face_size

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "auto") -> "InstantRestoreRestorer":
        return cls(InstantRestoreModel.from_pretrained(path), device)

    def save_pretrained(self, path: str | Path) -> Path:
        return self.model.save_pretrained(path)

    @property
    def model_id(self) -> str:
        """Fingerprint of the frozen reference branch: caches stay valid across fine-tunes of the restorer."""
        return f"{self.name}-{self.model.reference_fingerprint()[:16]}"

    def reference_features(self, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        """(K, 3, S, S) aligned references in [-1, 1] -> layer -> (2, 1, K, N, C) keys and values.

        The t=1 noise and VAE sample are drawn from a fixed seed: the same references always give the
        same cache, so a saved cache and a fresh encoding restore identically.
        """
        generator = torch.Generator(device=faces.device).manual_seed(REFERENCE_SEED)
        with self._autocast():
            return self.model.encode_references(faces, generator)

    @torch.no_grad()
    def restore_tensor(self, faces: torch.Tensor, reference_features: dict[str, torch.Tensor] | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        with self._autocast():
            return self.model(faces, reference_features or None, generator=generator).float()

    def _autocast(self):
        """torch.autocast on CUDA where the model's config asks for it (the authors run fp16), else nothing."""
        dtype = self.model.config.inference_autocast
        if dtype is None or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, dtype))
