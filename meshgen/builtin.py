"""The built-in defaults: what mesh.yaml means where it says nothing, written once.

Theory of operation: each :class:`BuiltIn` is keyed by the field it fills, as a user would name
it (``service.health_check.interval``), and holds the value as mesh.yaml would write it
(``"5s"``). :mod:`meshgen.lower` reads its fallbacks from here and nowhere else. The same value
also appears in two places users and the runtime see, and those are *checked* against this
table by tests/unit/test_builtin.py rather than generated from it: the ``default`` of the
schema properties listed in ``schema`` (what editors and docs/reference.md show), and the
dataclass defaults of the runtime table fields listed in ``table`` (``Type.field`` in
meshgen/runtime/tables.py, which cannot import the compiler). A test fails when any of them
disagree, or when the schema has a ``default`` that no entry claims.
"""

from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any, Final

from meshgen.durations import parse_duration
from meshgen.record import Record


class BuiltIn(Record):
    """One default: the value as written in mesh.yaml, and where else it is spelled out."""

    value: Any
    schema: tuple[str, ...] = ()  # JSON pointers into mesh.schema.json carrying it as `default`
    table: tuple[str, ...] = ()  # "Type.field" of meshgen/runtime/tables.py defaulting to it


_LB = "/$defs/load_balancer/properties/"
_HC = "/$defs/health_check/properties/"
_OD = "/$defs/outlier_detection/properties/"
_CB = "/$defs/circuit_breaker/properties/"
_RT = "/$defs/retries/properties/"
_TLS = "/$defs/client_tls/properties/"
_DEF = "/$defs/defaults/properties/"
_SVC = "/$defs/service/properties/"
_ROUTE = "/$defs/route/properties/"
_LISTENER = "/$defs/listener/properties/"
_LIMITS = _LISTENER + "limits/properties/"
_MON = "/properties/monitoring/properties/"

