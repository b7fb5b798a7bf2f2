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
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # bench/h2.py
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from engines import ENGINES, hostile_engine  # noqa: E402
from h2_peer import Peer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def listening_pids(port: int) -> list[int]:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out.stdout)})


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICK


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
        pids = listening_pids(e.port)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--frames", type=int, default=65535, help="DATA frames a stream")
    args = parser.parse_args()
    run(args.engine, args.streams, args.frames)


if __name__ == "__main__":
    main()
