"""The gRPC health probe: ``grpc.health.v1.Health/Check`` over one kept HTTP/2 connection.

Theory of operation
-------------------
A ``grpc`` health check asks the endpoint's health service about ``health_check.grpc.service``
and is healthy when the answer is SERVING (Envoy's ``grpc_health_check``, Kubernetes' gRPC
probes). The ``h2`` library does the HTTP/2 framing, HPACK and flow control (sans-IO); this
module owns one connection per checked endpoint, as the HTTP probe does: each probe is a new
stream on it (``POST``, ``content-type: application/grpc``, ``te: trailers``, one message, end
of stream), and the connection is dropped after any failure. The messages are the whole of
``health.proto``: the request is field 1 (the service name), the answer field 1 (the status,
SERVING = 1); both are encoded here (a few bytes of protobuf; no generated code at run time).

Healthy means: ``:status`` 200, one uncompressed message whose status is SERVING, and
``grpc-status`` 0 in the trailers. A trailers-only answer (NOT_FOUND for an unknown service,
UNIMPLEMENTED for a server without the health service), a reset stream, a GOAWAY or anything
``h2`` calls a protocol error fails the probe.

Limits (a hostile endpoint): the answer's header list is bounded by ``MAX_HEADER_LIST_SIZE``
(announced in SETTINGS and enforced by ``h2``) and :data:`MAX_HEADERS` headers; its body by
:data:`MAX_MESSAGE_BYTES` (only what was read is acknowledged, so flow control stops a sender
that goes on); the server cannot push (``ENABLE_PUSH`` 0) or open streams. Frames for a
stream that was not asked about are ``h2`` protocol errors, and PING or SETTINGS frames past
``h2lib.FloodGuard``'s budget a flood: the connection is dropped. Its reads are taken
``h2lib.FRAMES_PER_PASS`` frames a pass of the event loop, as the proxy's connections take them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final, Protocol

from ..codec import h2lib as h2

HEALTH_PATH: Final = b"/grpc.health.v1.Health/Check"
SERVING: Final = 1
MAX_HEADER_LIST_SIZE: Final = 65536
MAX_HEADERS: Final = 100
MAX_MESSAGE_BYTES: Final = 65536


class Job(Protocol):
    """The prober's side of a probe connection (``prober._Job``)."""

    conn: Any  # its probe connection (of either kind), None when it has none

    def finish(self, ok: bool) -> None: ...


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def request_message(service: str) -> bytes:
    """One gRPC message (not compressed) holding ``HealthCheckRequest{service}``."""
    name = service.encode()
    body = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def response_status(message: bytes) -> int | None:
    """The ``status`` (field 1) of a ``HealthCheckResponse`` (0 when absent, as proto3
    reads it), or None when ``message`` is not valid protobuf. Unknown fields are skipped."""
    status, at = 0, 0
    try:
        while at < len(message):
            key, at = _read_varint(message, at)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, at = _read_varint(message, at)
                if field == 1:
                    status = value
            elif wire in (1, 5):
                at += 8 if wire == 1 else 4
            elif wire == 2:
                size, at = _read_varint(message, at)
                at += size
            else:
                return None
        return status if at == len(message) else None
    except ValueError:
        return None


def serving(body: bytes) -> bool:
    """Whether ``body`` is exactly one uncompressed gRPC message saying SERVING."""
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        return False
    return response_status(body[5:]) == SERVING


_ANSWER: Final = (
    h2.events.ResponseReceived,
    h2.events.DataReceived,
    h2.events.TrailersReceived,
    h2.events.StreamEnded,
    h2.events.StreamReset,
)


class GrpcConnection(asyncio.Protocol):
    """One kept HTTP/2 probe connection; ``send`` one Check, the job hears the verdict."""

    def __init__(self, job: Job, authority: str, scheme: bytes, message: bytes) -> None:
        self.job = job
        self.authority = authority.encode()
        self.scheme = scheme
        self.message = message
        self.transport: asyncio.Transport | None = None
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.flood = h2.FloodGuard()
        self.reading = h2.Reading(self._take)
        self.stream = 0  # the stream of the probe in flight, 0 when none
        self.status = b""
        self.grpc_status: bytes | None = None
        self.headers = 0
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: MAX_MESSAGE_BYTES,
            },
        )
        self.h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def send(self) -> None:
        """Start one Check on a new stream."""
        self.stream = sid = self.h2.get_next_available_stream_id()
        self.status, self.grpc_status, self.headers = b"", None, 0
        self.body.clear()
        self.h2.send_headers(
            sid,
            [
                (b":method", b"POST"),
                (b":scheme", self.scheme),
                (b":path", HEALTH_PATH),
                (b":authority", self.authority),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", b"meshgen-health"),
            ],
        )
        self.h2.send_data(sid, self.message, end_stream=True)
        self._flush()

    def drop(self) -> None:
        """Close for good; the job opens a new connection for its next probe."""
        self.stream = 0
        if self.job.conn is self:
            self.job.conn = None
        if self.transport is not None:
            self.transport.close()

    def _fail(self) -> None:
        waiting = self.stream != 0
        self.drop()
        if waiting:
            self.job.finish(False)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.reading.feed(self.transport, data)

    def _take(self, data: bytes) -> bytes:
        """Work through a read's frames; returns those for a later pass (``h2.Reading``)."""
        if self.transport is None or self.transport.is_closing():
            return b""  # dropped
        try:
            events, rest = h2.receive(self.h2, data, self.flood)
            for event in events:
                if not self._event(event):
                    self._fail()
                    return b""
        except (h2.exceptions.H2Error, ValueError):
            self._fail()
            return b""
        self._flush()
        return rest

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> bool:
        self.headers += len(headers)
        for name, value in headers:
            if name == b":status":
                self.status = value
            elif name == b"grpc-status":
                self.grpc_status = value
        return self.headers <= MAX_HEADERS

    def _event(self, event: h2.events.Event) -> bool:
        """Take one event; False: the connection is not to be trusted any more."""
        stream = getattr(event, "stream_id", 0)
        if isinstance(event, _ANSWER) and stream != self.stream:
            return False  # an answer to nothing we asked
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            return self._headers(event.headers)
        if isinstance(event, h2.events.DataReceived):
            self.body += event.data or b""
            if len(self.body) > MAX_MESSAGE_BYTES:
                return False
            self.h2.acknowledge_received_data(event.flow_controlled_length, stream)
        elif isinstance(event, h2.events.StreamEnded):
            ok = self.status == b"200" and self.grpc_status == b"0" and serving(bytes(self.body))
            self.stream = 0
            self.job.finish(ok)
        elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        waiting = self.stream != 0
        self.stream = 0
        if self.job.conn is self:
            self.job.conn = None
        if waiting:
            self.job.finish(False)
