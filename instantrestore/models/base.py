"""The interface every restoration model implements: aligned face tensors in, restored ones out.

A restorer maps (B, 3, S, S) aligned faces in [-1, 1] (the networks' own range, the only one at this
boundary), plus the features it derived from reference faces, to restored faces of the same shape and
range. Photos, detection, alignment, reference caches, identity scores and paste-back are the pipeline's
job (`instantrestore.pipeline.FaceRestorationPipeline`), shared by every model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from instantrestore.errors import ConfigError


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


class Restorer(ABC):
    """Aligned faces in [-1, 1] (and reference features) -> restored faces in [-1, 1].

    Args:
        device: "auto", "cpu", "cuda", ...
    """

    name: str = "restorer"
    face_size: int = 512
    uses_references: bool = False
    # The identity net whose loss trained this model (its config.json's "identity_loss_model"), None if none:
    # the benchmark says so, since that net's score is then partly the training target.
    identity_loss_model: str | None = None

    def __init__(self, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device)

    @abstractmethod
    def restore_tensor(self, faces: torch.Tensor, reference_features: dict[str, torch.Tensor] | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] on `self.device` -> restored, same shape, about the same range (the
        pipeline clamps). `reference_features`: what `reference_features` made of the references, or None."""

    def reference_features(self, faces: torch.Tensor) -> dict[str, torch.Tensor]:
        """What to remember of (K, 3, S, S) aligned references in [-1, 1]; nothing for reference-free models."""
        return {}

    @property
    def model_id(self) -> str:
        """Names the weights that `reference_features` depends on; caches from other models are refused."""
        return self.name
