"""One proxied exchange: tries with retries until response headers, then the streamed response.

Theory of operation: a *try* is pick endpoint -> pooled connection -> request head (+ body from
the replay buffer or stream) -> wait for response headers under
``min(per_try_timeout, what is left of timeout)``. A try ends in an outcome: a status, or
``connect-failure`` / ``reset`` / ``timeout``. Retryable outcomes (``resilience.retryable``),
within the attempt count, the retry budget and the deadline, and only while the request body can
be resent (not yet sent, or kept whole in the 64 KiB replay buffer), start another try after a
jittered backoff, avoiding endpoints already tried. A stale pooled connection that closes before
answering is retried once on a fresh connection without counting as a try. The accepted
response's head is written, then its body is piped by the protocols (flow-controlled) while an
idle watchdog enforces ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .http1 import HOP_BY_HOP, Request, ServerConnection, UpstreamConnection, status_line
from .metrics import Metrics
from .pool import ConnectError, Pool
from .resilience import backoff_delay, retryable
from .tables import Cluster, HeaderOps, Match, Mirror, Route, Target
from .upstreams import Picked

if TYPE_CHECKING:
    from .proxy import Generation

log = logging.getLogger("meshgen.proxy")
VIA = b"1.1 meshgen"
MAX_MIRRORS = 64


@dataclass(frozen=True, slots=True)
class ForwardResult:
    status: int
    local: bytes | None = None  # the proxy answers itself with this body


# Request headers never copied as they are: hop-by-hop, and the ones the proxy writes itself.
_REQUEST_SKIP = HOP_BY_HOP | {b"host", b"content-length", b"x-forwarded-for", b"via"}
_VIA_LINE = b"via: %s\r\n" % VIA
_NO_EXCLUDE: frozenset[str] = frozenset()


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


class Exchange:
    """Forwarding and mirroring over one shared connection pool."""

    def __init__(self, metrics: Metrics, pool: Pool | None = None) -> None:
        self.metrics = metrics
        self.pool = pool if pool is not None else Pool()
        self._mirrors = 0
        self.mirrors_skipped = 0  # bodies too large for the replay buffer, or too many mirrors
        self._keys: dict[int, tuple[Picked, str, str]] = {}

    def _ops(self, gen: Generation, route: Route) -> tuple[CompiledOps, CompiledOps]:
        ops = gen.header_ops.get(route.name)
        if ops is None:
            ops = (
                CompiledOps.of(route.request_headers, _REQUEST_SKIP),
                CompiledOps.of(route.response_headers, HOP_BY_HOP),
            )
            gen.header_ops[route.name] = ops
        return ops

    def _key(self, picked: Picked) -> tuple[Picked, str, str]:
        """(picked, pool key, address), cached by ``id(picked)`` (upstreams reuses them)."""
        if len(self._keys) >= 4096:
            self._keys.clear()
        address = picked.endpoint.address
        entry = (picked, f"{picked.service}/{address}", address)
        self._keys[id(picked)] = entry  # holds ``picked``: its id cannot be reused meanwhile
        return entry

    def request_head(
        self,
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
        parts += [b"%s: %s\r\n" % (k, v) for k, v in req.headers if k not in skip]
        parts.append(self._forwarded(req, rops.drop | tokens if tokens else rops.drop))
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
                    parts.append(b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade.encode())
        parts.append(b"\r\n")
        return b"".join(parts)

    @staticmethod
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

    async def forward(
        self,
        gen: Generation,
        req: Request,
        route: Route,
        target: Target,
        cluster: Cluster,
        path: str,
        query: str,
        hash_key: bytes | None,
        rid: bytes,
    ) -> ForwardResult:
        loop = req.conn.loop
        assert loop is not None
        deadline = loop.time() + target.timeout_s
        policy = target.retries
        max_tries = 1 + (policy.attempts if policy is not None else 0)
        budget = gen.budgets.get(target.service) if policy is not None else None
        if budget is not None:
            budget.record_request()
        rops, sops = self._ops(gen, route)
        if req.expect_continue and req.body is not None and not req.body.complete:
            req.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        head = self.request_head(req, route, path, query, rops)
        exclude = _NO_EXCLUDE  # endpoints already tried
        tries = 0
        stale_retry = True
        last = _NO_ENDPOINT
        upstreams = gen.upstreams
        while True:
            picked = upstreams.pick(target.service, target.subset, hash_key, exclude)
            if picked is None:
                return last
            tries += 1
            entry = self._keys.get(id(picked))
            if entry is None or entry[0] is not picked:
                entry = self._key(picked)
            key, address = entry[1], entry[2]
            remaining = deadline - loop.time()
            per_try = min(policy.per_try_timeout_s, remaining) if policy is not None else remaining
            upstreams.begin(picked)
            try:
                outcome, conn = await self._try(gen, req, picked, key, head, per_try)
                if outcome == "stale" and stale_retry:
                    stale_retry = False
                    tries -= 1
                    continue
                result: int | str = "reset" if outcome == "stale" else outcome
                if conn is not None:
                    result = conn.status
                self.metrics.inc_upstream(picked.service, address, result)
                upstreams.report(picked, result)
                # Statuses below 400 satisfy no retry condition (resilience.retryable).
                can_retry = (
                    policy is not None
                    and (conn is None or result >= 400)  # type: ignore[operator]
                    and tries < max_tries
                    and (req.body is None or req.body.replayable)
                    and retryable(policy, req.method, result)
                    and deadline - loop.time() > 0
                )
                if can_retry and budget is not None and budget.try_retry():
                    assert policy is not None
                    exclude = exclude | {address}
                    if conn is not None:
                        conn.abort()
                    if req.body is not None:
                        req.body.detach()
                    self.metrics.inc_retry(target.service)
                    last = _failure(result) if conn is None else _result(conn.status)
                    delay = backoff_delay(
                        tries, policy.backoff_base_s, policy.backoff_max_s, gen.rng
                    )
                    await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                    continue
                if conn is None:
                    return _failure(result)
                rest = self._respond(req, conn, sops, target.idle_timeout_s)
                if rest is not None:
                    await rest
                return _result(conn.status)
            finally:
                upstreams.end(picked)

    async def _connect(
        self, gen: Generation, picked: Picked, key: str, timeout: float
    ) -> UpstreamConnection | None:
        """A new connection to ``picked`` within the connect timeout; None on failure."""
        cluster = gen.clusters[picked.service]
        breaker = gen.breakers[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            return await self.pool.open(
                key,
                picked.endpoint,
                min(cluster.connect_timeout_s, timeout),
                tls,
                breaker.try_connection,
                breaker.release_connection,
            )
        except ConnectError as exc:
            log.debug("connect %s: %s", picked.endpoint.address, exc)
            return None

    async def _try(
        self,
        gen: Generation,
        req: Request,
        picked: Picked,
        key: str,
        head: bytes,
        timeout: float,
    ) -> tuple[str, UpstreamConnection | None]:
        """One attempt until response headers; returns (failure outcome, None) or ("", conn)."""
        if timeout <= 0:
            return "timeout", None
        conn = self.pool.take(key)
        if conn is None:
            conn = await self._connect(gen, picked, key, timeout)
            if conn is None:
                return "connect-failure", None
        conn.begin(head, req.chunked, req.conn)
        body = req.body
        if body is not None and not body.attach(conn):
            conn.abort()
            return "reset", None
        req.conn.on_close = conn.abort
        conn.arm(timeout)
        try:
            assert conn.headers_future is not None
            await conn.headers_future
        except ConnectionResetError:
            if conn.timed_out:
                return "timeout", None
            if conn.reused and not conn.received and (body is None or body.replayable):
                if body is not None:
                    body.detach()
                return "stale", None
            return "reset", None
        finally:
            conn.disarm()
        return "", conn

    def _respond(
        self, req: Request, conn: UpstreamConnection, sops: CompiledOps, idle: float
    ) -> Coroutine[None, None, None] | None:
        """Write the response head (with the body received so far) in one write.

        Returns a coroutine to await when more is to come (a streaming body, a tunnel); most
        responses are complete by now and need no coroutine, no watchdog, no task switch.
        """
        status = conn.status
        down = req.conn
        skip = sops.skip
        parts = [status_line(status)]
        parts += [b"%s: %s\r\n" % (k, v) for k, v in conn.headers if k not in skip]
        parts.append(sops.tail)
        parts.append(_VIA_LINE)
        framed = conn.has_length and b"content-length" not in skip
        head_only = req.method == "HEAD" or status in (204, 304)
        upgraded = status == 101 and conn.upgraded is not None and req.upgrade
        chunked = False
        if upgraded:
            for k, v in conn.headers:
                if k == b"upgrade":
                    parts.append(b"connection: upgrade\r\nupgrade: %s\r\n" % v)
            req.keep_alive = False
        elif not framed and not head_only:
            if req.version == "1.1":
                chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                req.keep_alive = False
        if not req.keep_alive and not upgraded:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        req.started = True
        if framed and not head_only and not upgraded:
            parts += conn.take_early()
        down.write(b"".join(parts))
        if upgraded:
            return self._tunnel(req, conn)
        if req.method == "HEAD":
            conn.abort()  # llhttp cannot be told the response has no body: never reuse
            return None
        sink: Callable[[bytes], None]
        if chunked:
            write = down.write

            def sink(data: bytes) -> None:
                if data:
                    write(b"%x\r\n%s\r\n" % (len(data), data))

        else:
            sink = down.write
        conn.start_body(sink)
        if not conn.finished:
            return self._stream(req, conn, chunked, idle)
        self._finish(req, conn, chunked)
        return None

    def _finish(self, req: Request, conn: UpstreamConnection, chunked: bool) -> None:
        """The body is through: end the chunked framing, pool or close the connection."""
        down = req.conn
        down.on_close = None
        if chunked:
            down.write(b"0\r\n\r\n")
        if conn.keep_alive and (req.body is None or req.body.complete):
            self.pool.release(conn)
        else:
            conn.abort()

    async def _stream(
        self, req: Request, conn: UpstreamConnection, chunked: bool, idle: float
    ) -> None:
        """Pipe the rest of the body (flow-controlled); abort when idle for ``idle`` seconds."""
        down = req.conn
        loop = down.loop
        assert loop is not None
        down.upstream = conn
        if down.write_paused:
            conn.set_reading(False)
        watchdog: asyncio.TimerHandle | None = None

        def check_idle() -> None:
            nonlocal watchdog
            left = conn.last_activity + idle - loop.time()
            if left <= 0:
                log.info("idle_timeout: closing a stalled response")
                conn.abort()
            else:
                watchdog = loop.call_later(left, check_idle)

        watchdog = loop.call_later(idle, check_idle)
        try:
            await conn.done
        except ConnectionResetError:
            req.keep_alive = False
            down.close()  # the body is cut short; the client must see it
            return
        finally:
            watchdog.cancel()
            down.upstream = None
            down.on_close = None
        self._finish(req, conn, chunked)

    async def _tunnel(self, req: Request, conn: UpstreamConnection) -> None:
        """After a 101: raw bytes both ways until either side closes."""
        down = req.conn
        assert conn.transport is not None and conn.done is not None
        if conn.upgraded:
            down.write(conn.upgraded)
        for chunk in down.tunnel_buffer or ():
            conn.transport.write(chunk)
        down.tunnel_buffer = None
        down.tunnel = conn.transport
        down.upstream = conn
        conn.start_body(down.write)
        with contextlib.suppress(ConnectionResetError):
            await conn.done
        down.close()

    def mirror(self, gen: Generation, mirror: Mirror, req: Request, path: str, query: str) -> None:
        """Fire-and-forget copy of the request; never delays or affects the caller.

        A body is mirrored whole once it has arrived, if it fits the replay buffer
        (``REPLAY_LIMIT``); larger bodies are not mirrored (counted in ``mirrors_skipped``).
        """
        if req.upgrade:
            return
        body = req.body
        if body is None:
            self._fire(gen, mirror, req, path, query, b"")
        elif body.complete:
            self._fire(gen, mirror, req, path, query, body.buffered())
        elif body.replay is not None:
            body.on_end = lambda data: self._fire(gen, mirror, req, path, query, data)
        else:
            self._fire(gen, mirror, req, path, query, None)

    def _fire(
        self,
        gen: Generation,
        mirror: Mirror,
        req: Request,
        path: str,
        query: str,
        body: bytes | None,
    ) -> None:
        if body is None or self._mirrors >= MAX_MIRRORS:
            self.mirrors_skipped += 1
            log.debug(
                "mirror to %s skipped: %s",
                mirror.service,
                "body over the replay limit" if body is None else "too many mirrors in flight",
            )
            return
        picked = gen.upstreams.pick(mirror.service, mirror.subset, None)
        if picked is None:
            return
        head = self.request_head(req, _MIRROR_ROUTE, path, query, _NO_OPS, len(body))
        self._mirrors += 1
        task = asyncio.get_running_loop().create_task(self._shadow(gen, picked, head + body))
        task.add_done_callback(lambda _t: self._end_mirror())

    def _end_mirror(self) -> None:
        self._mirrors -= 1

    async def _shadow(self, gen: Generation, picked: Picked, message: bytes) -> None:
        """Send the mirrored request (head and body in one write) and drain the answer."""
        cluster = gen.clusters[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            async with asyncio.timeout(cluster.timeout_s):
                conn = await self.pool.acquire(
                    picked.service, picked.endpoint, cluster.connect_timeout_s, tls
                )
                conn.begin(message, False, None)
                conn.start_body(lambda _data: None)
                await conn.done
            self.metrics.inc_upstream(picked.service, picked.endpoint.address, conn.status)
            if conn.keep_alive:
                self.pool.release(conn)
            else:
                conn.abort()
        except (ConnectError, ConnectionResetError, TimeoutError) as exc:
            log.debug("mirror to %s failed: %s", picked.endpoint.address, exc)


_NO_ENDPOINT = ForwardResult(503, b"no healthy endpoint\n")
_RESULTS: dict[int, ForwardResult] = {}


def _result(status: int) -> ForwardResult:
    """The (shared, read-only) result of a forwarded response with ``status``."""
    result = _RESULTS.get(status)
    if result is None:
        result = _RESULTS[status] = ForwardResult(status)
    return result


def _failure(outcome: int | str) -> ForwardResult:
    if outcome == "timeout":
        return ForwardResult(504, b"upstream timeout\n")
    if outcome == "connect-failure":
        return ForwardResult(503, b"upstream connect error\n")
    return ForwardResult(502, b"upstream reset\n")


def _forwarded_lines(xff: bytes, via: bytes, down: ServerConnection) -> bytes:
    proto = b"https" if down.peer_cert is not None else b"http"
    return b"x-forwarded-for: %s%s\r\nvia: %s%s\r\nx-forwarded-proto: %s\r\n" % (
        xff,
        down.client_ip.encode(),
        via,
        VIA,
        proto,
    )


_NO_OPS = CompiledOps.of(HeaderOps(), _REQUEST_SKIP)
_MIRROR_ROUTE = Route(name="", match=Match())
