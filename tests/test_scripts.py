"""scripts/ is sorted by purpose, and each script says in its first line what it is for."""

import ast
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
FOLDERS = {"bench", "measure", "convert", "data", "figures"}


def test_every_script_sits_in_a_purpose_folder_and_opens_with_one_line():
    scripts = sorted(SCRIPTS.rglob("*.py"))
    assert scripts
    for script in scripts:
        assert script.parent.name in FOLDERS and script.parent.parent == SCRIPTS, script
        docstring = ast.get_docstring(ast.parse(script.read_text()))
        assert docstring, f"{script}: no docstring"
        first, _, rest = docstring.partition("\n")
        assert first.strip() and len(first) <= 120 and (not rest or rest.startswith("\n")), f"{script}: {first!r}"
