"""meshgen.forked: work in a forked child, its result or exception back in the caller; and a
large build rendered on two processes is byte-identical to one rendered in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from meshgen import forked
from meshgen.forked import Beside, ChildError, can_fork

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork only"),
    pytest.mark.timeout(60),
]


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork here even when a thread another test started is still alive in pytest's process
    (the work below takes no lock such a thread could hold); the check itself is tested last."""
    monkeypatch.setattr(forked.threading, "active_count", lambda: 1)
    assert can_fork()


@pytest.mark.usefixtures("forking")
def test_the_work_runs_in_a_child_and_its_result_comes_back() -> None:
    with Beside(lambda: (os.getpid(), "x" * 200_000)) as beside:
        pid, text = beside.result()
    assert pid != os.getpid()
    assert text == "x" * 200_000


@pytest.mark.usefixtures("forking")
def test_the_childs_exception_is_raised_in_the_caller_with_its_traceback() -> None:

    def fail() -> None:
        raise ValueError("no such template")

    with Beside(fail) as beside, pytest.raises(ValueError, match="no such template") as caught:
        beside.result()
    assert any("in fail" in note for note in caught.value.__notes__)


@pytest.mark.usefixtures("forking")
def test_a_result_that_does_not_pickle_is_an_error_not_a_hang() -> None:
    with Beside(lambda: threading.Lock()) as beside, pytest.raises(ChildError, match="result"):
        beside.result()


@pytest.mark.usefixtures("forking")
def test_a_child_that_dies_is_an_error() -> None:
    with Beside(lambda: os._exit(3)) as beside, pytest.raises(ChildError, match="status"):
        beside.result()


@pytest.mark.usefixtures("forking")
def test_leaving_the_block_without_the_result_stops_the_child() -> None:
    started = time.monotonic()
    with Beside(lambda: time.sleep(30)) as beside:
        pid = beside._pid
        assert pid
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already: it was stopped, not left running
    assert time.monotonic() - started < 10


def test_without_fork_the_work_runs_in_the_caller_when_asked() -> None:
    ran: list[int] = []
    with Beside(lambda: ran.append(os.getpid()) or 7, fork=False) as beside:
        assert ran == []
        assert beside.result() == 7
    assert ran == [os.getpid()]


@pytest.mark.usefixtures("forking")
def test_without_a_temporary_file_the_work_runs_in_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(forked.tempfile, "TemporaryFile", full)
    with Beside(os.getpid) as beside:
        assert beside.result() == os.getpid()


def test_with_another_thread_alive_the_work_runs_in_the_caller() -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with Beside(os.getpid) as beside:
            assert beside.result() == os.getpid()
    finally:
        stop.set()
        other.join()


BUILD = textwrap.dedent(
    """\
    import hashlib, json, sys
    from pathlib import Path
    import meshgen.forked, meshgen.pipeline as pipeline

    pipeline.ASIDE_FROM = int(sys.argv[2])
    forks = []
    real_fork = meshgen.forked.os.fork
    def fork():
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid
    meshgen.forked.os.fork = fork
    only = sys.argv[3].split(",") if sys.argv[3] else None
    result = pipeline.compile_spec(Path(sys.argv[1]), only=only)
    assert result.files is not None, result.diagnostics
    digest = {p: hashlib.sha256(t.encode()).hexdigest() for p, t in result.files.items()}
    warned = [repr(d) for d in result.diagnostics]
    print(json.dumps({"forks": len(forks), "files": digest, "diagnostics": warned}))
    """
)


def _build(spec: Path, aside_from: int, only: str = "") -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", BUILD, str(spec), str(aside_from), only],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(run.stdout))


@pytest.mark.parametrize("example", ["canary", "tcp"])
def test_a_build_rendered_aside_is_byte_identical_to_one_rendered_in_one_process(
    example: str,
) -> None:
    spec = Path(__file__).resolve().parents[2] / "examples" / example / "mesh.yaml"
    one = _build(spec, 10**9)
    two = _build(spec, 1)
    assert (one["forks"], two["forks"]) == (0, 1)
    assert one["files"] == two["files"]
    files = two["files"]
    assert isinstance(files, dict)
    assert any(path.startswith("mesh/") for path in files)  # the target rendered aside


def test_the_gap_warnings_of_named_targets_are_the_same_from_the_child() -> None:
    """The child writes every GAPS.txt, so it also makes their W701 warnings (``--target``)."""
    spec = Path(__file__).resolve().parents[2] / "examples" / "canary" / "mesh.yaml"
    one = _build(spec, 10**9, "runtime,haproxy,envoy")
    two = _build(spec, 1, "runtime,haproxy,envoy")
    assert (one["forks"], two["forks"]) == (0, 1)
    assert one == {**two, "forks": 0}
    warned = two["diagnostics"]
    assert isinstance(warned, list)
    assert any("W701" in d and "HAProxy" in d for d in warned)
    assert any("W701" in d and "Envoy" in d for d in warned)
