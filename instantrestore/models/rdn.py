"""RDN, the Residual Dense Network for single-image super-resolution, as UpscalerJS ships it.

Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018, Fig. 2: shallow feature
extraction (two convs), D residual dense blocks whose outputs are all concatenated and fused (global
feature fusion), a global residual to the first conv, then an upsampling net. The UpscalerJS models
(`@upscalerjs/esrgan-*`, trained on DIV2K with idealo's image-super-resolution) upsample the way idealo's
"ups" option does: a conv to 3·scale² channels, nearest-neighbour upsampling, a 3×3 conv to RGB.
Pixel values are in 0..255 at both ends. `scripts/convert/convert_upscalerjs.py` maps the Keras layer names
(F_m1, F_0, F_d_c, LFF_d, GFF_1/2, UPN1..3, SR) to the names here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualDenseBlock(nn.Module):
    """C densely connected 3×3 conv + ReLU layers, a 1×1 local feature fusion, a local residual.

    Args:
        num_features: channels in and out (G0).
        growth: channels each conv adds to the dense concatenation (G).
        num_layers: convs in the block (C).
    """

    def __init__(self, num_features: int = 64, growth: int = 64, num_layers: int = 1) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(num_features + k * growth, growth, 3, 1, 1) for k in range(num_layers))
        self.fuse = nn.Conv2d(num_features + num_layers * growth, num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = x
        for conv in self.convs:
            dense = torch.cat([dense, F.relu(conv(dense))], dim=1)
        return x + self.fuse(dense)


class RDN(nn.Module):
    """Residual Dense Network: (B, 3, H, W) in 0..255 -> (B, 3, scale·H, scale·W) in about 0..255 (unclamped).

    Args:
        scale: upscaling factor.
        num_features: feature channels (G0).
        growth: growth rate inside a dense block (G).
        num_blocks: residual dense blocks (D).
        layers_per_block: convs per dense block (C).
    """

    def __init__(self, scale: int = 2, num_features: int = 64, growth: int = 64, num_blocks: int = 10,
                 layers_per_block: int = 1) -> None:
        super().__init__()
        self.config = dict(scale=scale, num_features=num_features, growth=growth, num_blocks=num_blocks,
                           layers_per_block=layers_per_block)
        self.scale = scale
        # shallow feature extraction
        self.shallow_conv1 = nn.Conv2d(3, num_features, 3, 1, 1)
        self.shallow_conv2 = nn.Conv2d(num_features, num_features, 3, 1, 1)
        # residual dense blocks and global feature fusion of all their outputs
        self.blocks = nn.ModuleList(ResidualDenseBlock(num_features, growth, layers_per_block)
                                    for _ in range(num_blocks))
        self.global_fuse = nn.Sequential(nn.Conv2d(num_blocks * num_features, num_features, 1),
                                         nn.Conv2d(num_features, num_features, 3, 1, 1))
        # upsampling net
        self.up_conv1 = nn.Conv2d(num_features, 64, 5, 1, 2)
        self.up_conv2 = nn.Conv2d(64, 32, 3, 1, 1)
        self.up_conv3 = nn.Conv2d(32, 3 * scale ** 2, 3, 1, 1)
        self.to_rgb = nn.Conv2d(3 * scale ** 2, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # shallow features
        first = self.shallow_conv1(x)
        feat = self.shallow_conv2(first)
        # dense blocks, fused globally, plus the global residual
        block_outputs = []
        for block in self.blocks:
            feat = block(feat)
            block_outputs.append(feat)
        feat = self.global_fuse(torch.cat(block_outputs, dim=1)) + first
        # upsample
        feat = F.relu(self.up_conv1(feat))
        feat = F.relu(self.up_conv2(feat))
        feat = F.interpolate(self.up_conv3(feat), scale_factor=self.scale, mode="nearest")
        return self.to_rgb(feat)
