"""Our forward pass against the authors' own on ../shared/authors-fixture (docs/paper-weights.md).

How closely the converted authors' checkpoint reproduces the authors' own forward pass (the numbers in
docs/paper-weights.md; `tests/test_authors_checkpoint.py` holds them to the fixture's tolerance).

    .venv/bin/python scripts/measure/compare_authors_fixture.py [--fixture ../shared/authors-fixture] [--threads 2]

Converts the fixture's `authors_ckpt.pt` on its stand-in base, runs our forward on the golden inputs with
the golden noise (each tensor where the fixture README says the authors' enters) and prints the largest
absolute difference from each golden tensor we produce.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from instantrestore.models.authors_checkpoint import convert_authors_checkpoint
from instantrestore.models.instantrestore import InstantRestoreModel

REPO = Path(__file__).resolve().parents[2]
LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    return (images_u8.float() / 255 - 0.5) / 0.5  # the authors' ToTensor + Normalize(0.5, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", type=Path, default=REPO.parent / "shared" / "authors-fixture")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    golden = load_file(str(args.fixture / "golden.safetensors"))

    with tempfile.TemporaryDirectory() as tmp:
        report = convert_authors_checkpoint(args.fixture / "authors_ckpt.pt", Path(tmp) / "converted",
                                            str(args.fixture / "base"), str(args.fixture / "base" / "vae"))
        model = InstantRestoreModel.from_pretrained(report.output).eval()
    with torch.no_grad():
        kv = model.encode_references(normalise(golden["refs_u8"]),
                                     noise=(golden["noise_vae_refs"], golden["noise_t1_refs"]))
        restored, attention = model(normalise(golden["input_u8"]), kv, capture_attention_layer=LAYER,
                                    noise=(golden["noise_vae_input"], golden["noise_t249_input"]))
    ours = {"output": restored.clamp(-1, 1), "attn_probs": attention.probs, "ref_keys": kv[LAYER][0],
            "ref_values": kv[LAYER][1], "caption_enc": model.prompt_embeds}
    differences = {name: (value - golden[name]).abs().max().item() for name, value in ours.items()}
    print(json.dumps({"conversion": str(report), "max_abs_difference": differences, "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
