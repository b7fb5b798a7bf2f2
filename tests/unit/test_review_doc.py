"""docs/review.md tells the truth: every `$ meshgen ...` block prints exactly what the doc
shows (stdout then stderr, run from the repository root), every `sh` block's meshgen lines
succeed, and the Mermaid picture is what `meshgen graph` draws. (The reload log block is
checked against a running runtime by tests/e2e/test_review_doc_reload.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from meshgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "review.md").read_text(encoding="utf-8")
CONSOLE = re.findall(r"^```console\n\$ (.*?)\n(.*?)^```", DOC, re.M | re.S)
SHELL = re.findall(r"^```sh\n(.*?)^```", DOC, re.M | re.S)


def test_the_doc_walks_every_step() -> None:
    commands = [c.split()[1] for c, _ in CONSOLE]
    assert {"validate", "plan", "explain", "graph"} <= set(commands)
    assert any("meshgen build" in block for block in SHELL)
    assert "reload: " in DOC


@pytest.mark.parametrize(("command", "shown"), CONSOLE, ids=[c for c, _ in CONSOLE])
def test_console_blocks_print_what_the_doc_shows(
    command: str,
    shown: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)
    assert argv[0] == "meshgen"
    code = main(argv[1:])
    out, err = capsys.readouterr()
    assert out + err == shown
    changes = argv[1] == "plan" and "no changes" not in shown
    assert code == (3 if changes else 0)


def test_shell_blocks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    lines = [ln for block in SHELL for ln in block.splitlines() if ln.startswith("meshgen ")]
    assert lines
    for line in lines:
        assert main(shlex.split(line.replace("/tmp/", f"{tmp_path}/"))[1:]) == 0, line
    assert (tmp_path / "canary-dist" / "mesh" / "routing.py").is_file()


def test_the_mermaid_picture_is_current(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    (picture,) = re.findall(r"^```mermaid\n(.*?)^```", DOC, re.M | re.S)
    assert main(["graph", "docs/review/canary-next.yaml"]) == 0
    assert capsys.readouterr().out == picture
