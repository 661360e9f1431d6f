"""The learned part of the reference-detail stage: how much each warped reference counts at each pixel, how
strongly each band of the fused detail is added, and where the references' shapes (the band just coarser than
the detail: the outline of an eye, a brow, the lips) replace the restored face's (reference_detail.py composes
the result).

    each reference's features ┐                                       ┌ its logit, added to its log-confidence
    + the face's features     ┴ shared encoder ─ mix with the mean ───┼ (mean) log-gains of the detail's bands
                                over the references                   └ (mean) weight of the references' shapes

It reads features at a quarter of the detail size and works at an eighth: the weights vary slowly, the detail
itself stays at full size. The
references form a set (any number, any order): one encoder serves each, and they meet through their mean.
The heads start at zero, so an untrained net leaves the stage's rule-based confidences, the plain high-pass
and the restored face's shapes as they are: training starts from the measured untrained stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from instantrestore.errors import WeightsError
from instantrestore.imageio import write_bytes

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_LOGIT = 3.0     # a reference's confidence moves by at most e^3 either way
MAX_LOG_GAIN = 1.5  # a band's gain stays within e^-1.5 .. e^1.5


def _conv_block(in_channels: int, out_channels: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation),
                         nn.LeakyReLU(0.2))


class DetailFusionNet(nn.Module):
    """(B, K, C, h, w) reference features + (B, F, h, w) face features -> ((B, K, h/2, w/2) confidence logits,
    (B, bands, h/2, w/2) band log-gains, (B, h/2, w/2) shape weight in [0, 1])."""

    def __init__(self, reference_channels: int, face_channels: int, bands: int, width: int = 24) -> None:
        super().__init__()
        self.config = {"reference_channels": reference_channels, "face_channels": face_channels, "bands": bands,
                       "width": width}
        self.encoder = nn.Sequential(_conv_block(reference_channels + face_channels, width, stride=2),
                                     _conv_block(width, width, dilation=2))
        self.mixer = nn.Sequential(_conv_block(2 * width, width, dilation=4), _conv_block(width, width, dilation=8))
        self.reference_logit = nn.Conv2d(width, 1, 3, padding=1)
        self.band_log_gains = nn.Conv2d(width, bands, 3, padding=1)
        self.shape_weight = nn.Conv2d(width, 1, 3, padding=1)
        for head in (self.reference_logit, self.band_log_gains, self.shape_weight):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, reference_features: torch.Tensor, face_features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, count = reference_features.shape[:2]
        face = face_features[:, None].expand(-1, count, -1, -1, -1)
        encoded = self.encoder(torch.cat([reference_features, face], dim=2).flatten(0, 1))
        encoded = encoded.unflatten(0, (batch, count))
        context = encoded.mean(dim=1, keepdim=True).expand_as(encoded)
        mixed = self.mixer(torch.cat([encoded, context], dim=2).flatten(0, 1)).unflatten(0, (batch, count))
        logits = MAX_LOGIT * torch.tanh(self.reference_logit(mixed.flatten(0, 1)).unflatten(0, (batch, count)) / MAX_LOGIT)
        pooled = mixed.mean(dim=1)
        log_gains = MAX_LOG_GAIN * torch.tanh(self.band_log_gains(pooled) / MAX_LOG_GAIN)
        # clamped, not squashed: at its zero start it still passes gradients, and it can reach 0 and 1
        shape_weight = self.shape_weight(pooled)[:, 0].clamp(0, 1)
        return logits[:, :, 0], log_gains, shape_weight

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "DetailFusionNet":
        """A `save_pretrained` directory, on the CPU."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise WeightsError(f"{path}: no detail fusion weights ({CONFIG_NAME} and {WEIGHTS_NAME})")
        model = cls(**json.loads((path / CONFIG_NAME).read_text())["model"])
        model.load_state_dict({k: v.float() for k, v in load_file(path / WEIGHTS_NAME).items()}, strict=True)
        return model.eval().requires_grad_(False)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        state = {key: value.detach().cpu().float().contiguous() for key, value in self.state_dict().items()}
        write_bytes(path / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        write_bytes(path / CONFIG_NAME, (json.dumps({"model": self.config}, indent=2) + "\n").encode())
        return path
