"""docs/review.md's reload step, for real: build the canary example, run it, rebuild with the
change, SIGHUP; the runtime logs exactly the lines the doc shows (its listener and admin
server moved to port 0 by an overlay both builds share, so nothing here needs a fixed port)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from meshgen.cli import main
from tests.e2e.runtime_harness import run_dist
from tests.polling import eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "review.md").read_text(encoding="utf-8")
PORTS = 'listeners: [{name: edge, address: "127.0.0.1:0"}]\nadmin: "127.0.0.1:0"\n'


def _shown() -> list[str]:
    (block,) = re.findall(r"^```text\n(.*?)^```", DOC, re.M | re.S)
    return [line.split("meshgen.runtime: ", 1)[1] for line in block.splitlines()]


def test_the_reload_logs_what_the_doc_shows(tmp_path: Path) -> None:
    overlay = tmp_path / "ports.yaml"
    overlay.write_text(PORTS)
    dist = tmp_path / "canary-dist"

    def build(spec: str) -> None:
        assert main(["build", str(ROOT / spec), "-o", str(dist), "--overlay", str(overlay)]) == 0

    build("examples/canary/mesh.yaml")
    with run_dist(dist) as rt:
        mark = len(rt.log_text())
        build("docs/review/canary-next.yaml")
        rt.proc.send_signal(signal.SIGHUP)
        eventually(
            lambda: "reloaded" in rt.log_text()[mark:], what="the reload", context=rt.log_text
        )
        eventually(
            lambda: rt.log_text()[mark:].count("reload: ") >= len(_shown()) - 1,
            what="every change line",
            context=rt.log_text,
        )
        logged = [
            line.split("meshgen.runtime: ", 1)[1]
            for line in rt.log_text()[mark:].splitlines()
            if "meshgen.runtime: reload" in line
        ]
    assert logged == [line.replace("/tmp/canary-dist", str(dist)) for line in _shown()]
