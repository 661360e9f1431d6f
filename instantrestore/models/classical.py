"""Classical baselines: no learning, named for what they are."""

from __future__ import annotations

import torch

from instantrestore.models.base import Restorer


class BicubicRestorer(Restorer):
    """Bicubic resampling only, no restoration: the honest floor of every comparison.

    The pipeline already resizes each aligned crop to `face_size` bicubically, so the face comes back
    exactly as that resize left it; on whole photos `-s/--upscale` resizes the background.
    """

    name = "bicubic"

    def __init__(self, face_size: int = 512, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        self.face_size = face_size

    def restore_tensor(self, faces: torch.Tensor, reference_features: dict[str, torch.Tensor] | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        return faces
