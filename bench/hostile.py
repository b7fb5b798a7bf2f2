"""Hostile peers on meshgen's runtime, HAProxy 2.6 and Envoy 1.40, side by side, with RSS figures.

Usage: ``python bench/hostile.py [--idle 10000]``. Needs the Debian packages haproxy and
nginx-light, and envoy. One mesh.yaml is built into a DIST and served by ``python DIST``, by
HAProxy (its generated haproxy.cfg) and by Envoy (its generated envoy.json, ``--concurrency
1``), in front of nginx (an echo answering ``nginx URI``) and the test
suite's hostile backend (``tests/e2e/hostile_backend.py``). Listener ``edge`` has
``request_head_timeout: 1s`` and ``client_idle_timeout: 2s``; ``plain`` keeps the defaults.

For each engine it prints, as Markdown tables (paste them into docs/reliability.md and
BENCHMARKS.md):

- the desync suite (http-desync-guardian cases and the smuggler-style mutations of
  ``tests/e2e/test_desync.py``): per verdict, how many were refused (a 4xx/5xx from the proxy
  and a closed connection, or one announced closed: Envoy closes 1 s later), and whether
  nginx ever saw the smuggled request or garbage;
- the hostile-upstream cases (status, and whether the next client got its own answer);
- client attacks: slowloris, an oversized header, 10,000 headers, a 10 MB URL, an endless
  header line, bytes after a refused upgrade (how many bytes the proxy took before it answered
  or stopped reading), and an idle flood of ``--idle`` connections on ``plain``;
- each engine's RSS (``VmRSS``) before each client attack, its peak during it and after the
  attacker left.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from conftest import free_port, require_binary, start_process  # noqa: E402
from envoy_harness import listener_port, run_envoy  # noqa: E402
from haproxy_harness import build, run_haproxy  # noqa: E402
from runtime_harness import HOSTILE, run_dist, script_backend  # noqa: E402
from test_desync import NGINX, SMUGGLED, _cases, guardian_request, mutations  # noqa: E402

UPGRADE = b"GET /refuse-upgrade-slow HTTP/1.1\r\nHost: hostile\r\nConnection: upgrade\r\n" + (
    b"Upgrade: x\r\n\r\n"
)
MIB = 1 << 20
SPEC = """\
version: 1
mesh: {{name: shop, domain: mesh.test}}
listeners:
  - name: edge
    address: "127.0.0.1:0"
    limits: {{request_head_timeout: 1s, client_idle_timeout: 2s}}
  - {{name: plain, address: "127.0.0.1:0"}}
admin: "127.0.0.1:0"
services:
  echo: {{discovery: {{static: [{{address: "127.0.0.1:{nginx}"}}]}}}}
  hostile:
    discovery: {{static: [{{address: "{hostile}"}}]}}
    timeout: 5s
    idle_timeout: 2s
routes:
  - {{name: hostile, match: {{host: hostile}}, to: [{{service: hostile}}]}}
  - {{name: echo, match: {{path_prefix: /}}, to: [{{service: echo}}]}}
"""


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    grab = lambda key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M)[1])  # type: ignore[index]  # noqa: E731
    return grab("VmRSS"), grab("VmHWM")


def talk(port: int, raw: bytes, quiet: float = 0.5) -> tuple[list[int], bool, bytes]:
    """Send ``raw``; (statuses, closed by the proxy, bytes) of what came back: until the proxy
    closes, nothing came for ``quiet`` seconds, 15 s passed or 4 MiB came (an endless 1xx
    flood passed on)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with contextlib.suppress(OSError):
            s.sendall(raw)
        s.settimeout(quiet)
        out, closed, until = b"", False, time.monotonic() + 15
        try:
            while (chunk := s.recv(65536)) and len(out) < 4 * MIB and time.monotonic() < until:
                out += chunk
            closed = not chunk
        except TimeoutError:
            pass
        except OSError:
            closed = True
    return [int(c) for c in re.findall(rb"HTTP/1\.[01] (\d{3}) ", out)], closed, out


