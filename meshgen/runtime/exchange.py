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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .http1 import HOP_BY_HOP, Request, UpstreamConnection, status_line
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


@dataclass(slots=True)
class ForwardResult:
    status: int
    local: bytes | None = None  # the proxy answers itself with this body


@dataclass(frozen=True, slots=True)
class CompiledOps:
    """Header operations as bytes, ready for the per-request loop."""

    drop: frozenset[bytes]
    add: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def of(cls, ops: HeaderOps) -> CompiledOps:
        add = tuple((k.encode(), v.encode()) for k, v in ops.set)
        return cls(frozenset(k.encode() for k in ops.remove) | {k for k, _ in add}, add)


def _connection_tokens(req_headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    for k, v in req_headers:
        if k == b"connection":
            return frozenset(t.strip().lower() for t in v.split(b","))
    return frozenset()


class Exchange:
    """Forwarding and mirroring over one shared connection pool."""

    def __init__(self, metrics: Metrics, pool: Pool | None = None) -> None:
        self.metrics = metrics
        self.pool = pool if pool is not None else Pool()
        self._mirrors = 0

    def _ops(self, gen: Generation, route: Route) -> tuple[CompiledOps, CompiledOps]:
        ops = gen.header_ops.get(route.name)
        if ops is None:
            ops = (CompiledOps.of(route.request_headers), CompiledOps.of(route.response_headers))
            gen.header_ops[route.name] = ops
        return ops

    def request_head(
        self,
        req: Request,
        route: Route,
        path: str,
        query: str,
        rops: CompiledOps,
        shadow: bool = False,
    ) -> bytes:
        """The upstream request head: rewritten target and host, hop-by-hop removed, XFF/Via."""
        rw = route.rewrite
        if rw is not None and rw.path_prefix is not None and route.match.path_kind == "prefix":
            prefix = route.match.path
            rest = path[len(prefix) :] if path.startswith(prefix) else path
            path = (
                rw.path_prefix + rest.lstrip("/")
                if rw.path_prefix.endswith("/")
                else rw.path_prefix + rest
            )
        host = (
            rw.host.encode()
            if rw is not None and rw.host is not None
            else req.host.encode("latin-1")
        )
        if shadow:
            host += b"-shadow"
        parts = [
            b"%s %s%s HTTP/1.1\r\nhost: %s\r\n"
            % (req.method.encode(), path.encode(), query.encode(), host)
        ]
        conn_tokens = _connection_tokens(req.headers)
        xff = via = b""
        upgrade = b""
        drop = rops.drop
        for k, v in req.headers:
            if k in HOP_BY_HOP or k == b"host" or k in drop or k in conn_tokens:
                if k == b"upgrade":
                    upgrade = v
                continue
            if k == b"x-forwarded-for":
                xff = v + b", "
            elif k == b"via":
                via = v + b", "
            elif k != b"content-length":
                parts.append(b"%s: %s\r\n" % (k, v))
        parts.append(
            b"x-forwarded-for: %s%s\r\nvia: %s%s\r\n" % (xff, req.conn.client_ip.encode(), via, VIA)
        )
        parts.append(
            b"x-forwarded-proto: https\r\n"
            if req.conn.peer_cert is not None
            else b"x-forwarded-proto: http\r\n"
        )
        for k, v in rops.add:
            parts.append(b"%s: %s\r\n" % (k, v))
        if req.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        elif req.content_length >= 0:
            parts.append(b"content-length: %d\r\n" % req.content_length)
        if req.upgrade and upgrade and not shadow:
            parts.append(b"connection: upgrade\r\nupgrade: %s\r\n" % upgrade)
        parts.append(b"\r\n")
        return b"".join(parts)

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
        loop = asyncio.get_running_loop()
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
        tried: set[str] = set()
        tries = 0
        stale_retry = True
        last = ForwardResult(503, b"no healthy endpoint\n")
        while True:
            picked = gen.upstreams.pick(target.service, target.subset, hash_key, frozenset(tried))
            if picked is None:
                return last
            tries += 1
            tried.add(picked.endpoint.address)
            remaining = deadline - loop.time()
            per_try = min(policy.per_try_timeout_s, remaining) if policy is not None else remaining
            gen.upstreams.begin(picked)
            try:
                outcome, conn = await self._try(gen, req, picked, head, per_try)
                if outcome == "stale" and stale_retry:
                    stale_retry = False
                    tries -= 1
                    tried.discard(picked.endpoint.address)
                    continue
                result: int | str = "reset" if outcome == "stale" else outcome
                if conn is not None:
                    result = conn.status
                self.metrics.inc_upstream(picked.service, picked.endpoint.address, result)
                gen.upstreams.report(picked, result)
                can_retry = (
                    policy is not None
                    and tries < max_tries
                    and (req.body is None or req.body.replayable)
                    and retryable(policy, req.method, result)
                    and deadline - loop.time() > 0
                )
                if can_retry and budget is not None and budget.try_retry():
                    assert policy is not None
                    if conn is not None:
                        conn.abort()
                    if req.body is not None:
                        req.body.detach()
                    self.metrics.inc_retry(target.service)
                    last = _failure(result) if conn is None else ForwardResult(conn.status)
                    delay = backoff_delay(
                        tries, policy.backoff_base_s, policy.backoff_max_s, gen.rng
                    )
                    await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                    continue
                if conn is None:
                    return _failure(result)
                await self._respond(req, conn, sops, target.idle_timeout_s)
                return ForwardResult(conn.status)
            finally:
                gen.upstreams.end(picked)

    async def _try(
        self, gen: Generation, req: Request, picked: Picked, head: bytes, timeout: float
    ) -> tuple[str, UpstreamConnection | None]:
        """One attempt until response headers; returns (failure outcome, None) or ("", conn)."""
        if timeout <= 0:
            return "timeout", None
        loop = asyncio.get_running_loop()
        cluster = gen.clusters[picked.service]
        breaker = gen.breakers[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            conn = await self.pool.acquire(
                picked.service,
                picked.endpoint,
                min(cluster.connect_timeout_s, timeout),
                tls,
                breaker.try_connection,
                breaker.release_connection,
            )
        except ConnectError as exc:
            log.debug("connect %s: %s", picked.endpoint.address, exc)
            return "connect-failure", None
        conn.begin(head, req.chunked, req.conn)
        if req.body is not None and not req.body.attach(conn):
            conn.abort()
            return "reset", None
        req.conn.on_close = conn.abort
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            conn.abort()

        timer = loop.call_later(timeout, expire)
        try:
            assert conn.headers_future is not None
            await conn.headers_future
        except ConnectionResetError:
            if timed_out:
                return "timeout", None
            if conn.reused and not conn.received and (req.body is None or req.body.replayable):
                if req.body is not None:
                    req.body.detach()
                return "stale", None
            return "reset", None
        finally:
            timer.cancel()
        return "", conn

    async def _respond(
        self, req: Request, conn: UpstreamConnection, sops: CompiledOps, idle: float
    ) -> None:
        """Write the response head, then pipe the body until done or idle for ``idle`` seconds."""
        status = conn.status
        down = req.conn
        parts = [status_line(status)]
        framed = False
        drop = sops.drop
        for k, v in conn.headers:
            if k in HOP_BY_HOP or k in drop:
                continue
            if k == b"content-length":
                framed = True
            parts.append(b"%s: %s\r\n" % (k, v))
        for k, v in sops.add:
            parts.append(b"%s: %s\r\n" % (k, v))
        parts.append(b"via: %s\r\n" % VIA)
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
            parts.extend(conn.take_early())  # one write for head + body already received
        down.write(b"".join(parts))
        if upgraded:
            await self._tunnel(req, conn)
            return
        if req.method == "HEAD":
            conn.abort()  # llhttp cannot be told the response has no body: never reuse
            return
        sink: Callable[[bytes], None]
        if chunked:
            write = down.write

            def sink(data: bytes) -> None:
                if data:
                    write(b"%x\r\n%s\r\n" % (len(data), data))

        else:
            sink = down.write
        down.upstream = conn
        if down.write_paused:
            conn.set_reading(False)
        conn.start_body(sink)
        loop = asyncio.get_running_loop()
        watchdog: asyncio.TimerHandle | None = None

        def check_idle() -> None:
            nonlocal watchdog
            left = conn.last_activity + idle - loop.time()
            if left <= 0:
                log.info("idle_timeout: closing a stalled response")
                conn.abort()
            else:
                watchdog = loop.call_later(left, check_idle)

        assert conn.done is not None
        # Most responses are complete by now: a watchdog only for bodies still streaming.
        watchdog = None if conn.done.done() else loop.call_later(idle, check_idle)
        try:
            await conn.done
        except ConnectionResetError:
            req.keep_alive = False
            down.close()  # the body is cut short; the client must see it
            return
        finally:
            if watchdog is not None:
                watchdog.cancel()
            down.upstream = None
            down.on_close = None
        if chunked:
            down.write(b"0\r\n\r\n")
        if conn.keep_alive and (req.body is None or req.body.complete):
            self.pool.release(conn)
        else:
            conn.abort()

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
        """Fire-and-forget copy of a body-less request; never delays or affects the caller."""
        if req.body is not None or req.upgrade or self._mirrors >= MAX_MIRRORS:
            return
        picked = gen.upstreams.pick(mirror.service, mirror.subset, None)
        if picked is None:
            return
        head = self.request_head(req, _MIRROR_ROUTE, path, query, _NO_OPS, shadow=True)
        self._mirrors += 1
        task = asyncio.get_running_loop().create_task(self._shadow(gen, picked, head))
        task.add_done_callback(lambda _t: self._end_mirror())

    def _end_mirror(self) -> None:
        self._mirrors -= 1

    async def _shadow(self, gen: Generation, picked: Picked, head: bytes) -> None:
        cluster = gen.clusters[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            async with asyncio.timeout(cluster.timeout_s):
                conn = await self.pool.acquire(
                    picked.service, picked.endpoint, cluster.connect_timeout_s, tls
                )
                conn.begin(head, False, None)
                conn.start_body(lambda _data: None)
                assert conn.done is not None
                await conn.done
            self.metrics.inc_upstream(picked.service, picked.endpoint.address, conn.status)
            if conn.keep_alive:
                self.pool.release(conn)
            else:
                conn.abort()
        except (ConnectError, ConnectionResetError, TimeoutError) as exc:
            log.debug("mirror to %s failed: %s", picked.endpoint.address, exc)


def _failure(outcome: int | str) -> ForwardResult:
    if outcome == "timeout":
        return ForwardResult(504, b"upstream timeout\n")
    if outcome == "connect-failure":
        return ForwardResult(503, b"upstream connect error\n")
    return ForwardResult(502, b"upstream reset\n")


_NO_OPS = CompiledOps(frozenset(), ())
_MIRROR_ROUTE = Route(name="", match=Match())
