"""The README's Layout section names only folders that exist, and the README opens with what a user runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_folders(readme: str) -> list[str]:
    """Folder paths the Layout block names: ``name/`` at the start of a line, indented ones under the last
    unindented folder."""
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    folders, parent = [], ""
    for line in block.splitlines():
        match = re.match(r"^( *)([\w.-]+/)\s", line + " ")
        if not match:
            continue
        indent, name = match.groups()
        if indent:
            folders.append(parent + name)
        else:
            parent = name
            folders.append(name)
    return folders


def test_every_folder_the_layout_names_exists():
    folders = layout_folders((ROOT / "README.md").read_text())
    assert {"covgym/", "algorithms/", "algorithms/estimators/", "envs/", "tests/", "docs/"} <= set(folders)
    missing = [folder for folder in folders if not (ROOT / folder).is_dir()]
    assert not missing, f"README Layout names folders that do not exist: {missing}"


def test_the_layout_names_every_package_of_covgym():
    folders = set(layout_folders((ROOT / "README.md").read_text()))
    packages = {f"covgym/{init.parent.name}/" for init in (ROOT / "covgym").glob("*/__init__.py")}
    assert packages - folders == set(), "README Layout leaves out these packages"


def test_layout_parser_catches_a_folder_that_is_not_there():
    readme = "## Layout\n\n```\nalgorithms/   x\n  nowhere/    y\n```\n"
    assert layout_folders(readme) == ["algorithms/", "algorithms/nowhere/"]
    assert not (ROOT / "algorithms/nowhere").exists()


def test_the_readme_opens_with_the_two_commands_and_reaches_the_quick_start_on_the_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert "make demo" in lines[3] and "make test" in lines[4]
    assert lines.index("## Quick start") < 15
