"""Proxyless client: call mesh services from Python with the proxy's routing and policies.

``mesh = Mesh.load(DIST); mesh.request("GET", "http://reviews/x")`` routes on the URL's host
and path over *all* routes of the DIST (no listener), then picks, balances, retries, applies
the circuit breaker (per try, with the proxy's pending queue: :func:`~.exchange.admit`), rate
limits, TLS and metrics exactly like the sidecar, sharing its :class:`~.proxy.Generation`,
:class:`~.pool.Pool` and resilience helpers.

Theory of operation: a ``Mesh`` binds to one event loop, the first that uses it. ``await
mesh.arequest(...)`` runs on the caller's loop; ``mesh.request(...)`` (sync) runs the same
coroutine on a private loop in a daemon thread. Bodies are small, in-memory ``bytes`` on both
sides (this is an RPC helper, not a streaming proxy).
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .exchange import admit
from .forward.attempt import new_request_id
from .forward.heads import REQUEST_SKIP, CompiledOps, request_head
from .forward.local import LocalRequest
from .http1 import UpstreamConnection
from .loader import load_tables
from .metrics import Metrics
from .paths import split_target
from .pool import ConnectError, Pool
from .proxy import Generation
from .resilience import backoff_delay, retryable
from .router import Router
from .tables import Tables
from .tls import TlsContexts
from .upstreams import Picked, Upstreams


class MeshError(Exception):
    """No route, no healthy endpoint, or every try failed; ``status`` is what a proxy answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Mesh:
    """The routing tables of one DIST, usable in-process (see the module docstring)."""

    def __init__(self, tables: Tables, root: Path, *, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        self.tables = tables
        self.root = root
        self.metrics = metrics if metrics is not None else Metrics()
        self.rng = rng if rng is not None else random.Random()
        self.router = Router(tables.routes, self.rng)
        self.pool = Pool()
        self._gen: Generation | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, dist: str | Path, root: str | Path | None = None) -> Mesh:
        """Load ``DIST/mesh/*.py``; relative TLS paths resolve against ``root`` (DIST/..).

        The table files import ``meshgen_runtime``, so DIST joins ``sys.path`` if absent.
        """
        dist = Path(dist).resolve()
        if str(dist) not in sys.path:
            sys.path.insert(0, str(dist))
        return cls(load_tables(dist), Path(root).resolve() if root else dist.parent)

    async def _generation(self) -> Generation:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("a Mesh is bound to the event loop that first used it")
        if self._gen is None:
            self._loop = loop
            tls = TlsContexts(self.tables, self.root)
            client_ssl = {c.name: u.context for c in self.tables.clusters
                          if (u := tls.upstream(c.name)) is not None}  # fmt: skip
            upstreams = Upstreams(self.tables, metrics=self.metrics, root=self.root,
                                  client_ssl=client_ssl)  # fmt: skip
            await upstreams.start()
            self._gen = Generation(self.tables, upstreams, self.metrics, tls, self.rng)
        return self._gen

    async def arequest(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                       body: bytes = b"") -> Response:  # fmt: skip
        """Send one request through the mesh; raises :class:`MeshError` for local failures."""
        gen = await self._generation()
        parts = urlsplit(url)
        host = parts.netloc
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        req = LocalRequest(method, host, target, headers or {}, body)
        split = split_target(req.target)
        if split is None:
            raise MeshError(400, f"invalid path {target!r}")
        path, query = split
        if req.request_id is None:
            req.request_id = new_request_id()
            req.headers.append((b"x-request-id", req.request_id))
        start = time.monotonic()
        cr = self.router.match(host, path, method, req.header)
        if cr is None:
            raise MeshError(404, f"no route for host {host!r}")
        route = cr.route
        if route.redirect is not None:
            return Response(route.redirect.status, (("location", route.redirect.location),), b"")
        tgt = self.router.pick(cr)
        assert tgt is not None
        for bucket in (gen.route_buckets.get(route.name), gen.service_buckets.get(tgt.service)):
            if bucket is not None and bucket.try_acquire() is not None:
                self.metrics.inc_rate_limited(route.name)
                raise MeshError(429, "rate limited")
        ops = CompiledOps.of(route.request_headers, REQUEST_SKIP)
        head = request_head(req, route, path, query, ops) + body
        try:
            resp = await self._forward(gen, method, head, tgt)
        except MeshError as exc:  # a local 503/504 counts, as the proxy's does
            self.metrics.observe_request("", route.name, tgt.service, tgt.subset or "",
                                         exc.status, time.monotonic() - start)  # fmt: skip
            raise
        self.metrics.observe_request("", route.name, tgt.service, tgt.subset or "",
                                     resp.status, time.monotonic() - start)  # fmt: skip
        return resp

    async def _forward(self, gen: Generation, method: str, head: bytes,
                       tgt: Any) -> Response:  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + tgt.timeout_s
        policy = tgt.retries
        budget = gen.budgets.get(id(tgt)) if policy is not None else None
        if budget is not None:
            budget.record_request()
        breaker = gen.breakers[tgt.service]
        tried: set[str] = set()
        failure: int | str = "connect-failure"
        for attempt in range(1 + (policy.attempts if policy is not None else 0)):
            # Each try is admitted like the proxy's: wait in the pending queue while every
            # connection is busy (until the deadline: 504), else a fast 503; the slot is held
            # for the try only, so it is free during the backoff.
            refused = await admit(breaker, loop, deadline)
            if refused is not None:
                assert refused.local is not None
                raise MeshError(refused.status, refused.local.decode().strip())
            try:
                picked = gen.upstreams.pick(tgt.service, tgt.subset, None, frozenset(tried))
                if picked is None:
                    raise MeshError(503, "no healthy endpoint")
                tried.add(picked.endpoint.address)
                left = deadline - loop.time()
                per_try = min(policy.per_try_timeout_s, left) if policy is not None else left
                gen.upstreams.begin(picked)
                try:
                    result = await self._try(gen, picked, head, per_try)
                finally:
                    gen.upstreams.end(picked)
            finally:
                breaker.release()
            outcome = result.status if isinstance(result, Response) else result
            self.metrics.inc_upstream(picked.service, picked.endpoint.address, outcome)
            gen.upstreams.report(picked, outcome)
            failure = outcome
            more = policy is not None and attempt < policy.attempts and loop.time() < deadline
            if not (more and policy and retryable(policy, method, outcome)
                    and budget is not None and budget.try_retry()):  # fmt: skip
                if isinstance(result, Response):
                    return result
                break
            self.metrics.inc_retry(tgt.service)
            await asyncio.sleep(backoff_delay(attempt + 1, policy.backoff_base_s,
                                              policy.backoff_max_s, self.rng))  # fmt: skip
        status = {"timeout": 504, "connect-failure": 503}.get(str(failure), 502)
        raise MeshError(status, f"upstream {failure}")

    async def _try(self, gen: Generation, picked: Picked, head: bytes,
                   timeout: float) -> Response | str:  # fmt: skip
        if timeout <= 0:
            return "timeout"
        cluster = gen.clusters[picked.service]
        tls = gen.tls.upstream(picked.service) if gen.tls is not None else None
        try:
            conn: UpstreamConnection = await self.pool.acquire(
                picked.service, picked.endpoint, min(cluster.connect_timeout_s, timeout), tls
            )
        except ConnectError:
            return "connect-failure"
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                conn.begin(head, False, None)
                assert conn.headers_future is not None and conn.done is not None
                await conn.headers_future
                conn.start_body(chunks.append)
                await conn.done
        except TimeoutError:
            conn.abort()
            return "timeout"
        except ConnectionResetError:
            return "reset"
        if conn.keep_alive:
            self.pool.release(conn)
        else:
            conn.abort()
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in conn.headers)
        return Response(conn.status, headers, b"".join(chunks))

    # ---- synchronous facade -------------------------------------------------------------

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="meshgen-client", daemon=True
                ).start()
                self._thread_loop = loop
            return self._thread_loop

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                body: bytes = b"", timeout: float | None = None) -> Response:  # fmt: skip
        """Blocking :meth:`arequest` on the Mesh's own background loop."""
        fut = asyncio.run_coroutine_threadsafe(
            self.arequest(method, url, headers, body), self._sync_loop()
        )
        return fut.result(timeout)

    async def aclose(self) -> None:
        self.pool.close()
        if self._gen is not None:
            await self._gen.upstreams.stop()

    def close(self) -> None:
        """Stop health checks and discovery, close pooled connections and the thread loop."""
        loop = self._thread_loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread_loop = None
