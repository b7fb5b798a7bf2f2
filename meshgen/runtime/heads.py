"""Upstream request heads and route header operations, compiled for the per-request loop.

Theory of operation: everything that does not change per request is rendered once. A route's
``headers`` operations become a :class:`CompiledOps` (the set of names the copy loop skips and
the ``set`` lines as one bytes value) the first time the route is used in a generation; the
``X-Forwarded-For``/``Via``/``X-Forwarded-Proto`` lines are rendered once per downstream
connection when the client sent none of its own. A request head is then one list
comprehension over the client's headers plus a join.
"""

from __future__ import annotations

from dataclasses import dataclass

from .http1 import HOP_BY_HOP, Request, ServerConnection
from .tables import HeaderOps, Route

VIA = b"1.1 meshgen"
# Request headers never copied as they are: hop-by-hop, and the ones the proxy writes itself.
REQUEST_SKIP = HOP_BY_HOP | {b"host", b"content-length", b"x-forwarded-for", b"via"}
VIA_LINE = b"via: %s\r\n" % VIA


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


def request_head(
    req: Request,
    route: Route,
    path: str,
    query: str,
    rops: CompiledOps,
    shadow_length: int | None = None,
) -> bytes:
    """The upstream request head: rewritten target and host, hop-by-hop removed, XFF/Via.

    ``shadow_length`` makes a mirror's head: ``-shadow`` host, no upgrade, and the body
    framed by that Content-Length (the mirror sends the buffered body whole).
    """
    rw = route.rewrite
    if rw is not None:
        if rw.path_prefix is not None and route.match.path_kind == "prefix":
            prefix = route.match.path
            rest = path[len(prefix) :] if path.startswith(prefix) else path
            path = (
                rw.path_prefix + rest.lstrip("/")
                if rw.path_prefix.endswith("/")
                else rw.path_prefix + rest
            )
        host = rw.host.encode() if rw.host is not None else req.host.encode("latin-1")
    else:
        host = req.host.encode("latin-1")
    if shadow_length is not None:
        host += b"-shadow"
    skip = rops.skip
    tokens = req.conn_tokens
    if tokens:
        skip = skip | tokens
    parts = [
        b"%s %s%s HTTP/1.1\r\nhost: %s\r\n"
        % (req.method.encode(), path.encode(), query.encode(), host)
    ]
    for k, v in req.headers:  # one flat join: cheaper than a formatted line per header
        if k not in skip:
            parts += (k, b": ", v, b"\r\n")
    parts.append(_forwarded(req, rops.drop | tokens if tokens else rops.drop))
    parts.append(rops.tail)
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


def _forwarded(req: Request, dropped: frozenset[bytes]) -> bytes:
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


def _forwarded_lines(xff: bytes, via: bytes, down: ServerConnection) -> bytes:
    proto = b"https" if down.peer_cert is not None else b"http"
    return b"x-forwarded-for: %s%s\r\nvia: %s%s\r\nx-forwarded-proto: %s\r\n" % (
        xff,
        down.client_ip.encode(),
        via,
        VIA,
        proto,
    )


NO_OPS = CompiledOps.of(HeaderOps(), REQUEST_SKIP)  # a mirror's head: no route header ops