BUILT_INS: Final[Mapping[str, BuiltIn]] = MappingProxyType(
    {
        "admin": BuiltIn(
            "127.0.0.1:15000",
            ("/properties/admin",),
            ("MeshInfo.admin_host", "MeshInfo.admin_port"),
        ),
        "listeners": BuiltIn([{"name": "edge", "address": "127.0.0.1:15001"}]),
        "service.protocol": BuiltIn("http1", (_SVC + "protocol",), ("Cluster.protocol",)),
        "service.connect_timeout": BuiltIn(
            "5s",
            (_SVC + "connect_timeout", _DEF + "connect_timeout"),
            ("Cluster.connect_timeout_s",),
        ),
        "service.timeout": BuiltIn(
            "15s", (_SVC + "timeout", _DEF + "timeout"), ("Cluster.timeout_s",)
        ),
        "service.idle_timeout": BuiltIn(
            "60s", (_SVC + "idle_timeout", _DEF + "idle_timeout"), ("Cluster.idle_timeout_s",)
        ),
        "tcp_service.idle_timeout": BuiltIn("1h"),  # defaults: idle_timeout does not apply
        "service.discovery.static.weight": BuiltIn(
            1, ("/$defs/endpoint/properties/weight",), ("Endpoint.weight",)
        ),
        "service.discovery.dns.type": BuiltIn(
            "SRV",
            ("/$defs/discovery/properties/dns/properties/type",),
            ("DnsDiscovery.record_type",),
        ),
        "service.discovery.dns.refresh": BuiltIn(
            "30s",
            ("/$defs/discovery/properties/dns/properties/refresh",),
            ("DnsDiscovery.refresh_s",),
        ),
        "service.load_balancer.policy": BuiltIn(
            "round_robin", (_LB + "policy",), ("LoadBalancer.policy",)
        ),
        "service.load_balancer.choice_count": BuiltIn(
            2, (_LB + "choice_count",), ("LoadBalancer.choice_count",)
        ),
        "service.health_check.http.path": BuiltIn(
            "/", (_HC + "http/properties/path",), ("HealthCheck.path",)
        ),
        "service.health_check.http.expected_statuses": BuiltIn(
            [200], (_HC + "http/properties/expected_statuses",), ("HealthCheck.expected_statuses",)
        ),
        "service.health_check.grpc.service": BuiltIn("", (), ("HealthCheck.grpc_service",)),
        "service.health_check.interval": BuiltIn(
            "5s", (_HC + "interval",), ("HealthCheck.interval_s",)
        ),
        "service.health_check.timeout": BuiltIn(
            "1s", (_HC + "timeout",), ("HealthCheck.timeout_s",)
        ),
        "service.health_check.healthy_threshold": BuiltIn(
            2, (_HC + "healthy_threshold",), ("HealthCheck.healthy_threshold",)
        ),
        "service.health_check.unhealthy_threshold": BuiltIn(
            3, (_HC + "unhealthy_threshold",), ("HealthCheck.unhealthy_threshold",)
        ),
        "service.outlier_detection.consecutive_5xx": BuiltIn(
            5, (_OD + "consecutive_5xx",), ("OutlierDetection.consecutive_5xx",)
        ),
        "service.outlier_detection.interval": BuiltIn(
            "10s", (_OD + "interval",), ("OutlierDetection.interval_s",)
        ),
        "service.outlier_detection.base_ejection_time": BuiltIn(
            "30s", (_OD + "base_ejection_time",), ("OutlierDetection.base_ejection_time_s",)
        ),
        "service.outlier_detection.max_ejection_percent": BuiltIn(
            10, (_OD + "max_ejection_percent",), ("OutlierDetection.max_ejection_percent",)
        ),
        "service.circuit_breaker.max_connections": BuiltIn(
            1024, (_CB + "max_connections",), ("CircuitBreaker.max_connections",)
        ),
        "service.circuit_breaker.max_pending_requests": BuiltIn(
            1024, (_CB + "max_pending_requests",), ("CircuitBreaker.max_pending_requests",)
        ),
        "service.circuit_breaker.max_requests": BuiltIn(
            1024, (_CB + "max_requests",), ("CircuitBreaker.max_requests",)
        ),
        "service.retries.attempts": BuiltIn(1, (_RT + "attempts",)),
        "service.retries.on": BuiltIn(
            ["connect-failure", "reset", "5xx"], (_RT + "on",), ("RetryPolicy.on",)
        ),
        "service.retries.backoff.base": BuiltIn(
            "25ms", (_RT + "backoff/properties/base",), ("RetryPolicy.backoff_base_s",)
        ),
        "service.retries.backoff.max": BuiltIn(
            "250ms", (_RT + "backoff/properties/max",), ("RetryPolicy.backoff_max_s",)
        ),
        "service.retries.budget.ratio": BuiltIn(
            0.2, (_RT + "budget/properties/ratio",), ("RetryPolicy.budget_ratio",)
        ),
        "service.retries.budget.min_per_second": BuiltIn(
            10, (_RT + "budget/properties/min_per_second",), ("RetryPolicy.budget_min_per_second",)
        ),
        "service.retries.idempotent_only": BuiltIn(
            True, (_RT + "idempotent_only",), ("RetryPolicy.idempotent_only",)
        ),
        "service.tls.mode": BuiltIn(
            "disable", (_TLS + "mode", _DEF + "tls/properties/mode"), ("ClientTls.mode",)
        ),
        "service.tls.min_version": BuiltIn(
            "1.2",
            (_TLS + "min_version", _DEF + "tls/properties/min_version"),
            ("ClientTls.min_version",),
        ),
        "service.tls.verify": BuiltIn(True, (_TLS + "verify",), ("ClientTls.verify",)),
        "service.tls.insecure": BuiltIn(False, (_TLS + "insecure",)),
        "service.failover.panic_threshold": BuiltIn(
            50, ("/$defs/failover/properties/panic_threshold",), ("Failover.panic_threshold",)
        ),
        "route.match.path_prefix": BuiltIn("/", (), ("Match.path",)),  # every path
        "route.fault.delay.percent": BuiltIn(
            100, (_ROUTE + "fault/properties/delay/properties/percent",)
        ),
        "route.fault.abort.percent": BuiltIn(
            100, (_ROUTE + "fault/properties/abort/properties/percent",)
        ),
        "route.mirror.percent": BuiltIn(100, (_ROUTE + "mirror/properties/percent",)),
        "route.redirect.status": BuiltIn(
            301, (_ROUTE + "redirect/properties/status",), ("Redirect.status",)
        ),
        "listener.access": BuiltIn("enforce", (_LISTENER + "access",), ("Listener.access",)),
        "listener.protocol": BuiltIn("http", (_LISTENER + "protocol",), ("Listener.protocol",)),
        "listener.tls.client_certificates": BuiltIn(
            "none",
            (_LISTENER + "tls/properties/client_certificates",),
            ("ServerTls.client_certificates",),
        ),
        "listener.tls.min_version": BuiltIn(
            "1.2", (_LISTENER + "tls/properties/min_version",), ("ServerTls.min_version",)
        ),
        "listener.limits.request_head_bytes": BuiltIn(
            65536, (_LIMITS + "request_head_bytes",), ("Limits.request_head_bytes",)
        ),
        "listener.limits.request_headers": BuiltIn(
            100, (_LIMITS + "request_headers",), ("Limits.request_headers",)
        ),
        "listener.limits.url_bytes": BuiltIn(
            16384, (_LIMITS + "url_bytes",), ("Limits.url_bytes",)
        ),
        "listener.limits.request_head_timeout": BuiltIn(
            "10s", (_LIMITS + "request_head_timeout",), ("Limits.request_head_timeout_s",)
        ),
        "listener.limits.client_idle_timeout": BuiltIn(
            "60s", (_LIMITS + "client_idle_timeout",), ("Limits.client_idle_timeout_s",)
        ),
        "listener.limits.max_connections": BuiltIn(
            10000, (_LIMITS + "max_connections",), ("Limits.max_connections",)
        ),
        "alert.for": BuiltIn("0s", (_MON + "alerts/items/properties/for",)),
        "alert.severity": BuiltIn("ticket", (_MON + "alerts/items/properties/severity",)),
        "slo.window": BuiltIn("30d", (_MON + "slos/items/properties/window",)),
    }
)
"""Field -> its built-in default; every fallback :mod:`meshgen.lower` uses comes from here."""


def default(field: str) -> Any:
    """The built-in value of ``field`` as mesh.yaml would write it."""
    return BUILT_INS[field].value


@cache
def seconds(field: str) -> float:
    """The built-in duration of ``field`` in seconds."""
    return parse_duration(BUILT_INS[field].value)
