"""The typed mesh: what mesh.yaml means once defaults are merged and values are parsed.

Theory of operation: :func:`meshgen.lower.lower` builds a :class:`Mesh` from schema-valid data.
Policy values are *effective* (built-in < ``defaults:`` < service < route). Each object keeps
``path``, the :data:`PathKey` of its node in the source document, so a check can ask the
Document for a span only when it reports something (spans are never computed eagerly; a
10,000-service mesh lowers in a fraction of a second). Each object with merged policy carries
one ``origins`` mapping from a dotted field name (``"timeout"``, ``"retries.attempts"``,
``"tls.ca"``) to the :class:`Origin` of its effective value, for ``meshgen explain`` and for
diagnostics that must point at where a value was written; an origin also names the input
file that wrote the value (mesh.yaml or an overlay). ``Mesh.source`` is the Document the mesh
was lowered from: ``mesh.source.span(path)`` is the FILE:LINE:COL of any path, in the file that
wrote it.

Value types that need no source position (load balancer, health check, ...) mirror a runtime
table type field for field, in the same order, so :mod:`meshgen.plan` makes the table value of
one by unpacking it (tests/unit/test_model.py holds each pair to that). They are not the table
types themselves: those are frozen dataclasses, which cost ``meshgen validate`` ~70 ms to create
at import on a slow machine (more than every other meshgen module together), and a validate
never makes tables.

The records are named tuples (:class:`meshgen.record.Record`, ``typing.NamedTuple`` to mypy),
not frozen dataclasses: every command imports this module, and a frozen dataclass costs ~1.5 ms
to create (six generated methods, each compiled from source) where a named tuple costs ~0.3 ms.
They are immutable and compare, hash and print by value as well (being tuples, they also equal
a plain tuple of the same values). At 10,000 services lowering takes ~0.3 s less CPU and the
checks and plan, which read their fields (a slower lookup than a slot's on Python 3.11),
~0.25 s more (BENCHMARKS.md, Compile): a wash. Annotations are text, read by mypy alone, so
the names only they use are imported for mypy only: the runtime's ``Literal`` names (importing
:mod:`meshgen.runtime.tables` for them would create every table type) and ``Document`` (its
module imports PyYAML).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from meshgen.alertexpr import AlertExpr
from meshgen.record import Record

if TYPE_CHECKING:
    from meshgen.runtime.tables import (
        AccessMode,
        ClientCertificates,
        DnsRecordType,
        HeaderMatchKind,
        HealthCheckKind,
        ListenerProtocol,
        LoadBalancerPolicy,
        PathMatchKind,
        ServiceProtocol,
        Severity,
        TlsMode,
    )
    from meshgen.source_document import Document

PathKey = tuple[str | int, ...]
OriginKind = Literal["built-in", "defaults", "service", "route"]


class Origin(Record):
    """Where an effective value was written: the layer (``kind``), the path in the merged
    spec (``()`` for built-in defaults) and ``file``, the name of the input that wrote it
    (mesh.yaml's own name, or an overlay's; ``""`` for built-in defaults)."""

    kind: OriginKind
    path: PathKey
    file: str = ""


BUILT_IN: Final = Origin("built-in", ())
Origins = Mapping[str, Origin]  # absent key: the built-in default applies


class LoadBalancer(Record):
    """:class:`meshgen.runtime.tables.LoadBalancer`."""

    policy: LoadBalancerPolicy
    choice_count: int
    hash_header: str | None
    hash_cookie: str | None
    hash_source_ip: bool


class HealthCheck(Record):
    """:class:`meshgen.runtime.tables.HealthCheck`."""

    kind: HealthCheckKind
    path: str
    expected_statuses: tuple[int, ...]
    interval_s: float
    timeout_s: float
    healthy_threshold: int
    unhealthy_threshold: int
    grpc_service: str
    port: int | None


class OutlierDetection(Record):
    """:class:`meshgen.runtime.tables.OutlierDetection`."""

    consecutive_5xx: int
    interval_s: float
    base_ejection_time_s: float
    max_ejection_percent: float


class CircuitBreaker(Record):
    """:class:`meshgen.runtime.tables.CircuitBreaker`."""

    max_connections: int
    max_pending_requests: int
    max_requests: int


class RateLimit(Record):
    """:class:`meshgen.runtime.tables.RateLimit`."""

    requests_per_second: float
    burst: int


class HeaderMatch(Record):
    """:class:`meshgen.runtime.tables.HeaderMatch`."""

    name: str
    kind: HeaderMatchKind
    value: str


class Match(Record):
    """:class:`meshgen.runtime.tables.Match`."""

    hosts: tuple[str, ...]
    path_kind: PathMatchKind
    path: str
    methods: tuple[str, ...]
    headers: tuple[HeaderMatch, ...]


class Fault(Record):
    """:class:`meshgen.runtime.tables.Fault`."""

    delay_s: float
    delay_percent: float
    abort_status: int
    abort_percent: float


class Rewrite(Record):
    """:class:`meshgen.runtime.tables.Rewrite`."""

    path_prefix: str | None
    host: str | None


class HeaderOps(Record):
    """:class:`meshgen.runtime.tables.HeaderOps`."""

    set: tuple[tuple[str, str], ...]
    remove: tuple[str, ...]


class Redirect(Record):
    """:class:`meshgen.runtime.tables.Redirect`."""

    location: str
    status: int


class ServerTls(Record):
    """:class:`meshgen.runtime.tables.ServerTls`."""

    cert: str
    key: str
    ca: str | None
    client_certificates: ClientCertificates
    min_version: str


class Limits(Record):
    """:class:`meshgen.runtime.tables.Limits`."""

    request_head_bytes: int
    request_headers: int
    url_bytes: int
    request_head_timeout_s: float
    client_idle_timeout_s: float
    max_connections: int
    max_connection_duration_s: float | None


class Retries(Record):
    """Merged retry policy. ``per_try_timeout_s`` None means "the effective timeout"."""

    attempts: int
    per_try_timeout_s: float | None
    on: tuple[str, ...]
    backoff_base_s: float
    backoff_max_s: float
    budget_ratio: float
    budget_min_per_second: float
    idempotent_only: bool


class CallPolicy(Record):
    """The per-request policy a route may override for one destination service."""

    timeout_s: float
    idle_timeout_s: float
    retries: Retries | None
    origins: Origins

    def origin(self, dotted: str) -> Origin:
        return self.origins.get(dotted, BUILT_IN)


class Endpoint(Record):
    """One static endpoint, as mesh.yaml wrote it (``path``: where, for diagnostics)."""

    host: str
    port: int
    weight: int
    zone: str | None
    labels: tuple[tuple[str, str], ...]  # sorted by label name
    path: PathKey

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class StaticDiscovery(Record):
    """A service's fixed endpoint list."""

    endpoints: tuple[Endpoint, ...]
    path: PathKey


