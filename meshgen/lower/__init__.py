"""Schema-valid mesh.yaml data -> :class:`meshgen.model.Mesh`.

Theory of operation: the schema has already rejected wrong shapes, so lowering only parses
values (durations, addresses), merges policy (built-in < ``defaults:`` < service < route) and
adds the implied parts (default routes, the ``edge`` listener, the admin address). Merging
works on the plain mappings: ``defaults:`` is overlaid once, then each service overlays a
copy, recording per dotted field the :class:`Origin` of the value that won. Built-in values are
never stored in the merged mapping: a missing key means "built-in" and the builders below
supply it, so an untouched field costs nothing. Values the schema cannot rule out (a port
above 65535, a malformed address) become E401/E402 diagnostics, never exceptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from meshgen.alertexpr import AlertExprError, parse_when
from meshgen.checks import codes  # noqa: F401  (registers E401/E402)
from meshgen.diagnostics import Diagnostic, has_errors
from meshgen.lower.base import Merged, normalize_host, overlay, split_address, version_text
from meshgen.lower.routes import RouteLowering
from meshgen.model import AccessRule, Alert, Listener, Mesh, PathKey, Slo
from meshgen.runtime import tables as t

if TYPE_CHECKING:
    from meshgen.source import Document

__all__ = ["Lowerer", "lower", "normalize_host", "overlay", "split_address"]

DEFAULT_LISTENER: Final = ("edge", "127.0.0.1", 15001)
DEFAULT_ADMIN: Final = ("127.0.0.1", 15000)


class Lowerer(RouteLowering):
    """The whole mesh: services, routes, listeners, access rules and monitoring."""

    def listeners(self) -> tuple[Listener, ...]:
        raw_listeners = self.data.get("listeners")
        if raw_listeners is None:
            name, host, port = DEFAULT_LISTENER
            return (Listener(name, (), host, port, None, None, synthetic=True),)
        result = []
        for index, raw in enumerate(raw_listeners):
            path: PathKey = ("listeners", index)
            host, port = self.address(raw["address"], (*path, "address"), "listener", True)
            tls = raw.get("tls")
            server_tls = (
                None
                if tls is None
                else t.ServerTls(
                    cert=str(tls["cert"]),
                    key=str(tls["key"]),
                    ca=tls.get("ca"),
                    client_certificates=tls.get("client_certificates", "none"),
                    min_version=version_text(tls.get("min_version", "1.2")),
                )
            )
            routes = raw.get("routes")
            result.append(
                Listener(
                    str(raw["name"]),
                    path,
                    host,
                    port,
                    None if routes is None else tuple(routes),
                    server_tls,
                    limits=self.limits(raw.get("limits") or {}, (*path, "limits")),
                )
            )
        return tuple(result)

    def limits(self, raw: Merged, path: PathKey) -> t.Limits:
        """A listener's ``limits:``; the table type's defaults for what is not written."""
        base = t.Limits()

        def timed(key: str, fallback: float) -> float:
            return self.duration(raw[key], (*path, key), fallback) if key in raw else fallback

        return t.Limits(
            request_head_bytes=int(raw.get("request_head_bytes", base.request_head_bytes)),
            request_headers=int(raw.get("request_headers", base.request_headers)),
            url_bytes=int(raw.get("url_bytes", base.url_bytes)),
            request_head_timeout_s=timed("request_head_timeout", base.request_head_timeout_s),
            client_idle_timeout_s=timed("client_idle_timeout", base.client_idle_timeout_s),
            max_connections=int(raw.get("max_connections", base.max_connections)),
        )

    def access(self) -> tuple[AccessRule, ...]:
        return tuple(
            AccessRule(
                str(r["from"]),
                str(r["to"]),
                tuple(sorted({str(m).upper() for m in r.get("methods", ())})),
                tuple(r.get("paths", ())),
                ("access", i),
            )
            for i, r in enumerate(self.data.get("access") or ())
        )

    def alerts(self, raw: list[Merged]) -> tuple[Alert, ...]:
        result = []
        for index, item in enumerate(raw):
            path: PathKey = ("monitoring", "alerts", index)
            try:
                expr = parse_when(str(item["when"]))
            except AlertExprError:
                expr = None  # reported with its position by checks.monitoring
            result.append(
                Alert(
                    str(item["name"]),
                    str(item["service"]),
                    str(item["when"]),
                    expr,
                    self.duration(item.get("for", "0s"), (*path, "for")),
                    item.get("severity", "ticket"),
                    str(item.get("summary", "")),
                    path,
                )
            )
        return tuple(result)

    def slos(self, raw: list[Merged]) -> tuple[Slo, ...]:
        return tuple(
            Slo(
                str(s["name"]),
                str(s["service"]),
                float(s["objective"]),
                self.duration(s.get("window", "30d"), ("monitoring", "slos", i, "window")),
                ("monitoring", "slos", i),
            )
            for i, s in enumerate(raw)
        )

    def mesh(self) -> Mesh:
        raw_services = self.data.get("services") or {}
        services = {n: self.service(n, raw_services[n] or {}) for n in sorted(raw_services)}
        admin = self.data.get("admin")
        admin_host, admin_port = (
            DEFAULT_ADMIN if admin is None else self.address(admin, ("admin",), "admin", True)
        )
        monitoring = self.data.get("monitoring") or {}
        head = self.data.get("mesh") or {}
        routes = self.routes(services)
        return Mesh(
            name=str(head.get("name", "")),
            domain=self.domain,
            admin_host=admin_host,
            admin_port=admin_port,
            admin_path=None if admin is None else ("admin",),
            alertmanager=monitoring.get("alertmanager"),
            services=services,
            routes=routes,
            listeners=self.listeners(),
            access=self.access(),
            alerts=self.alerts(monitoring.get("alerts") or []),
            slos=self.slos(monitoring.get("slos") or []),
            gaps=tuple(self.gaps),
            base_dir=self.doc.path.parent,
        )


def lower(doc: Document) -> tuple[Mesh | None, list[Diagnostic]]:
    """Build the typed mesh; on any E401/E402 return None with every such diagnostic."""
    lowerer = Lowerer(doc)
    mesh = lowerer.mesh()
    diagnostics = sorted(lowerer.diagnostics, key=lambda d: d.sort_key)
    return (None if has_errors(diagnostics) else mesh), diagnostics
