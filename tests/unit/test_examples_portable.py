"""Every example keeps working when its folder is copied elsewhere, and tells editors where the
schema is in a way that survives the copy (the schema's ``$id`` URL, not a relative path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meshgen.cli import main
from meshgen.emit import read_tree
from meshgen.resources import schema_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/mesh.yaml"))
MODELINE = f"# yaml-language-server: $schema={schema_id()}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_a_copied_example_builds_the_same_dist(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copied (symlinks kept, as git keeps them) to an unrelated folder and built from there,
    the example builds exactly the DIST it builds in place: nothing depends on where it is."""
    copy = tmp_path / "elsewhere" / example.name
    shutil.copytree(example, copy, symlinks=True, ignore=shutil.ignore_patterns("dist"))
    monkeypatch.chdir(tmp_path)
    assert main(["build", str(copy / "mesh.yaml"), "-o", str(tmp_path / "copied")]) == 0
    assert main(["build", str(example / "mesh.yaml"), "-o", str(tmp_path / "in-place")]) == 0
    assert read_tree(tmp_path / "copied") == read_tree(tmp_path / "in-place")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_schema_modeline_is_the_schema_id(example: Path) -> None:
    first = (example / "mesh.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == MODELINE
    assert schema_id().startswith("https://")
