"""The health prober: every active check of one generation on one schedule, without tasks per probe.

Theory of operation
-------------------
A :class:`Prober` holds one *job* per checked endpoint and a heap of due times; one timer
(re-armed no more often than every :data:`TICK_S`) starts the jobs whose slot came. The timing
decisions are the pure functions of ``health.py``:

* **Spread.** :meth:`Prober.start` gives the jobs that share an interval evenly spread first
  slots over the whole interval (:func:`~.health.spread_phases`); an endpoint added later (DNS,
  a reload) gets a uniform random slot. Each job then stays on its own grid
  (:func:`~.health.next_due`): a slow probe or a busy loop never moves later slots, so probes
  do not drift into bursts, and missed slots are skipped, never made up.
* **Keep-alive.** An HTTP job keeps one connection (:class:`_Connection`, an asyncio protocol
  with an ``httptools`` response parser) and sends every probe on it, as Envoy's
  ``reuse_connection`` default; a gRPC job likewise keeps one HTTP/2 connection
  (``grpc_probe.GrpcConnection``: ``grpc.health.v1`` Check, healthy on SERVING), a stream per
  probe; the connection is dropped, and opened afresh by the next probe,
  after a failure, a ``Connection: close`` or HTTP/1.0 answer, an answer over the limits, or
  bytes nobody asked for. A TCP job connects and closes each time (the connect is the check).
  ``health_check.port`` sends every probe to that port of the endpoint instead.
  With TLS the peer's identity is checked exactly as the proxy does (``UpstreamTls``).
* **Bounded.** One tick starts at most :data:`MAX_STARTS_PER_TICK` probes (a backlog after a
  stall goes out in slices, sockets served in between); at most ``limit`` are in flight: a
  job whose slot comes at the limit waits in a FIFO and starts when another finishes. A job
  still running or waiting when its next slot comes skips that slot.
* **Loop lag.** A probe's timeout runs from when it actually started (its connect or send),
  not from its slot, and a timer that fires late is re-armed instead of failing the endpoint
  (:func:`~.health.timer_verdict`): only the endpoint's slowness counts, never the loop's.

Limits on an answer (the listener defaults): head :data:`MAX_HEAD_BYTES` (interim 1xx heads
included; they are skipped, and one with a body fails the probe) and :data:`MAX_HEADERS`, body
:data:`MAX_BODY_BYTES`, trailer section :data:`MAX_HEAD_BYTES`; over them the probe fails and
the connection is dropped. A 101 fails it too (a probe asks for no upgrade). Results go to
``on_result(service, address, ok)``; a removed endpoint's job is closed and any result it would
still produce is dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final

import httptools

from ..policy.tls import UpstreamTls
from ..tables import Endpoint, HealthCheck
from .grpc_probe import GrpcConnection, request_message
from .health import LAG_TOLERANCE_S, next_due, spread_phases, timer_verdict

TICK_S: Final = 0.005
"""Shortest gap between two scheduler wake-ups; a tick starts every job due by then."""
MAX_STARTS_PER_TICK: Final = 256
"""Most probes one tick starts: after a stall the overdue ones go out in slices, with the
sockets (proxied traffic, probe answers) served between them."""
MAX_CONCURRENT_PROBES: Final = 1024
MAX_HEAD_BYTES: Final = 65536
MAX_HEADERS: Final = 100
MAX_BODY_BYTES: Final = 65536

Result = Callable[[str, str, bool], None]


class _OverLimit(Exception):
    """Raised inside parser callbacks: the answer broke a limit (the parser re-raises it)."""


class _Connection(asyncio.Protocol):
    """One keep-alive probe connection; ``send`` one request, the job hears the verdict."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.waiting = False
        self.in_head = False
        self.done = False
        self.status = 0
        self.keep = True
        self.head = 0
        self.headers = 0
        self.body = 0
        self.framing = False  # a chunk-size line or the trailer section is being read
        self.framing_bytes = 0  # bytes read since, while no body came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)  # one per connection: keep-alive

    def send(self) -> None:
        assert self.transport is not None
        self.waiting, self.in_head, self.done, self.status = True, True, False, 0
        self.head = self.headers = self.body = 0
        self.framing = False
        self.transport.write(self.job.request)

    def drop(self) -> None:
        """Close for good; the job opens a new connection for its next probe."""
        self.waiting = False
        if self.job.conn is self:
            self.job.conn = None
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.waiting:  # bytes nobody asked for: never reuse this connection
            self.drop()
            return
        assert self.parser is not None
        if self.framing:
            self.framing_bytes += len(data)
        try:
            self.parser.feed_data(data)
            clean = True
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # (a 101)
            clean = False
        if self.in_head and clean:  # an endless head is cut once it passes the limit
            self.head += len(data)
            clean = self.head <= MAX_HEAD_BYTES
        if self.framing and clean:  # so are endless trailers (llhttp would buffer them)
            clean = self.framing_bytes <= MAX_HEAD_BYTES
        if self.done:
            self.waiting = False
            if not (clean and self.keep):
                self.drop()
            self.job.finish(self.status in self.job.check.expected_statuses)
        elif not clean:
            self.drop()
            self.job.finish(False)

    def connection_lost(self, exc: Exception | None) -> None:
        waiting = self.waiting
        self.waiting = False
        if self.job.conn is self:
            self.job.conn = None
        if waiting:
            self.job.finish(False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.done:  # a second response to one request
            raise _OverLimit("unsolicited response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        if self.headers > MAX_HEADERS:
            raise _OverLimit("too many response headers")

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()
        self.in_head = False

    def on_chunk_header(self) -> None:
        self.framing = True
        self.framing_bytes = 0

    def on_body(self, body: bytes) -> None:
        self.framing = False
        if self.status < 200:  # llhttp reads a body after a 1xx other than 100, 102, 103
            raise _OverLimit("interim response with a body")
        self.body += len(body)
        if self.body > MAX_BODY_BYTES:
            raise _OverLimit("response body too large")

    def on_message_complete(self) -> None:
        if self.status < 200:  # an interim response (103 Early Hints...): the final one follows
            self.in_head = True
            return
        self.framing = False
        self.done = True


class _Job:
    """The check of one endpoint: its slot, its connection, the probe in flight."""

    def __init__(
        self, prober: Prober, service: str, endpoint: Endpoint, check: HealthCheck,
        tls: UpstreamTls | None,
    ) -> None:  # fmt: skip
        self.prober = prober
        self.service = service
        self.endpoint = endpoint
        self.check = check
        self.tls = tls
        self.request = (
            f"GET {check.path} HTTP/1.1\r\nHost: {endpoint.address}\r\n"
            "User-Agent: meshgen-health\r\nAccept: */*\r\n\r\n"
        ).encode("latin-1")
        if check.kind == "grpc":
            self.request = request_message(check.grpc_service)
        self.active = True
        self.busy = False
        self.waiting = False
        self.conn: _Connection | GrpcConnection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start one probe now: its timeout counts from here."""
        self.busy = True
        self.deadline = loop.time() + self.check.timeout_s
        self.timer = loop.call_at(self.deadline, self.on_timer)
        conn = self.conn
        if conn is not None and self.check.kind != "tcp":
            conn.send()
        else:
            self.connecting = loop.create_task(self.connect(loop))

    def protocol(self) -> _Connection | GrpcConnection:
        """A new probe connection of the check's kind (tcp: an HTTP one, never sent on)."""
        if self.check.kind == "grpc":
            scheme = b"https" if self.tls is not None else b"http"
            return GrpcConnection(self, self.endpoint.address, scheme, self.request)
        return _Connection(self)

    async def connect(self, loop: asyncio.AbstractEventLoop) -> None:
        ep, tls = self.endpoint, self.tls
        port = self.check.port or ep.port  # health_check.port: a separate health port
        try:
            if tls is None:
                transport, conn = await loop.create_connection(self.protocol, ep.host, port)
            else:
                transport, conn = await loop.create_connection(
                    self.protocol, ep.host, port, ssl=tls.context,
                    server_hostname=tls.server_hostname(ep.host),
                )  # fmt: skip
        except (OSError, ssl.SSLError):
            self.connecting = None
            self.finish(False)
            return
        self.connecting = None
        try:
            if tls is not None:
                tls.check_peer(transport.get_extra_info("ssl_object"))
        except ssl.SSLError:  # PeerIdentityError
            transport.close()
            self.finish(False)
            return
        # tcp: a connect is the check
        if self.check.kind == "tcp" or not self.busy:  # ... or the probe timed out
            transport.close()
            self.finish(True)
            return
        self.conn = conn
        conn.send()

    def on_timer(self) -> None:
        loop = self.prober.loop
        assert loop is not None
        now = loop.time()
        if timer_verdict(self.deadline, now) == "recheck":
            self.prober.lagged += 1
            self.deadline = now + LAG_TOLERANCE_S
            self.timer = loop.call_at(self.deadline, self.on_timer)
            return
        self.timer = None
        self.abort()
        self.finish(False)

    def abort(self) -> None:
        """Stop whatever is in flight (connect or request); the connection is not reused."""
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.conn is not None:
            self.conn.drop()

    def finish(self, ok: bool) -> None:
        """The probe in flight ended with ``ok`` (a no-op when none is)."""
        if not self.busy:
            return
        self.busy = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.prober.finished(self, ok)

    def close(self) -> None:
        self.active = False
        self.abort()
        self.finish(False)


class Prober:
    """Runs the active checks of one generation (see the module docstring)."""

    def __init__(
        self, on_result: Result, rng: random.Random, limit: int = MAX_CONCURRENT_PROBES
    ) -> None:
        self.on_result = on_result
        self.rng = rng
        self.limit = limit
        self.loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0
        self.probes = 0  # started
        self.lagged = 0  # timers re-armed because they fired late
        self.skipped = 0  # slots skipped: the job was still running or waiting
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._waiting: deque[_Job] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self, service: str, endpoint: Endpoint, check: HealthCheck, tls: UpstreamTls | None
    ) -> None:
        """Check ``endpoint`` from now on (once started: first slot at random in an interval)."""
        job = _Job(self, service, endpoint, check, tls)
        old = self._jobs.get((service, endpoint.address))
        if old is not None:
            old.close()
        self._jobs[(service, endpoint.address)] = job
        if self.loop is not None:
            self._push(job, self.loop.time() + self.rng.uniform(0.0, check.interval_s))

    def remove(self, service: str, address: str) -> None:
        job = self._jobs.pop((service, address), None)
        if job is not None:
            job.close()

    def start(self) -> None:
        """First slots of every job so far: spread over each interval (module docstring)."""
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        groups: dict[float, list[_Job]] = {}
        for key in sorted(self._jobs):
            job = self._jobs[key]
            groups.setdefault(job.check.interval_s, []).append(job)
        for interval, jobs in sorted(groups.items()):
            for job, phase in zip(jobs, spread_phases(len(jobs), interval, self.rng), strict=True):
                heapq.heappush(self._heap, (now + phase, next(self._seq), job))
        self._arm(now)

    async def stop(self) -> None:
        """Close every connection and wait for connects in flight to end."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = [j.connecting for j in self._jobs.values() if j.connecting is not None]
        for job in list(self._jobs.values()):
            job.close()
        self._jobs.clear()
        self._heap.clear()
        self._waiting.clear()
        self.loop = None
        await asyncio.gather(*tasks, return_exceptions=True)

    def _push(self, job: _Job, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), job))
        if self._timer is None or self._timer.when() > due + TICK_S:
            assert self.loop is not None
            self._arm(self.loop.time())

    def _arm(self, now: float, backlog: bool = False) -> None:
        """Wake for the next due job (not sooner than ``TICK_S``); with a ``backlog`` (the loop
        was away and many slots came at once) at once, after the sockets had their turn."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap and self.loop is not None:
            when = now if backlog else max(self._heap[0][0], now + TICK_S)
            self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        loop = self.loop
        assert loop is not None
        now = loop.time()
        heap = self._heap
        budget = MAX_STARTS_PER_TICK
        while heap and heap[0][0] <= now and budget > 0:
            budget -= 1
            due, _, job = heapq.heappop(heap)
            if not job.active:
                continue
            heapq.heappush(heap, (next_due(due, job.check.interval_s, now), next(self._seq), job))
            if job.busy or job.waiting:
                self.skipped += 1
            elif self.in_flight >= self.limit:
                job.waiting = True
                self._waiting.append(job)
            else:
                self._start(job, loop)
        self._arm(now, backlog=budget == 0)

    def _start(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        self.in_flight += 1
        self.probes += 1
        job.run(loop)

    def finished(self, job: _Job, ok: bool) -> None:
        """A job's probe ended: report it (unless the job was removed), start a waiting one."""
        self.in_flight -= 1
        if job.active:
            self.on_result(job.service, job.endpoint.address, ok)
        loop = self.loop
        while self._waiting and self.in_flight < self.limit and loop is not None:
            nxt = self._waiting.popleft()
            nxt.waiting = False
            if nxt.active:
                self._start(nxt, loop)
