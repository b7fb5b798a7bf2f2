"""What the HAProxy target cannot express (``DIST/haproxy/GAPS.txt``; docs/haproxy.md).

Each function answers for one kind of owner; :func:`gaps` collects them in table order. The
renderer (:mod:`.haproxy`) simply writes nothing for these fields, so this module is the one
place that says what is lost and what HAProxy does instead.
"""

from __future__ import annotations

from meshgen.runtime.policy.access import enforced_on
from meshgen.runtime.tables import (
    Cluster,
    DnsDiscovery,
    Limits,
    Listener,
    RetryPolicy,
    Route,
    Tables,
)

from .gaps import Gap, GapOwner
from .haproxy import DNS_SLOTS

RETRIES = (
    "HAProxy retries at once (no backoff), without a retry budget, for any method it can "
    "replay (idempotent_only is not honoured), and `timeout` bounds each try, not all of them"
)
RETRY_409 = "retriable-4xx: HAProxy cannot retry a 409"
RETRY_GRPC = (
    "HAProxy 2.6 cannot retry on a refused HTTP/2 stream or on a gRPC status: those "
    "outcomes are not retried"
)
GRPC_CHECK = "HAProxy 2.6 has no gRPC health check: a TCP connect to the probed port instead"
MAX_AGE = "HAProxy 2.6 cannot end a connection by age: only the idle timeouts apply"
HEAD_LIMIT = (
    "HAProxy's request head limits are global, not per frontend: tune.bufsize (16 KiB, less "
    "tune.maxrewrite) and tune.http.maxhdr (101) apply; beyond them 400"
)
HEAD_FIELDS = ("request_head_bytes", "request_headers", "url_bytes")
OUTLIER = (
    "an ejected endpoint is marked down until its health check passes again: no "
    "base_ejection_time growth, no max_ejection_percent"
)
SANS = (
    "only the CA chain and the first DNS name are verified (HAProxy 2.6 cannot check URI "
    "SANs such as SPIFFE IDs)"
)
DNS = f"at most {DNS_SLOTS} endpoints are used, and a record's TTL does not shorten the refresh"
AUDIT = (
    "nothing is refused and the verdict is captured for HAProxy's request log ({deny}, once "
    "you configure logging); there is no meshgen_denied_total and no caller name"
)
CALLER = (
    "HAProxy 2.6 cannot read the caller's URI SAN: requests that only rules naming a caller "
    "allow are denied (fail closed)"
)


GRPC_CONDITIONS = frozenset(
    {"refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
     "unavailable"}
)  # fmt: skip


def retry_gaps(kind: GapOwner, name: str, policy: RetryPolicy) -> list[Gap]:
    out = [Gap(kind, name, "retries", RETRIES)]
    if "retriable-4xx" in policy.on:
        out.append(Gap(kind, name, "retries.on", RETRY_409))
    if set(policy.on) & GRPC_CONDITIONS:
        out.append(Gap(kind, name, "retries.on", RETRY_GRPC))
    return out


def service_gaps(c: Cluster, tables: Tables) -> list[Gap]:
    out: list[Gap] = []
    if c.retries is not None and c.protocol != "tcp":  # tcp: connect attempts, as `retries`
        out += retry_gaps("service", c.name, c.retries)
    check = tables.health_checks.get(c.name)
    if check is not None and check.kind == "grpc":
        out.append(Gap("service", c.name, "health_check.grpc", GRPC_CHECK))
    if c.name in tables.outlier_detection:
        out.append(Gap("service", c.name, "outlier_detection", OUTLIER))
    ct = tables.client_tls.get(c.name)
    if ct is not None and ct.verify:
        uris = [n for n in ct.subject_alt_names if "://" in n]
        if uris or len(ct.subject_alt_names) - len(uris) > 1:
            out.append(Gap("service", c.name, "tls.subject_alt_names", SANS))
    if isinstance(c.discovery, DnsDiscovery):
        out.append(Gap("service", c.name, "discovery.dns", DNS))
    return out


def route_gaps(r: Route, clusters: dict[str, Cluster]) -> list[Gap]:
    out: list[Gap] = []
    if r.fault is not None and r.fault.delay_s > 0 and r.fault.delay_percent > 0:
        out.append(Gap("route", r.name, "fault.delay", "omitted: requests are not delayed"))
    if r.mirror is not None:
        out.append(Gap("route", r.name, "mirror", "omitted: no copy is sent"))
    own = [t.retries for t in r.to if t.retries not in (None, clusters[t.service].retries)]
    if own and own[0] is not None:
        out += retry_gaps("route", r.name, own[0])
    return out


def listener_gaps(lst: Listener) -> list[Gap]:
    limits = lst.limits
    if lst.protocol == "tcp":
        if limits.max_connection_duration_s is not None:
            return [Gap("listener", lst.name, "limits.max_connection_duration", MAX_AGE)]
        return []
    default = Limits()  # written values only: HAProxy's own defaults are documented
    return [
        Gap("listener", lst.name, f"limits.{field}", HEAD_LIMIT)
        for field in HEAD_FIELDS
        if getattr(limits, field) != getattr(default, field)
    ]


def gaps(tables: Tables) -> list[Gap]:
    """Every field of ``tables`` that haproxy.cfg does not express."""
    clusters = {c.name: c for c in tables.clusters}
    out = [g for c in tables.clusters for g in service_gaps(c, tables)]
    out += [g for lst in tables.listeners for g in listener_gaps(lst)]
    out += [g for r in tables.routes for g in route_gaps(r, clusters)]
    out += [
        Gap("listener", lst.name, "access", AUDIT)
        for lst in tables.listeners
        if enforced_on(lst) and lst.access == "audit"
    ]
    if any(enforced_on(lst) for lst in tables.listeners):
        out += [
            Gap("access", str(i), "from", CALLER)
            for i, rule in enumerate(tables.access)
            if rule.source != "*"
        ]
    return out
