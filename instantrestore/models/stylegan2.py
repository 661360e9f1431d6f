"""StyleGAN2 generator, "clean" variant: plain PyTorch ops, no compiled CUDA kernels.

The generative facial prior of GFP-GAN (Wang et al., CVPR 2021) is a StyleGAN2 generator
(Karras et al., CVPR 2020). This is the clean formulation GFP-GAN v1.2+ ships: bilinear
resampling (align_corners=False) instead of FIR filters, a sqrt(2) gain on the modulated
convolution in place of the fused leaky-ReLU's gain, and per-layer stored noise maps. Parameter
and buffer names follow the official checkpoints, so their state dicts load with `strict=True`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2


def channel_table(channel_multiplier: float = 2, narrow: float = 1) -> dict[int, int]:
    """Feature channels per resolution: 512 up to 32 px, then halving as the resolution doubles."""
    return {
        4: int(512 * narrow),
        8: int(512 * narrow),
        16: int(512 * narrow),
        32: int(512 * narrow),
        64: int(256 * channel_multiplier * narrow),
        128: int(128 * channel_multiplier * narrow),
        256: int(64 * channel_multiplier * narrow),
        512: int(32 * channel_multiplier * narrow),
        1024: int(16 * channel_multiplier * narrow),
    }


def log2_size(size: int) -> int:
    """log2 of a power-of-two image size >= 8; anything else is refused."""
    log_size = int(math.log2(size))
    if size < 8 or 2 ** log_size != size:
        raise ValueError(f"image size must be a power of two >= 8, got {size}")
    return log_size


class NormStyleCode(nn.Module):
    """Pixel norm of the style code: unit mean square over the feature dimension."""

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        # last dim: same as the clean arch's dim=1 for (B, F) codes, and still the features for (B, L, F)
        return style * torch.rsqrt(style.pow(2).mean(dim=-1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per input channel by an affine map of the style (no bias).

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels.
        kernel_size: square kernel size (padding keeps the spatial size).
        num_style_feat: length of the style vector w.
        demodulate: rescale each output filter to unit norm (StyleGAN2's replacement of AdaIN).
        upsample: bilinearly upsample the input x2 before the convolution.
        eps: added under the demodulation square root.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        # the affine "A" box of the figure: w -> per-input-channel scales, starting at 1
        self.modulation = nn.Linear(num_style_feat, in_channels)
        nn.init.kaiming_normal_(self.modulation.weight, a=0, mode="fan_in", nonlinearity="linear")
        nn.init.ones_(self.modulation.bias)
        # equalized-learning-rate style init folded into the stored weight
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
                                   / math.sqrt(in_channels * kernel_size ** 2))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channels, _, _ = x.shape
        scales = self.modulation(style).view(batch, 1, in_channels, 1, 1)
        weight = self.weight * scales  # (batch, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        # one grouped convolution applies each sample's own weights
        _, _, height, width = x.shape
        kernel_size = weight.shape[-1]
        out = F.conv2d(x.reshape(1, batch * in_channels, height, width),
                       weight.reshape(batch * self.out_channels, in_channels, kernel_size, kernel_size),
                       padding=kernel_size // 2, groups=batch)
        return out.view(batch, self.out_channels, *out.shape[2:])


class StyleConv(nn.Module):
    """Modulated 3x3 conv, then noise injection ("B" box), bias and leaky ReLU.

    Args:
        in_channels: input feature channels.
        out_channels: output feature channels.
        num_style_feat: length of the style vector w.
        upsample: upsample x2 first (the first conv of every resolution level).
    """

    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength, learned
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # sqrt(2): the gain StyleGAN2's fused leaky ReLU applies, moved onto the conv output as in
        # the clean arch, so the official weights give the official images
        # in place: these full-resolution maps are the largest tensors of the model; the order of the
        # operations is the clean arch's, so results match it exactly
        out = self.modulated_conv(x, style).mul_(math.sqrt(2))
        out = out.add_(self.weight * noise).add_(self.bias)
        return F.leaky_relu(out, LEAKY_SLOPE, inplace=True)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) added to the upsampled RGB of the level below.

    Args:
        in_channels: input feature channels.
        num_style_feat: length of the style vector w.
        upsample: upsample the incoming RGB skip x2 (every level but the first).
    """

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from.

    Args:
        num_channel: channels of the constant.
        size: its spatial size.
    """

    def __init__(self, num_channel: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleGAN2GeneratorClean(nn.Module):
    """StyleGAN2 generator: mapping MLP z -> w, then a synthesis network from a 4x4 constant.

    Each resolution level 8..out_size has an upsampling StyleConv, a StyleConv and a ToRGB; RGB
    outputs are summed across levels (skip architecture). The synthesis network takes one w per
    layer (W+, `num_latent` = 2 * log2(out_size) - 2 vectors).

    Args:
        out_size: output image size (power of two).
        num_style_feat: length of z and w.
        num_mlp: linear layers of the mapping network.
        channel_multiplier: widens the levels at 64 px and above (2 in the official 512 model).
        narrow: scales every level's channels.
    """

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: float = 2, narrow: float = 1) -> None:
        super().__init__()
        self.num_style_feat = num_style_feat
        self.log_size = log2_size(out_size)
        self.num_layers = 2 * (self.log_size - 2) + 1  # style convs: one at 4x4, two per level above
        self.num_latent = 2 * self.log_size - 2        # style convs + the ToRGBs that need their own w
        channels = channel_table(channel_multiplier, narrow)

        # mapping network z -> w (unused by GFP-GAN, which predicts w directly, but part of its checkpoints)
        mapping: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            linear = nn.Linear(num_style_feat, num_style_feat)
            nn.init.kaiming_normal_(linear.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            mapping += [linear, nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        self.style_mlp = nn.Sequential(*mapping)

        # synthesis network
        self.constant_input = ConstantInput(channels[4], size=4)
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels[4]
        for level in range(3, self.log_size + 1):
            out_channels = channels[2 ** level]
            self.style_convs.append(StyleConv(in_channels, out_channels, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, num_style_feat))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat))
            in_channels = out_channels

        # fixed noise maps, one per style conv: 4, 8, 8, 16, 16, ..., out_size, out_size
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            resolution = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise{layer}", torch.randn(1, 1, resolution, resolution))

    def style_latents(self, styles: torch.Tensor, input_is_latent: bool) -> torch.Tensor:
        """(B, F) or W+ (B, num_latent, F) codes -> W+ latents (B, num_latent, F)."""
        if not input_is_latent:
            styles = self.style_mlp(styles)
        if styles.ndim == 2:
            styles = styles.unsqueeze(1).expand(-1, self.num_latent, -1)
        return styles

    def noise_inputs(self, batch: int, randomize_noise: bool,
                     generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The stored noise maps, or fresh Gaussian noise (from `generator` when given)."""
        stored = [getattr(self.noises, f"noise{layer}") for layer in range(self.num_layers)]
        if not randomize_noise:
            return stored
        return [torch.randn((batch, *noise.shape[1:]), generator=generator, device=noise.device, dtype=noise.dtype)
                for noise in stored]

    def modulate_features(self, features: torch.Tensor, level: int,
                          conditions: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Spatial conditioning between a level's two convs: none in plain StyleGAN2."""
        return features

    def forward(self, styles: torch.Tensor, conditions: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                input_is_latent: bool = False, randomize_noise: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Style codes (B, F) or W+ latents (B, num_latent, F) -> RGB image (B, 3, out_size, out_size)."""
        latent = self.style_latents(styles, input_is_latent)
        noise = self.noise_inputs(latent.shape[0], randomize_noise, generator)
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        rgb = self.to_rgb1(out, latent[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            layer = 2 * level + 1  # index of this level's first style conv, its noise and its w
            out = self.style_convs[layer - 1](out, latent[:, layer], noise[layer])
            out = self.modulate_features(out, level, conditions or [])
            out = self.style_convs[layer](out, latent[:, layer + 1], noise[layer + 1])
            rgb = to_rgb(out, latent[:, layer + 2], rgb)
        return rgb
