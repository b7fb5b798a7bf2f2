"""A blocking HTTP/2 client for tests, on the ``h2`` library: well-behaved requests on one
connection, and the raw frames hostile tests send (``hyperframe``, h2's framing layer)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
from runtime_harness import Runtime, build_dist, run_dist, script_backend, spec

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@contextlib.contextmanager
def proxied(
    folder: Path, backend: str, listener: str = "", service: str = "", extra: str = ""
) -> Iterator[Runtime]:
    """``python DIST`` with route ``web`` (host web) to the HTTP/1.1 server ``backend`` (a
    ``script_backend`` source); ``listener``, ``service``: more fields of listener ``edge``
    and service ``web`` (flow style); ``extra``: more top-level lines."""
    with script_backend(backend) as (address, _):
        more = f", {service}" if service else ""
        text = spec(
            f"""
            services:
              web: {{discovery: {{static: [{{address: "{address}"}}]}}{more}}}
            routes:
              - {{name: web, match: {{host: web}}, to: [{{service: web}}]}}
            {extra}
            """
        )
        if listener:
            text = text.replace(
                'listeners: [{name: edge, address: "127.0.0.1:0"}]',
                f'listeners: [{{name: edge, address: "127.0.0.1:0", {listener}}}]',
            )
        with run_dist(build_dist(folder / "dist", text)) as rt:
            yield rt


@dataclass
class Answer:
    """One stream's response as the client saw it."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def trailer(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.trailers if k == name), None)


class Peer:
    """An HTTP/2 client connection to ``host:port`` (h2c with prior knowledge, or a given
    socket: TLS). ``auto_ack`` False leaves received DATA unacknowledged (a slow reader)."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        sock: socket.socket | None = None,
        timeout: float = 10.0,
        auto_ack: bool = True,
    ) -> None:
        self.sock = sock if sock is not None else socket.create_connection((host, port), timeout)
        self.sock.settimeout(timeout)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.auto_ack = auto_ack
        self.answers: dict[int, Answer] = {}
        self.goaway: int | None = None  # the server's GOAWAY error code
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        authority: str,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream; send its head (and ``body`` if given); returns the stream id."""
        sid = self.h2.get_next_available_stream_id()
        head = [(":method", method), (":path", path), (":scheme", "http"),
                (":authority", authority), *(headers or [])]  # fmt: skip
        self.h2.send_headers(sid, head, end_stream=end and body is None)
        self.answers[sid] = Answer()
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send ``body`` on ``sid`` as the windows allow (reading the server's updates)."""
        view = memoryview(body)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                self.flush()
                self.receive()
                if self.closed:
                    return
                continue
            self.h2.send_data(sid, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.h2.end_stream(sid)
            self.flush()

    def receive(self, size: int = 65536) -> bool:
        """Read once and process the events; False when the connection is closed."""
        try:
            data = self.sock.recv(size)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            self._event(event)
        with contextlib.suppress(OSError):
            self.flush()
        return True

    def _event(self, event: object) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            a = self.answers.setdefault(event.stream_id, Answer())
            a.headers = list(event.headers or [])
            a.status = int(dict(a.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.answers.setdefault(event.stream_id, Answer()).body += event.data or b""
            if self.auto_ack and event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.answers.setdefault(event.stream_id, Answer()).trailers = list(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            self.answers.setdefault(event.stream_id, Answer()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.answers.setdefault(event.stream_id, Answer()).reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code

    def wait(self, *sids: int, timeout: float = 10.0) -> list[Answer]:
        """Read until every stream in ``sids`` ended or was reset."""
        deadline = time.monotonic() + timeout
        while not all(self.answers[s].ended or self.answers[s].reset is not None for s in sids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"streams {sids} did not end")
            if not self.receive():
                raise ConnectionError(f"closed (GOAWAY {self.goaway}) before streams {sids} ended")
        return [self.answers[s] for s in sids]

    def get(self, path: str, authority: str, **kw: object) -> Answer:
        return self.wait(self.request(path, authority, **kw))[0]  # type: ignore[arg-type]

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Read (answering nothing) until the server closes; True if it did within
        ``timeout``."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                if not self.receive():
                    return True
            except TimeoutError:
                continue
        return False

    def send_raw(self, data: bytes) -> bool:
        """Send bytes outside h2's bookkeeping; False if the server had closed."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def raw_frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """An HTTP/2 frame of type ``kind`` on stream ``sid``."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def window_update(sid: int, n: int = 1) -> bytes:
    """A WINDOW_UPDATE of ``n`` bytes for stream ``sid`` (0: the connection)."""
    return raw_frame(0x8, 0, sid, n.to_bytes(4, "big"))


class Dribbler:
    """A client that opens its windows by hand (h2c, raw frames): its streams' initial window
    is ``window`` (SETTINGS_INITIAL_WINDOW_SIZE); a thread reads what the server sends,
    counting the DATA frames and their bytes, acknowledging SETTINGS and answering PINGs."""

    def __init__(self, port: int, window: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.encoder = hpack.Encoder()
        self.next_sid = 1
        self.frames = self.bytes = 0  # DATA received
        self.goaway: int | None = None
        self.reset: int | None = None  # the last RST_STREAM's code
        self.closed = False
        self._stop = threading.Event()
        self.send(PREFACE + raw_frame(0x4, 0, 0, b"\x00\x04" + window.to_bytes(4, "big")))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def get(self, path: str, authority: str) -> int:
        """Send a GET (HEADERS with END_STREAM); returns its stream id."""
        sid, self.next_sid = self.next_sid, self.next_sid + 2
        head = [(":method", "GET"), (":path", path), (":scheme", "http"),
                (":authority", authority)]  # fmt: skip
        self.send(raw_frame(0x1, 0x5, sid, self.encoder.encode(head)))
        return sid

    def send(self, data: bytes) -> bool:
        """Write ``data``; False once the server closed."""
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError:
            self.closed = True
        return not self.closed

    def wait_bytes(self, total: int, timeout: float = 10.0) -> bool:
        """Wait until ``total`` DATA bytes came in all; False on a timeout or a close."""
        deadline = time.monotonic() + timeout
        while self.bytes < total and not self.closed and time.monotonic() < deadline:
            time.sleep(0.0002)
        return self.bytes >= total

    def close(self) -> None:
        self._stop.set()
        self._reader.join()
        self.sock.close()

    def _read(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            buf += data
            i = 0
            while len(buf) - i >= 9:
                size = int.from_bytes(buf[i : i + 3], "big")
                if len(buf) - i < 9 + size:
                    break
                kind, flags = buf[i + 3], buf[i + 4]
                payload = buf[i + 9 : i + 9 + size]
                i += 9 + size
                if kind == 0x0:
                    self.frames += 1
                    self.bytes += size
                elif kind in (0x4, 0x6) and not flags & 1:  # SETTINGS, PING: acknowledged
                    self.send(raw_frame(kind, 1, 0, payload if kind == 0x6 else b""))
                elif kind == 0x3:
                    self.reset = int.from_bytes(payload, "big")
                elif kind == 0x7:
                    self.goaway = int.from_bytes(payload[4:8], "big")
            buf = buf[i:]
