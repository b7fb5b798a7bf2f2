"""The proxy's own Python work per request, this tree's runtime vs another commit's, in one run.

Usage: ``python -P bench/forward_cpu.py --baseline REF [--rounds 150] [--compiled]`` (steadier
still under ``chrt -f 10 taskset -c 0``, which keeps other jobs off the core while it runs: a few
seconds). ``-P``: this folder's ``h2.py`` must not shadow the h2 package.

Why: on a shared machine wrk's end-to-end CPU per request (``bench/proxy.py``) moves by several
percent between rounds; a runtime change worth 1-3 % disappears in it. This drives the fast
path of both runtimes in this one process with no sockets (fake transports): a keep-alive
GET with the bench mesh of ``bench/proxy.py`` (host + path match over two routes, round robin,
retries and metrics on) and a 5-header response, in alternating batches of 400 requests, so
load drift hits both alike. Each side's DIST is built by its own compiler, and loaded by its
own runtime (imported as a package of its own). Prints the best batch of each (microseconds of
Python per request: routing, the request machine, heads, parsing callbacks, metrics) and the
median and quartiles of the per-batch ratio this tree / baseline.

``--compiled`` compares the two compiled (mypyc) runtimes instead: each DIST is compiled first
(``python DIST --accelerate``, into the machine's cache), and as two compiled builds of one
package cannot share a process, each side runs in a worker process of its own on CPU 0
(``--worker DIST``), the batches still alternating, driven from here over pipes.

``--instructions`` counts instead of timing (with or without ``--compiled``): each side's
worker runs ``--rounds`` batches under ``valgrind --tool=callgrind``, collecting only inside
the two ``data_received`` callbacks and the write batch's end of pass (compiled; callees
included) or inside httptools' ``feed_data`` (pure, whose callbacks are Python). It prints
instructions per request for each side and their ratio. Why: the count is the same from run
to run to a few hundredths of a percent, where a timed run's ratio moves by +-4 % with the
workers' memory layouts; it does not see cache misses, so a change is still judged by the
timed A/B too. Needs valgrind; 10-20 rounds take about a minute per side.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import uvloop

ROOT = Path(__file__).resolve().parent.parent
MESH = """version: 1
mesh: {name: shop, domain: mesh.test}
listeners: [{name: edge, address: "127.0.0.1:0"}]
admin: "127.0.0.1:0"
services:
  web:
    discovery: {static: [{address: "127.0.0.1:9"}]}
    load_balancer: {policy: round_robin}
    retries: {attempts: 2, per_try_timeout: 5s}
routes:
  - name: other
    match: {host: other}
    to: [{service: web}]
  - name: api
    match: {host: shop, path_prefix: /api/, methods: [GET]}
    to: [{service: web}]
"""
REQUEST = b"GET /api/items HTTP/1.1\r\nHost: shop\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 17\r\nConnection: keep-alive\r\n\r\nhello from nginx\n"
)


class Transport:
    """Takes writes and drops them; what the protocols ask of a transport, and no more."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.closing = True

    close = abort


def build(src: Path, folder: Path) -> Path:
    """``meshgen build`` of :data:`MESH` by the compiler under ``src``."""
    folder.mkdir(parents=True)
    (folder / "mesh.yaml").write_text(MESH)
    cmd = [sys.executable, "-m", "meshgen", "build", "mesh.yaml", "-o", "dist"]
    subprocess.run(cmd, cwd=folder, env={"PYTHONPATH": str(src)}, check=True, capture_output=True)
    return folder / "dist"


def _first(package: str, *names: str) -> ModuleType:
    """The first of ``names`` that ``package`` has (module paths moved between versions)."""
    for name in names:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"{package}: none of {names}")


def rig(package: str, dist: Path) -> tuple[Any, Any]:
    """A proxy of ``package`` on ``dist``'s tables: its client connection and its pooled
    upstream connection, both on fake transports."""
    sys.modules["meshgen_runtime"] = importlib.import_module(package)
    sys.modules["meshgen_runtime.tables"] = importlib.import_module(f"{package}.tables")
    tables = _first(package, "app.loader", "loader").load_tables(dist)
    metrics = _first(package, "observe.metrics", "metrics").Metrics()
    upstreams = _first(package, "upstream.upstreams", "upstreams").Upstreams(
        tables, metrics=metrics
    )
    gen_module = _first(package, "forward.generation", "proxy")
    gen = gen_module.Generation(
        tables, upstreams, metrics, None, random.Random(1), asyncio.get_running_loop().time
    )
    proxy = _first(package, "forward.proxy", "proxy").Proxy(gen, metrics)
    server = proxy.protocol(tables.listeners[0])()
    server.connection_made(Transport(("127.0.0.1", 5555)))
    conn_type = _first(package, "codec.upstream_conn", "upstream_conn").UpstreamConnection
    upstream = conn_type("web/127.0.0.1:9")
    upstream.connection_made(Transport(("127.0.0.1", 9)))
    proxy.exchange.pool._idle["web/127.0.0.1:9"] = [upstream]
    return server, upstream


async def one_batch(server: Any, upstream: Any, batch: int) -> float:
    """Seconds per request over ``batch`` keep-alive exchanges."""
    clock = time.perf_counter
    start = clock()
    for _ in range(batch):
        server.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    took = (clock() - start) / batch
    await asyncio.sleep(0)  # the write batches flush
    return took


