"""Losses on hand-made examples whose right answer is known."""

import math

import pytest
import torch
import torch.nn.functional as F

from instantrestore import losses
from instantrestore.models.discriminator import StyleGAN2Discriminator


def test_landmark_token_is_row_major():
    # one landmark at (x=1, y=3) on a grid of H=4 rows, W=8 columns lights up token y * W + x = 25
    height, width = 4, 8
    wanted = torch.zeros(height * width)
    wanted[3 * width + 1] = 1.0
    attention = torch.zeros(1, 1, height * width, height * width)
    attention[0, 0, 3 * width + 1] = wanted  # the row of the target token: attends to the same spot
    target = torch.tensor([[[1.0, 3.0]]])
    reference = torch.tensor([[[[1.0, 3.0]]]])
    # sigma tiny: the Gaussian is one-hot at the landmark's token, so the loss is exactly 0
    loss = losses.landmark_attention_loss(attention, target, reference, (height, width), (height, width), sigma=0.05)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # the transposed reading (token x * H + y = 7) would be wrong: attention there gives a positive loss
    transposed = torch.zeros(1, 1, height * width, height * width)
    transposed[0, 0, 3 * width + 1, 1 * height + 3] = 1.0
    assert losses.landmark_attention_loss(transposed, target, reference, (height, width), (height, width),
                                          sigma=0.05).item() > 0.01
    # and a row other than the landmark's is not the one read
    wrong_row = torch.zeros(1, 1, height * width, height * width)
    wrong_row[0, 0, 1 * width + 3] = wanted
    assert losses.landmark_attention_loss(wrong_row, target, reference, (height, width), (height, width),
                                          sigma=0.05).item() > 0.01


