"""StyleGAN2-style discriminator shared by both training recipes.

image -> conv 1x1 -> ResBlock(down) x log2(size / 4) -> minibatch stddev -> conv 3x3 -> linear -> linear -> logit

Plain PyTorch layers (no equalised learning rate or blur kernels) in the spirit of GFP-GAN's "clean"
architectures: downsampling is bilinear interpolation, residual sums are scaled by 1/sqrt(2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from instantrestore.models.stylegan2 import channel_table


def discriminator_channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Channels per resolution: the generator's StyleGAN2 table, at least one channel per level."""
    return {size: max(1, channels) for size, channels in channel_table(channel_multiplier, narrow).items()}


class DownResBlock(nn.Module):
    """Two 3x3 convs with a halving in between, plus a downsampled 1x1 skip.

    Args:
        in_channels: channels in.
        out_channels: channels out, at half the resolution.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(out, scale_factor=0.5, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), 0.2)
        skip = self.skip(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))
        return (out + skip) / math.sqrt(2)


class StyleGAN2Discriminator(nn.Module):
    """Real/fake logit of (B, 3, size, size) images in [-1, 1].

    Args:
        size: input resolution, a power of two >= 8.
        channel_multiplier: widens the high-resolution levels (StyleGAN2: 2).
        narrow: scales every level's channels (GFP-GAN's compact models use < 1).
        stddev_group: minibatch-stddev group size (StyleGAN2: 4; the batch is split into groups of it).
    """

    def __init__(self, size: int, channel_multiplier: int = 2, narrow: float = 1.0, stddev_group: int = 4) -> None:
        super().__init__()
        log_size = int(math.log2(size))
        if 2 ** log_size != size or size < 8:
            raise ValueError(f"discriminator size must be a power of two >= 8, got {size}")
        channels = discriminator_channels(channel_multiplier, narrow)
        self.stddev_group = stddev_group

        self.from_rgb = nn.Conv2d(3, channels[size], 1)
        self.body = nn.Sequential(*[DownResBlock(channels[2 ** level], channels[2 ** (level - 1)])
                                    for level in range(log_size, 2, -1)])
        self.final_conv = nn.Conv2d(channels[4] + 1, channels[4], 3, padding=1)
        self.final_linear = nn.Sequential(nn.Linear(channels[4] * 4 * 4, channels[4]), nn.LeakyReLU(0.2),
                                          nn.Linear(channels[4], 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for the leaky ReLUs (StyleGAN2 gets the same scale from its equalised learning
        rate). PyTorch's default init shrinks the features at every level, so an untrained discriminator's
        logit hardly depends on its input, and R1 then keeps it that way: it stays at chance (docs/training.md)."""
        linear_layers = {self.final_linear[-1], *(block.skip for block in self.body)}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nonlinearity = "linear" if module in linear_layers else "leaky_relu"
                nn.init.kaiming_normal_(module.weight, a=0.2, mode="fan_in", nonlinearity=nonlinearity)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append one channel: the std of features across a group of samples (lets D see diversity)."""
        batch, channel, height, width = x.shape
        group = min(batch, self.stddev_group)
        while batch % group:  # the last batch of an epoch may not divide evenly
            group -= 1
        grouped = x.reshape(group, batch // group, channel, height, width)
        stddev = torch.sqrt(grouped.var(0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))   # (batch // group,)
        stddev = stddev.reshape(1, -1, 1, 1, 1).expand(group, -1, 1, height, width).reshape(batch, 1, height, width)
        return torch.cat([x, stddev], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # encoder: down to 4x4
        feat = F.leaky_relu(self.from_rgb(images), 0.2)
        feat = self.body(feat)
        # minibatch statistics, then the logit
        feat = self.minibatch_stddev(feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        return self.final_linear(feat.flatten(1))
