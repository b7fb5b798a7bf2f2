"""The README's first command: ``python examples/quickstart/demo.py`` builds the quickstart and
serves it on the embedded runtime, and the curl commands it prints answer from both backends."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from polling import eventually

DEMO = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "demo.py"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
    return body.decode()


def test_the_demo_serves_the_quickstart_from_both_backends(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        demo = subprocess.Popen(
            [sys.executable, str(DEMO)], stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    try:
        eventually(
            lambda: "mesh is up" in out.read_text() or demo.poll() is not None,
            timeout=30,
            what="the demo's 'mesh is up'",
            context=out.read_text,
        )
        assert demo.poll() is None, out.read_text()
        served = " ".join(_get("http://127.0.0.1:15001/") for _ in range(4))
        assert "hello from backend-1" in served and "hello from backend-2" in served, served
        assert "meshgen_requests_total" in _get("http://127.0.0.1:15000/metrics")
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(15)
    assert code == 0, out.read_text()
