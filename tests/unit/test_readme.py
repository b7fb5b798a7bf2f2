"""The README tells the truth: its outputs table lists every DIST file, its tour's commands
work as written from a fresh clone, and the ports it names are the ones the demo binds."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from meshgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/mesh.yaml"))


def _section(title: str) -> str:
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert found, f"README has no section {title!r}"
    return found.group(1)


def _dist_paths(dist: Path) -> set[str]:
    """Files of a DIST as the table names them: the runtime copy is one row."""
    out = set()
    for path in dist.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(dist).as_posix()
            out.add("meshgen_runtime/" if rel.startswith("meshgen_runtime/") else rel)
    return out


def test_outputs_table_lists_every_dist_file(tmp_path: Path) -> None:
    """Every file any example's DIST holds has a row, and every row is a file some DIST has."""
    built: set[str] = set()
    for example in EXAMPLES:
        dist = tmp_path / example.name
        assert main(["build", str(example / "mesh.yaml"), "-o", str(dist)]) == 0
        built |= _dist_paths(dist)
    rows = set(re.findall(r"^\| `([^`]+)` \|", _section("What `dist/` holds"), re.M))
    assert built - rows == set(), f"DIST files missing from the README table: {built - rows}"
    assert rows - built == set(), f"README rows no example DIST has: {rows - built}"


def test_tour_commands_work_from_a_fresh_clone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `meshgen ...` line of the tour, run from a copy of the repository's examples
    (mode bits as a clone leaves them); `/tmp/...` outputs go to a temporary folder."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "examples", clone / "examples", symlinks=True,
                    ignore=shutil.ignore_patterns("dist", "__pycache__"))  # fmt: skip
    for key in (clone / "examples").rglob("*-key.pem"):
        key.chmod(0o644)
    monkeypatch.chdir(clone)
    blocks = re.findall(r"^```sh\n(.*?)^```", _section("A short tour"), re.M | re.S)
    commands = [c.strip() for b in blocks for ln in b.splitlines() for c in ln.split("&&")]
    meshgen_lines = [c for c in commands if c.startswith("meshgen ")]
    assert len(meshgen_lines) >= 5
    for line in meshgen_lines:
        argv = shlex.split(line.replace("/tmp/", f"{tmp_path}/out-"))[1:]
        assert main(argv) == 0, line
    assert (tmp_path / "out-slo" / "prometheus" / "rules.yml").is_file()


def test_the_ports_named_are_the_demos() -> None:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart" / "mesh.yaml").read_text())
    bound = {e["address"] for e in spec["services"]["hello"]["discovery"]["static"]}
    bound |= {lst["address"] for lst in spec["listeners"]} | {spec["admin"]}
    named = _section("Set up")
    for address in bound:
        assert f"**{address.rsplit(':', 1)[1]}**" in named, address
    demo = (ROOT / "examples" / "quickstart" / "demo.py").read_text()
    assert '("backend-1", 9081), ("backend-2", 9082)' in demo