def desync(port: int, nginx_log: Path) -> dict[str, str]:
    """Refusals (a 4xx/5xx, then the connection closed or announced closing) per verdict over
    the desync suite, and what nginx saw that it should not."""
    refused: Counter[str] = Counter()
    total: Counter[str] = Counter()
    before = len(nginx_log.read_text().splitlines())
    cases = [(p.values[0]["expected"]["tier"], guardian_request(p.values[0])) for p in _cases()]
    cases += [("Mutation", p.values[0]) for p in mutations()]
    for tier, raw in cases:
        statuses, closed, out = talk(port, raw, quiet=0.3)
        total[tier] += 1
        # Envoy answers "connection: close" and closes only after its delayed-close timeout (1 s)
        closing = closed or re.search(rb"\r\nconnection: *close\r\n", out, re.I) is not None
        if statuses[:1] and statuses[0] >= 400 and closing:
            refused[tier] += 1
    time.sleep(0.5)
    seen = nginx_log.read_text().splitlines()[before:]
    smuggled = sum("/smuggled" in line for line in seen)
    garbage = sum(line.startswith("400 ") for line in seen)
    out = {tier: f"{refused[tier]}/{total[tier]}" for tier in sorted(total)}
    out["nginx saw /smuggled"] = str(smuggled)
    out["nginx 400s (garbage)"] = str(garbage)
    return out


HOSTILE_PATHS = ["/unsolicited", "/unsolicited-head", "/two", "/endless-head", "/many-headers",
                 "/1xx-flood", "/garbage", "/mid-body", "/cl-te", "/dup-cl", "/gzip-chunked",
                 "/bad-chunk-first", "/bad-chunk-late", "/101", "/early-hints", "/1xx-body",
                 "/204-body", "/304-body", "/trailer-flood", "/close-then-bytes"]  # fmt: skip


def hostile(port: int) -> dict[str, str]:
    """Per hostile path: the status (and 'cut' for a body cut short), then whether the next
    client on a fresh connection got its own answer."""
    out = {}
    for path in HOSTILE_PATHS:
        raw = b"GET %s HTTP/1.1\r\nHost: hostile\r\nConnection: close\r\n\r\n" % path.encode()
        statuses = talk(port, raw, quiet=8)[0]
        time.sleep(0.3)  # an unsolicited response arrives on the idle connection meanwhile
        ok = True
        for i in range(3):
            name = b"next%d" % i
            ask = b"GET /ok/%s HTTP/1.1\r\nHost: hostile\r\nConnection: close\r\n\r\n"
            got = talk(port, ask % name, quiet=2)
            ok = ok and got[0] == [200] and got[2].endswith(b"\r\n\r\n" + name)
        seen = ", ".join(f"{n} x {code}" if n > 1 else str(code)
                         for code, n in Counter(statuses).items())  # fmt: skip
        out[path] = f"{seen or 'closed'}; next ok: {ok}"
    return out


def attack(port: int, pid: int, run: Callable[[int], str]) -> tuple[str, str]:
    """(result, RSS before / peak / 1 s after in MiB) of one client attack on ``pid``."""
    before = rss(pid)[0]
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak.append(rss(pid)[0])

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run(port)
    finally:
        done.set()
        sampler.join()
    time.sleep(1.0)
    after = rss(pid)[0]
    return result, f"{before / 1024:.1f} / {max(peak) / 1024:.1f} / {after / 1024:.1f}"


def slowloris(port: int, n: int = 300) -> str:
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    start = time.monotonic()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nx-slow: "
    answers: Counter[str] = Counter()
    open_ = list(conns)
    i = 0
    while open_ and time.monotonic() - start < 60:
        for s in list(open_):
            try:
                s.sendall(head[i : i + 1] if i < len(head) else b"s")
            except OSError:
                open_.remove(s)
                answers["reset"] += 1
        i += 1
        time.sleep(0.1)
        for s in list(open_):
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                got = s.recv(65536)
                answers[got[:12].decode(errors="replace") or "closed"] += 1
                open_.remove(s)
            s.setblocking(True)
    for s in conns:
        s.close()
    return f"{n} conns: {dict(answers)} after {time.monotonic() - start:.1f} s"


def one_request(raw: bytes) -> Callable[[int], str]:
    def run(port: int) -> str:
        statuses, closed, _ = talk(port, raw, quiet=5)
        return f"{statuses or 'no answer'}, closed: {closed}"

    return run


def streamed(head: bytes, filler: bytes, limit: int) -> Callable[[int], str]:
    """Send ``head`` then ``filler`` until the proxy answers, closes or ``limit`` bytes."""

    def run(port: int) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head)
            s.setblocking(False)
            sent, out, start = 0, b"", time.monotonic()
            while sent < limit and not out and time.monotonic() - start < 10:
                try:
                    sent += s.send(filler)
                except BlockingIOError:
                    pass
                except OSError:
                    break
                try:
                    out = s.recv(65536)
                    if not out:
                        break
                except BlockingIOError:
                    time.sleep(0.0005)
                except OSError:
                    break
        status = re.findall(rb"HTTP/1\.[01] (\d{3}) ", out)
        return f"{[int(c) for c in status] or 'closed'} after {sent / MIB:.1f} MiB sent"

    return run


