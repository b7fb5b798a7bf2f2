"""An HTTP/2 (h2c) endpoint for the upstream HTTP/2 tests, on the ``h2`` library; run as a
``script_backend``: ``python -c SOURCE MODE MAX_STREAMS``, prints its port.

Every answer is 200 with ``x-conn`` (the connection's number), ``x-active`` (streams open on
the connection when the request arrived, itself included) and a body saying what arrived:
``METHOD PATH LENGTH``. Paths: ``/delay/MS`` answers after MS milliseconds, ``/big/MIB``
answers MIB MiB, ``/trailers`` ends with trailers (``x-length``), ``/status/S`` answers with
``:status`` S (any bytes: ``000``, ``600``, ``abc``). Modes:

* ``ok``: just that;
* ``refuse-first``: the first two streams of the process are reset with REFUSED_STREAM;
* ``goaway``: the first connection, once it has three streams, sends GOAWAY with the first
  stream as the last one processed (and answers only that one), then closes;
* ``big-head``: answers with 300 header fields of 1 KiB;
* ``slow-ack``: acknowledges request DATA 16 KiB per 5 ms (a slow reader);
* ``no-ack``: never acknowledges request DATA (an endpoint that reads nothing);
* ``ping-flood``: a hostile endpoint: after its SETTINGS it sends PINGs as fast as it can and
  never reads a byte (each PING asks the client for an acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"
MAX_STREAMS = int(sys.argv[2]) if len(sys.argv) > 2 else 100
state = {"conns": 0, "refused": 0, "goaway_done": False}


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        state["conns"] += 1
        self.number = state["conns"]
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.streams: dict[int, dict[str, object]] = {}
        self.unacked = 0
        self.going = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS},
        )
        self.h2.initiate_connection()
        self.flush()
        if MODE == "ping-flood":
            self.transport.pause_reading()  # type: ignore[attr-defined]
            asyncio.get_running_loop().create_task(self.ping_flood())

    async def ping_flood(self) -> None:
        """PING frames (type 6, 8 bytes of opaque data), 4,096 per write, while the socket
        takes them."""
        frames = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong" * 4096
        transport = self.transport
        while not transport.is_closing():  # type: ignore[attr-defined]
            if transport.get_write_buffer_size() < 1 << 20:  # type: ignore[attr-defined]
                transport.write(frames)  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.write(data)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except Exception:
            self.transport.close()  # type: ignore[attr-defined]
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.request(ev)
            elif isinstance(ev, h2.events.DataReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st["length"] = int(st["length"]) + len(ev.data)  # type: ignore[call-overload]
                self.ack(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    asyncio.get_running_loop().create_task(self.answer(ev.stream_id, st))
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
        self.flush()

    def ack(self, n: int, sid: int) -> None:
        if MODE == "no-ack":
            return
        if MODE != "slow-ack":
            with contextlib.suppress(Exception):
                self.h2.acknowledge_received_data(n, sid)
            return
        asyncio.get_running_loop().create_task(self.slow_ack(n, sid))

    async def slow_ack(self, n: int, sid: int) -> None:
        while n > 0:
            await asyncio.sleep(0.005)
            step = min(n, 16384)
            n -= step
            try:
                self.h2.acknowledge_received_data(step, sid)
            except Exception:
                self.h2.increment_flow_control_window(step)
            self.flush()

    def request(self, ev: h2.events.RequestReceived) -> None:
        headers = dict(ev.headers or [])
        sid = ev.stream_id
        if MODE == "refuse-first" and state["refused"] < 2:
            state["refused"] += 1
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.streams[sid] = {
            "method": headers[b":method"], "path": headers[b":path"], "length": 0,
            "active": len(self.streams) + 1,
        }  # fmt: skip
        if MODE == "goaway" and not state["goaway_done"] and len(self.streams) >= 3:
            state["goaway_done"] = True
            first = min(self.streams)
            self.going = True
            self.h2.close_connection(last_stream_id=first)
            # h2 ends its own state at GOAWAY; a real server finishes the streams it took
            self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
            for other in [s for s in self.streams if s != first]:
                del self.streams[other]

    async def answer(self, sid: int, st: dict[str, object]) -> None:
        path = bytes(st["path"])  # type: ignore[call-overload]
        arg = path.split(b"?")[0].split(b"/")[-1]
        if path.startswith(b"/delay/"):
            await asyncio.sleep(int(arg) / 1000)
        if self.streams.get(sid) is not st:
            return
        status = arg if path.startswith(b"/status/") else b"200"
        fields = [(b":status", status), (b"x-conn", b"%d" % self.number),
                  (b"x-active", b"%d" % int(st["active"]))]  # type: ignore[call-overload]  # fmt: skip
        if MODE == "big-head":
            fields += [(b"x-big-%d" % i, b"v" * 1024) for i in range(300)]
        body = b"%s %s %d" % (st["method"], path, st["length"])  # type: ignore[str-bytes-safe]
        trailers = path == b"/trailers"
        try:
            self.h2.send_headers(sid, fields)
            if path.startswith(b"/big/"):
                await self.send(sid, b"x" * (int(arg) << 20))
            else:
                await self.send(sid, body)
            if trailers:
                self.h2.send_headers(sid, [(b"x-length", b"%d" % len(body))], end_stream=True)
            else:
                self.h2.end_stream(sid)
        except Exception:
            return
        self.streams.pop(sid, None)
        self.flush()
        if self.going and not self.streams:
            self.transport.close()  # type: ignore[attr-defined]

    async def send(self, sid: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if room <= 0:
                self.flush()
                await asyncio.sleep(0.002)
                if self.transport.is_closing():  # type: ignore[attr-defined]
                    raise ConnectionError
                continue
            self.h2.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
            await asyncio.sleep(0)


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(Conn, sock=sock)
    print(sock.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
