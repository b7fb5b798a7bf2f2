"""Proxyless client: call mesh services from Python with the proxy's routing and policies.

``mesh = Mesh.load(DIST); mesh.request("GET", "http://reviews/x")`` routes on the URL's host
and path over *all* routes of the DIST (no listener) and is then the sidecar's request in
every respect: the same request machine (``forward/attempt.py``: split, redirect, rate limits,
fault, mirror, circuit breaker with its pending queue, tries, retries with budget and backoff,
outlier reports, metrics) and the same upstream head (``forward/heads.py``: rewrite, header
operations, ``x-request-id``, ``X-Forwarded-For: 127.0.0.1``, ``Via``), driven by the
whole-message driver (``forward/call.py``) over its own connection pool. What the proxy would
answer itself is raised as :class:`MeshError` with that status (a redirect is returned as its
:class:`Response`); what the endpoint answers comes back with the route's response header
operations applied, as the proxy passes it on.

Theory of operation: a ``Mesh`` binds to one event loop, the first that uses it. ``await
mesh.arequest(...)`` runs on the caller's loop; ``mesh.request(...)`` (sync) runs the same
coroutine on a private loop in a daemon thread. Bodies are small, in-memory ``bytes`` on both
sides (this is an RPC helper, not a streaming proxy): an answer whose body passes
``max_response_bytes`` (default :data:`MAX_RESPONSE_BYTES`) is a 502 :class:`MeshError`, its
connection closed as soon as the limit is passed.
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
from urllib.parse import urlsplit

from ..forward.attempt import LOCAL, START, Attempt
from ..forward.call import Reply, call
from ..forward.generation import CLIENT, Generation
from ..forward.heads import VIA
from ..forward.local import LocalRequest
from ..forward.mirror import Mirrors
from ..forward.tries import Upstream
from ..observe.metrics import Metrics
from ..policy.tls import TlsContexts
from ..tables import Tables
from ..upstream.upstreams import Upstreams
from .loader import load_tables

MAX_RESPONSE_BYTES = 64 << 20
"""Default limit of a response body the client reads into memory (64 MiB)."""


class MeshError(Exception):
    """A local answer (no route, rate limited, no healthy endpoint, every try failed...);
    ``status`` is what the proxy answers."""

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
                 rng: random.Random | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:  # fmt: skip
        self.tables = tables
        self.max_response_bytes = max_response_bytes
        self.root = root
        self.metrics = metrics if metrics is not None else Metrics()
        self.rng = rng if rng is not None else random.Random()
        self.upstream = Upstream()
        self.mirrors = Mirrors(self.upstream)
        self._gen: Generation | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, dist: str | Path, root: str | Path | None = None, *,
             max_response_bytes: int = MAX_RESPONSE_BYTES) -> Mesh:  # fmt: skip
        """Load ``DIST/mesh/*.py``; relative TLS paths resolve against ``root`` (DIST/..).

        The table files import ``meshgen_runtime``, so DIST joins ``sys.path`` if absent.
        """
        dist = Path(dist).resolve()
        if str(dist) not in sys.path:
            sys.path.insert(0, str(dist))
        folder = Path(root).resolve() if root else dist.parent
        return cls(load_tables(dist), folder, max_response_bytes=max_response_bytes)

    async def _generation(self) -> Generation:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("a Mesh is bound to the event loop that first used it")
        if self._gen is None:
            self._loop = loop
            tls = TlsContexts(self.tables, self.root)
            client_ssl = {c.name: u.context for c in self.tables.clusters
                          if (u := tls.upstream(c.name)) is not None}  # fmt: skip
            upstreams = Upstreams(self.tables, metrics=self.metrics,
                                  client_ssl=client_ssl)  # fmt: skip
            await upstreams.start()
            self._gen = Generation(
                self.tables, upstreams, self.metrics, tls, self.rng, loop.time, client=True
            )
        return self._gen

    async def arequest(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                       body: bytes = b"") -> Response:  # fmt: skip
        """Send one request through the mesh; raises :class:`MeshError` for local answers."""
        gen = await self._generation()
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        req = LocalRequest(method, parts.netloc, target, headers or {}, body)
        att = Attempt(gen, CLIENT, req, start=time.monotonic())
        start = time.monotonic()
        reply: Reply | None = None
        try:
            action = att.step(START)
            if action != LOCAL:
                reply = await call(
                    self.upstream, gen, att, action, body, self.max_response_bytes, self._mirror
                )
        finally:
            att.close()
            att.account(time.monotonic() - start)
        answer = att.answer
        if answer is not None:
            if answer.status >= 400:
                raise MeshError(answer.status, answer.body.decode("utf-8", "replace").strip())
            return Response(answer.status, _text(answer.headers), answer.body)
        assert reply is not None and att.route is not None
        if reply.over_limit:
            raise MeshError(502, f"response body over {self.max_response_bytes} bytes")
        if not reply.complete:
            raise MeshError(502, "upstream reset during the response body")
        sops = gen.ops(att.route)[1]
        kept = [(k, v) for k, v in reply.headers if k not in sops.skip]
        return Response(reply.status, _text((*kept, *sops.add, (b"via", VIA))), reply.body)

    def _mirror(self, att: Attempt) -> None:
        assert self._gen is not None and isinstance(att.req, LocalRequest)
        self.mirrors.mirror(self._gen, att, att.req, att.req.payload)

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
        self.upstream.pool.close()
        if self._gen is not None:
            await self._gen.upstreams.stop()

    def close(self) -> None:
        """Stop health checks and discovery, close pooled connections and the thread loop."""
        loop = self._thread_loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread_loop = None


def _text(
    headers: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]],
) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
