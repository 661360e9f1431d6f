"""The README is the front page: short, its `instantrestore ...` commands work as written, its links lead somewhere.

Every `restore` command is run on a real photo (an FRLL val person, degraded) with the placeholder paths filled
in; commands that need prepared data or start a server (`benchmark`, `app`) are checked by the command line's
own parser, and their behaviour by test_evaluation.py and test_app.py.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instantrestore.cli import build_parser, main
from instantrestore.degradations import degrade
from instantrestore.imageio import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "instantrestore" / "weights" / "MODEL_CARD.md"]
MAX_README_BYTES = 13_000  # about 12 KB: details belong in docs/


def readme_commands() -> list[list[str]]:
    """The README's `instantrestore` command lines (continuations joined, comments dropped), as argv lists."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and Path(argv[0]).name == "instantrestore":
                commands.append(argv[1:])
    return commands


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.encode()) < MAX_README_BYTES
    assert "make demo" in text and "make test" in text
    commands = {argv[0] for argv in readme_commands()}
    assert {"restore", "benchmark"} <= commands  # what the tests below exercise


@pytest.fixture
def placeholders(shared, tmp_path, monkeypatch) -> Path:
    """The README's placeholder paths, relative to a fresh working folder: a degraded photo of an FRLL val
    person and four other photos of that person (at half size: the faces stay large, the test fast)."""
    person = shared / "data" / "frll" / "images" / "005"

    def half(view: str) -> np.ndarray:
        return np.asarray(Image.fromarray(read_image(person / f"005_{view}.jpg")).reduce(2))

    write_image(tmp_path / "old_photo.jpg", degrade(half("03"), "codeformer", seed=0))
    for view in ("08", "02", "04", "07"):
        write_image(tmp_path / "photos_of_grandma" / f"005_{view}.jpg", half(view))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_restore_commands_run_as_written(placeholders):
    restores = [argv for argv in readme_commands() if argv[0] == "restore"]
    assert restores
    for argv in restores:
        assert main(argv) == 0, argv
        out = placeholders / argv[argv.index("-o") + 1]
        assert (out / "restored_imgs" / "old_photo.jpg").is_file() and (out / "report.json").is_file(), argv
        assert list((out / "restored_faces").iterdir()) and list((out / "cropped_faces").iterdir()), argv
    restored = read_image(placeholders / "out" / "restored_imgs" / "old_photo.jpg")
    assert restored.shape == read_image(placeholders / "old_photo.jpg").shape
    upscaled = read_image(placeholders / "out_blind" / "restored_imgs" / "old_photo.jpg")
    assert upscaled.shape[0] == 2 * restored.shape[0]  # `-s 2`


def test_readme_other_commands_parse():
    parser = build_parser()
    for argv in readme_commands():
        if argv[0] != "restore":
            parser.parse_args(argv)  # exits (SystemExit) on an unknown command, flag or choice


def heading_anchors(doc: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_links_in_the_docs_lead_somewhere():
    missing = []
    for doc in DOCS:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text()):
            if "://" in target:
                continue
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists() or (anchor and anchor not in heading_anchors(path)):
                missing.append(f"{doc.relative_to(REPO)} -> {target}#{anchor}")
    assert not missing, missing