def test_landmark_loss_zero_for_gaussian_attention_positive_otherwise():
    size, grid = 64, 8
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 5, 2, generator=generator) * (size - 1)
    reference = torch.rand(2, 3, 5, 2, generator=generator) * (size - 1)
    # the perfect map: each landmark's row is the Gaussian at the matching reference landmark (scale free)
    scale = grid / size
    ref_grid = (reference + 0.5) * scale - 0.5
    ys, xs = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")
    sigma = grid / 32
    gaussians = torch.exp(-((xs.reshape(1, 1, 1, -1) - ref_grid[..., :1]) ** 2
                            + (ys.reshape(1, 1, 1, -1) - ref_grid[..., 1:]) ** 2) / (2 * sigma ** 2))
    tokens = (((target + 0.5) * scale - 0.5).round().long().clamp(0, grid - 1))
    token = tokens[..., 1] * grid + tokens[..., 0]
    attention = torch.rand(2, 3, grid * grid, grid * grid, generator=generator) * 1e-3
    for b in range(2):
        for k in range(3):
            for i in range(5):
                attention[b, k, token[b, i]] = 0.3 * gaussians[b, k, i]
    perfect = losses.landmark_attention_loss(attention, target, reference, grid, size)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full_like(attention, 1 / grid ** 2)
    random = torch.rand(attention.shape, generator=generator)
    assert losses.landmark_attention_loss(uniform, target, reference, grid, size).item() > 0.01
    assert losses.landmark_attention_loss(random, target, reference, grid, size).item() > 0.01
    # masked-out references do not count: a garbage map in slot 2 is ignored when slot 2 is padding
    spoiled = attention.clone()
    spoiled[:, 2] = random[:, 2]
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert losses.landmark_attention_loss(spoiled, target, reference, grid, size,
                                          reference_mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_landmark_loss_gradient_reaches_attention():
    attention = torch.rand(1, 1, 16, 16, requires_grad=True)
    loss = losses.landmark_attention_loss(attention, torch.tensor([[[1.0, 2.0]]]),
                                          torch.tensor([[[[2.0, 1.0]]]]), 4, 4)
    loss.backward()
    assert attention.grad[0, 0, 2 * 4 + 1].abs().sum() > 0          # the landmark's row gets gradient
    assert attention.grad[0, 0, 0].abs().sum() == 0                 # other rows do not


def test_gan_losses_signs():
    confident_real, confident_fake = torch.full((4, 1), 10.0), torch.full((4, 1), -10.0)
    # D that is right has ~0 loss; D that is fooled has a large one
    assert losses.discriminator_adversarial_loss(confident_real, confident_fake).item() < 1e-3
    assert losses.discriminator_adversarial_loss(confident_fake, confident_real).item() > 10
    # G's loss falls as D scores its fakes as real
    assert losses.generator_adversarial_loss(confident_real).item() < 1e-3
    assert losses.generator_adversarial_loss(confident_fake).item() > 9
    assert losses.generator_adversarial_loss(torch.zeros(3, 1)).item() == pytest.approx(math.log(2))


def test_r1_penalty_of_a_linear_discriminator():
    # D(x) = sum(w * x): gradient w per sample, so R1 = |w|^2
    weight = torch.randn(1, 3, 4, 4)
    real = torch.rand(2, 3, 4, 4, requires_grad=True)
    logits = (real * weight).flatten(1).sum(1)
    assert losses.r1_penalty(logits, real).item() == pytest.approx(weight.pow(2).sum().item(), rel=1e-5)


def test_ms_ssim_identical_is_one_and_noise_lowers_it():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert losses.ms_ssim_loss(images, images).item() == pytest.approx(0.0, abs=1e-5)
    noisy = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert losses.ms_ssim_loss(noisy, images).item() > 0.05
    assert losses.ms_ssim_window(64) == 3 and losses.ms_ssim_window(512) == 11


def test_pyramid_loss_matches_levels():
    target = torch.rand(1, 3, 32, 32)
    pyramid = losses.image_pyramid(target, 3)
    assert [level.shape[-1] for level in pyramid] == [8, 16, 32]
    assert losses.pyramid_l1_loss(pyramid, target).item() == pytest.approx(0.0)
    off = [level + 0.1 for level in pyramid]
    assert losses.pyramid_l1_loss(off, target).item() == pytest.approx(0.3, rel=1e-4)
    with pytest.raises(ValueError):
        losses.pyramid_l1_loss([pyramid[0], pyramid[0]], target)


def test_optional_losses_are_off_with_a_reason_here():
    perceptual = losses.PerceptualLoss()
    # never computed with random weights: off states the reason, on needs the real VGG file on disk
    assert perceptual.available == (perceptual.reason is None)
    assert perceptual.available or perceptual.network is None


def test_discriminator_shapes_and_minibatch_stddev():
    discriminator = StyleGAN2Discriminator(32, channel_multiplier=1, narrow=0.05)
    logits = discriminator(torch.randn(6, 3, 32, 32))
    assert logits.shape == (6, 1)
    # identical samples: the stddev channel is ~0; different samples: positive
    same = discriminator.minibatch_stddev(torch.ones(4, 2, 4, 4))
    assert same[:, -1].abs().max().item() < 1e-3
    varied = discriminator.minibatch_stddev(torch.randn(4, 2, 4, 4))
    assert varied[:, -1].min().item() > 0.1
    with pytest.raises(ValueError):
        StyleGAN2Discriminator(48)
    F.softplus(logits).mean().backward()


def test_untrained_discriminator_sees_its_input():
    # PyTorch's default init shrank the features level by level: the logits of a flat image, a ramp and
    # noise agreed to 1e-3 (and R1 kept the discriminator there); He init keeps them apart
    torch.manual_seed(0)
    discriminator = StyleGAN2Discriminator(64, channel_multiplier=1, narrow=0.1)
    images = torch.stack([torch.zeros(3, 64, 64), torch.linspace(-1, 1, 64).expand(3, 64, 64),
                          0.5 * torch.randn(3, 64, 64)])
    logits = discriminator(images)
    assert (logits.max() - logits.min()).item() > 0.01


def test_landmark_term_reads_only_usable_references():
    from instantrestore.models.attention import AttentionCapture
    from instantrestore.training.recipes import landmark_term

    side, num_refs, batch_size = 4, 3, 2
    probs = torch.rand(batch_size, 2, side * side, num_refs * side * side, generator=torch.Generator().manual_seed(0))
    captured = AttentionCapture(probs.softmax(-1), self_tokens=0, num_refs=num_refs, ref_tokens=side * side)
    landmarks = torch.tensor([[[4.0, 4.0], [12.0, 20.0]]]).expand(batch_size, 2, 2)
    batch = {"target_landmarks": landmarks, "reference_landmarks": landmarks[:, None].expand(-1, num_refs, -1, -1),
             "target_landmarks_valid": torch.tensor([True, True]),
             "reference_landmarks_valid": torch.tensor([[False, True, False], [False, False, False]])}
    present = torch.ones(batch_size, num_refs, dtype=torch.bool)
    term = landmark_term(captured, batch, present, 32, torch.Generator().manual_seed(1))
    # sample 0 can only use reference 1; sample 1 has none and weighs nothing
    expected = losses.landmark_attention_loss(captured.reference(1)[:1].mean(1)[:, None], landmarks[:1],
                                              landmarks[:1, None], side, 32)
    torch.testing.assert_close(term, expected)
    batch["target_landmarks_valid"] = torch.tensor([False, False])  # a turned target: nothing to learn from
    assert landmark_term(captured, batch, present, 32, torch.Generator().manual_seed(1)) == 0
