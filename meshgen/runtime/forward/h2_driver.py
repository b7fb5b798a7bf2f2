"""The HTTP/2 driver: each stream of a client's HTTP/2 connection is one request, driven by the
request machine (``attempt.py``) in the coroutine loop (``tries.drive``).

Theory of operation: ``codec/h2_server.py`` turns a client's HTTP/2 connection into
:class:`~..codec.h2_server.H2Request` objects; :class:`H2Streams` (one per listener) starts
each in a task as an :class:`H2Attempt`, the same machine every other driver runs, so routing,
access, rate limits, retries, timeouts and circuit breaking are decided exactly as for
HTTP/1.1 (the request's ``version`` is "2", which lets gRPC requests through). What differs is
only where the response goes:

* a try towards an HTTP/1.1 endpoint is the proxy's own (``Exchange.tried``): the request
  head is HTTP/1.1 (``heads.py``; a body without ``content-length`` goes chunked), the body
  streams from the stream's flow-controlled :class:`~..codec.http1.RequestBody`;
* the accepted response is translated back: hop-by-hop and connection-specific fields dropped
  (HTTP/2 forbids them), the route's response header operations and ``via`` applied, the body
  sent within the client's flow-control windows (a slow reader stops the endpoint's reads),
  and a chunked response's trailers sent as HTTP/2 trailers (``grpc-status`` among them: it
  sets the attempt's ``grpc_status`` before STREAMED, for the metrics);
* a local answer is an HTTP/2 response on the stream (a gRPC request's is trailers-only);
* an endpoint that breaks off after the head resets the stream (INTERNAL_ERROR), where
  HTTP/1.1 would close the connection.

A stream whose request is still being worked on counts against the connection's limit
even after the client reset it (``H2Server.working``), so resets cannot pile up work.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING

from ..codec.h2_server import H2Request, H2Server, H2Stream
from ..policy import grpc
from .attempt import LOCAL, START, Attempt
from .fastpath import identity
from .forwarder import Forwarder
from .heads import VIA, response_skip
from .tries import drive, watch_idle

if TYPE_CHECKING:
    from ..codec.guard import ClientClock
    from ..codec.http1 import ServerConnection
    from ..codec.upstream_conn import UpstreamConnection
    from .generation import Generation

log = logging.getLogger("meshgen.proxy")

_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)


class H2Attempt(Attempt):
    """A request on an HTTP/2 stream: the machine, and how this driver carries out its
    actions (``tries.Steps``)."""

    # The machine's ``gen`` and ``req`` again, with this driver's types (as ProxyAttempt's: a
    # compiled class cannot narrow an attribute its base declares).
    __slots__ = ("driver", "generation", "request")

    driver: Forwarder
    generation: Generation
    request: H2Request

    @classmethod
    def of(cls, driver: Forwarder, req: H2Request) -> H2Attempt:
        """``req``'s machine on the driver's live generation, counted in flight until
        :meth:`finish`; on a listener that checks callers, with the caller's identity."""
        gen = driver.generation
        stream = req.conn
        listener: str = stream.listener.name  # type: ignore[attr-defined]
        caller = identity(gen, stream.transport) if gen.enforced[listener] else None
        gen.in_flight += 1
        att = H2Attempt(gen, listener, req, caller, monotonic())  # natively (not ``cls``)
        att.driver = driver
        att.generation = gen
        att.request = req
        return att

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.request.conn.loop

    async def run(self, action: int) -> None:
        """Carry out the machine's actions from ``action`` on, then finish (nothing when the
        client reset the stream before its task ran)."""
        try:
            if self.request.conn.closed:
                self.close()
                return
            await drive(self, action, self)
        finally:
            self.finish()

    def finish(self) -> None:
        """The request ended: its local answer (if the machine made one), then the proxy's
        accounting; the stream stops counting against the connection's work limit."""
        answer = self.answer
        req = self.request
        if answer is not None and not req.started:
            req.started = True
            headers: list[tuple[bytes, bytes]] = []
            if req.request_id is not None:
                headers.append((b"x-request-id", req.request_id))
            if not self.grpc:
                headers.extend(_TEXT)
            headers.extend(answer.headers)
            body = b"" if req.method == "HEAD" else answer.body
            req.conn.simple(answer.status, body, headers, sized=not self.grpc)
        req.conn.release()
        self.driver.settle(self)

    # ---- tries.Steps -----------------------------------------------------------------------

    async def tried(self, att: Attempt) -> int:
        return await self.driver.exchange.tried(self.generation, self, self.request)

    async def respond(self, att: Attempt) -> None:
        """The accepted response, translated to HTTP/2 (module docstring)."""
        conn, route = self.conn, self.route
        assert conn is not None and route is not None and self.target is not None
        req = self.request
        stream = req.conn
        pool = self.driver.exchange.pool
        ops = (self.generation.header_ops.get(route.name) or self.generation.ops(route))[1]
        skip = response_skip(ops, conn)
        head = conn.headers[: conn.head_count]
        headers = [(k, v) for k, v in head if k not in skip]
        headers.extend(ops.add)
        headers.append((b"via", VIA))
        req.started = True
        status = conn.status
        if req.method == "HEAD" or status in (204, 304):
            stream.send_head(status, headers, end=True)
            stream.on_close = None
            if req.method == "HEAD":  # llhttp cannot be told the response has no body
                pool.discard(conn)
            else:
                self._pool(conn)
            return
        stream.send_head(status, headers)
        stream.upstream = conn
        conn.start_body(stream.write)
        try:
            if not conn.finished:
                stop = watch_idle(conn, self.target.idle_timeout_s, self.loop)
                try:
                    await conn.done
                finally:
                    stop()
        except ConnectionResetError:
            stream.reset()  # the body is cut short: the client must see it
            pool.discard(conn)
            return
        finally:
            stream.on_close = None
            stream.detach()
        trailers = [(k, v) for k, v in conn.trailers if k not in skip]
        if self.grpc:
            code = grpc.status_of(trailers)
            if code is not None:
                self.grpc_status = code
        stream.end(trailers)
        self._pool(conn)

    def _pool(self, conn: UpstreamConnection) -> None:
        """The response is through: the connection goes back to the pool when it can."""
        body = self.request.body
        if conn.keep_alive and (body is None or body.complete):
            self.driver.exchange.pool.release(conn)
        else:
            self.driver.exchange.pool.discard(conn)

    def abandon(self, att: Attempt) -> None:
        self.driver.exchange.abandon(self, self.request)

    def copy(self, att: Attempt) -> None:
        self.driver.mirror(self)


class H2Streams:
    """A listener's HTTP/2: switches its connections over (``start``) and drives each
    stream's request."""

    def __init__(self, driver: Forwarder) -> None:
        self.driver = driver

    def start(self, conn: ServerConnection, clock: ClientClock) -> H2Server:
        """HTTP/2 on ``conn`` from now on (its preface came, or ALPN chose h2)."""
        assert conn.loop is not None
        return H2Server(conn, conn.guard, conn.limits, clock, conn.loop, self.request, _refuse)

    def request(self, req: H2Request) -> None:
        """A stream's request head arrived: drive it (a local answer at once, else in a
        task)."""
        att = H2Attempt.of(self.driver, req)
        try:
            action = att.step(START)
        except Exception:
            att.close()
            att.finish()
            raise
        if action == LOCAL:
            att.finish()
            return
        att.loop.create_task(att.run(action))


def _refuse(stream: H2Stream, status: int, reason: bytes) -> None:
    """A stream the listener's limits refuse (431, 414, 400)."""
    stream.simple(status, reason + b"\n", list(_TEXT))
    stream.release()
