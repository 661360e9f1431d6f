"""GFP-GAN as a `Restorer`: the blind (reference-free) baseline of the comparison. The network and its
checkpoints (official `.pth` files and our directories) are `models.gfpgan.GFPGANv1Clean`'s."""

from __future__ import annotations

import os
from typing import Any

import torch

from instantrestore.models.base import Restorer
from instantrestore.models.gfpgan import RESTORER_NAME, GFPGANv1Clean


class GFPGANRestorer(Restorer):
    """Restores aligned faces with a GFPGANv1Clean; references are ignored.

    Args:
        model: the network (moved to `device` and put in eval mode).
        device: "auto", "cpu", "cuda", ...
        randomize_noise: draw fresh StyleGAN2 noise (seeded by `seed`) instead of the stored maps.
    """

    name = RESTORER_NAME
    uses_references = False

    def __init__(self, model: GFPGANv1Clean, device: str | torch.device = "auto", randomize_noise: bool = False) -> None:
        super().__init__(device)
        self.model = model.to(self.device).eval()
        self.face_size = model.out_size
        self.randomize_noise = randomize_noise

    def restore_tensor(self, faces: torch.Tensor, reference_features: dict[str, torch.Tensor] | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        image, _ = self.model(faces, randomize_noise=self.randomize_noise, generator=generator)
        return image

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, device: str | torch.device = "auto",
                        randomize_noise: bool = False, **arch_overrides: Any) -> "GFPGANRestorer":
        """`GFPGANv1Clean.from_pretrained` (an official checkpoint, a registered name or a directory), wrapped."""
        return cls(GFPGANv1Clean.from_pretrained(path_or_name, **arch_overrides), device, randomize_noise)
