"""Lowering of ``routes:`` (or the default per-service routes) with route-level policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from meshgen import builtin
from meshgen.lower.context import LowerContext, normalize_host
from meshgen.lower.merge import CALL_FIELDS, Merged, OriginMap, overlay
from meshgen.lower.services import call_policy, rate_limit
from meshgen.model import (
    CallPolicy,
    Destination,
    Fault,
    Gap,
    HeaderMatch,
    HeaderOps,
    Match,
    Mirror,
    PathKey,
    RateLimit,
    Redirect,
    Rewrite,
    Route,
    Service,
)

if TYPE_CHECKING:
    from meshgen.runtime.tables import HeaderMatchKind, PathMatchKind


def routes(ctx: LowerContext, services: dict[str, Service]) -> tuple[Route, ...]:
    raw_routes = ctx.data.get("routes")
    if raw_routes is None:
        return tuple(default_route(ctx, s) for s in services.values() if s.protocol != "tcp")
    skip = ctx.skip
    return tuple(
        route(ctx, r, ("routes", i), services)
        for i, r in enumerate(raw_routes)
        if ("routes", i) not in skip
    )


def default_route(ctx: LowerContext, service: Service) -> Route:
    """Without ``routes:``, host NAME and NAME.<domain> go to service NAME (reference.md);
    a tcp service gets none (only tcp listeners reach it)."""
    hosts = (service.name, f"{service.name}.{ctx.domain}") if ctx.domain else (service.name,)
    dest = Destination(service.name, None, 100, service.path, service.call)
    return Route(
        service.name,
        service.path,
        Match(hosts, "prefix", builtin.default("route.match.path_prefix"), (), ()),
        (dest,),
        None,
        None,
        None,
        None,
        _NO_HEADER_OPS,
        _NO_HEADER_OPS,
        None,
        True,
        synthetic=True,
    )


def route(ctx: LowerContext, raw: Merged, path: PathKey, services: dict[str, Service]) -> Route:
    own = {k: raw[k] for k in CALL_FIELDS if k in raw}
    to = tuple(
        Destination(
            str(item["service"]),
            item.get("subset"),
            item.get("weight"),
            (*path, "to", i),
            route_call(ctx, services.get(str(item["service"])), own, path),
        )
        for i, item in enumerate(raw.get("to") or ())
    )
    mirror = raw.get("mirror")
    fault = raw.get("fault")
    rewrite = raw.get("rewrite")
    redirect = raw.get("redirect")
    headers = raw.get("headers") or {}
    return Route(
        name=str(raw["name"]),
        path=path,
        match=match(raw.get("match") or {}),
        to=to,
        rate_limit=route_rate_limit(ctx, raw, path),
        fault=None if fault is None else lower_fault(ctx, fault, (*path, "fault")),
        mirror=None
        if mirror is None
        else Mirror(
            str(mirror["service"]),
            mirror.get("subset"),
            float(mirror.get("percent", builtin.default("route.mirror.percent"))),
            (*path, "mirror"),
        ),
        rewrite=None
        if rewrite is None
        else Rewrite(rewrite.get("path_prefix"), rewrite.get("host")),
        request_headers=_header_ops(headers.get("request")),
        response_headers=_header_ops(headers.get("response")),
        redirect=None
        if redirect is None
        else Redirect(
            str(redirect["location"]),
            int(redirect.get("status", builtin.default("route.redirect.status"))),
        ),
        has_to="to" in raw,
    )


def route_rate_limit(ctx: LowerContext, raw: Merged, path: PathKey) -> RateLimit | None:
    """The route's bucket: its ``rate_limit`` over each destination service's, key by key.

    Fields the route leaves out come from its services' merged ``rate_limit`` (which
    include ``defaults:``); when they are missing everywhere, or the services disagree,
    the gap is recorded for E116 and the bucket is left out.
    """
    own = raw.get("rate_limit")
    if own is None:
        return None
    name, where = str(raw["name"]), (*path, "rate_limit")
    services = list(dict.fromkeys(str(d["service"]) for d in raw.get("to") or ()))
    below = {s: ctx.rate_limits[s] or {} for s in services if s in ctx.rate_limits}
    layered = {s: {**lower, **own} for s, lower in below.items()} or {
        "": {**(ctx.defaults.get("rate_limit") or {}), **own}  # a redirect: no service
    }
    lacking = [s for s, m in layered.items() if "requests_per_second" not in m]
    owner, field = f"route '{name}'", "rate_limit"
    if lacking:
        shown = " or ".join(f"'{s}'" for s in lacking if s)
        where_below = f"on service {shown} or in defaults" if shown else "in defaults"
        ctx.gaps.append(Gap(owner, field, "requests_per_second", where, where_below))
        return None
    buckets = {s: rate_limit(m) for s, m in layered.items()}
    for key in ("requests_per_second", "burst"):
        values = {s: getattr(b, key) for s, b in buckets.items()}
        if key not in own and len(set(values.values())) > 1:
            conflict = tuple((s, f"{v:g}") for s, v in values.items())
            ctx.gaps.append(Gap(owner, field, key, where, "", conflict))
            return None
    return next(iter(buckets.values()))


def route_call(
    ctx: LowerContext, service: Service | None, own: Merged, path: PathKey
) -> CallPolicy | None:
    """The destination's call policy with the route's timeout/idle_timeout/retries on top."""
    if service is None:
        return None
    if not own:
        return service.call
    merged: Merged = {}
    origins: OriginMap = {}
    defaults = ctx.origin("defaults")
    for key in CALL_FIELDS:
        if key in ctx.defaults:
            overlay(merged, origins, {key: ctx.defaults[key]}, defaults, ("defaults",))
    raw_service = ctx.data["services"][service.name]
    overlay(
        merged,
        origins,
        {k: raw_service[k] for k in CALL_FIELDS if k in raw_service},
        ctx.origin("service"),
        service.path,
    )
    overlay(merged, origins, own, ctx.origin("route"), path)
    return call_policy(ctx, merged, origins)


def match(raw: Merged) -> Match:
    host = raw.get("host", ())
    hosts = (host,) if isinstance(host, str) else tuple(host)
    kind, value = "prefix", builtin.default("route.match.path_prefix")
    for key in ("path_prefix", "path_exact", "path_regex"):
        if key in raw:
            kind, value = key.removeprefix("path_"), str(raw[key])
    return Match(
        hosts=tuple(dict.fromkeys(normalize_host(h) for h in hosts)),
        path_kind=cast("PathMatchKind", kind),
        path=value,
        methods=tuple(sorted({str(m).upper() for m in raw.get("methods", ())})),
        headers=tuple(
            sorted(
                (_header_match(n, m) for n, m in (raw.get("headers") or {}).items()),
                key=lambda h: (h.name, h.kind, h.value),
            )
        ),
    )


def lower_fault(ctx: LowerContext, raw: Merged, path: PathKey) -> Fault:
    delay, abort = raw.get("delay") or {}, raw.get("abort") or {}
    delay_percent = builtin.default("route.fault.delay.percent")
    abort_percent = builtin.default("route.fault.abort.percent")
    return Fault(
        delay_s=ctx.duration(delay["fixed"], (*path, "delay", "fixed")) if delay else 0.0,
        delay_percent=float(delay.get("percent", delay_percent)) if delay else 0.0,
        abort_status=int(abort["status"]) if abort else 0,
        abort_percent=float(abort.get("percent", abort_percent)) if abort else 0.0,
    )


def _header_match(name: str, raw: Merged) -> HeaderMatch:
    for kind in ("exact", "prefix", "regex"):
        if kind in raw:
            return HeaderMatch(name.lower(), cast("HeaderMatchKind", kind), str(raw[kind]))
    return HeaderMatch(name.lower(), "present", "")


_NO_HEADER_OPS: HeaderOps = HeaderOps((), ())


def _header_ops(raw: Merged | None) -> HeaderOps:
    if not raw:
        return _NO_HEADER_OPS
    return HeaderOps(
        set=tuple(sorted((str(k).lower(), str(v)) for k, v in (raw.get("set") or {}).items())),
        remove=tuple(str(n).lower() for n in raw.get("remove", ())),
    )
