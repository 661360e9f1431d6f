"""Merge identity sets (one folder per person each) into one source folder for `prepare-data`.

    python scripts/data/link_identity_sets.py -o data/src_frll_celeba \
        frll=../shared/data/frll/images celeba=../shared/data/celeba-id/images

Each person folder is linked (not copied) as `<name>_<person>`, so identities of different sets never
collide, and the sets' splits (`splits.csv` beside each images folder) are merged into
`<out>/../<out name>_splits.csv` for `prepare-data --splits`. Sources are only read.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path


def read_splits(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    key = next((k for k in ("face_id", "identity", "person") if rows and k in rows[0]), None)
    if key is None or "split" not in rows[0]:
        raise SystemExit(f"{csv_path}: expected columns face_id/identity/person and split")
    return {row[key]: row["split"] for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=IMAGES_DIR")
    parser.add_argument("-o", "--output", required=True, type=Path)
    args = parser.parse_args(argv)

    args.output.mkdir(parents=True, exist_ok=True)
    splits: dict[str, str] = {}
    for spec in args.sets:
        name, _, images = spec.partition("=")
        images_dir = Path(images).resolve()
        if not name or not images_dir.is_dir():
            raise SystemExit(f"{spec}: expected NAME=IMAGES_DIR with an existing folder")
        set_splits = read_splits(images_dir.parent / "splits.csv")
        for person_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            link = args.output / f"{name}_{person_dir.name}"
            if not link.is_symlink():
                os.symlink(person_dir, link, target_is_directory=True)
            if person_dir.name in set_splits:
                splits[link.name] = set_splits[person_dir.name]
    splits_path = args.output.parent / f"{args.output.name}_splits.csv"
    with splits_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["face_id", "split"])
        writer.writerows(sorted(splits.items()))
    print(f"{len(splits)} people linked into {args.output}; splits: {splits_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
