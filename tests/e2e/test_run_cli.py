"""`meshgen run DIST` runs DIST's own runtime copy, exactly as `python DIST` does."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest
from runtime_harness import backend, build_dist, run_dist, spec

pytestmark = pytest.mark.e2e

SPEC = """
services: {{a: {{discovery: {{static: [{{address: "{a}"}}]}}}}}}
routes: [{{name: r, match: {{host: shop}}, to: [{{service: a}}]}}]
"""


def test_meshgen_run_serves_a_request(tmp_path: Path) -> None:
    """`meshgen run DIST --ready-file F` binds, writes F and proxies to the backend."""
    with backend("a") as (a, _):
        dist = build_dist(tmp_path / "dist", spec(SPEC.format(a=a)))
        with run_dist(dist, cli=True) as rt:
            status, headers, body = rt.request("GET", "/hello", "shop")
            assert (status, headers["x-backend"], body) == (200, "a", b"a GET /hello\n")
            assert rt.proc.poll() is None


def test_meshgen_run_uses_the_dist_runtime_copy(tmp_path: Path) -> None:
    """The runtime that serves is DIST/meshgen_runtime, not the installed meshgen.runtime:
    a marker added to the DIST copy's main module shows up in the log."""
    with backend("a") as (a, _):
        dist = build_dist(tmp_path / "dist", spec(SPEC.format(a=a)))
        main = dist / "meshgen_runtime" / "app" / "main.py"
        main.write_text(
            main.read_text() + '\nlog.warning("runtime copy at %s", Path(__file__).parent)\n'
        )
        # (an edited copy has another source hash: no compiled build is of it)
        with run_dist(dist, "--log-level", "warning", cli=True, runtime="pure") as rt:
            assert rt.request("GET", "/", "shop")[0] == 200
            assert f"runtime copy at {dist.resolve() / 'meshgen_runtime'}" in rt.log_text()


def test_meshgen_run_refuses_a_folder_that_is_no_dist(tmp_path: Path) -> None:
    """A folder without __main__.py is a usage error (exit 2), not a traceback."""
    from meshgen.cli import main

    assert main(["run", str(tmp_path)]) == 2


def test_python_dist_without_its_requirements_says_how_to_install_them(tmp_path: Path) -> None:
    """On a Python without httptools (a bare venv), `python DIST` exits 2 with the pip command
    for DIST/requirements.txt instead of a ModuleNotFoundError traceback."""
    dist = build_dist(tmp_path / "dist", spec(SPEC.format(a="127.0.0.1:9")))
    venv.create(tmp_path / "bare", with_pip=False, symlinks=True)
    bare = tmp_path / "bare" / "bin" / "python"
    gone = subprocess.run([bare, "-c", "import httptools"], capture_output=True)
    assert gone.returncode == 1  # the venv really lacks it
    run = subprocess.run(
        [bare, dist, "--ready-file", tmp_path / "ready"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "'httptools'" in run.stderr
    assert f"{bare} -m pip install -r {dist / 'requirements.txt'}" in run.stderr
    assert not (tmp_path / "ready").exists()
