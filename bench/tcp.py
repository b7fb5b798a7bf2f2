"""Benchmark: bytes and connections through a tcp listener, meshgen beside HAProxy (mode tcp).

    python bench/tcp.py --rounds 3 --mib 256

One DIST (built by the real compiler) runs on both engines at once: `python DIST` and
`haproxy -f DIST/haproxy/haproxy.cfg`, each in front of the same backend, measured in
alternating rounds so machine load hits both alike. The backend (threads of blocking sockets in
this process) swallows an upload and answers its size, sends a download of the asked size, or
sends one byte and closes. Per engine and round: upload and download MiB/s over one connection,
connections per second (8 client threads for --seconds, each a connect, one byte, a close), the
proxy's CPU time per MiB and per connection (/proc/PID/stat) and its peak RSS (VmHWM). A direct
run (no proxy) gives the backend's own ceiling. Results go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshgen import emit, pipeline  # noqa: E402

MIB = 1 << 20
BLOCK = os.urandom(MIB)
TICKS = os.sysconf("SC_CLK_TCK")


def _serve(conn: socket.socket) -> None:
    with conn, contextlib.suppress(ConnectionError):
        kind = conn.recv(1)
        if kind == b"U":
            total, buf = 0, bytearray(MIB)
            while n := conn.recv_into(buf):
                total += n
            conn.sendall(total.to_bytes(8, "big"))
        elif kind == b"D":
            size = int.from_bytes(conn.recv(8), "big")
            view = memoryview(BLOCK)
            while size > 0:
                size -= conn.send(view[: min(size, MIB)])
        elif kind == b"C":
            conn.sendall(b"x")


def backend() -> int:
    srv = socket.create_server(("127.0.0.1", 0), backlog=1024)

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(srv.getsockname()[1])


def upload(port: int, mib: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        s.sendall(b"U")
        for _ in range(mib):
            s.sendall(BLOCK)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8:
            got += s.recv(8 - len(got))
        assert int.from_bytes(got, "big") == mib * MIB
        return mib / (time.perf_counter() - start)


def download(port: int, mib: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        s.sendall(b"D" + (mib * MIB).to_bytes(8, "big"))
        left, buf = mib * MIB, bytearray(MIB)
        while left:
            n = s.recv_into(buf)
            assert n, "closed early"
            left -= n
        return mib / (time.perf_counter() - start)


def connections(port: int, seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        while time.perf_counter() < stop:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"C")
                assert s.recv(1) == b"x"
            done[i] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


SPEC = """\
version: 1
mesh: {{name: bench}}
services:
  sink:
    protocol: tcp
    discovery: {{static: [{{address: "127.0.0.1:{port}"}}]}}
listeners:
  - {{name: db, address: "127.0.0.1:0", protocol: tcp, to: [{{service: sink}}]}}
admin: "127.0.0.1:0"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(ok: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not ok():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mib", type=int, default=256, help="MiB per upload and per download")
    p.add_argument("--seconds", type=float, default=5.0, help="connection-rate phase length")
    args = p.parse_args()
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise SystemExit("haproxy not found: apt-get install haproxy")
    port = backend()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mesh.yaml").write_text(SPEC.format(port=port))
        result = pipeline.compile_spec(folder / "mesh.yaml")
        assert result.files is not None, [d.message for d in result.diagnostics]
        emit.emit(result.files, folder / "dist")
        ready = folder / "ready.json"
        runtime = subprocess.Popen(
            [sys.executable, str(folder / "dist"), "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        hport = free_port()
        env = {**os.environ, "MESHGEN_PORT_DB": str(hport), "MESHGEN_PORT_ADMIN": str(free_port())}
        ha = subprocess.Popen(
            [haproxy, "-db", "-f", str(folder / "dist" / "haproxy" / "haproxy.cfg")],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait(ready.exists, "the runtime")
            rport = int(json.loads(ready.read_text())["listeners"]["db"].rsplit(":", 1)[1])
            wait(lambda: accepts(hport), "haproxy")
            engines = {"direct": (port, None), "meshgen": (rport, runtime.pid),
                       "haproxy": (hport, ha.pid)}  # fmt: skip
            rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in engines}
            print(f"load average before: {os.getloadavg()}")
            for r in range(1, args.rounds + 1):
                for name, (eport, pid) in engines.items():
                    cpu0 = cpu_s(pid) if pid else 0.0
                    up = upload(eport, args.mib)
                    down = download(eport, args.mib)
                    cpu1 = cpu_s(pid) if pid else 0.0
                    rate = connections(eport, args.seconds)
                    cpu2 = cpu_s(pid) if pid else 0.0
                    per_mib = (cpu1 - cpu0) * 1e3 / (2 * args.mib)
                    per_conn = (cpu2 - cpu1) * 1e6 / max(1.0, rate * args.seconds)
                    rows[name].append((up, down, rate, per_mib, per_conn))
                    print(f"round {r} {name:8} upload {up:7.0f} MiB/s  download {down:7.0f} "
                          f"MiB/s  {rate:6.0f} conn/s  CPU {per_mib:5.2f} ms/MiB "
                          f"{per_conn:6.0f} us/conn", flush=True)  # fmt: skip
            print(f"load average after: {os.getloadavg()}")
            for name, (_, pid) in engines.items():
                med = [statistics.median(col) for col in zip(*rows[name], strict=True)]
                peak = f"  peak RSS {peak_mib(pid):.0f} MiB" if pid else ""
                print(f"median {name:8} upload {med[0]:7.0f}  download {med[1]:7.0f}  "
                      f"{med[2]:6.0f} conn/s  {med[3]:5.2f} ms/MiB  {med[4]:6.0f} us/conn"
                      + peak)  # fmt: skip
        finally:
            for proc in (runtime, ha):
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
