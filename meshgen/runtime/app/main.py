"""``python DIST``: load the tables, serve every listener and the admin server, reload and drain.

Theory of operation: :class:`Runtime` owns one live :class:`~.forward.generation.Generation` at
a time. ``SIGHUP`` (or ``--watch`` noticing a rebuilt DIST) builds a complete new generation
first (tables, TLS contexts, upstreams started); only if every step succeeds is it swapped in,
otherwise the reason is logged and the old one stays. Endpoints that stay keep their health and
ejection state (:meth:`~.upstreams.Upstreams.inherit`). Listener sockets survive a reload, so no
connection is refused; requests already running finish on the generation they started with,
whose upstreams are stopped once its in-flight count reaches zero (then the metric series of
endpoints, certificate files, services and rate-limited routes the live tables no longer have
are dropped; a new generation starts its services' and routes' rare-event series at 0).

A listener whose address or TLS settings changed is reopened, new server first, old one closed
after. Same address, new TLS settings: the new server is built on a *duplicate* of the old
listening socket's descriptor, so the kernel socket and its accept queue never go away (no
connection refused or reset, unlike binding a second SO_REUSEPORT socket and closing the
first, which drops whatever sits in the first one's queue). Swapping the SSLContext of a
running asyncio server is not possible through public API, and mutating the old context in
place cannot remove a CA or lower the verify mode (``load_verify_locations`` only adds). New
address: bind it first, then close the old one (connections to the old address are refused
from then on, which is what the new tables say). ``--watch`` polls ``DIST/MANIFEST.json`` and
``DIST/mesh/*.py`` and reloads once they changed and then held still for one more poll.

After a reload the runtime logs what changed, one line per change in mesh.yaml's words
(:mod:`.table_changes`, at most :data:`RELOAD_LOG_LINES`), e.g. ``reload: route
reviews-split: to reviews/v3 weight 10 -> 50``.

``SIGTERM``/``SIGINT`` stop accepting, answer the remaining requests with
``connection: close`` within ``--grace`` seconds (tcp connections get as long to end on their
own, then are closed), and exit 0.

At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit (``guard.raise_fd_limit``), so
the listeners' connection limits, not a low default of 1024 descriptors, decide who is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from .. import SELECTED
from ..codec.guard import raise_fd_limit
from ..codec.tls_accept import TlsAccept
from ..compiled import describe as runtime_kind
from ..forward.generation import Generation
from ..forward.proxy import Proxy
from ..forward.tcp import TcpProxy
from ..observe.admin import AdminServer, start_admin
from ..observe.alerts import AlertEvaluator
from ..observe.metrics import Metrics
from ..policy.tls import TlsContexts, cert_not_after
from ..tables import Listener, Tables
from ..upstream.upstreams import Upstreams
from .loader import load_tables
from .table_changes import count_changes, describe, table_changes

log = logging.getLogger("meshgen.runtime")
WATCH_INTERVAL_S: Final = 0.5
RELOAD_LOG_LINES: Final = 50  # changes logged one per line after a reload; the rest are counted
Stamp = tuple[tuple[str, int, int, int], ...]


def arg_parser(prog: str = "python DIST", *, with_dist: bool = False) -> argparse.ArgumentParser:
    """The runtime's options (``with_dist``: DIST is a positional argument, for ``meshgen run``)."""
    p = argparse.ArgumentParser(prog=prog, description="Run a built DIST on the embedded runtime.")
    if with_dist:
        p.add_argument("dist", type=Path, metavar="DIST", help="the folder meshgen build wrote")
    p.add_argument("--listener", action="append", default=[], metavar="NAME",
                   help="serve only this listener (repeatable)")  # fmt: skip
    p.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="folder for relative file paths (default: the folder holding DIST)",
    )
    p.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="write bound addresses here (JSON) once serving",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        metavar="LEVEL",
        help="debug, info, warning or error (logs go to stderr)",
    )
    p.add_argument("--access-log", metavar="PATH", help="JSON line per request ('-' = stderr)")
    p.add_argument("--watch", action="store_true", help="reload when DIST/mesh changes")
    p.add_argument("--grace", type=float, default=15.0, metavar="SECONDS",
                   help="how long SIGTERM waits for requests in flight")  # fmt: skip
    p.add_argument("--dns-server", metavar="HOST:PORT", help="DNS server for discovery")
    p.add_argument("--no-fast-path", action="store_true",
                   help="drive every request in a coroutine (slower; for debugging)")  # fmt: skip
    p.add_argument("--accelerate", action="store_true",  # (launch.py runs it, before the tables)
                   help="compile the runtime with mypyc for this machine, then exit")  # fmt: skip
    return p


