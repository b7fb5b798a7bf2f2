"""The upstream request head, built in one place for the proxy, the in-process client and mirrors.

Theory of operation: whatever sent the request (a client of the sidecar, a call through
``Mesh.request``, a mirror's copy), the endpoint sees the same head for the same request and
route: the route's ``rewrite`` (path prefix, host), its ``headers.request`` operations,
hop-by-hop headers and the names listed in ``Connection`` removed, the caller's
``x-request-id`` (or the one the request machine made), ``X-Forwarded-For`` (the caller's
address appended), ``Via`` (ours appended) and ``X-Forwarded-Proto``, then the body's framing.
A mirror's copy is that head with ``-shadow`` appended to the Host (Envoy's convention) and
its buffered body framed by ``Content-Length``.

Everything that does not change per request is rendered once: a route's header operations
become a :class:`CompiledOps` (the names the copy loop skips and the ``set`` lines as one bytes
value) the first time the route is used in a generation; the ``X-Forwarded-*``/``Via`` lines
once per downstream connection when the caller sent none of its own. A head is then one loop
over the caller's headers and a join.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..codec.h2_server import H2Request, H2Stream
from ..codec.http1 import Request, ServerConnection, UpstreamConnection
from ..codec.upstream_conn import HOP_BY_HOP
from ..tables import HeaderOps, Route
from .local import LocalCaller, LocalRequest

VIA: Final = b"1.1 meshgen"
# Request headers never copied as they are: hop-by-hop, and the ones the proxy writes itself.
REQUEST_SKIP: Final = HOP_BY_HOP | {b"host", b"content-length", b"x-forwarded-for", b"via"}
VIA_LINE: Final = b"via: %s\r\n" % VIA


@dataclass(frozen=True, slots=True)
class CompiledOps:
    """Header operations as bytes, ready for the per-request loop.

    ``skip`` is every header name the copy loop drops (``drop`` plus what the proxy itself
    writes); ``tail`` is the ``set`` lines, rendered once.
    """

    drop: frozenset[bytes]
    add: tuple[tuple[bytes, bytes], ...]
    skip: frozenset[bytes] = frozenset()
    tail: bytes = b""

    @classmethod
    def of(cls, ops: HeaderOps, always: frozenset[bytes]) -> CompiledOps:
        add = tuple((k.encode(), v.encode()) for k, v in ops.set)
        drop = frozenset(k.encode() for k in ops.remove) | {k for k, _ in add}
        tail = b"".join(b"%s: %s\r\n" % kv for kv in add)
        return cls(drop, add, drop | always, tail)


Outgoing = Request | H2Request | LocalRequest
"""What a head is made of: a request the sidecar parsed (HTTP/1.x, HTTP/2) or the in-process
client's. The concrete classes, not a protocol: compiled (mypyc) code reads their attributes
natively instead of by name."""
Downstream = ServerConnection | H2Stream | LocalCaller
"""The side a request came from (``Outgoing.conn``); its X-Forwarded-* lines are cached on it."""


def rewritten_path(route: Route, path: str) -> str:
    """``path`` after the route's ``rewrite.path_prefix`` (which needs a prefix match)."""
    rw = route.rewrite
    if rw is None or rw.path_prefix is None or route.match.path_kind != "prefix":
        return path
    prefix = route.match.path
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    new = rw.path_prefix
    return new + rest.lstrip("/") if new.endswith("/") else new + rest


def request_head(
    req: Outgoing,
    route: Route,
    path: str,
    query: str,
    ops: CompiledOps,
    shadow_length: int | None = None,
) -> bytes:
    """The upstream request head (module docstring); ``ops`` are the route's request header
    operations. ``shadow_length`` makes a mirror's head: ``-shadow`` Host, no upgrade, the
    body framed by that Content-Length."""
    rw = route.rewrite
    if rw is not None:
        path = rewritten_path(route, path)
        host = rw.host.encode() if rw.host is not None else req.host.encode("latin-1")
    else:
        host = req.host.encode("latin-1")
    if shadow_length is not None:
        host += b"-shadow"
    skip = ops.skip
    tokens = req.conn_tokens
    if tokens:
        skip = skip | tokens
    # (joined once below: no %-formatting of the request line, which costs more)
    parts = [req.method.encode(), b" ", path.encode(), query.encode(), b" HTTP/1.1\r\nhost: ",
             host, b"\r\n"]  # fmt: skip
    # One flat join: cheaper than a formatted line per header. Four appends, not ``parts +=
    # (k, b": ", v, b"\r\n")``: compiled code appends natively where it built a tuple and
    # extended the list by a generic call, and CPython specialises ``list.append``.
    for k, v in req.headers:
        if k not in skip:
            parts.append(k)
            parts.append(b": ")
            parts.append(v)
            parts.append(b"\r\n")
    parts.append(_forwarded(req, ops.drop | tokens if tokens else ops.drop))
    parts.append(ops.tail)
    if shadow_length is not None:
        if shadow_length > 0 or req.content_length == 0:
            parts.append(b"content-length: %d\r\n" % shadow_length)
    else:
        if req.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        elif req.content_length >= 0:
            parts.append(b"content-length: %d\r\n" % req.content_length)
        if req.upgrade:
            upgrade = req.header("upgrade")
            if upgrade:
                token = upgrade.encode("latin-1")
                parts.append(b"connection: upgrade\r\nupgrade: %s\r\n" % token)
    parts.append(b"\r\n")
    return b"".join(parts)


def response_skip(ops: CompiledOps, conn: UpstreamConnection) -> frozenset[bytes]:
    """The endpoint's response fields no client gets, whatever the protocol: hop-by-hop, the
    ones its ``Connection`` lists (RFC 9110 section 7.6.1), and the route's removed and set
    names (``ops``: the route's response header operations)."""
    tokens = conn.conn_tokens
    return ops.skip | tokens if tokens else ops.skip


def _forwarded(req: Outgoing, dropped: frozenset[bytes]) -> bytes:
    """X-Forwarded-For (client appended), Via (ours appended) and X-Forwarded-Proto."""
    down = req.conn
    xff, via = req.xff, req.via
    if xff is None and via is None:
        line = down.forwarded  # the common case, rendered once per connection
        if line is None:
            line = down.forwarded = _forwarded_lines(b"", b"", down)
        return line
    xff = b"" if xff is None or b"x-forwarded-for" in dropped else xff + b", "
    via = b"" if via is None or b"via" in dropped else via + b", "
    return _forwarded_lines(xff, via, down)


def _forwarded_lines(xff: bytes, via: bytes, down: Downstream) -> bytes:
    proto = b"https" if down.peer_cert is not None else b"http"
    return b"x-forwarded-for: %s%s\r\nvia: %s%s\r\nx-forwarded-proto: %s\r\n" % (
        xff,
        down.client_ip.encode(),
        via,
        VIA,
        proto,
    )
