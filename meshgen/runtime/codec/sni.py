"""The server name of a TLS ClientHello, read without terminating TLS (SNI passthrough).

Theory of operation: :func:`server_name` takes the bytes a client has sent so far and answers
one of three things, for *any* input and without raising:

* the host name of the ``server_name`` extension (RFC 6066), in lower case;
* ``None``: this is not a TLS ClientHello, it is malformed, too large, or it carries no host
  name (the connection is refused: nothing could route it);
* :data:`NEED_MORE`: a valid beginning of a ClientHello that ends before the name.

Only the fields on the way to the name are read: the record headers (content type 22,
version 3.x, at most 2^14 bytes each; a ClientHello may be split over several records and is
reassembled), the handshake header (type 1, at most :data:`MAX_HELLO` bytes), then
``legacy_version``, ``random``, ``session_id``, ``cipher_suites`` and
``compression_methods`` are skipped by their lengths, and the extensions are walked until
``server_name``. The answer comes as soon as the name is complete, so a large ClientHello
(post-quantum key shares) is not waited for in full. Input is never read past
:data:`MAX_INPUT` bytes: at that length the answer is never :data:`NEED_MORE`, so the caller's
buffer is bounded by construction. The name must be a DNS name (letters, digits, ``-``, ``_``
and dots; labels of 1..63, 255 in all, no trailing dot, as RFC 6066 requires).
"""

from __future__ import annotations

import enum
import re
from typing import Final, Literal


class Hello(enum.Enum):
    """The answer that is neither a name nor a refusal."""

    NEED_MORE = "need more bytes"


NEED_MORE: Final = Hello.NEED_MORE
SniResult = str | None | Literal[Hello.NEED_MORE]

RECORD_HEADER: Final = 5
MAX_RECORD: Final = 1 << 14  # TLSPlaintext.length limit
MAX_HELLO: Final = 1 << 14  # largest ClientHello accepted (browsers send < 2 KiB)
MAX_INPUT: Final = MAX_HELLO + 4 * RECORD_HEADER + 4096
"""Bytes after which an answer is always given (tiny records cannot stretch the buffer)."""
HELLO_WAIT: Final = 5.0
"""Seconds a passthrough listener waits for the ClientHello (HAProxy's usual inspect delay);
the runtime and the HAProxy target both use this value."""
_HANDSHAKE, _CLIENT_HELLO, _SERVER_NAME, _HOST_NAME = 22, 1, 0, 0
_NAME = re.compile(rb"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*")


class _Short(Exception):
    """The bytes end before the field being read."""


def server_name(data: bytes) -> SniResult:
    """The ClientHello's host name, None (refuse) or NEED_MORE (see the module docstring)."""
    data = data[:MAX_INPUT]
    message = _handshake(data)
    if message is None or message is NEED_MORE:
        return message if message is None or len(data) < MAX_INPUT else None
    body, complete = message
    try:
        found = _find_name(body)
    except _Short:
        return NEED_MORE if not complete and len(data) < MAX_INPUT else None
    if found is None:
        return None
    return found.decode("ascii").lower() if _NAME.fullmatch(found) and len(found) <= 255 else None


def _handshake(data: bytes) -> tuple[bytes, bool] | Literal[Hello.NEED_MORE] | None:
    """The ClientHello body reassembled from the records so far, and whether it is whole."""
    fragments: list[bytes] = []
    have = 0
    pos = 0
    need: int | None = None  # 4 + the handshake length, once its header is in
    while need is None or have < need:
        if len(data) - pos < RECORD_HEADER:
            if len(data) > pos and data[pos] != _HANDSHAKE:
                return None
            break
        kind, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5])
        if kind != _HANDSHAKE or major != 3 or not 0 < length <= MAX_RECORD:
            return None
        chunk = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        fragments.append(chunk)
        have += len(chunk)
        pos += RECORD_HEADER + len(chunk)
        if need is None and have >= 4:
            head = b"".join(fragments)
            if head[0] != _CLIENT_HELLO:
                return None
            need = 4 + int.from_bytes(head[1:4])
            if need > 4 + MAX_HELLO:
                return None
        if len(chunk) < length:
            break  # the record itself is incomplete
    message = b"".join(fragments)
    if len(message) >= 1 and message[0] != _CLIENT_HELLO:
        return None
    if need is None:
        return NEED_MORE
    return message[4:need], have >= need


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise _Short
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def vector(self, size: int) -> bytes:
        """A length-prefixed field (``size`` bytes of length)."""
        return self.take(self.number(size))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _find_name(body: bytes) -> bytes | None:
    """The host name in a ClientHello body; raises _Short where the body ends too early."""
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    if len(r.vector(1)) > 32:  # legacy_session_id
        return None
    suites = r.vector(2)
    if not suites or len(suites) % 2:
        return None
    if not r.vector(1):  # legacy_compression_methods
        return None
    if r.left == 0:
        raise _Short  # extensions follow (or, once the body is whole, there are none)
    end = r.number(2) + r.pos
    while r.pos < end:
        kind, data = r.number(2), r.vector(2)
        if kind == _SERVER_NAME:
            return _host_name(data)
    return None


def _host_name(extension: bytes) -> bytes | None:
    r = _Reader(extension)
    try:
        names = _Reader(r.vector(2))
        if r.left:
            return None
        while names.left:
            kind, name = names.number(1), names.vector(2)
            if kind == _HOST_NAME:
                return name
    except _Short:
        return None  # the extension arrived whole: a short field inside is malformed
    return None
