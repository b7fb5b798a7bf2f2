"""Tiny DATA frames on open HTTP/2 streams: how long they hold an engine's event loop.

Usage: ``python bench/h2_dribble.py ENGINE [--streams 1] [--frames 65535]`` (ENGINE: runtime,
haproxy or envoy; ``MESHGEN_RUNTIME=pure|compiled`` picks the runtime). One client opens
``--streams`` uploads (POST ``/count`` to ``tests/e2e/hostile_backend.py``, no END_STREAM),
then writes ``--frames`` DATA frames of one byte on each (at most its window) in one
``sendall``, and ends each stream. Such frames cost the runtime ``h2``'s work per frame yet
no flood budget (only empty DATA frames and frames on closed streams do). Meanwhile a
second HTTP/2 connection GETs ``/ok/p`` every 20 ms and, on the runtime, an HTTP/1.0 client
GETs its admin server: the longest of each is the longest event-loop hold it saw. Prints
the engine's CPU (utime + stime of the listening process) per frame and the load average.

``--outbound`` measures the other direction: one client GETs ``/bytes/SIZE`` on
``--streams`` streams with ``SETTINGS_INITIAL_WINDOW_SIZE`` ``--window``, then for
``--seconds`` writes ``--batch`` WINDOW_UPDATE frames of one byte per stream and as many of
the connection's in each ``sendall`` (``--dribble stream``: the streams' only, the
connection's window opened wide; ``connection``: the connection's only, ``--batch`` a
write; ``none``: no update at all, the client's windows stay closed: what an engine holds
for streams nobody reads), then waits for the bytes they allow (with ``--rate``: that many
updates a second, not waiting). Prints the DATA frames and bytes the engine sent, its CPU per
update, the longest GET on another connection and the engine's peak RSS growth.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # bench/h2.py
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from engines import ENGINES, cpu_seconds, hostile_engine, resident, serving_pids  # noqa: E402
from h2_peer import Dribbler, Peer, window_update  # noqa: E402


def dribble(sid: int, count: int) -> bytes:
    return (b"\x00\x00\x01\x00\x00" + sid.to_bytes(4, "big") + b"x") * count


def probe_h2(port: int, stop: threading.Event, took: list[float]) -> None:
    peer = Peer(port, timeout=300)
    while not stop.is_set():
        start = time.monotonic()
        assert peer.wait(peer.request("/ok/p", "hostile"), timeout=300)[0].status == 200
        took.append(time.monotonic() - start)
        time.sleep(0.02)
    peer.close()


def probe_admin(address: str, stop: threading.Event, took: list[float]) -> None:
    host, port = address.rsplit(":", 1)
    while not stop.is_set():
        start = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=300) as s:
            s.sendall(b"GET /nothing HTTP/1.0\r\n\r\n")
            while s.recv(65536):
                pass
        took.append(time.monotonic() - start)
        time.sleep(0.02)


def run(engine: str, streams: int, frames: int) -> None:
    with tempfile.TemporaryDirectory() as folder, hostile_engine(engine, Path(folder)) as e:
        pids = serving_pids(e.port)
        peer = Peer(e.port, timeout=300)
        sids = [peer.request("/count", "hostile", method="POST", end=False) for _ in range(streams)]
        peer.sock.settimeout(0.3)
        try:  # the server's SETTINGS and window updates
            while peer.receive():
                pass
        except TimeoutError:
            pass
        peer.sock.settimeout(300)
        counts = [min(frames, peer.h2.local_flow_control_window(s)) for s in sids]
        payload = b"".join(dribble(s, n) for s, n in zip(sids, counts, strict=True))
        stop = threading.Event()
        h2_took: list[float] = []
        admin_took: list[float] = []
        probes = [threading.Thread(target=probe_h2, args=(e.port, stop, h2_took))]
        admin = getattr(e, "admin_address", None)
        if admin:
            probes.append(threading.Thread(target=probe_admin, args=(admin, stop, admin_took)))
        for t in probes:
            t.start()
        time.sleep(0.3)
        cpu0, wall0 = cpu_seconds(pids), time.monotonic()
        peer.send_raw(payload)
        for sid, n in zip(sids, counts, strict=True):  # what went out raw, for h2's windows
            peer.h2.outbound_flow_control_window -= n
            peer.h2.streams[sid].outbound_flow_control_window -= n
        peer.send_raw(b"".join(b"\x00\x00\x00\x00\x01" + s.to_bytes(4, "big") for s in sids))
        answers = peer.wait(*sids, timeout=900)
        wall, cpu = time.monotonic() - wall0, cpu_seconds(pids) - cpu0
        time.sleep(0.3)
        stop.set()
        for t in probes:
            t.join()
        peer.close()
        total = sum(counts)
        received = sum(int(bytes(a.body)) for a in answers if a.status == 200)
        print(f"{engine}: {streams} stream(s), {total} DATA frames of 1 byte "
              f"({len(payload)} bytes), the endpoint got {received} bytes; wall {wall:.2f} s, "
              f"CPU {cpu:.2f} s ({1e6 * cpu / total:.1f} us a frame); longest GET on another "
              f"connection {max(h2_took):.3f} s ({len(h2_took)} GETs)"
              + (f", longest admin GET {max(admin_took):.3f} s" if admin_took else "")
              + f"; load average {os.getloadavg()[0]:.2f}")  # fmt: skip


def run_outbound(engine: str, streams: int, size: int, window: int, batch: int, rate: float,
                 seconds: float, which: str) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, hostile_engine(engine, Path(folder)) as e:
        pids = serving_pids(e.port)
        assert Peer(e.port).get("/ok/warm", "hostile").status == 200
        rss0 = resident(pids)
        client = Dribbler(e.port, window)
        time.sleep(0.2)  # the engine applies the window before the streams open
        sids = [client.get(f"/bytes/{size}", "hostile") for _ in range(streams)]
        stop = threading.Event()
        h2_took: list[float] = []
        probe = threading.Thread(target=probe_h2, args=(e.port, stop, h2_took))
        probe.start()
        time.sleep(0.5)  # the heads and the first windows' DATA
        if which == "stream":  # the connection's window opened once, wide
            client.send(window_update(0, 1 << 30))
        ones = {
            "both": [u for s in sids for u in (window_update(s), window_update(0))],
            "stream": [window_update(s) for s in sids],
            "connection": [window_update(0)],
            "none": [],
        }
        chunk = b"".join(ones[which]) * batch
        per_write = len(ones[which]) * batch
        per_byte = 2 if which == "both" else 1
        frames0, bytes0, rss = client.frames, client.bytes, 0
        cpu0 = cpu_seconds(pids)
        start = time.monotonic()
        sent = 0
        while time.monotonic() < start + seconds and client.send(chunk):
            sent += per_write
            rss = max(rss, resident(pids))
            if not per_write:  # (``none``: the growth sampled every 50 ms)
                time.sleep(0.05)
            elif rate:
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))
            else:  # the bytes these updates allow, before the next ones
                client.wait_bytes(bytes0 + sent // per_byte, timeout=2.0)
        wall, cpu = time.monotonic() - start, cpu_seconds(pids) - cpu0
        time.sleep(0.5)
        frames, got = client.frames - frames0, client.bytes - bytes0
        stop.set()
        probe.join()
        client.close()
        ended = (f"; GOAWAY {client.goaway}" if client.goaway is not None
                 else "; closed" if client.closed else "")  # fmt: skip
        print(f"{engine}: {streams} stream(s) of {size} bytes, window {window}, {batch} updates "
              f"of 1 byte per write ({which}); {sent} updates in {wall:.1f} s; "
              f"the engine sent {frames} DATA frames, {got} bytes ({got / max(frames, 1):.1f} a "
              f"frame); CPU {cpu:.2f} s ({100 * cpu / wall:.0f} %, {1e6 * cpu / max(sent, 1):.1f} "
              f"us an update, {1e6 * cpu / max(frames, 1):.1f} us a frame); peak RSS growth "
              f"{(rss - rss0) / 2**20:.1f} MiB; longest GET on another connection "
              f"{max(h2_took, default=0):.3f} s ({len(h2_took)} GETs){ended}"
              f"; load average {os.getloadavg()[0]:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--frames", type=int, default=65535, help="DATA frames a stream")
    parser.add_argument("--outbound", action="store_true", help="the client's window dribbles")
    parser.add_argument("--size", type=int, default=16 << 20, help="response bytes a stream")
    parser.add_argument("--window", type=int, default=1, help="SETTINGS_INITIAL_WINDOW_SIZE")
    parser.add_argument("--batch", type=int, default=256, help="updates a stream per write")
    parser.add_argument("--rate", type=float, default=0, help="updates a second, not waiting")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--dribble",
        choices=("both", "stream", "connection", "none"),
        default="both",
        help="the windows updated (each stream's and the connection's)",
    )
    args = parser.parse_args()
    if args.outbound:
        run_outbound(args.engine, args.streams, args.size, args.window, args.batch, args.rate,
                     args.seconds, args.dribble)  # fmt: skip
    else:
        run(args.engine, args.streams, args.frames)


if __name__ == "__main__":
    main()
