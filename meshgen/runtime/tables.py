"""Frozen table types: the contract between the compiler and the runtime.

Theory of operation: ``meshgen build`` writes ``DIST/mesh/*.py`` files whose only content is
instances of these types, rendered with ``repr``-safe literals. The runtime imports those files
and never sees mesh.yaml. Every value here is *effective*: defaults are merged, durations are
seconds (float), names are validated, host names are lower-case. The runtime adds behaviour
around these types; it never defines a second copy of them.

This module must import nothing but the standard library, because it is copied verbatim into
``DIST/meshgen_runtime/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LoadBalancerPolicy = Literal["round_robin", "random", "least_request", "ring_hash", "maglev"]
DnsRecordType = Literal["SRV", "A", "AAAA"]
RetryCondition = Literal[
    "connect-failure",
    "reset",
    "5xx",
    "gateway-error",
    "retriable-4xx",
    "refused-stream",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]
ServiceProtocol = Literal["http1", "http2", "grpc", "tcp"]
ListenerProtocol = Literal["http", "tcp"]
HealthCheckKind = Literal["http", "tcp", "grpc"]
TlsMode = Literal["disable", "simple", "mutual"]
ClientCertificates = Literal["none", "optional", "required"]
AccessMode = Literal["enforce", "audit"]
PathMatchKind = Literal["prefix", "exact", "regex"]
HeaderMatchKind = Literal["exact", "prefix", "regex", "present"]
Severity = Literal["page", "ticket", "info"]
Comparison = Literal[">", ">=", "<", "<="]
Signal = Literal[
    "error_rate",
    "request_rate",
    "p50_latency",
    "p90_latency",
    "p99_latency",
    "healthy_endpoints",
    "healthy_ratio",
    "cert_expiry",
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream address. ``address`` is the canonical ``host:port`` (``[v6]:port``)."""

    host: str
    port: int
    weight: int = 1
    zone: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    # Derived once here: the proxy reads it several times per request.
    address: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host, port = self.host, self.port
        object.__setattr__(self, "address", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


@dataclass(frozen=True, slots=True)
class StaticDiscovery:
    """The endpoints written in mesh.yaml: the set never changes at run time."""

    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class DnsDiscovery:
    """``query_name`` is fully qualified: ``_http._tcp.NAME.DOMAIN`` for SRV, else the host."""

    query_name: str
    record_type: DnsRecordType = "SRV"
    port: int | None = None  # required for A / AAAA, unused for SRV
    refresh_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Subset:
    """A named slice of a service's endpoints, chosen by their labels."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()  # empty: every endpoint of the service


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """How a try picks an endpoint among the healthy ones (``hash_*``: the key of a hash
    policy)."""

    policy: LoadBalancerPolicy = "round_robin"
    choice_count: int = 2
    hash_header: str | None = None  # lower-case header name
    hash_cookie: str | None = None
    hash_source_ip: bool = False


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active check. ``kind`` http probes ``path`` and expects one of ``expected_statuses``;
    grpc asks grpc.health.v1 about ``grpc_service``. ``port`` None: the endpoint's own port."""

    kind: HealthCheckKind
    path: str = "/"
    expected_statuses: tuple[int, ...] = (200,)
    interval_s: float = 5.0
    timeout_s: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    grpc_service: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health: an endpoint failing ``consecutive_5xx`` tries in a row is ejected for a
    while."""

    consecutive_5xx: int = 5
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_percent: float = 10.0


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Per-service limits on connections, queued and concurrent requests (beyond them: 503 at
    once)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a request is tried again, with its backoff and its retry budget."""

    attempts: int
    per_try_timeout_s: float
    on: tuple[RetryCondition, ...] = ("connect-failure", "reset", "5xx")
    backoff_base_s: float = 0.025
    backoff_max_s: float = 0.25
    budget_ratio: float = 0.2
    budget_min_per_second: float = 10.0
    idempotent_only: bool = True
    # The route that wrote its own ``retries.budget``: its traffic to this service draws from
    # a pool of its own. None: the service's pool.
    budget_route: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``requests_per_second`` refill, ``burst`` tokens at most."""

    requests_per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Failover:
    """Where traffic goes when the preferred endpoints fail: zones in order, then a backup
    service."""

    zones: tuple[str, ...] = ()
    panic_threshold: float = 50.0
    backup: str | None = None  # another service's name


@dataclass(frozen=True, slots=True)
class Cluster:
    """A service as the runtime sees it: where its endpoints are and how to pick and call them.

    A ``tcp`` cluster uses ``connect_timeout_s``, ``idle_timeout_s``,
    ``circuit_breaker.max_connections`` and ``retries.attempts`` (connect attempts) only.
    """

    name: str
    discovery: StaticDiscovery | DnsDiscovery
    protocol: ServiceProtocol = "http1"
    subsets: tuple[Subset, ...] = ()
    load_balancer: LoadBalancer = LoadBalancer()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    connect_timeout_s: float = 5.0
    timeout_s: float = 15.0
    idle_timeout_s: float = 60.0
    retries: RetryPolicy | None = None
    rate_limit: RateLimit | None = None
    failover: Failover = Failover()


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One header condition of a route's match."""

    name: str  # lower-case
    kind: HeaderMatchKind
    value: str = ""  # unused for "present"


@dataclass(frozen=True, slots=True)
class Match:
    """Empty tuples match anything. ``hosts`` are lower-case, without port or trailing dot."""

    hosts: tuple[str, ...] = ()
    path_kind: PathMatchKind = "prefix"
    path: str = "/"
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """One weighted destination of a route, with its effective per-request policy.

    ``timeout_s``, ``idle_timeout_s`` and ``retries`` are already merged
    (built-in < defaults < service < route) for this destination.
    """

    service: str
    subset: str | None
    weight: int
    timeout_s: float
    idle_timeout_s: float
    retries: RetryPolicy | None


@dataclass(frozen=True, slots=True)
class Fault:
    """Injected delays and aborts, for testing how callers cope."""

    delay_s: float = 0.0
    delay_percent: float = 0.0
    abort_status: int = 0
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class Mirror:
    """A copy of a route's requests sent to another service; its answers are dropped."""

    service: str
    subset: str | None
    percent: float


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What a route changes in the request before it is sent on (path prefix, Host)."""

    path_prefix: str | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Headers a route sets and removes, on the request or on the response."""

    set: tuple[tuple[str, str], ...] = ()  # (lower-case name, value)
    remove: tuple[str, ...] = ()  # lower-case names


@dataclass(frozen=True, slots=True)
class Redirect:
    """A route answered by the proxy itself with a redirect, never sent on."""

    location: str
    status: int = 301


@dataclass(frozen=True, slots=True)
class Route:
    """Routes are tried in table order; the first match wins. ``to`` is empty iff ``redirect``."""

    name: str
    match: Match
    to: tuple[Target, ...] = ()
    rate_limit: RateLimit | None = None  # route-level bucket (a service's bucket is on its Cluster)
    fault: Fault | None = None
    mirror: Mirror | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    redirect: Redirect | None = None


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A listener's TLS: its certificate, and whether callers must show theirs."""

    cert: str
    key: str
    ca: str | None = None
    client_certificates: ClientCertificates = "none"
    min_version: str = "1.2"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a listener's clients may send and how long they may take (``listeners[].limits``).

    The byte and count limits also bound the response heads of the requests that came in on
    the listener; health probes and the in-process client use the defaults.
    """

    request_head_bytes: int = 65536
    request_headers: int = 100
    url_bytes: int = 16384
    request_head_timeout_s: float = 10.0
    client_idle_timeout_s: float = 60.0
    max_connections: int = 10000
    max_connection_duration_s: float | None = None  # tcp listeners; None: no limit


@dataclass(frozen=True, slots=True)
class TcpTarget:
    """One weighted tcp service a tcp listener forwards connections to."""

    service: str
    subset: str | None
    weight: int


@dataclass(frozen=True, slots=True)
class SniRoute:
    """``pattern`` is a lower-case server name, or ``*.`` and a suffix (any depth below it)."""

    pattern: str
    service: str


@dataclass(frozen=True, slots=True)
class Listener:
    """An ``http`` listener serves ``routes``; a ``tcp`` one forwards to ``to`` (weighted) or,
    without terminating TLS, by the ClientHello's server name to ``sni`` (sorted by pattern)."""

    name: str
    host: str
    port: int  # 0: any free port; the runtime reports what it bound
    routes: tuple[str, ...]  # route names served, in route-table order
    tls: ServerTls | None = None
    limits: Limits = Limits()
    access: AccessMode = "enforce"  # audit: what the rules deny is forwarded, logged and counted
    protocol: ListenerProtocol = "http"
    to: tuple[TcpTarget, ...] = ()
    sni: tuple[SniRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS from the runtime to a service's endpoints. Paths are as written in mesh.yaml."""

    mode: TlsMode = "disable"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    min_version: str = "1.2"
    verify: bool = True


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One allowed (caller, service, methods, paths) combination; everything else is denied."""

    source: str  # a caller name, or "*" for any caller with a valid certificate
    service: str
    methods: tuple[str, ...] = ()  # empty: every method
    paths: tuple[str, ...] = ()  # prefixes of the normalised path; empty: every path


@dataclass(frozen=True, slots=True)
class Alert:
    """``threshold`` is in base units: ratios 0..1 for ``N%``, seconds, requests/s, counts."""

    name: str
    service: str
    signal: Signal
    op: Comparison
    threshold: float
    for_s: float
    severity: Severity
    summary: str = ""


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One multi-window burn-rate alert of an SLO: both windows must burn ``factor`` times too
    fast."""

    long_s: float
    short_s: float
    factor: float


@dataclass(frozen=True, slots=True)
class Slo:
    """SLO on the non-5xx share; ``<name>-page``/``<name>-ticket`` fire on any window pair."""

    name: str
    service: str
    objective: float  # percent, e.g. 99.9
    window_s: float
    page: tuple[BurnWindow, ...]
    ticket: tuple[BurnWindow, ...]


@dataclass(frozen=True, slots=True)
class MeshInfo:
    """Mesh-wide settings: the name (the SPIFFE trust domain), the admin address, Alertmanager."""

    name: str  # also the SPIFFE trust domain
    domain: str
    admin_host: str = "127.0.0.1"
    admin_port: int = 15000
    alertmanager: str | None = None


@dataclass(frozen=True, slots=True)
class Tables:
    """Everything one DIST holds, joined by name. Mappings are keyed by service / listener name."""

    mesh: MeshInfo
    clusters: tuple[Cluster, ...]
    routes: tuple[Route, ...]
    listeners: tuple[Listener, ...]
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    outlier_detection: dict[str, OutlierDetection] = field(default_factory=dict)
    client_tls: dict[str, ClientTls] = field(default_factory=dict)
    access: tuple[AccessRule, ...] = ()
    alerts: tuple[Alert, ...] = ()
    slos: tuple[Slo, ...] = ()
