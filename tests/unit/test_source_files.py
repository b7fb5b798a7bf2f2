"""File facts: ``source`` looks at every file a spec names once; the checks never touch disk."""

from __future__ import annotations

import builtins
import os
import pathlib
import threading
from pathlib import Path
from typing import Any

import pytest

from meshgen import checks, source
from meshgen.lower import lower
from meshgen.source_files import gather

ROOT = Path(__file__).resolve().parents[2]


def _spec(tls: dict[str, str], listener_tls: dict[str, str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "defaults": {"tls": {"ca": "ca.pem"}},
        "services": {"a": {"tls": tls}, "b": {"tls": tls}, "c": None},
    }
    if listener_tls is not None:
        data["listeners"] = [{"tls": listener_tls}, "not a mapping"]
    return data


def test_facts_per_named_file(tmp_path: Path) -> None:
    """Existence, folder, permission bits, a key inside a certificate and <cert>.key."""
    (tmp_path / "ca.pem").write_text("CA")
    (tmp_path / "c.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "k.pem").write_text("key")
    (tmp_path / "k.pem").chmod(0o640)
    (tmp_path / "dir").mkdir()
    facts = gather(
        _spec({"cert": "c.pem", "key": "k.pem"}, {"cert": "dir", "key": "gone.pem"}), tmp_path
    )
    assert sorted(facts) == ["c.pem", "c.pem.key", "ca.pem", "dir", "dir.key", "gone.pem", "k.pem"]
    assert facts["c.pem"].kind == "file" and facts["c.pem"].has_private_key
    assert facts["k.pem"].mode == 0o640 and not facts["k.pem"].has_private_key  # keys: not read
    assert facts["dir"].kind == "folder" and facts["gone.pem"].kind == "missing"
    assert facts["c.pem.key"].kind == "missing"
    assert facts["ca.pem"].identity == (
        os.stat(tmp_path / "ca.pem").st_dev,
        os.stat(tmp_path / "ca.pem").st_ino,
    )


def test_each_file_is_looked_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 services naming one certificate cost one stat per distinct path."""
    seen: list[str] = []
    real = pathlib.Path.stat

    def counting(self: Path, **kwargs: Any) -> os.stat_result:
        seen.append(self.name)
        return real(self, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", counting)
    data = {"services": {f"s{i}": {"tls": {"cert": "c.pem", "key": "k.pem"}} for i in range(10000)}}
    gather(data, tmp_path)
    assert sorted(seen) == ["c.pem", "c.pem.key", "k.pem"]


def test_a_fifo_certificate_does_not_block_the_build(tmp_path: Path) -> None:
    """Only regular files are read, so a FIFO named as a certificate cannot hang `source`."""
    os.mkfifo(tmp_path / "c.pem")
    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(gather(_spec({"cert": "c.pem"}), tmp_path))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "gather blocked on a FIFO"
    assert result["c.pem"].kind == "other"


def test_lowering_and_checks_do_not_touch_the_file_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """With stat/open made to fail, lower + checks of the mTLS example give the same result."""
    spec = ROOT / "examples" / "mtls" / "mesh.yaml"
    doc, diags = source.load(spec)
    assert doc is not None and diags == []
    mesh, lowered = lower(doc)
    assert mesh is not None
    expected = checks.run_all(mesh, doc)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"file system access after source: {args!r}")

    for owner, name in (
        (pathlib.Path, "stat"),
        (pathlib.Path, "exists"),
        (pathlib.Path, "samefile"),
        (pathlib.Path, "open"),
        (os, "stat"),
        (os, "open"),
        (builtins, "open"),
    ):
        monkeypatch.setattr(owner, name, forbidden)
    again, lowered_again = lower(doc)
    assert again is not None and lowered_again == lowered
    assert checks.run_all(again, doc) == expected