class DnsDiscovery(Record):
    """``name`` as written; ``query_name`` fully qualified (SRV: ``_http._tcp.NAME.DOMAIN``)."""

    name: str
    query_name: str
    record_type: DnsRecordType
    port: int | None
    refresh_s: float
    path: PathKey


class Subset(Record):
    """A named slice of a service's endpoints, by labels."""

    name: str
    labels: tuple[tuple[str, str], ...]  # sorted; empty selects every endpoint
    path: PathKey


class Failover(Record):
    """A service's failover order: zones, the panic threshold, a backup service."""

    zones: tuple[str, ...]
    panic_threshold: float
    backup: str | None
    path: PathKey


class TlsPolicy(Record):
    """Client-side TLS to a service's endpoints; file paths as written in mesh.yaml."""

    mode: TlsMode
    ca: str | None
    cert: str | None
    key: str | None
    sni: str | None
    subject_alt_names: tuple[str, ...]
    min_version: str
    verify: bool
    insecure: bool


class Service(Record):
    """One service with every policy field resolved (defaults merged, each value's origin kept)."""

    name: str
    path: PathKey
    discovery: StaticDiscovery | DnsDiscovery
    subsets: tuple[Subset, ...]  # sorted by name
    load_balancer: LoadBalancer
    health_check: HealthCheck | None
    outlier_detection: OutlierDetection | None
    circuit_breaker: CircuitBreaker
    connect_timeout_s: float
    call: CallPolicy  # service-level timeout / idle_timeout / retries
    rate_limit: RateLimit | None
    failover: Failover
    tls: TlsPolicy
    origins: Origins  # every merged policy field, including call.* and tls.*
    protocol: ServiceProtocol = "http1"

    def origin(self, dotted: str) -> Origin:
        """Where the effective value of ``dotted`` (``"retries.attempts"``) was written."""
        return self.origins.get(dotted, BUILT_IN)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


class Destination(Record):
    """One ``to`` entry (or a mirror). ``call`` is None when ``service`` does not exist."""

    service: str
    subset: str | None
    weight: int | None  # as written; None = omitted
    path: PathKey
    call: CallPolicy | None


class Mirror(Record):
    """A route's traffic mirror: where a copy of each request goes."""

    service: str
    subset: str | None
    percent: float
    path: PathKey


class Route(Record):
    """``synthetic`` routes are the per-service defaults made when mesh.yaml has no ``routes:``."""

    name: str
    path: PathKey
    match: Match
    to: tuple[Destination, ...]
    rate_limit: RateLimit | None
    fault: Fault | None
    mirror: Mirror | None
    rewrite: Rewrite | None
    request_headers: HeaderOps
    response_headers: HeaderOps
    redirect: Redirect | None
    has_to: bool  # `to:` was written (even if empty); with `redirect` both is an error
    synthetic: bool = False