def parse_args(argv: list[str] | None, dist: Path | None) -> argparse.Namespace:
    args = arg_parser(with_dist=dist is None).parse_args(argv)
    if dist is not None:
        args.dist = dist
    return args


def _addr(sock_name: Any) -> str:
    host, port = sock_name[0], sock_name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class _Bound:
    """An open listener: its server and what it was opened with (configured address, TLS)."""

    server: asyncio.Server
    host: str
    port: int
    ssl: ssl.SSLContext | None


def _series(gen: Generation) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(service, endpoint) and (service, file) label pairs a generation exports."""
    endpoints = {
        (service, ep["address"])
        for service, snap in gen.upstreams.snapshot().items()
        for ep in snap["endpoints"]
    }
    files = {(cf.service, cf.file) for cf in gen.tls.cert_files()} if gen.tls else set()
    return endpoints, files


GC_THRESHOLDS = (10_000, 20, 20)
"""The cyclic collector's generation thresholds once serving (CPython's are 700, 10, 10):
most of a request's or a probe's objects die by reference count before a young collection
would promote them, so full collections, which walk every unfrozen long-lived object (the
alert store's series, pooled connections), come an order of magnitude less often."""


def settle_heap() -> int:
    """Take everything alive now (tables, routers, balancers, probe jobs) out of the cyclic
    collector's sight (``gc.freeze``): with thousands of endpoints a full collection otherwise
    walks every one of those objects, a pause of 100-200 ms that lands on requests. Called once
    serving, again once every endpoint has had its first health check (:func:`first_probe_round_s`:
    10,000 probe connections opened after the first freeze made each full collection a
    40-70 ms gap in the checks' schedule), and after a reload retired its old generation: one
    full collection then releases the old generation's cycles before the new state is frozen.
    Returns how many objects are frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()


def first_probe_round_s(tables: Tables) -> float | None:
    """Seconds until every endpoint has been checked once (first slots spread over one
    interval, each check done within its timeout); None without health checks."""
    rounds = (hc.interval_s + hc.timeout_s for hc in tables.health_checks.values())
    return max(rounds, default=None)


def _unknown_listeners(wanted: list[str], tables: Tables) -> str:
    """Why ``--listener`` names ``wanted`` do not fit ``tables`` ('' when they all exist)."""
    known = sorted(lst.name for lst in tables.listeners)
    unknown = sorted(set(wanted) - set(known))
    if not unknown:
        return ""
    names = ", ".join(repr(n) for n in unknown)
    return f"unknown listener {names} (the spec has: {', '.join(known)})"


class Runtime:
    """Listeners, admin server and the live generation of one running DIST."""

    def __init__(self, args: argparse.Namespace, tables: Tables) -> None:
        self.args = args
        self.dist: Path = args.dist.resolve()
        self.root: Path = (args.root or self.dist.parent).resolve()
        self.tables = tables
        self.metrics = Metrics()
        self.rng = random.Random()
        self.access_log: IO[str] | None = None
        if args.access_log == "-":
            self.access_log = sys.stderr
        elif args.access_log:
            self.access_log = open(args.access_log, "a", buffering=1)  # noqa: SIM115
        self.servers: dict[str, _Bound] = {}
        self.admin: AdminServer | None = None
        self.alerts: AlertEvaluator | None = None
        self.stopping = asyncio.Event()
        self._reloading = asyncio.Lock()
        self.proxy: Proxy | None = None
        self.tcp = TcpProxy(self._live, self.metrics)
        self._retired: set[asyncio.Task[Any]] = set()
        self._settle_timer: asyncio.TimerHandle | None = None

    def _live(self) -> Generation:
        assert self.proxy is not None
        return self.proxy.generation

    def _dns(self) -> tuple[list[str] | None, int]:
        if not self.args.dns_server:
            return None, 53
        host, _, port = self.args.dns_server.rpartition(":")
        return [host.strip("[]")], int(port)

    async def _generation(self, tables: Tables, previous: Generation | None = None) -> Generation:
        """Build and start everything for ``tables``; raises on any failure (nothing leaks).
        A reload passes the ``previous`` generation: TLS contexts are derived from its, and
        the health and ejection state of endpoints that stay is carried over (taken after the
        new upstreams started, with no await before the swap, so no result falls between)."""
        tls = (
            previous.tls.derive(tables)
            if previous is not None and previous.tls is not None
            else TlsContexts(tables, self.root)
        )
        client_ssl = {c.name: u for c in tables.clusters if (u := tls.upstream(c.name))}
        servers, port = self._dns()
        upstreams = Upstreams(tables, metrics=self.metrics, client_ssl=client_ssl,
                              dns_nameservers=servers, dns_port=port)  # fmt: skip
        await upstreams.start()
        if previous is not None:
            upstreams.inherit(previous.upstreams)
        for cf in tls.cert_files():
            self.metrics.set_cert_expiry(cf.service, cf.file, cert_not_after(cf.path))
        loop = asyncio.get_running_loop()
        return Generation(tables, upstreams, self.metrics, tls, self.rng, loop.time)

    def _selected(self, tables: Tables) -> list[Listener]:
        wanted = self.args.listener
        unknown = _unknown_listeners(wanted, tables)
        if unknown:
            raise ValueError(unknown)
        return [lst for lst in tables.listeners if not wanted or lst.name in wanted]

    async def _open_listeners(self, gen: Generation) -> None:
        """Open new listeners, reopen changed ones (module docstring), close dropped ones."""
        assert self.proxy is not None and gen.tls is not None
        loop = asyncio.get_running_loop()
        wanted = self._selected(gen.tables)
        for lst in wanted:
            ctx = gen.tls.listener(lst.name)
            old = self.servers.get(lst.name)
            same_address = old is not None and (old.host, old.port) == (lst.host, lst.port)
            if old is not None and same_address and old.ssl is ctx:
                continue
            guard = self.proxy.guard(lst)
            factory: Callable[[], asyncio.Protocol] = (
                self.tcp.protocol(lst, guard) if lst.protocol == "tcp" else self.proxy.protocol(lst)
            )
            if ctx is not None:  # counted from the accept; the handshake comes before the
                # request head, so the head's timeout bounds both (codec/tls_accept.py)
                timeout = lst.limits.request_head_timeout_s
                factory = TlsAccept.factory(factory, guard, ctx, timeout)
            if old is not None and same_address:
                fd = os.dup(old.server.sockets[0].fileno())
                server = await loop.create_server(
                    factory, sock=socket.socket(fileno=fd), backlog=1024
                )
            else:
                server = await loop.create_server(
                    factory, lst.host, lst.port, reuse_address=True, backlog=1024
                )
            self.servers[lst.name] = _Bound(server, lst.host, lst.port, ctx)
            if old is not None:
                old.server.close()
                where = _addr(server.sockets[0].getsockname())
                log.info("listener %s reopened on %s", lst.name, where)
        names = {lst.name for lst in wanted}
        for name in list(self.servers):
            if name not in names:
                self.servers.pop(name).server.close()

    async def _start_admin(self) -> None:
        mesh = self.tables.mesh
        self.alerts = AlertEvaluator.from_tables(self.tables)
        self.admin = await start_admin(
            mesh.admin_host,
            mesh.admin_port,
            tables_provider=lambda: self.tables,
            upstreams_provider=lambda: self.proxy.generation.upstreams if self.proxy else None,
            metrics=self.metrics,
            alerts=self.alerts,
            runtime=runtime_kind(SELECTED),
        )
        task = asyncio.get_running_loop().create_task(self.alerts.run(self.metrics))
        self._retired.add(task)

    def ready_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "listeners": {
                n: _addr(b.server.sockets[0].getsockname()) for n, b in self.servers.items()
            },
            "runtime": runtime_kind(SELECTED),
        }
        if self.admin is not None:
            info["admin"] = self.admin.address
        return info

    def _write_ready(self) -> None:
        path: Path | None = self.args.ready_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.ready_info(), sort_keys=True))
        os.replace(tmp, path)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            gen = await self._generation(self.tables)
            self.proxy = Proxy(
                gen, self.metrics, self.access_log, fast_path=not self.args.no_fast_path
            )
            await self._open_listeners(gen)
        except Exception as exc:
            log.error("cannot start: %s", exc)
            return 1
        try:
            await self._start_admin()
        except OSError as exc:
            log.error("cannot start the admin server: %s", exc)
            return 1
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        settle_heap()
        self._settle_after_first_probes()
        self._write_ready()
        log.info("serving %s", json.dumps(self.ready_info(), sort_keys=True))
        watcher = loop.create_task(self._watch()) if self.args.watch else None
        await self.stopping.wait()
        if watcher is not None:
            watcher.cancel()
        await self.drain()
        return 0

    def _settle_after_first_probes(self) -> None:
        round_s = first_probe_round_s(self.tables)
        if round_s is None:
            return
        if self._settle_timer is not None:
            self._settle_timer.cancel()

        def settle() -> None:
            self._settle_timer = None
            log.info("heap settled after the first health checks: %d objects frozen", settle_heap())

        self._settle_timer = asyncio.get_running_loop().call_later(round_s, settle)

    def _spawn_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def reload(self) -> bool:
        """Swap in a freshly loaded DIST; on any failure keep the current one and log why."""
        assert self.proxy is not None
        async with self._reloading:
            try:
                tables = load_tables(self.dist)
                self._selected(tables)
                gen = await self._generation(tables, self.proxy.generation)
            except Exception as exc:
                log.error("reload refused, keeping the running tables: %s", exc)
                return False
            old = self.proxy.swap(gen)
            was, self.tables = self.tables, tables
            if self.alerts is not None:
                self.alerts.update_rules(tables.alerts, tables.slos, tables.mesh.alertmanager)
            try:
                await self._open_listeners(gen)
            except OSError as exc:
                log.error("reload: cannot open a listener: %s", exc)
            self._write_ready()
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
            await self._log_changes(was, tables)
            return True

    async def _log_changes(self, old: Tables, new: Tables) -> None:
        """Log what the reload changed (the new tables already serve; the diff of a large mesh
        runs in a thread so requests keep flowing)."""
        try:
            changes = await asyncio.to_thread(table_changes, old, new)
        except Exception as exc:  # a bug in describing must not undo a good reload
            log.error("reloaded %s; cannot list the changes: %r", self.dist, exc)
            return
        log.info("reloaded %s: %s", self.dist, count_changes(changes))
        for line in describe(changes, RELOAD_LOG_LINES):
            log.info("reload: %s", line)

    async def _retire(self, old: Generation) -> None:
        """Stop an old generation's upstreams once its last request finished; then drop the
        series of endpoints and certificate files that the live generation does not have."""
        while old.in_flight > 0:
            await asyncio.sleep(0.05)
        await old.upstreams.stop()
        assert self.proxy is not None
        was_endpoints, was_files = _series(old)
        endpoints, files = _series(self.proxy.generation)
        for service, endpoint in was_endpoints - endpoints:
            self.metrics.forget_endpoint(service, endpoint)
        for service, file in was_files - files:
            self.metrics.forget_cert_expiry(service, file)
        live = self.proxy.generation
        for service in old.services - live.services:
            self.metrics.forget_service(service)
        for route in old.limited_routes - live.limited_routes:
            self.metrics.forget_route(route)
        del old, live
        settle_heap()
        self._settle_after_first_probes()

    def _dist_stamp(self) -> Stamp | None:
        """(name, inode, mtime, size) of MANIFEST.json and mesh/*.py; None while DIST is
        incomplete (``meshgen build`` renames the old DIST away before the new one is in)."""
        files = sorted((self.dist / "mesh").glob("*.py"))
        manifest = self.dist / "MANIFEST.json"
        if manifest.exists():
            files.insert(0, manifest)
        try:
            stats = [(f.name, f.stat()) for f in files]
        except OSError:
            return None
        if not stats:
            return None
        return tuple((n, st.st_ino, st.st_mtime_ns, st.st_size) for n, st in stats)

    async def _watch(self) -> None:
        """``--watch``: reload when DIST changed and then held still for one poll."""
        loaded = self._dist_stamp()
        seen = loaded
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = self._dist_stamp()
            if now is not None and now == seen and now != loaded:
                loaded = now
                await self.reload()
            seen = now

    async def drain(self) -> None:
        """Stop accepting, let requests finish within ``--grace``, then close everything."""
        assert self.proxy is not None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        for bound in self.servers.values():
            bound.server.close()
        self.proxy.start_drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.grace
        while (self.proxy.connections or self.tcp.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
            self.proxy.start_drain()
        for conn in list(self.proxy.connections):
            conn.close()
        self.tcp.close_all()
        if self.admin is not None:
            await self.admin.close()
        for task in list(self._retired):
            task.cancel()
        self.proxy.exchange.pool.close()
        await self.proxy.generation.upstreams.stop()
        if self.access_log is not None and self.access_log is not sys.stderr:
            self.access_log.close()
        log.info("drained, exiting")


def _event_loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None, dist: Path | None = None) -> int:
    """Entry point of ``python DIST`` and ``meshgen run``; returns the exit code."""
    args = parse_args(argv, dist)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        tables = load_tables(args.dist)
    except Exception as exc:
        log.error("cannot load %s: %s", args.dist, exc)
        return 1
    unknown = _unknown_listeners(args.listener, tables)
    if unknown:
        print(f"python DIST: error: {unknown}", file=sys.stderr)
        return 2
    log.info("runtime: %s", runtime_kind(SELECTED))
    log.debug("open files limit: %d", raise_fd_limit())
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runtime = Runtime(args, tables)
        return runner.run(runtime.run())
