"""RRDBNet, the ESRGAN generator that Real-ESRGAN's RealESRGAN_x2plus / x4plus weights are trained for.

Wang et al., "ESRGAN", ECCV 2018 workshops, Fig. 4: residual-in-residual dense blocks (three dense
blocks of five convs each, residuals scaled by 0.2) without batch norm, a trunk residual, then two
nearest-neighbour ×2 upsampling convs. Real-ESRGAN (Wang et al., ICCVW 2021) runs the ×2 model on a
pixel-unshuffled input, so one trunk serves every scale. Parameter names follow the official checkpoints
(basicsr's `rrdbnet_arch.py`: conv_first, body.N.rdbK.convM, conv_body, conv_up1/2, conv_hr, conv_last),
so they load with `strict=True`. Pixel values are in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2
RESIDUAL_SCALE = 0.2  # ESRGAN's residual scaling, which keeps the deep trunk stable


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3×3 convs (LeakyReLU after the first four); residual scaled by 0.2.

    Args:
        num_feat: channels in and out.
        num_grow_ch: channels each conv adds to the dense concatenation.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = x
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            dense = torch.cat([dense, F.leaky_relu(conv(dense), LEAKY_SLOPE)], dim=1)
        return x + RESIDUAL_SCALE * self.conv5(dense)


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks in a row, residual scaled by 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN generator: (B, 3, H, W) in [0, 1] -> (B, 3, scale·H, scale·W), unclamped.

    H and W must be multiples of 4 // scale (the ×2 and ×1 models pixel-unshuffle their input).

    Args:
        scale: 1, 2 or 4.
        num_feat: trunk channels.
        num_block: RRDB blocks in the trunk (23 for RealESRGAN_x4plus / x2plus).
        num_grow_ch: dense growth channels.
    """

    def __init__(self, scale: int = 4, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.config = dict(scale=scale, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch)
        self.scale = scale
        self.unshuffle = 4 // scale  # the trunk always runs at 1/4 of the output resolution
        self.conv_first = nn.Conv2d(3 * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # trunk at 1/4 of the output resolution
        feat = self.conv_first(F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x)
        feat = feat + self.conv_body(self.body(feat))
        # two ×2 nearest-neighbour upsampling steps
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE))


def rrdbnet_config_from_state_dict(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """RRDBNet arguments that fit an official-layout state dict (its scale read from conv_first)."""
    in_channels = state["conv_first.weight"].shape[1]
    unshuffle = {3: 1, 12: 2, 48: 4}.get(in_channels)
    if unshuffle is None:
        raise ValueError(f"conv_first takes {in_channels} channels; expected 3, 12 or 48")
    num_block = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("body."))
    return dict(scale=4 // unshuffle, num_feat=state["conv_first.weight"].shape[0], num_block=num_block,
                num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0])
