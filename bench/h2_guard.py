"""The per-request cost of the HTTP/2 flood guard (codec/h2lib.py): ``FloodGuard.frames``,
the walk over every frame header of every read, and ``_flood_cost``, next to ``h2``'s own
``receive_data`` on the same bytes.

Usage: ``python -P bench/h2_guard.py [--rounds 15] [--baseline-tree DIR]`` (``-P``: this
folder's ``h2.py`` must not shadow the h2 package). The reads are those an h2load client
gives the runtime (10 GET heads in one read, HPACK table warm) and those an HTTP/2 endpoint
gives its upstream side (10 responses, a HEADERS and a DATA frame each). h2lib is not compiled
by mypyc (the compiled runtime's cache holds no extension for it), so this is its cost in
either runtime. ``--baseline-tree``: a checkout whose h2lib is timed too, in alternating
rounds (another commit's walk). Prints the best and the median round in microseconds per
request, with the load average.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import h2.config
import h2.connection

N = 10  # requests per read
REPS = 300
HEAD = [(":method", "GET"), (":path", "/api/items"), (":scheme", "http"), (":authority", "shop")]


def load(tree: Path, name: str) -> ModuleType:
    """``meshgen/runtime/codec/h2lib.py`` of ``tree`` as a module of its own."""
    path = tree / "meshgen" / "runtime" / "codec" / "h2lib.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client_reads() -> tuple[bytes, bytes]:
    """The client's preface, SETTINGS and N heads (warming HPACK), then one read of N heads."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    head = [*HEAD, ("user-agent", "h2load nghttp2/1.52.0")]
    reads = []
    for _ in range(2):
        for _ in range(N):
            c.send_headers(c.get_next_available_stream_id(), head, end_stream=True)
        reads.append(c.data_to_send())
    return reads[0], reads[1]


def endpoint_read() -> bytes:
    """One read of N responses (HEADERS, then 17 bytes of DATA), HPACK table warm."""
    s = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    s.initiate_connection()
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.receive_data(c.data_to_send())
    ids = []
    for _ in range(2 * N):
        ids.append(c.get_next_available_stream_id())
        c.send_headers(ids[-1], HEAD, end_stream=True)
    s.receive_data(c.data_to_send())
    resp = [(":status", "200"), ("content-type", "application/json"), ("server", "nginx")]
    for i, sid in enumerate(ids):
        if i == N:
            s.data_to_send()  # the first N warmed the table
        s.send_headers(sid, resp)
        s.send_data(sid, b'{"items": [1, 2]}', end_stream=True)
    return s.data_to_send()


def server(lib: Any, start: bytes) -> h2.connection.H2Connection:
    codes = lib.settings.SettingCodes
    conn = lib.new_connection(False, {codes.MAX_CONCURRENT_STREAMS: 100}, 65536, 16 << 20)
    conn.receive_data(start)
    conn.data_to_send()
    return conn


def frames_of(lib: Any) -> Any:
    """``FloodGuard.frames`` as a function of a guard and a read, returning the counts, in
    either form: ``(data, limit)`` since it stops at a pass's frames, ``(data)`` before."""
    if "limit" in inspect.signature(lib.FloodGuard.frames).parameters:
        return lambda g, data: g.frames(data, lib.FRAMES_PER_PASS)[0]
    return lambda g, data: g.frames(data)


def per_request(run: Any, reps: int = REPS) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        run()
    return (time.perf_counter() - t) / reps / N * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline-tree", type=Path)
    args = parser.parse_args()
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if args.baseline_tree:
        trees["baseline"] = args.baseline_tree
    libs = {label: load(tree, f"h2lib_{i}") for i, (label, tree) in enumerate(trees.items())}
    start, read = client_reads()
    up = endpoint_read()
    events = server(next(iter(libs.values())), start).receive_data(read)
    results: dict[str, list[float]] = {}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for _ in range(args.rounds):
        for label, lib in libs.items():
            walk = frames_of(lib)
            counts = walk(lib.FloodGuard(), read)
            g = lib.FloodGuard()
            for what, run in (
                ("frames(), client read", lambda g=g, walk=walk: walk(g, read)),
                ("frames(), endpoint read", lambda g=g, walk=walk: walk(g, up)),
                ("_flood_cost, client read",
                 lambda g=g, lib=lib, c=counts: lib._flood_cost(events, g, c)),
            ):  # fmt: skip
                results.setdefault(f"{label}: {what}", []).append(per_request(run))
        fresh = iter([server(next(iter(libs.values())), start) for _ in range(30)])
        results.setdefault("h2 receive_data, client read", []).append(
            per_request(lambda fresh=fresh: next(fresh).receive_data(read), reps=30)
        )
    for what, values in results.items():
        print(f"{what:40s} us/request: best {min(values):6.2f}  median "
              f"{statistics.median(values):6.2f}")  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
