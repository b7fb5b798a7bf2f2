"""A request made inside this process (``Mesh.request``), shaped like one the sidecar parsed.

Why: the request machine (:mod:`.attempt`) and the head builder (:mod:`.heads`) read a request
through the attributes of ``http1.Request``; giving the in-process client's calls the same
shape is what makes them route, retry and reach the endpoint exactly as the sidecar's requests
do. The caller is the local process, as a sidecar sees its application: ``127.0.0.1`` over
plain HTTP (``X-Forwarded-For: 127.0.0.1``, ``X-Forwarded-Proto: http``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..codec.http1 import first_header
from ..codec.upstream_conn import NO_TOKENS, connection_tokens

LOCAL_IP: Final = "127.0.0.1"
# Methods whose empty body is still announced (``Content-Length: 0``), as http.client does.
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


class LocalCaller:
    """The downstream side of an in-process call: never closes, never presents a certificate."""

    __slots__ = ("forwarded",)

    client_ip: Final = LOCAL_IP
    peer_cert: Final = None
    closed: Final = False

    def __init__(self) -> None:
        self.forwarded: bytes | None = None  # the head builder's X-Forwarded-* cache


_CALLER = LocalCaller()


class LocalRequest:
    """One call's method, Host, target and headers (names lower-case), with the facts the
    sidecar's parser notes while reading a head: ``x-request-id``, ``X-Forwarded-For`` and
    ``Via`` (all lines joined), and the names ``Connection`` lists (hop-by-hop)."""

    __slots__ = ("body", "conn_tokens", "content_length", "headers", "host", "method",
                 "payload", "request_id", "target", "via", "xff")  # fmt: skip

    chunked: Final = False
    upgrade: Final = False
    conn: Final = _CALLER

    def __init__(
        self, method: str, host: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> None:
        self.method = method
        self.host = host
        self.target = target.encode("utf-8")
        self.body = None  # the whole body is in hand (``payload``): complete and replayable
        self.payload = body
        self.content_length = len(body) if body or method in _BODY_METHODS else -1
        self.headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]
        self.request_id: bytes | None = None
        self.xff: bytes | None = None
        self.via: bytes | None = None
        tokens = NO_TOKENS
        for k, v in self.headers:
            if k == b"x-request-id" and self.request_id is None:
                self.request_id = v
            elif k == b"x-forwarded-for":
                self.xff = v if self.xff is None else self.xff + b", " + v
            elif k == b"via":
                self.via = v if self.via is None else self.via + b", " + v
            elif k == b"connection":
                tokens = connection_tokens(v, tokens)
        self.conn_tokens = tokens

    def header(self, name: str) -> str | None:
        """First value of a header (routing, hash keys)."""
        return first_header(self.headers, name)
