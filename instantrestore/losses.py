"""Training losses of both recipes: GFP-GAN (L1, image pyramid, adversarial, R1) and InstantRestore
(LPIPS, 1 - MS-SSIM, identity, adversarial, landmark attention).

Images are (B, 3, H, W). Pixel losses take any range; MS-SSIM, LPIPS and identity take [0, 1].
LPIPS (and identity with ArcFace) need pretrained networks that cannot be downloaded here: they are built
only from weights found on disk, and otherwise report themselves "off" with the reason (never random
weights). Identity with dlib's descriptor, the default, ships its weights in the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim


# ----------------------------------------------------------------------------- pixel losses
def l1_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(output, target)


def image_pyramid(target: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """[target / 2^(n-1), ..., target / 2, target]: successive bilinear halvings, smallest first (GFP-GAN)."""
    pyramid = [target]
    for _ in range(num_levels - 1):
        pyramid.insert(0, F.interpolate(pyramid[0], scale_factor=0.5, mode="bilinear", align_corners=False))
    return pyramid


def pyramid_l1_loss(rgb_outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """GFP-GAN's image-pyramid loss: each intermediate RGB output against the target downsampled to its size.

    `rgb_outputs` are the decoder's toRGB outputs, smallest first; each level halves the next one's size.
    """
    pyramid = image_pyramid(target, len(rgb_outputs))
    for rgb, level in zip(rgb_outputs, pyramid):
        if rgb.shape[-2:] != level.shape[-2:]:
            raise ValueError(f"pyramid output {tuple(rgb.shape[-2:])} does not match target level {tuple(level.shape[-2:])}")
    return sum(F.l1_loss(rgb, level) for rgb, level in zip(rgb_outputs, pyramid))


# ----------------------------------------------------------------------------- structure
def ms_ssim_window(size: int) -> int:
    """Largest odd Gaussian window <= 11 that survives MS-SSIM's 4 downsamplings at this image size.

    pytorch_msssim requires min side > (win - 1) * 16, i.e. > 160 px for the standard 11-px window; the
    compact 64/128-px recipes keep the standard 5 scales and weights with a smaller window instead.
    """
    window = 11
    while window > 3 and (window - 1) * 16 >= size:
        window -= 2
    if (window - 1) * 16 >= size:
        raise ValueError(f"MS-SSIM needs images larger than 32 px, got {size}")
    return window


def ms_ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM (Wang et al. 2003, standard 5-scale weights) of images in [0, 1]."""
    size = min(output.shape[-2:])
    # float32: the product of powers underflows in half precision
    return 1.0 - ms_ssim(output.float().clamp(0, 1), target.float(), data_range=1.0, win_size=ms_ssim_window(size))


# ----------------------------------------------------------------------------- adversarial
def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for G: softplus(-D(fake)) = -log sigmoid(D(fake))."""
    return F.softplus(-fake_logits).mean()


def discriminator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss for D: softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): squared gradient norm of D at real images, mean over the batch.

    `real_images` must have `requires_grad=True` and `real_logits` must be computed from them.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- landmark attention
def _grid_coordinates(landmarks: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Pixel (x, y) in an image of `image_size` (H, W) -> continuous (x, y) in token units of `grid` (H, W).

    Pixel centres sit at integer coordinates in both (align_corners=False convention), so when the
    grid has the image's size the mapping is the identity.
    """
    scale = landmarks.new_tensor([grid[1] / image_size[1], grid[0] / image_size[0]])
    return (landmarks + 0.5) * scale - 0.5


