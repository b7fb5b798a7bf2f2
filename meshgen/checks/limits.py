"""E410-E412, W403: durations the runtimes can actually run (services, routes, listeners).

A zero interval makes the runtime loop without pause and a zero timeout fails every attempt,
so every interval, timeout, refresh, backoff and ejection time must be longer than 0 (E410).
HAProxy stores timers as signed 32-bit milliseconds and rejects anything above 2^31-1 ms
(about 24.8 days) -- the same limit epoll puts on one wait -- so every duration except an SLO
``window`` is at most 24d (E411). Each value is checked once, where it was written: a
``defaults:`` timeout shared by many services is reported once.
"""

from __future__ import annotations

from meshgen.checks.context import Context
from meshgen.durations import format_duration
from meshgen.model import CallPolicy, DnsDiscovery, PathKey, Service

ZERO = "E410"
TOO_LONG = "E411"
BACKOFF = "E412"
PROBE_OVERLAP = "W403"

MAX_SECONDS = 24 * 86400
"""Longest duration: HAProxy rejects timers above 2^31-1 ms (24.8 days)."""


class _Limits:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.seen: set[PathKey | tuple[PathKey, PathKey]] = set()

    def first(self, key: PathKey | tuple[PathKey, PathKey]) -> bool:
        """True the first time a value (or pair of values) written at ``key`` is checked."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def duration(self, seconds: float, path: PathKey, field: str, positive: bool = True) -> None:
        """Check one duration written at ``path`` (``()``: a built-in default)."""
        if not path or not self.first(path):  # built-in defaults are within limits
            return
        if positive and seconds <= 0:
            loops = field.endswith(("interval", "refresh"))
            self.ctx.error(
                ZERO,
                f"{field} is {format_duration(seconds)}: it must be longer than 0",
                path,
                "an interval of 0 makes the runtime loop without pause"
                if loops
                else "a zero timer fires at once; use a positive duration like 250ms",
            )
        elif seconds > MAX_SECONDS:
            self.ctx.error(
                TOO_LONG,
                f"{field} is {format_duration(seconds)}: durations are limited to 24d",
                path,
                "HAProxy rejects timers above 2^31-1 ms (about 24.8 days), the most epoll can wait "
                "at once as well; only an SLO window may be longer",
            )

    def service(self, service: Service) -> None:
        origin = service.origin
        self.duration(service.connect_timeout_s, origin("connect_timeout").path, "connect_timeout")
        self.call(service.call)
        check = service.health_check
        if check is not None:
            interval, timeout = origin("health_check.interval"), origin("health_check.timeout")
            self.duration(check.interval_s, interval.path, "health_check.interval")
            self.duration(check.timeout_s, timeout.path, "health_check.timeout")
            overlaps = 0 < check.interval_s < check.timeout_s  # a zero interval is E410
            if overlaps and self.first((timeout.path, interval.path)):
                self.ctx.warning(
                    PROBE_OVERLAP,
                    f"health_check.timeout {format_duration(check.timeout_s)} of service "
                    f"'{service.name}' is longer than its interval "
                    f"{format_duration(check.interval_s)}",
                    timeout.path or interval.path,
                    "a slow probe then overlaps the next one; make the timeout at most the "
                    "interval",
                    related=[(interval.path, "interval set here")] if interval.path else [],
                )
        outlier = service.outlier_detection
        if outlier is not None:
            self.duration(
                outlier.interval_s,
                origin("outlier_detection.interval").path,
                "outlier_detection.interval",
            )
            self.duration(
                outlier.base_ejection_time_s,
                origin("outlier_detection.base_ejection_time").path,
                "outlier_detection.base_ejection_time",
            )
        if isinstance(service.discovery, DnsDiscovery):
            dns = service.discovery
            self.duration(dns.refresh_s, (*dns.path, "refresh"), "dns.refresh")

    def call(self, call: CallPolicy) -> None:
        origin = call.origin
        self.duration(call.timeout_s, origin("timeout").path, "timeout")
        self.duration(call.idle_timeout_s, origin("idle_timeout").path, "idle_timeout")
        retries = call.retries
        if retries is None:
            return
        if retries.per_try_timeout_s is not None:
            self.duration(
                retries.per_try_timeout_s,
                origin("retries.per_try_timeout").path,
                "retries.per_try_timeout",
            )
        base, top = origin("retries.backoff.base"), origin("retries.backoff.max")
        self.duration(retries.backoff_base_s, base.path, "retries.backoff.base")
        self.duration(retries.backoff_max_s, top.path, "retries.backoff.max")
        if retries.backoff_base_s > retries.backoff_max_s and self.first((base.path, top.path)):
            written = [o for o in (base, top) if o.path]
            self.ctx.error(
                BACKOFF,
                f"retries.backoff.base {format_duration(retries.backoff_base_s)} is longer than "
                f"retries.backoff.max {format_duration(retries.backoff_max_s)}",
                written[-1].path,
                "the backoff starts at base and doubles up to max; raise max or lower base "
                "(built-in: 25ms and 250ms)",
                related=[(o.path, "retries.backoff.base is set here") for o in written[:-1]],
            )


def check(ctx: Context) -> None:
    limits = _Limits(ctx)
    for service in ctx.mesh.services.values():
        limits.service(service)
    for route in ctx.mesh.routes:
        for destination in route.to:
            if destination.call is not None:
                limits.call(destination.call)
        if route.fault is not None and route.fault.delay_s:
            limits.duration(
                route.fault.delay_s,
                (*route.path, "fault", "delay", "fixed"),
                "fault.delay.fixed",
                positive=False,
            )
    for alert in ctx.mesh.alerts:
        limits.duration(alert.for_s, (*alert.path, "for"), "for", positive=False)
    for listener in ctx.mesh.listeners:  # built-in values (never written) are within limits
        head, idle = listener.limits.request_head_timeout_s, listener.limits.client_idle_timeout_s
        at = (*listener.path, "limits")
        limits.duration(head, (*at, "request_head_timeout"), "limits.request_head_timeout")
        limits.duration(idle, (*at, "client_idle_timeout"), "limits.client_idle_timeout")
