"""emit: verified, atomic replacement of DIST; ``--check`` comparison; MANIFEST.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshgen import emit as emit_module
from meshgen.emit import (
    MANIFEST,
    PARSE_MAX,
    EmitError,
    VerifyError,
    compare,
    emit,
    encoded,
    manifest_text,
    read_tree,
    sha256,
    text_sha256,
    verify,
)


def _files(marker: str = "1") -> dict[str, str]:
    files = {
        "mesh/routing.py": f"# Generated\nX = {marker}\n",
        "prometheus/rules.yml": "groups: []\n",
        "grafana/dashboard.json": '{"a": 1}\n',
        "requirements.txt": "dnspython\n",
    }
    files[MANIFEST] = manifest_text(files, "mesh.yaml", b"version: 1\n", "9.9.9")
    return files


def _siblings(dist: Path) -> list[str]:
    return sorted(p.name for p in dist.parent.iterdir())


def test_emit_writes_every_file_and_a_matching_manifest(tmp_path: Path) -> None:
    dist = tmp_path / "out" / "dist"
    emit(_files(), dist)
    tree = read_tree(dist)
    assert tree == {k: v.encode() for k, v in _files().items()}
    manifest = json.loads(tree[MANIFEST])
    assert manifest["meshgen"] == "9.9.9"
    assert manifest["spec"] == {"name": "mesh.yaml", "sha256": sha256(b"version: 1\n")}
    assert list(manifest["files"]) == sorted(manifest["files"])
    assert manifest["files"]["mesh/routing.py"] == sha256(b"# Generated\nX = 1\n")
    assert _siblings(dist) == ["dist"]


def test_manifest_is_byte_stable() -> None:
    assert _files()[MANIFEST] == _files()[MANIFEST]
    assert "time" not in _files()[MANIFEST].lower()


def test_emit_replaces_an_old_dist_completely(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    emit(_files("1"), dist)
    (dist / "stale.txt").write_text("old")
    emit(_files("2"), dist)
    assert read_tree(dist) == {k: v.encode() for k, v in _files("2").items()}
    assert _siblings(dist) == ["dist"]


def test_a_verify_failure_leaves_the_old_dist_byte_for_byte_intact(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    emit(_files("1"), dist)
    (dist / "meshgen_runtime" / "__pycache__").mkdir(parents=True)
    before = read_tree(dist)
    broken = dict(_files("1"), **{"mesh/routing.py": "X = (\n"})
    with pytest.raises(VerifyError, match=r"mesh/routing\.py"):
        emit(broken, dist)
    assert read_tree(dist) == before
    assert _siblings(dist) == ["dist"]


@pytest.mark.parametrize(
    ("path", "text"),
    [("prometheus/rules.yml", "a: [\n"), ("grafana/dashboard.json", "{,}"), ("../x.txt", "x")],
)
def test_broken_or_unsafe_outputs_are_never_swapped_in(
    tmp_path: Path, path: str, text: str
) -> None:
    dist = tmp_path / "dist"
    emit(_files(), dist)
    before = read_tree(dist)
    with pytest.raises(VerifyError):
        emit({**_files(), path: text}, dist)
    assert read_tree(dist) == before
    assert _siblings(dist) == ["dist"]


def test_only_generated_code_is_parsed_the_runtime_copy_by_hash() -> None:
    """The runtime's copy is meshgen's own source (compiled by the test suite): emit checks it
    by hash and does not parse it again; the same text as a generated module is parsed."""
    verify({"meshgen_runtime/app/x.py": b"X = (\n"})
    with pytest.raises(VerifyError, match=r"mesh/x\.py"):
        verify({"mesh/x.py": b"X = (\n"})


def test_a_manifest_that_does_not_match_is_a_verify_error(tmp_path: Path) -> None:
    files = _files()
    files["requirements.txt"] = "changed after hashing\n"
    with pytest.raises(VerifyError, match="MANIFEST"):
        emit(files, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_a_folder_that_is_not_a_dist_is_never_replaced(tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(EmitError, match="refusing"):
        emit(_files(), precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmitError, match="not a directory"):
        emit(_files(), tmp_path / "file")


def test_an_empty_folder_may_become_a_dist(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    emit(_files(), tmp_path / "dist")
    assert (tmp_path / "dist" / MANIFEST).is_file()


def test_compare_names_differing_missing_and_extra_files(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    emit(_files(), dist)
    assert compare(_files(), dist) == []
    (dist / "mesh" / "__pycache__").mkdir()
    (dist / "mesh" / "__pycache__" / "routing.cpython-311.pyc").write_bytes(b"\0")
    assert compare(_files(), dist) == []
    (dist / "requirements.txt").unlink()
    (dist / "extra.txt").write_text("x")
    want = dict(_files(), **{"mesh/routing.py": "X = 2\n"})
    assert compare(want, dist) == [
        "differs: mesh/routing.py",
        "missing: requirements.txt",
        "extra: extra.txt",
    ]
    assert compare(_files(), tmp_path / "nope") == [f"missing: {tmp_path / 'nope'} (not built yet)"]


def test_verify_accepts_what_emit_writes() -> None:
    verify({k: v.encode() for k, v in _files().items()})


def test_files_larger_than_parse_max_are_checked_by_their_hash_only(tmp_path: Path) -> None:
    big = "[" + " " * PARSE_MAX + "\n"  # would not parse: large per-service data is not re-parsed
    files = {"envoy/cds.json": big, "mesh/routing.py": "X = 1\n"}
    emit({**files, MANIFEST: manifest_text(files, "mesh.yaml", b"", "9.9.9")}, tmp_path / "a")
    assert read_tree(tmp_path / "a")["envoy/cds.json"] == big.encode()
    stale = manifest_text({**files, "envoy/cds.json": big + " "}, "mesh.yaml", b"", "9.9.9")
    with pytest.raises(VerifyError, match="MANIFEST"):
        emit({**files, MANIFEST: stale}, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_large_file_is_written_and_hashed_in_pieces_as_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces of a few characters, so multi-byte characters sit on every boundary."""
    monkeypatch.setattr(emit_module, "CHUNK", 3)
    text = "é€x🙂" * 50 + "\n"
    assert len(list(encoded(text))) > 1
    assert b"".join(encoded(text)) == text.encode()
    assert text_sha256(text) == sha256(text.encode())
    files = {"grafana/dashboard.json": '{"a": "' + text.strip() + '"}\n', "README.txt": text}
    files[MANIFEST] = manifest_text(files, "mesh.yaml", b"version: 1\n", "9.9.9")
    emit(files, tmp_path / "dist")
    assert read_tree(tmp_path / "dist") == {k: v.encode() for k, v in files.items()}