async def measure(rigs: dict[str, Callable[[], Awaitable[float]]], rounds: int) -> None:
    best = dict.fromkeys(rigs, 1e9)
    ratios = []
    order = list(rigs.items())
    for _ in range(rounds):
        took = {}
        order.reverse()  # each side runs first every other round: no place is favoured
        for name, run_batch in order:
            took[name] = await run_batch()
            best[name] = min(best[name], took[name])
        ratios.append(took["this tree"] / took["baseline"])
    for name, value in best.items():
        print(f"{name:10s} best batch {value * 1e6:.2f} us of Python per request")
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    print(f"this tree / baseline per batch: median {median:.3f} (quartiles {q1:.3f} {q3:.3f})")


def worker(dist: Path, compiled: bool = True) -> None:
    """``--worker DIST``: the compiled (else pure) runtime of DIST; one batch per line read
    (its size), one line written back (seconds per request)."""
    sys.path.insert(0, str(dist))
    kind = os.environ["MESHGEN_RUNTIME"] = "compiled" if compiled else "pure"

    async def serve() -> None:
        server, upstream = rig("meshgen_runtime", dist)
        attempt = sys.modules["meshgen_runtime.forward.attempt"]
        if str(attempt.__file__).endswith(tuple(EXTENSION_SUFFIXES)) != compiled:
            raise SystemExit(f"{dist}: its {kind} runtime did not load")
        print("ready", flush=True)
        for line in sys.stdin:
            print(await one_batch(server, upstream, int(line)), flush=True)

    uvloop.run(serve())


def compiled_side(dist: Path, batch: int) -> Callable[[], Awaitable[float]]:
    """DIST compiled, in a worker on CPU 0: a function running one batch there."""
    subprocess.run([sys.executable, str(dist), "--accelerate"], check=True, capture_output=True)
    cmd = ["taskset", "-c", "0", sys.executable, "-P", __file__, "--worker", str(dist)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    if stdout.readline().strip() != "ready":
        raise SystemExit(f"{dist}: the worker did not start")

    async def run_batch() -> float:
        stdin.write(f"{batch}\n")
        stdin.flush()
        return float(stdout.readline())

    return run_batch


COLLECTED: Final = {
    True: (
        "CPyPy_http1___ServerConnection___data_received",
        "CPyPy_upstream_conn___UpstreamConnection___data_received",
        "CPyPy_upstream_conn___WriteBatch____pass_ended",
    ),
    False: ("__pyx_pw_9httptools_6parser_6parser_10HttpParser_13feed_data",),
}
"""Where ``--instructions`` counts, compiled and pure (module docstring)."""


def instructions(dist: Path, compiled: bool, rounds: int, batch: int) -> float:
    """Instructions per request of DIST's runtime over ``rounds`` batches, by callgrind."""
    if compiled:
        subprocess.run([sys.executable, str(dist), "--accelerate"], check=True, capture_output=True)
    out = dist.parent / "callgrind.out"
    toggles = [f"--toggle-collect={name}" for name in COLLECTED[compiled]]
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
           *toggles, sys.executable, "-P", __file__, "--worker", str(dist)]  # fmt: skip
    if not compiled:
        cmd.append("--pure")
    feed = f"{batch}\n" * rounds
    subprocess.run(cmd, input=feed, text=True, check=True, capture_output=True)
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / (rounds * batch)
    raise SystemExit(f"{out}: no instruction count")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", metavar="REF", help="git commit to compare with")
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--batch", type=int, default=400)
    ap.add_argument("--compiled", action="store_true", help="both runtimes compiled (mypyc)")
    ap.add_argument("--instructions", action="store_true", help="count instead of timing")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, compiled=not args.pure)
        return 0
    if args.baseline is None:
        ap.error("--baseline is required")
    with tempfile.TemporaryDirectory(prefix="meshgen-forward-cpu-") as tmp:
        d = Path(tmp)
        base_src = d / "baseline-src"
        base_src.mkdir()
        what = ["git", "-C", str(ROOT), "archive", args.baseline, "meshgen", "templates", "schemas"]
        archive = subprocess.run(what, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base_src)], input=archive, check=True)
        packages = d / "packages"
        shutil.copytree(base_src / "meshgen" / "runtime", packages / "rt_baseline")
        shutil.copytree(ROOT / "meshgen" / "runtime", packages / "rt_this",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        dists = {"baseline": build(base_src, d / "b"), "this tree": build(ROOT, d / "t")}
        sys.path.insert(0, str(packages))
        if args.instructions:
            count = {
                name: instructions(dist, args.compiled, args.rounds, args.batch)
                for name, dist in dists.items()
            }
            for name, value in count.items():
                print(f"{name:10s} {value:,.0f} instructions per request")
            print(f"this tree / baseline: {count['this tree'] / count['baseline']:.4f}")
            return 0

        async def run() -> None:
            if args.compiled:
                rigs = {name: compiled_side(dist, args.batch) for name, dist in dists.items()}
            else:
                rigs = {
                    name: partial(one_batch, *rig(package, dists[name]), args.batch)
                    for name, package in (("baseline", "rt_baseline"), ("this tree", "rt_this"))
                }
            await measure(rigs, args.rounds)

        uvloop.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
