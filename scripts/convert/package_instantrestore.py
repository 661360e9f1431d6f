"""Package a trained InstantRestore run as the default model (UNets in float16).

Make a trained InstantRestore checkpoint the packaged default: the same directory layout with the UNets
stored in float16 (half the size; loaded back as float32), keeping the identity net its training used.

    .venv/bin/python scripts/convert/package_instantrestore.py runs/instantrestore_compact/final \\
        -o instantrestore/weights/instantrestore_compact
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from instantrestore.models.instantrestore import CONFIG_NAME, InstantRestoreModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    trained_with = json.loads((args.checkpoint / CONFIG_NAME).read_text()).get("identity_loss_model")
    staging = args.output.with_name(args.output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    InstantRestoreModel.from_pretrained(args.checkpoint).save_pretrained(staging, unet_dtype=torch.float16)
    if trained_with is not None:
        config = json.loads((staging / CONFIG_NAME).read_text())
        config["identity_loss_model"] = trained_with
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    for unet_config in staging.rglob("unet/config.json"):  # diffusers records the run directory it came from
        config = json.loads(unet_config.read_text())
        config.pop("_name_or_path", None)
        unet_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(args.output, ignore_errors=True)
    staging.rename(args.output)
    size = sum(path.stat().st_size for path in args.output.rglob("*") if path.is_file())
    print(f"{args.output}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
