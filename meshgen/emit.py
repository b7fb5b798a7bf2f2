"""Write a build to DIST atomically; compare a build with DIST (``--check``).

Theory of operation: files are written to a fresh temporary folder next to DIST, the bytes
written are verified (MANIFEST.json's hashes match every file; every ``.py`` up to
:data:`PARSE_MAX` bytes compiles, every such ``.json``/``.yml`` parses), and only then swapped
in: DIST is renamed away, the new folder renamed in, the old one deleted.
Any failure before the swap removes the temporary folder and leaves DIST byte-for-byte intact.
A DIST that exists but holds no MANIFEST.json is not ours and is never replaced.

Parsing checks the renderers (a broken template or literal writer), and a small mesh runs the
same renderer code as a large one; what grows with the mesh is the per-service data in a few
files (``mesh/routing.py``, ``envoy/*.json``), written by serializers (``repr`` literals,
``json.dumps``) that the golden and property tests parse. At 10,000 services parsing those
files again cost 3.6 s of CPU, a quarter of the build, so files larger than :data:`PARSE_MAX`
are checked by their hash alone, and so is the runtime's copy (:data:`VERBATIM`): meshgen's
own source, byte for byte, which the test suite compiles. Nor is anything read back: a write
that did not write every byte raises, and the page cache would only hand back the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

MANIFEST = "MANIFEST.json"
IGNORED_DIRS = frozenset({"__pycache__"})
PARSE_MAX = 1 << 20
"""Largest file (bytes) whose syntax :func:`verify` checks by parsing it."""
VERBATIM = "meshgen_runtime/"
"""Where a DIST holds the runtime package, copied verbatim: checked by hash, never parsed."""


class EmitError(Exception):
    """DIST cannot be written or replaced (a usage problem, not a spec problem)."""


class VerifyError(Exception):
    """A generated file is broken: a bug in meshgen, reported as an internal error."""


CHUNK = PARSE_MAX
"""Characters encoded at a time when a file is hashed or written (:func:`encoded`): a file
small enough to be parsed is one piece."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encoded(text: str) -> Iterator[bytes]:
    """``text`` as UTF-8, :data:`CHUNK` characters at a time: the same bytes as one
    ``encode()``, but a DIST's 200 MB are never held encoded at once, so each piece reuses the
    memory the one before it freed instead of faulting in fresh pages (~0.1 s per pass at
    10,000 services, and a build makes two: the hashes in MANIFEST.json, then the write)."""
    if len(text) <= CHUNK:
        yield text.encode("utf-8")
        return
    for start in range(0, len(text), CHUNK):
        yield text[start : start + CHUNK].encode("utf-8")


def text_sha256(text: str) -> str:
    """The sha256 of ``text`` encoded as UTF-8."""
    digest = hashlib.sha256()
    for piece in encoded(text):
        digest.update(piece)
    return digest.hexdigest()