def landmark_attention_loss(attention_maps: torch.Tensor, target_landmarks: torch.Tensor,
                            reference_landmarks: torch.Tensor, layer_size: int | tuple[int, int],
                            image_size: int | tuple[int, int], sigma: float | None = None,
                            reference_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InstantRestore's landmark attention supervision.

    For each target landmark, the attention row of the degraded image's token at that landmark, over
    one reference's tokens, should look like a Gaussian centred on the same landmark in that reference.
    Both are min-max normalised; the loss is the MSE over landmark rows (the recipe weights it).

    attention_maps:      (B, K, H*W, H*W) attention probabilities, query = degraded-image tokens,
                         key = tokens of reference k, averaged over heads. Tokens are row-major: a
                         token at grid column x and row y has index y * W + x (the (H, W) -> H*W reshape).
    target_landmarks:    (B, L, 2) pixel (x, y) in the degraded/target image of `image_size`.
    reference_landmarks: (B, K, L, 2) pixel (x, y) in each reference.
    layer_size:          the attention layer's grid, H = W = layer_size or (H, W).
    sigma:               Gaussian width in tokens; default max(H, W) / 32 as in the paper.
    reference_mask:      (B, K) bool, False for padded reference slots (ignored).
    """
    grid = (layer_size, layer_size) if isinstance(layer_size, int) else tuple(layer_size)
    image = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    height, width = grid
    batch, num_refs, num_queries, num_keys = attention_maps.shape
    if num_queries != height * width or num_keys != height * width:
        raise ValueError(f"attention maps {tuple(attention_maps.shape)} do not fit a {height}x{width} grid")
    sigma = max(height, width) / 32 if sigma is None else sigma

    # rows: the degraded image's token under each target landmark
    target_xy = _grid_coordinates(target_landmarks.float(), image, grid)
    column = target_xy[..., 0].round().long().clamp(0, width - 1)
    row = target_xy[..., 1].round().long().clamp(0, height - 1)
    token = row * width + column                                                    # (B, L)
    num_landmarks = token.shape[1]
    index = token[:, None, :, None].expand(batch, num_refs, num_landmarks, num_keys)
    attention_rows = attention_maps.gather(2, index)                                # (B, K, L, H*W)

    # wanted: a Gaussian over the reference grid centred on the same landmark in the reference
    reference_xy = _grid_coordinates(reference_landmarks.float(), image, grid)      # (B, K, L, 2)
    ys, xs = torch.meshgrid(torch.arange(height, device=attention_maps.device, dtype=torch.float32),
                            torch.arange(width, device=attention_maps.device, dtype=torch.float32), indexing="ij")
    dx = xs.reshape(1, 1, 1, -1) - reference_xy[..., 0:1]
    dy = ys.reshape(1, 1, 1, -1) - reference_xy[..., 1:2]
    wanted = torch.exp(-(dx.pow(2) + dy.pow(2)) / (2 * sigma ** 2))                 # (B, K, L, H*W)

    loss_per_row = F.mse_loss(_min_max(attention_rows.float()), _min_max(wanted), reduction="none").mean(-1)
    if reference_mask is None:
        return loss_per_row.mean()
    weights = reference_mask.to(loss_per_row.dtype)[:, :, None].expand_as(loss_per_row)
    return (loss_per_row * weights).sum() / weights.sum().clamp(min=1)


def _min_max(rows: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    low = rows.amin(-1, keepdim=True)
    high = rows.amax(-1, keepdim=True)
    return (rows - low) / (high - low + eps)


# ----------------------------------------------------------------------------- optional pretrained losses
class PerceptualLoss(torch.nn.Module):
    """LPIPS-VGG (Zhang et al. 2018) from the `lpips` package, when it and the ImageNet VGG16 weights are here.

    lpips ships only its small linear heads; the VGG16 backbone comes from torchvision's download cache
    (`vgg16-397923af.pth`), which an offline machine does not have. `available`/`reason` say which.
    """

    VGG_FILE = "vgg16-397923af.pth"

    def __init__(self) -> None:
        super().__init__()
        self.network = None
        self.reason = self._missing()
        if self.reason is None:
            import lpips

            self.network = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)

    @property
    def available(self) -> bool:
        return self.network is not None

    @classmethod
    def _missing(cls) -> str | None:
        for package in ("lpips", "torchvision"):
            if importlib.util.find_spec(package) is None:
                return f"the '{package}' package is not installed"
        cached = Path(torch.hub.get_dir()) / "checkpoints" / cls.VGG_FILE
        if not cached.is_file():
            return f"VGG16 ImageNet weights not found at {cached} (no download offline)"
        return None

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]; LPIPS wants [-1, 1]."""
        return self.network(output * 2 - 1, target * 2 - 1).mean()


class IdentityLoss(torch.nn.Module):
    """1 - cosine similarity of face descriptors of the output and the target, mean over the batch (the
    identity loss of GFP-GAN and InstantRestore). Images are FFHQ-aligned crops in [0, 1], any size.

    `net` picks the descriptor:
    - "dlib-torch" (default): dlib's face recognition ResNet, ported to PyTorch and shipped in the package
      (`faces/dlib_resnet.py`), on dlib's 150-px chip cut from the crop with a fixed affine;
    - "faceres": HSE's faceres graph run with gradients (`faces/identity.FaceResDescriptor`), fetched by
      `python scripts/data/fetch_faceres.py`, so that dlib, which did not train the model, can judge it;
    - "mobilefacenet": an ArcFace-trained MobileFaceNet (`faces/mobilefacenet.py`) on the ArcFace chip, fetched
      by `python scripts/convert/fetch_mobilefacenet.py`: the papers' kind of identity loss, judged by dlib
      and faceres;
    - an ArcFace ONNX file (insightface's `w600k_r50.onnx` format, 112x112 input in [-1, 1]), converted by
      `onnx2torch`, as the papers do.
    Off, with the reason, when its weights or the converter are missing.
    """

    ARCFACE_INPUT_SIZE = 112

    def __init__(self, net: str = "dlib-torch") -> None:
        super().__init__()
        self.network = None
        self.reason = None
        self.arcface = False
        self.model_name = net  # recorded in the exported model's config.json ("identity_loss_model")
        if net == "dlib-torch":
            from instantrestore.faces.dlib_resnet import DlibDescriptor

            self.name = "dlib-resnet (dlib's face descriptor, packaged PyTorch port)"
            self.network = DlibDescriptor()
        elif net == "faceres":
            from instantrestore.faces.identity import FaceResDescriptor, faceres_available

            self.name = "faceres (HSE's descriptor, TF.js graph run by PyTorch)"
            if faceres_available():
                self.network = FaceResDescriptor()
            else:
                self.reason = "faceres weights are not fetched (python scripts/data/fetch_faceres.py)"
        elif net == "mobilefacenet":
            from instantrestore.faces.mobilefacenet import (MOBILEFACENET_FETCH_COMMAND, MobileFaceNetDescriptor,
                                                            mobilefacenet_available)

            self.name = "mobilefacenet (ArcFace-trained MobileFaceNet, TF.js graph run by PyTorch)"
            if mobilefacenet_available():
                self.network = MobileFaceNetDescriptor()
            else:
                self.reason = f"mobilefacenet weights are not fetched ({MOBILEFACENET_FETCH_COMMAND})"
        else:
            self.name, self.model_name, self.arcface = f"arcface ({net})", "arcface", True
            if not Path(net).is_file():
                self.reason = f"{net}: no such ArcFace ONNX file"
            elif importlib.util.find_spec("onnx2torch") is None:
                self.reason = "the 'onnx2torch' package (and torchvision) is not installed"
            else:
                from onnx2torch import convert

                self.network = convert(net).eval().requires_grad_(False)

    @property
    def available(self) -> bool:
        return self.network is not None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm descriptors of aligned crops in [0, 1]."""
        if self.arcface:
            # the whole aligned crop, resized, as GFP-GAN feeds its ArcFace
            size = (self.ARCFACE_INPUT_SIZE, self.ARCFACE_INPUT_SIZE)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False) * 2 - 1
        return F.normalize(self.network(images), dim=-1)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the recipe never moves its loss networks: follow the images to their device
        self.network.to(output.device)
        with torch.no_grad():
            target_embedding = self.embed(target)
        return (1 - (self.embed(output) * target_embedding).sum(-1)).mean()


__all__ = [
    "l1_loss", "image_pyramid", "pyramid_l1_loss", "ms_ssim_loss", "ms_ssim_window",
    "generator_adversarial_loss", "discriminator_adversarial_loss", "r1_penalty",
    "landmark_attention_loss", "PerceptualLoss", "IdentityLoss",
]