def idle_flood(n: int) -> Callable[[int], str]:
    def run(port: int) -> str:
        conns, refused = [], 0
        for _ in range(n):
            try:
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:
                refused += 1
        time.sleep(1.0)
        closed = 0
        for s in conns:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        for s in conns:
            s.close()
        return f"{len(conns)} opened, {refused} refused, {closed} closed by the proxy within 1 s"

    return run


@contextlib.contextmanager
def nginx(folder: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    (folder / "nginx.conf").write_text(NGINX.format(d=folder, port=port))
    proc = start_process([require_binary("nginx"), "-c", folder / "nginx.conf"], folder / "ng.out")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield port, folder / "access.log"
    finally:
        proc.stop()


def table(title: str, rows: dict[str, dict[str, str]]) -> None:
    engines = list(rows)
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print(f"\n### {title}\n\n| case | {' | '.join(engines)} |\n|---|{'---|' * len(engines)}")
    for k in keys:
        print(f"| {k} | {' | '.join(rows[e].get(k, '') for e in engines)} |")


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=int, default=10000, help="connections in the idle flood")
    args = ap.parse_args()
    results: dict[str, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="meshgen-hostile-") as tmp:
        folder = Path(tmp)
        with nginx(folder) as (nginx_port, log), script_backend(HOSTILE) as (hostile_addr, _):
            dist = build(SPEC.format(nginx=nginx_port, hostile=hostile_addr), folder / "mesh")
            with (
                run_dist(dist) as rt,
                run_haproxy(dist, others=("plain",)) as ha,
                run_envoy(dist) as envoy,
            ):
                ports: dict[str, tuple[int, int, list[int]]] = {
                    "meshgen runtime": (
                        rt.port,
                        int(str(rt.ready["listeners"]["plain"]).rsplit(":", 1)[1]),  # type: ignore[index]
                        [rt.proc.pid],
                    ),
                    "HAProxy 2.6": (ha.port, ha.ports["plain"], [ha.pid]),
                    "Envoy 1.40": (
                        envoy.port,
                        listener_port(envoy.admin_address, "plain"),
                        [envoy.process.pid],
                    ),
                }
                for engine, (edge, plain, pids) in ports.items():
                    r = results.setdefault(engine, {})
                    started = time.monotonic()
                    r["desync"] = desync(edge, log)
                    print(f"{engine}: desync {r['desync']} ({time.monotonic() - started:.0f} s)")
                    started = time.monotonic()
                    r["hostile"] = hostile(edge)
                    print(f"{engine}: hostile {r['hostile']} ({time.monotonic() - started:.0f} s)")
                    attacks = [
                        ("slowloris (300)", edge, slowloris),
                        ("1 MiB header", edge, one_request(
                            b"GET / HTTP/1.1\r\nHost: x\r\nx-big: " + b"b" * MIB + b"\r\n\r\n")),
                        ("10,000 headers", edge, one_request(
                            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"x-h: v\r\n" * 10000 + b"\r\n")),
                        ("10 MiB URL", edge, streamed(b"GET /", b"u" * 65536, 10 * MIB)),
                        ("endless header line", edge, streamed(
                            b"GET / HTTP/1.1\r\nHost: x\r\nx-endless: ", b"e" * 65536, 256 * MIB)),
                        ("refused upgrade + 256 MiB", edge, streamed(
                            UPGRADE, b"\0" * 65536, 256 * MIB)),
                        (f"idle flood ({args.idle})", plain, idle_flood(args.idle)),
                    ]  # fmt: skip
                    r["attacks"] = {}
                    r["rss"] = {}
                    for name, port, run in attacks:
                        result, memory = attack(port, pids[0], run)
                        r["attacks"][name] = result
                        r["rss"][name] = memory
                        print(f"{engine}: {name}: {result}; RSS MiB {memory}")
    table("Desync suite: refused / cases", {e: r["desync"] for e, r in results.items()})
    table("Hostile upstreams", {e: r["hostile"] for e, r in results.items()})
    table("Client attacks", {e: r["attacks"] for e, r in results.items()})
    table("RSS MiB before / peak / after", {e: r["rss"] for e, r in results.items()})
    print(f"\n(smuggled request line used: {SMUGGLED!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