def manifest_text(
    files: Mapping[str, str],
    spec_name: str,
    spec_bytes: bytes,
    version: str,
    overlays: Sequence[tuple[str, bytes]] = (),
) -> str:
    """MANIFEST.json: version, the hash of every input and of every file; no timestamps.

    ``inputs`` lists mesh.yaml then each overlay in the order applied, by path relative to
    mesh.yaml's folder (``-`` for standard input); ``spec`` repeats mesh.yaml's entry.
    """
    inputs = [(spec_name, spec_bytes), *overlays]
    doc = {
        "meshgen": version,
        "spec": {"name": spec_name, "sha256": sha256(spec_bytes)},
        "inputs": [{"path": name, "sha256": sha256(data)} for name, data in inputs],
        "files": {path: text_sha256(text) for path, text in sorted(files.items())},
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def verify(files: Mapping[str, bytes]) -> None:
    """Raise :class:`VerifyError` naming the first generated file up to :data:`PARSE_MAX`
    bytes that does not parse, or when MANIFEST.json does not list every file's hash."""
    for path, data in sorted(files.items()):
        check_syntax(path, data)
    if MANIFEST in files:
        hashes = {p: sha256(d) for p, d in files.items() if p != MANIFEST}
        check_manifest(files[MANIFEST], hashes)


def check_syntax(path: str, data: bytes) -> None:
    """Raise :class:`VerifyError` when ``data`` (up to :data:`PARSE_MAX` bytes) does not parse
    as what its name says (``.py``, ``.json``, ``.yml``/``.yaml``; other kinds are not parsed)."""
    if len(data) > PARSE_MAX or path.startswith(VERBATIM):
        return
    from meshgen.pyyaml import yaml

    try:
        if path.endswith(".py"):
            compile(data, path, "exec", dont_inherit=True)
        elif path.endswith(".json"):
            json.loads(data)
        elif path.endswith((".yml", ".yaml")):
            yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (SyntaxError, ValueError, yaml.YAMLError) as exc:
        raise VerifyError(f"generated file {path} does not parse: {exc}") from exc


def check_manifest(manifest: bytes, hashes: Mapping[str, str]) -> None:
    """Raise :class:`VerifyError` unless MANIFEST.json lists exactly ``hashes`` (path -> sha256
    of every other file)."""
    if json.loads(manifest)["files"] != hashes:
        raise VerifyError(f"{MANIFEST} does not match the files written")


def _check_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise VerifyError(f"a target produced the unsafe path {path!r}")
    return rel


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by POSIX relative path, skipping ``__pycache__``."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in filenames:
            full = Path(dirpath) / name
            out[full.relative_to(root).as_posix()] = full.read_bytes()
    return out


def _owned(dist: Path) -> None:
    """Refuse a DIST that is not a directory or is a non-empty folder meshgen did not write."""
    if not dist.exists() and not dist.is_symlink():
        return
    if not dist.is_dir() or dist.is_symlink():
        raise EmitError(f"{dist} exists and is not a directory")
    if (dist / MANIFEST).is_file() or not any(dist.iterdir()):
        return
    raise EmitError(f"{dist} is not empty and has no {MANIFEST}: refusing to replace it")


def emit(files: Mapping[str, str], dist: Path) -> None:
    """Write ``files`` as the new DIST, or raise and leave the old DIST untouched."""
    _owned(dist)
    parent = dist.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dist.name}.new-", dir=parent))
    except OSError as exc:
        raise EmitError(f"cannot create a folder next to {dist}: {exc.strerror}") from exc
    try:
        hashes: dict[str, str] = {}
        manifest = None
        for path, text in files.items():  # each file checked as written, then dropped
            target = tmp.joinpath(*_check_relative(path).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(target, "wb") as out:
                for data in encoded(text):
                    out.write(data)
                    digest.update(data)
            if len(text) <= CHUNK:  # one piece: ``data`` is the whole file
                check_syntax(path, data)
            if path == MANIFEST:
                manifest = text.encode("utf-8")
            else:
                hashes[path] = digest.hexdigest()
        if manifest is not None:
            check_manifest(manifest, hashes)
        tmp.chmod(0o755)
        _swap(tmp, dist.absolute())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EmitError(f"cannot write {dist}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, dist: Path) -> None:
    """Rename DIST away, rename ``new`` in, delete the old tree; roll back if the second fails."""
    if not dist.exists():
        new.rename(dist)
        return
    old = dist.with_name(f".{dist.name}.old-{secrets.token_hex(4)}")
    dist.rename(old)
    try:
        new.rename(dist)
    except BaseException:
        old.rename(dist)
        raise
    shutil.rmtree(old, ignore_errors=True)


def compare(files: Mapping[str, str], dist: Path) -> list[str]:
    """``--check``: one line per file that differs, is missing from DIST, or is extra in it."""
    if not dist.is_dir():
        return [f"missing: {dist} (not built yet)"]
    have = read_tree(dist)
    want = {path: text.encode("utf-8") for path, text in files.items()}
    out = [f"differs: {p}" for p in sorted(want.keys() & have.keys()) if want[p] != have[p]]
    out += [f"missing: {p}" for p in sorted(want.keys() - have.keys())]
    out += [f"extra: {p}" for p in sorted(have.keys() - want.keys())]
    return out