class TcpDestination(Record):
    """One ``to`` entry of a tcp listener."""

    service: str
    subset: str | None
    weight: int | None  # as written; None = omitted
    path: PathKey


class SniEntry(Record):
    """One ``sni`` entry of a tcp listener; ``path`` is its value (the service name)."""

    pattern: str
    service: str
    path: PathKey


class Listener(Record):
    """``routes`` None means every route; ``synthetic`` is the default ``edge`` listener.
    A tcp listener serves no routes: it forwards to ``to`` or by ``sni``."""

    name: str
    path: PathKey
    host: str
    port: int
    routes: tuple[str, ...] | None
    tls: ServerTls | None
    limits: Limits
    synthetic: bool = False
    access: AccessMode = "enforce"
    protocol: ListenerProtocol = "http"
    to: tuple[TcpDestination, ...] = ()
    sni: tuple[SniEntry, ...] = ()

    def services(self) -> tuple[str, ...]:
        """The services a tcp listener forwards to, in file order, each once."""
        return tuple(dict.fromkeys([*(d.service for d in self.to), *(e.service for e in self.sni)]))


class AccessRule(Record):
    """One ``access:`` entry: who may call which service, with which methods and paths."""

    source: str
    service: str
    methods: tuple[str, ...]
    paths: tuple[str, ...]
    path: PathKey


class Alert(Record):
    """``expr`` is None when ``when`` does not parse (the monitoring check reports it)."""

    name: str
    service: str
    when: str
    expr: AlertExpr | None
    for_s: float
    severity: Severity
    summary: str
    path: PathKey


class Slo(Record):
    """One service level objective: the share of good requests over a window."""

    name: str
    service: str
    objective: float
    window_s: float
    path: PathKey


class Gap(Record):
    """A merged policy mapping that no layer completed (reported as E116 by checks.merging).

    ``path`` is the mapping in the most specific layer that wrote it (``services.a.rate_limit``);
    ``below`` names the lower layers that were consulted ("in defaults", "on service 'a' or
    in defaults"); ``conflict`` lists (service, value) pairs when a route's destinations supply
    different values for ``missing``. The policy itself is lowered as absent.
    """

    owner: str  # "service 'a'" or "route 'r'"
    field: str  # "rate_limit" or "health_check"
    missing: str  # "requests_per_second" or "http, tcp or grpc"
    path: PathKey
    below: str
    conflict: tuple[tuple[str, str], ...] = ()


class Skipped(Record):
    """Parts of mesh.yaml left out of the model because an earlier stage reported an error in
    them (see :mod:`meshgen.units`). Checks stay silent where they cannot judge without those
    parts: a reference to a skipped service is not "unknown", and a rule about all listeners
    or all access rules is not judged on some of them. ``units`` are their paths."""

    units: frozenset[PathKey] = frozenset()
    services: frozenset[str] = frozenset()
    routes: frozenset[str] = frozenset()  # names of skipped routes
    nameless_route: bool = False  # a skipped route whose name cannot be read

    def __bool__(self) -> bool:
        return bool(self.units)

    def any(self, section: str) -> bool:
        """Whether a unit of ``section`` (``"listeners"``, ``"access"``, ...) was skipped."""
        return any(unit[0] == section for unit in self.units)

    def route(self, name: str) -> bool:
        """Whether a listener's reference to route ``name`` may be to a skipped route."""
        return name in self.routes or self.nameless_route


class Mesh(Record):
    """The whole validated mesh: what every check and every target reads."""

    name: str
    domain: str  # "" when mesh.domain is absent
    admin_host: str
    admin_port: int
    admin_path: PathKey | None  # None: built-in admin address
    alertmanager: str | None
    services: Mapping[str, Service]  # sorted by name
    routes: tuple[Route, ...]  # file order (synthetic: sorted by service)
    listeners: tuple[Listener, ...]
    access: tuple[AccessRule, ...] = ()
    alerts: tuple[Alert, ...] = ()
    slos: tuple[Slo, ...] = ()
    gaps: tuple[Gap, ...] = ()  # merged policy no layer completed (E116)
    base_dir: Path = Path()  # the spec's folder, for relative file paths
    skipped: Skipped = Skipped()  # parts left out after errors
    source: Document | None = None  # spans, files

    def listener_routes(self, listener: Listener) -> tuple[str, ...]:
        """Names of the routes a listener serves (all routes when it lists none; a tcp
        listener serves none)."""
        if listener.protocol == "tcp":
            return ()
        if listener.routes is None:
            return tuple(r.name for r in self.routes)
        return listener.routes
