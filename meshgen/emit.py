"""Write a build to DIST atomically; compare a build with DIST (``--check``).

Theory of operation: files are written to a fresh temporary folder next to DIST, the bytes
written are verified (MANIFEST.json's hashes match every file; every ``.py`` up to
:data:`PARSE_MAX` bytes compiles, every such ``.json``/``.yml`` parses), and only then swapped
in: DIST is renamed away, the new folder renamed in, the old one deleted.
Any failure before the swap removes the temporary folder and leaves DIST byte-for-byte intact.
A DIST that exists but holds no MANIFEST.json is not ours and is never replaced. ``meshgen
build`` hands each target's files to a :class:`Staging` as soon as they are rendered, so most
of DIST is written on a thread while the next target renders; :func:`emit` writes a whole
build at once through the same steps.

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
import queue
import secrets
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_text(
    files: Mapping[str, str],
    spec_name: str,
    spec_bytes: bytes,
    version: str,
    overlays: Sequence[tuple[str, bytes]] = (),
    hashed: Mapping[str, str] | None = None,
) -> str:
    """MANIFEST.json: version, the hash of every input and of every file; no timestamps.

    ``inputs`` lists mesh.yaml then each overlay in the order applied, by path relative to
    mesh.yaml's folder (``-`` for standard input); ``spec`` repeats mesh.yaml's entry.
    ``hashed`` holds the hashes already taken of some files' bytes (:meth:`Staging.hashes_of`).
    """
    inputs = [(spec_name, spec_bytes), *overlays]
    known = hashed or {}
    doc = {
        "meshgen": version,
        "spec": {"name": spec_name, "sha256": sha256(spec_bytes)},
        "inputs": [{"path": name, "sha256": sha256(data)} for name, data in inputs],
        "files": {
            path: known.get(path) or sha256(text.encode("utf-8"))
            for path, text in sorted(files.items())
        },
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
    import yaml

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
    Staging(dist).commit(files)


class Staging:
    """A new DIST written next to the old one, partly while the build still renders.

    Files handed over with :meth:`add` (a target's files, as soon as they are rendered) are
    encoded, written, checked and hashed on a thread: writing is system time with the
    interpreter lock released, so at 10,000 services most of the ~195 MB is written while the
    caller renders the next target, at no extra CPU time. :meth:`commit` writes what was not
    handed over, waits for the thread, checks MANIFEST.json against every file as written and
    swaps the folder in; :meth:`discard` removes it (a no-op after a commit). The temporary
    folder is made at the first :meth:`add`; a DIST that cannot be written is reported by
    :meth:`commit`, after the build's diagnostics, as :func:`emit` always did.
    """

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self._tmp: Path | None = None
        self._refused = False
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Mapping[str, str] | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._written: dict[str, str] = {}  # path -> the text written
        self._hashes: dict[str, str] = {}
        self._manifest: bytes | None = None

    def add(self, files: Mapping[str, str]) -> None:
        """Write ``files`` on the thread (the texts are kept until :meth:`commit` checks them)."""
        if self._refused:
            return
        if self._thread is None:
            try:
                self._open()
            except EmitError:
                self._refused = True  # commit opens it again and raises
                return
            self._thread = threading.Thread(target=self._run, name="meshgen-emit", daemon=True)
            self._thread.start()
        self._queue.put(dict(files))  # the caller may go on changing its mapping

    def hashes_of(self, files: Mapping[str, str]) -> dict[str, str]:
        """The sha256 of the bytes written for each of ``files`` handed over with that very
        text, once the thread has written everything handed over so far (for MANIFEST.json:
        hashing 195 MB again cost ~0.2 s at 10,000 services)."""
        if self._thread is None:
            return {}
        self._queue.join()
        written = self._written
        return {p: h for p, h in self._hashes.items() if written[p] is files.get(p)}

    def commit(self, files: Mapping[str, str]) -> None:
        """Make ``files`` (the whole build) the new DIST, or raise and leave DIST untouched."""
        try:
            self._join()
            tmp = self._tmp if self._tmp is not None else self._open()
            for path, text in files.items():
                if self._written.get(path) != text:
                    self._write(tmp, path, text)
            extra = sorted(self._written.keys() - files.keys())
            if extra:
                raise VerifyError(f"{extra[0]} was written but is not part of the build")
            if self._manifest is not None:
                check_manifest(self._manifest, self._hashes)
            tmp.chmod(0o755)
            _swap(tmp, self.dist.absolute())
            self._tmp = None
        except OSError as exc:
            self.discard()
            raise EmitError(f"cannot write {self.dist}: {exc}") from exc
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Stop writing and remove the temporary folder (DIST itself is never touched)."""
        if self._thread is not None:
            self._failure = self._failure or EmitError("discarded")  # the thread stops writing
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _open(self) -> Path:
        _owned(self.dist)
        parent = self.dist.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.dist.name}.new-", dir=parent))
        except OSError as exc:
            raise EmitError(f"cannot create a folder next to {self.dist}: {exc.strerror}") from exc
        return self._tmp

    def _run(self) -> None:
        tmp = self._tmp
        assert tmp is not None
        while (files := self._queue.get()) is not None:
            for path, text in files.items():
                if self._failure is not None:
                    break
                try:
                    self._write(tmp, path, text)
                except BaseException as exc:  # raised again by commit, in the caller's thread
                    self._failure = exc
            self._queue.task_done()

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            raise self._failure

    def _write(self, tmp: Path, path: str, text: str) -> None:
        """Write one file, check its syntax, and keep its hash (MANIFEST.json's bytes)."""
        target = tmp.joinpath(*_check_relative(path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        target.write_bytes(data)
        check_syntax(path, data)
        self._written[path] = text
        if path == MANIFEST:
            self._manifest = data
        else:
            self._hashes[path] = sha256(data)


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
