"""Facts about the files a spec names (TLS certificates, keys, CAs), gathered once by ``source``.

Theory of operation: only ``source`` reads the file system, so the checks stay pure. After the
document is built, :func:`gather` looks at every ``ca``/``cert``/``key`` string under
``defaults.tls``, ``services.*.tls`` and ``listeners[].tls`` -- whatever the schema will later
say about them -- and records, per path as written, whether it exists, what it is, its
permission bits and its identity (device, inode). A certificate is also read (up to
:data:`PEM_LIMIT`, regular files only, so a FIFO never blocks the build) for a PEM private-key
block, and its ``<cert>.key`` neighbour is looked up: HAProxy loads a certificate's key from one
of those two places. Relative paths resolve against ``base_dir`` (mesh.yaml's folder). Each
distinct path is looked at once, however many services name it.
"""

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from meshgen.record import Record

PEM_LIMIT = 1 << 20
"""Bytes of a certificate file read to look for a private-key block."""

FileKind = Literal["missing", "folder", "file", "other"]
_FIELDS = ("ca", "cert", "key")


class FileFacts(Record):
    """What the checks may ask about one named file (symlinks followed)."""

    kind: FileKind
    mode: int = 0  # permission bits
    identity: tuple[int, int] | None = None  # (device, inode): two names, one file?
    has_private_key: bool = False  # certificates only: a PEM private-key block inside


MISSING = FileFacts("missing")


def gather(data: Any, base_dir: Path) -> dict[str, FileFacts]:
    """Facts for every TLS file named in ``data`` and each certificate's ``<cert>.key``."""
    certificate: dict[str, bool] = {}
    for field, value in _named(data):
        certificate[value] = certificate.get(value, False) or field == "cert"
    for value, is_cert in list(certificate.items()):
        if is_cert:
            certificate.setdefault(value + ".key", False)
    return {
        value: _look(resolve(value, base_dir), read=is_cert)
        for value, is_cert in certificate.items()
    }


def resolve(value: str, base_dir: Path) -> Path:
    """A path as written, resolved the way the build resolves it (against mesh.yaml's folder)."""
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _named(data: Any) -> Iterator[tuple[str, str]]:
    """(field, path) of every TLS file string in the spec's plain data."""
    if not isinstance(data, dict):
        return
    blocks: list[Any] = [_get(data.get("defaults"), "tls")]
    services = data.get("services")
    if isinstance(services, dict):
        blocks.extend(_get(s, "tls") for s in services.values())
    listeners = data.get("listeners")
    if isinstance(listeners, list):
        blocks.extend(_get(item, "tls") for item in listeners)
    for block in blocks:
        if isinstance(block, dict):
            for field in _FIELDS:
                value = block.get(field)
                if isinstance(value, str) and value and "\x00" not in value:
                    yield field, value


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def _look(path: Path, read: bool) -> FileFacts:
    try:
        info = path.stat()
    except (OSError, ValueError):
        return MISSING
    mode = info.st_mode
    identity = (info.st_dev, info.st_ino)
    if stat.S_ISDIR(mode):
        return FileFacts("folder", stat.S_IMODE(mode), identity)
    if not stat.S_ISREG(mode):
        return FileFacts("other", stat.S_IMODE(mode), identity)
    has_key = False
    if read:
        try:
            with open(path, "rb") as handle:
                has_key = b"PRIVATE KEY-----" in handle.read(PEM_LIMIT)
        except OSError:
            has_key = False
    return FileFacts("file", stat.S_IMODE(mode), identity, has_key)
