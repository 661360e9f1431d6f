"""Can the GFP-GAN recipe's discriminator tell restored faces from real ones? A fresh discriminator is
trained alone, with the recipe's optimiser and lazy R1, on cached (real, restored) training pairs of a
frozen generator; the last pairs are held out.

    .venv/bin/python scripts/discriminator_diagnostic.py [--generator instantrestore/weights/gfpgan_compact] \\
        [--pairs 240] [--steps 400] [--r1-gamma 10]

Prints the discriminator loss (2 ln 2 = 1.386 is chance) early and late, and its held-out accuracy.
"""

from __future__ import annotations

import argparse
import time

import torch

from instantrestore.data.dataset import FaceRestorationDataset
from instantrestore.models.discriminator import StyleGAN2Discriminator
from instantrestore.models.gfpgan import GFPGANv1Clean
from instantrestore.training.config import load_config
from instantrestore.training.recipes import build_recipe

HELD_OUT = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/train_gfpgan_compact.yaml")
    parser.add_argument("--generator", default="instantrestore/weights/gfpgan_compact")
    parser.add_argument("--pairs", type=int, default=240)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--r1-gamma", type=float, default=None, help="default: the config's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(args.config, [] if args.r1_gamma is None else [f"losses.r1_gamma={args.r1_gamma}"])
    recipe = build_recipe(config)
    torch.manual_seed(args.seed)

    started = time.perf_counter()
    data = FaceRestorationDataset(config.data.data_dir, "train", config.data.size, config.data.preset, 0, args.seed)
    generator = GFPGANv1Clean.from_pretrained(args.generator).eval()
    picks = torch.randperm(len(data))[:args.pairs].tolist()
    reals, fakes = [], []
    with torch.no_grad():
        for start in range(0, len(picks), 8):
            batch = torch.utils.data.default_collate([data.sample(i) for i in picks[start:start + 8]])
            restored, _ = generator(batch["degraded"])
            reals.append(batch["target"])
            fakes.append(restored.clamp(-1, 1))
    reals, fakes = torch.cat(reals), torch.cat(fakes)
    print(f"{len(reals)} pairs in {time.perf_counter() - started:.0f} s; mean |real - restored| "
          f"{(reals - fakes).abs().mean():.4f}")

    weights, optim = config.losses, config.optim
    discriminator = StyleGAN2Discriminator(config.data.size, **recipe.discriminator_size())
    ratio = weights.r1_interval / (weights.r1_interval + 1)  # as the trainer: lazy R1's corrected Adam
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=optim.lr_d * ratio,
                                 betas=(optim.betas[0] ** ratio, optim.betas[1] ** ratio))
    train_reals, train_fakes = reals[:-HELD_OUT], fakes[:-HELD_OUT]
    history = []
    for step in range(args.steps):
        index = torch.randint(0, len(train_reals), (config.data.batch_size,))
        loss, logs = recipe.discriminator_step(discriminator, train_fakes[index], train_reals[index], step)
        history.append(logs["d_loss"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        real_logits, fake_logits = discriminator(reals[-HELD_OUT:]), discriminator(fakes[-HELD_OUT:])
    accuracy = ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()).item() / 2
    quarter = max(1, args.steps // 4)
    print(f"r1_gamma {weights.r1_gamma}: loss {sum(history[:quarter]) / quarter:.3f} (first quarter) -> "
          f"{sum(history[-quarter:]) / quarter:.3f} (last quarter); held-out accuracy {accuracy:.2f}, "
          f"logit real - restored {(real_logits.mean() - fake_logits.mean()).item():+.3f}")


if __name__ == "__main__":
    main()
