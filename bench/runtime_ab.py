"""CPU per request of several runtime trees on one DIST, side by side in one run.

Usage::

    python bench/runtime_ab.py --mode wrk|inprocess LABEL=PATH [LABEL=PATH ...]

Each PATH is a ``meshgen/runtime`` folder (``git archive COMMIT meshgen/runtime | tar -x -C
DIR`` gives an old one). The DIST of ``bench/proxy.py`` (two routes, round robin, retries,
metrics) is built once by this checkout's compiler and copied per tree, with that tree as its
``meshgen_runtime`` (an old tree without ``launch.py`` gets a two-line shim).

- ``--mode wrk``: every tree runs as ``python DIST`` pinned to CPU 0 in front of nginx (wrk and
  nginx on CPU 1), measured in rotating rounds (``--rounds``, ``--duration`` seconds each); CPU
  per request from /proc, as in ``bench/proxy.py``. Load drift hits every tree alike.
- ``--mode inprocess``: the proxy's fast path in a subprocess with in-memory transports instead
  of sockets (the downstream and the upstream answer at once), ``--requests`` requests, repeated
  ``--rounds`` times in rotation; the best of each: the pure Python cost of a request, which
  other jobs on the machine disturb least.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import proxy as bench  # noqa: E402
from runtime_harness import build_dist, run_dist, spec  # noqa: E402

SHIM = "from .main import main\n\n\ndef start(argv, dist):\n    return main(argv, dist=dist)\n"
INPROCESS = r"""
import asyncio, random, sys, time
from pathlib import Path
dist, n = Path(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, str(dist))
import uvloop
try:  # the layer packages
    from meshgen_runtime.app.loader import load_tables
    from meshgen_runtime.codec.upstream_conn import UpstreamConnection
    from meshgen_runtime.forward.generation import Generation
    from meshgen_runtime.forward.proxy import Proxy
    from meshgen_runtime.observe.metrics import Metrics
    from meshgen_runtime.upstream.upstreams import Upstreams
except ImportError:  # a flat runtime from before them
    from meshgen_runtime.loader import load_tables
    from meshgen_runtime.metrics import Metrics
    from meshgen_runtime.proxy import Proxy
    from meshgen_runtime.upstream_conn import UpstreamConnection
    from meshgen_runtime.upstreams import Upstreams
    try:
        from meshgen_runtime.forward.generation import Generation
    except ImportError:
        from meshgen_runtime.proxy import Generation
REQ = b"GET /api/items HTTP/1.1\r\nHost: shop\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 04 Dec 2026 20:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n\r\n"
        b"hello from nginx\n")
class Sock:
    def fileno(self): return 5
class Transport:
    def __init__(self, on_write): self.on_write, self.closing = on_write, False
    def write(self, data): self.on_write(data)
    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5555), "socket": Sock()}.get(name, default)
    def is_closing(self): return self.closing
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): self.closing = True
    abort = close
    def get_write_buffer_size(self): return 0
async def main():
    tables = load_tables(dist)
    metrics = Metrics()
    upstreams = Upstreams(tables, metrics=metrics)
    await upstreams.start()
    proxy = Proxy(Generation(tables, upstreams, metrics, None, random.Random(1)), metrics)
    loop = asyncio.get_running_loop()
    done, count = loop.create_future(), 0
    cluster = tables.clusters[0]
    key = f"{cluster.name}/{cluster.discovery.endpoints[0].address}"
    up = UpstreamConnection(key)
    ask = lambda d: d.startswith(b"GET ") and loop.call_soon(up.data_received, RESP)
    up.connection_made(Transport(ask))
    proxy.exchange.pool._idle[key] = [up]
    down = proxy.protocol(tables.listeners[0])()
    def answered(data):
        nonlocal count
        if data.endswith(b"hello from nginx\n"):
            count += 1
            if count >= n:
                done.done() or done.set_result(None)
            else:
                loop.call_soon(down.data_received, REQ)
    down.connection_made(Transport(answered))
    start = time.process_time()
    down.data_received(REQ)
    await done
    print((time.process_time() - start) / n * 1e6)
    await upstreams.stop()
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main())
"""


def dists(folder: Path, trees: dict[str, Path], port: int) -> dict[str, Path]:
    """The bench DIST once per tree, each with that tree as its runtime."""
    (folder / "_built").mkdir()
    built = build_dist(folder / "_built" / "dist", spec(bench.MESH.format(port=port)))
    out = {}
    for label, tree in trees.items():
        dist = folder / label / "dist"
        shutil.copytree(built, dist)
        shutil.rmtree(dist / "meshgen_runtime")
        shutil.copytree(
            tree, dist / "meshgen_runtime", ignore=shutil.ignore_patterns("__pycache__")
        )
        if not (dist / "meshgen_runtime" / "launch.py").exists():
            (dist / "meshgen_runtime" / "launch.py").write_text(SHIM)
        out[label] = dist
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["wrk", "inprocess"], default="inprocess")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--duration", type=int, default=5, help="wrk seconds per round")
    ap.add_argument("--requests", type=int, default=30000, help="inprocess requests per run")
    ap.add_argument("trees", nargs="+", metavar="LABEL=PATH")
    args = ap.parse_args()
    trees = {k: Path(v) for k, v in (t.split("=", 1) for t in args.trees)}
    labels = list(trees)
    results: dict[str, list[float]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory(prefix="meshgen-ab-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        port = bench.free_port()
        built = dists(folder, trees, port)
        ports: dict[str, tuple[int, int]] = {}
        if args.mode == "wrk":
            (folder / "nginx.conf").write_text(bench.NGINX.format(d=folder, port=port))
            nginx = ["taskset", "-c", "1", "nginx", "-c", str(folder / "nginx.conf")]
            stack.enter_context(bench.process(nginx, folder / "nginx.log"))
            bench.wait_port(port)
            for label, dist in built.items():
                rt = stack.enter_context(run_dist(dist))
                pin = ["taskset", "-acp", "0", str(rt.proc.pid)]
                subprocess.run(pin, check=True, capture_output=True)
                bench.wrk(rt.port, "shop", 2, 32)  # warm up
                ports[label] = (rt.port, rt.proc.pid)
        for n in range(args.rounds):
            order = labels[n % len(labels) :] + labels[: n % len(labels)]
            line = []
            for label in order:
                if args.mode == "wrk":
                    rps, _, _, cpu = bench.wrk(ports[label][0], "shop", args.duration, 32,
                                               ports[label][1])  # fmt: skip
                    line.append(f"{label} {rps:.0f} req/s {cpu:.2f} us")
                else:
                    run = [sys.executable, "-c", INPROCESS, str(built[label]), str(args.requests)]
                    cpu = float(
                        subprocess.run(run, capture_output=True, text=True, check=True).stdout
                    )
                    line.append(f"{label} {cpu:.2f} us")
                results[label].append(cpu)
            print(f"round {n + 1}: " + " | ".join(line), flush=True)
    for label in labels:
        cpu = results[label]
        print(f"{label}: CPU us/request median {statistics.median(cpu):.2f}, best {min(cpu):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
