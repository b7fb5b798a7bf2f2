"""The proxy's tries and responses: what its drivers do for a TRY and a RESPOND.

Theory of operation: an :class:`~.forward.attempt.Attempt` decides; the proxy's drivers (the
coroutine loop ``forward.tries.drive`` and the callback fast path) carry out its actions with
these methods and feed the outcome back as the next event. A *try* takes an idle
pooled connection of the picked endpoint or opens one, sends the head (and the body from the
replay buffer or as it streams in), and waits for the response head under the try's deadline:
while the request body is still arriving only ``idle_timeout`` applies, to bytes either way,
and the ``per_try`` deadline starts once the body is complete. The accepted response's head is
written, then its body is piped by the protocols (flow-controlled) while an idle watchdog
enforces ``idle_timeout``; a 101 becomes a tunnel.

Hot path (one request, one core): the try deadline is the upstream connection's long-lived
timer (no timer per request); a response that arrived whole with its head is written in one
``write`` without another coroutine or watchdog; header operations are compiled once per
route, the X-Forwarded-* lines once per downstream connection (``forward/heads.py``). The
callback fast path (``fastpath.py``) starts a try on a pooled connection without a coroutine
and hands a request over to the coroutine loop wherever it must wait.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Protocol

from ..codec.http1 import Request, RequestBody, UpstreamConnection, status_line
from ..codec.upstream_conn import Downstream
from ..policy import grpc
from .attempt import FAILED, HEAD, Attempt
from .heads import VIA_LINE, CompiledOps, response_skip
from .tries import Upstream, broken, watch_idle

if TYPE_CHECKING:
    from .generation import Generation


class Client(Downstream, Protocol):
    """The side a forwarded request came from: an HTTP/1.x connection (``http1``) or an
    HTTP/2 stream (``h2_server.H2Stream``)."""

    on_close: Callable[[], None] | None  # aborts the try when the client goes

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


class Sent(Protocol):
    """What a try sends of a request (``http1.Request``, ``h2_server.H2Request``)."""

    expect_continue: bool

    @property
    def chunked(self) -> bool: ...

    @property
    def upgrade(self) -> bool: ...

    @property
    def body(self) -> RequestBody | None: ...

    @property
    def conn(self) -> Client: ...


class Exchange(Upstream):
    """The proxy's tries and responses over one shared connection pool."""

    def continue_(self, req: Sent) -> None:
        """``Expect: 100-continue`` is answered once forwarding begins (once per request)."""
        if req.expect_continue:
            req.expect_continue = False
            if req.body is not None and not req.body.complete:
                req.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def abandon(self, att: Attempt, req: Sent) -> None:
        """A try that is retried: its connection (if it answered) is closed, the request body
        detached, so the next try replays it."""
        conn, att.conn = att.conn, None
        if conn is not None:
            self.pool.discard(conn)
        if req.body is not None:
            req.body.detach()

    async def tried(self, gen: Generation, att: Attempt, req: Sent) -> int:
        """One try until the response head (coroutine path); returns the machine's next
        action. A gRPC response head with ``grpc-status`` (trailers-only) sets the attempt's
        ``grpc_status`` first, so the machine can retry on it."""
        self.continue_(req)
        picked = att.picked
        assert att.target is not None
        conn = self.pool.take(picked.key)
        if conn is None:
            conn = await self.connect(gen, picked, picked.key, att.per_try)
            if conn is None:
                return att.step(FAILED, "connect-failure")
        if not self.start(req, conn, att.head, att.per_try, att.target.idle_timeout_s):
            return att.step(FAILED, "reset")
        try:
            await conn.headers_future  # type: ignore[misc]
        except ConnectionResetError:
            return att.step(FAILED, broken(req.conn.closed, req.body, conn))
        finally:
            conn.disarm()
        att.conn = conn
        if att.grpc:
            status = grpc.status_of(conn.headers)
            if status is not None:
                att.grpc_status = status
        return att.step(HEAD, conn.status)

    def start(
        self, req: Sent, conn: UpstreamConnection, head: bytes, timeout: float, idle: float
    ) -> bool:
        """Send the head (and the body so far) on ``conn`` and arm the try's deadline (while
        the body is still arriving: ``idle``, then ``timeout`` from its end); False when the
        body cannot be resent (the connection is discarded)."""
        conn.begin(head, req.chunked, req.conn, upgrade=req.upgrade)
        body = req.body
        if body is not None and not body.attach(conn):
            self.pool.discard(conn)
            return False
        req.conn.on_close = conn.abort
        if body is not None and not body.complete:
            conn.arm_upload(idle, timeout)
        else:
            conn.complete()
            conn.arm(timeout)
        return True

    def respond(
        self, req: Request, conn: UpstreamConnection, sops: CompiledOps, att: Attempt
    ) -> Coroutine[None, None, None] | None:
        """Send the response head (with the body received so far) in one write.

        Returns a coroutine to await when more is to come (a streaming body, a tunnel); most
        responses are complete by now and need no coroutine, no watchdog, no task switch: None
        says the whole response is batched (the driver marks it complete for the client).
        """
        status = conn.status
        down = req.conn
        skip = response_skip(sops, conn)
        parts = [status_line(status)]
        head = conn.headers
        if len(head) != conn.head_count:  # trailers came with it (HTTP/1.1 has no place for
            head = head[: conn.head_count]  # them after a chunked body we frame ourselves)
        for k, v in head:  # one flat join (heads.py: four appends, not a tuple)
            if k not in skip:
                parts.append(k)
                parts.append(b": ")
                parts.append(v)
                parts.append(b"\r\n")
        parts.append(sops.tail)
        parts.append(VIA_LINE)
        framed = conn.has_length and b"content-length" not in skip
        head_only = req.method == "HEAD" or status in (204, 304)
        upgraded = status == 101 and conn.upgraded is not None and req.upgrade
        chunked = False
        if upgraded:
            for k, v in head:
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
        elif req.version == "1.0" and not upgraded:  # HTTP/1.0 keeps it only when told so
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        req.started = True
        if framed and not head_only and not upgraded:
            parts += conn.take_early()
        down.send(b"".join(parts))
        if upgraded:
            return self._tunnel(req, conn)
        if req.method == "HEAD":
            self.pool.discard(conn)  # llhttp cannot be told the response has no body: never reuse
            return None
        if conn.came_whole():  # the whole body came with the head (and went with it): no sink
            self._finish(req, conn, chunked)
            return None
        conn.start_body(down.write_chunk if chunked else down.write)
        if not conn.finished:
            assert att.target is not None
            return self._stream(req, conn, chunked, att.target.idle_timeout_s)
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
            self.pool.discard(conn)

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
        stop = watch_idle(conn, idle, loop)
        try:
            await conn.done
        except ConnectionResetError:
            req.keep_alive = False
            down.close()  # the body is cut short; the client must see it
            return
        finally:
            stop()
            down.upstream = None
            down.on_close = None
        self._finish(req, conn, chunked)

    async def _tunnel(self, req: Request, conn: UpstreamConnection) -> None:
        """After a 101: raw bytes both ways until either side closes."""
        down = req.conn
        assert conn.transport is not None and conn.done is not None
        if conn.upgraded:
            down.write(conn.upgraded)
        down.start_tunnel(conn.transport)
        down.upstream = conn
        conn.start_body(down.write)
        with contextlib.suppress(ConnectionResetError):
            await conn.done
        down.close()
