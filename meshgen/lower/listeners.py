"""Lowering of ``listeners:`` (or the built-in ``edge`` listener), ``admin`` and ``access:``."""

from __future__ import annotations

from meshgen import builtin
from meshgen.lower.context import LowerContext, split_address, version_text
from meshgen.lower.merge import Merged
from meshgen.model import AccessRule, Limits, Listener, PathKey, ServerTls, SniEntry, TcpDestination


def listeners(ctx: LowerContext) -> tuple[Listener, ...]:
    raw_listeners = ctx.data.get("listeners")
    if raw_listeners is None:
        return tuple(
            Listener(
                str(raw["name"]),
                (),
                *_built_in_address(raw["address"]),
                None,
                None,
                limits(ctx, {}, ()),
                synthetic=True,
            )
            for raw in builtin.default("listeners")
        )
    return tuple(
        listener(ctx, raw, ("listeners", i))
        for i, raw in enumerate(raw_listeners)
        if ("listeners", i) not in ctx.skip
    )


def listener(ctx: LowerContext, raw: Merged, path: PathKey) -> Listener:
    host, port = ctx.address(raw["address"], (*path, "address"), "listener", True)
    tls = raw.get("tls")
    server_tls = None
    if isinstance(tls, dict):
        server_tls = ServerTls(
            cert=str(tls["cert"]),
            key=str(tls["key"]),
            ca=tls.get("ca"),
            client_certificates=tls.get(
                "client_certificates", builtin.default("listener.tls.client_certificates")
            ),
            min_version=version_text(
                tls.get("min_version", builtin.default("listener.tls.min_version"))
            ),
        )
    routes = raw.get("routes")
    return Listener(
        str(raw["name"]),
        path,
        host,
        port,
        None if routes is None else tuple(routes),
        server_tls,
        limits(ctx, raw.get("limits") or {}, (*path, "limits")),
        access=raw.get("access", builtin.default("listener.access")),
        protocol=raw.get("protocol", builtin.default("listener.protocol")),
        to=tuple(
            TcpDestination(
                str(item["service"]), item.get("subset"), item.get("weight"), (*path, "to", i)
            )
            for i, item in enumerate(raw.get("to") or ())
        ),
        sni=tuple(
            SniEntry(str(pattern), str(service), (*path, "sni", pattern))
            for pattern, service in (raw.get("sni") or {}).items()
        ),
    )


def limits(ctx: LowerContext, raw: Merged, path: PathKey) -> Limits:
    """A listener's ``limits:``; the built-in value of each field it leaves out."""

    def count(key: str) -> int:
        return int(raw.get(key, builtin.default(f"listener.limits.{key}")))

    def timed(key: str) -> float:
        fallback = builtin.seconds(f"listener.limits.{key}")
        return ctx.duration(raw[key], (*path, key), fallback) if key in raw else fallback

    return Limits(
        request_head_bytes=count("request_head_bytes"),
        request_headers=count("request_headers"),
        url_bytes=count("url_bytes"),
        request_head_timeout_s=timed("request_head_timeout"),
        client_idle_timeout_s=timed("client_idle_timeout"),
        max_connections=count("max_connections"),
        max_connection_duration_s=ctx.duration(
            raw["max_connection_duration"], (*path, "max_connection_duration")
        )
        if "max_connection_duration" in raw
        else None,
    )


def admin(ctx: LowerContext) -> tuple[tuple[str, int], PathKey | None]:
    """The admin server's (host, port) and where it was written (None: built-in)."""
    raw = ctx.data.get("admin")
    if raw is None:
        return _built_in_address(builtin.default("admin")), None
    return ctx.address(raw, ("admin",), "admin", True), ("admin",)


def _built_in_address(text: str) -> tuple[str, int]:
    parsed = split_address(text)
    assert parsed is not None, f"built-in address {text!r}"
    return parsed


def access(ctx: LowerContext) -> tuple[AccessRule, ...]:
    return tuple(
        AccessRule(
            str(r["from"]),
            str(r["to"]),
            tuple(sorted({str(m).upper() for m in r.get("methods", ())})),
            tuple(r.get("paths", ())),
            ("access", i),
        )
        for i, r in enumerate(ctx.data.get("access") or ())
        if ("access", i) not in ctx.skip
    )
