"""E601-E605, W601-W603: alert conditions, alert names, SLO ranges, alerts that cannot fire.

W603: an SLO objective is a percent (99.9); one below 50 is almost always a ratio written
instead (0.999 means 0.999% good responses, a budget so large its alerts can never fire).

W601 is limited to signals that come from request traffic (error rate, request rate,
latency, SLOs): health and certificate signals are measured whether or not a route reaches
the service. Reachable means: a destination or mirror of a route some listener serves, or a
failover backup of a reachable service (request signals on a tcp service are E811 instead).
W602: ``cert_expiry`` is measured on the certificate
files the runtime loads for a service (its ``tls.ca`` when verifying, its ``tls.cert`` with
mutual TLS; a listener's files count under the listener's name), so without any it never fires.

A condition error (E601, E602) points at the part of ``when`` that is wrong -- the signal, the
operator or the value -- when the scalar is written plain or quoted without escapes, so source
columns and characters agree; otherwise at the whole value.
"""

from __future__ import annotations

from meshgen.alertexpr import AlertExprError, parse_when
from meshgen.checks.context import Context
from meshgen.diagnostics import Span
from meshgen.durations import format_duration
from meshgen.model import Alert, PathKey, Service

NO_CERTIFICATE = "W602"
SMALL_OBJECTIVE = "W603"

TRAFFIC_SIGNALS = frozenset(
    {"error_rate", "request_rate", "p50_latency", "p90_latency", "p99_latency"}
)
WINDOW_MIN_S = 7 * 86400
WINDOW_MAX_S = 90 * 86400


def check(ctx: Context) -> None:
    mesh = ctx.mesh
    names: dict[str, tuple[PathKey, str]] = {}

    def claim(name: str, path: PathKey, what: str) -> None:
        if name in names:
            first_path, first_what = names[name]
            ctx.error(
                "E603",
                f"alert name '{name}' of {what} is already used by {first_what}",
                path,
                "alert names must be unique; SLO 'x' also makes alerts 'x-page' and 'x-ticket'",
                related=[(first_path, f"{first_what} is named here")],
            )
        else:
            names[name] = (path, what)

    for alert in mesh.alerts:
        claim(alert.name, (*alert.path, "name"), f"alert '{alert.name}'")
        if alert.expr is None:
            try:
                parse_when(alert.when)
            except AlertExprError as exc:
                where = (*alert.path, "when")
                at = _part_span(ctx, alert, exc.part)
                ctx.error(exc.code, exc.message, where, exc.hint, at=at)
        elif alert.expr.signal == "cert_expiry":
            _cert_files(ctx, alert)
    for slo in mesh.slos:
        for suffix in ("page", "ticket"):
            claim(f"{slo.name}-{suffix}", (*slo.path, "name"), f"SLO '{slo.name}'")
        if not WINDOW_MIN_S <= slo.window_s <= WINDOW_MAX_S:
            ctx.error(
                "E604",
                f"SLO '{slo.name}' window {format_duration(slo.window_s)} is outside 7d..90d",
                (*slo.path, "window"),
                "burn-rate alerts are tuned for windows of 7 to 90 days; 30d is usual",
            )
        if not 0 < slo.objective < 100:
            ctx.error(
                "E605",
                f"SLO '{slo.name}' objective {slo.objective:g} is outside (0, 100)",
                (*slo.path, "objective"),
                "the objective is the percent of good responses, like 99.9; 100 leaves no "
                "error budget",
            )
        elif slo.objective < 50:
            ctx.warning(
                SMALL_OBJECTIVE,
                f"SLO '{slo.name}' objective {slo.objective:g} is below 50: it is a percent, so "
                f"this asks for only {slo.objective:g}% good responses and its alerts can "
                "never fire",
                (*slo.path, "objective"),
                f"write the percent: {slo.objective * 100:g} for {slo.objective * 100:g}%"
                if slo.objective <= 1
                else "the objective is the percent of good responses, like 99.9",
            )
    _reachability(ctx)


def _reachability(ctx: Context) -> None:
    mesh = ctx.mesh
    if mesh.skipped:
        return  # routes, listeners or backups left out: reachability is not known
    served = {name for listener in mesh.listeners for name in mesh.listener_routes(listener)}
    reachable: set[str] = set()
    for route in mesh.routes:
        if route.name in served:
            reachable.update(d.service for d in route.to)
            if route.mirror is not None:
                reachable.add(route.mirror.service)
    pending = list(reachable)
    while pending:
        current = mesh.services.get(pending.pop())
        backup = current.failover.backup if current is not None else None
        if backup is not None and backup not in reachable:
            reachable.add(backup)
            pending.append(backup)
    watched = [
        (f"alert '{a.name}'", a.service, a.path)
        for a in mesh.alerts
        if a.expr is not None and a.expr.signal in TRAFFIC_SIGNALS
    ] + [(f"SLO '{s.name}'", s.service, s.path) for s in mesh.slos]
    for what, service, path in watched:
        known = mesh.services.get(service)
        if known is not None and known.protocol != "tcp" and service not in reachable:
            ctx.warning(
                "W601",
                f"{what} watches service '{service}', which no served route sends traffic to",
                (*path, "service"),
                "it can never fire; route traffic to the service or remove the alert",
            )


def _part_span(ctx: Context, alert: Alert, part: tuple[int, int]) -> Span | None:
    """The span of the wrong ``part`` of ``when`` inside its scalar; None: the whole value."""
    start, end = part
    whole = ctx.doc.span((*alert.path, "when"))
    if start == end or whole.line != whole.end_line:
        return None
    raw = ctx.doc.line_in(whole.file, whole.line)[whole.col - 1 : whole.end_col - 1]
    quoted = len(raw) >= 2 and raw[0] in ("'", '"') and raw[-1] == raw[0]
    if (raw[1:-1] if quoted else raw) != alert.when:
        return None  # an escape, a block or a folded scalar: columns are not characters
    col = whole.col + quoted + start
    return Span(whole.file, whole.line, col, whole.line, col + end - start)


def _has_certificates(ctx: Context, service: Service) -> bool:
    tls = service.tls
    if tls.mode != "disable" and (
        (tls.ca is not None and tls.verify) or (tls.cert is not None and tls.mode == "mutual")
    ):
        return True
    return any(ls.tls is not None and ls.name == service.name for ls in ctx.mesh.listeners)


def _cert_files(ctx: Context, alert: Alert) -> None:
    """W602: cert_expiry on a service whose certificates nobody loads has no series."""
    service = ctx.mesh.services.get(alert.service)
    if service is None or _has_certificates(ctx, service):
        return
    ctx.warning(
        NO_CERTIFICATE,
        f"alert '{alert.name}' watches cert_expiry of service '{alert.service}', which has no "
        "certificate files: it can never fire",
        (*alert.path, "when"),
        "cert_expiry measures the files the runtime loads for the service: tls.ca (when "
        "verifying) and, with mode: mutual, tls.cert; set TLS on the service or remove the alert",
    )
