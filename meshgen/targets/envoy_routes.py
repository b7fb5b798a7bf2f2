"""Envoy route configuration: virtual hosts in file order, route entries, per-route filters.

Theory of operation (docs/envoy.md):

* Routes are first-match in file order across hosts, but Envoy picks a virtual host first.
  So each host a listener's routes name gets a virtual host holding, in file order, the
  routes for that host *and* the host-less ones; ``*`` holds the host-less ones alone. Any
  request then meets the same candidate list, in the same order, as in the runtime.
* One route becomes one entry; ``idempotent_only`` retries become ``retriable_request_headers``
  on ``:method`` (Envoy would retry any method), or a gRPC ``content-type`` (gRPC requests are
  all POST, and ``idempotent_only`` does not apply to them). gRPC retry conditions keep their
  names in ``retry_on`` (Envoy reads them from a trailers-only ``grpc-status`` too).
* A route to an ``http2`` or ``grpc`` service lets the caller's ``grpc-timeout`` cap its
  timeout (``max_stream_duration.grpc_timeout_header_max`` = the route timeout).
* A split's targets share one route-level policy in Envoy (timeout, idle timeout, retries):
  the heaviest target's (:func:`policy_target`); others differing is a gap.
* Per-route filter configs: fault, the route's rate limit (its own token bucket), RBAC
  (:mod:`.envoy_access`); a service's rate limit is one bucket per service shared by every
  route, keyed on the routed cluster (``destination_cluster`` descriptor, see
  :mod:`.envoy_listeners`). A redirect answers before any of them, as in the runtime.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Protocol

from meshgen.protocols import HTTP2_PROTOCOLS
from meshgen.runtime.policy.resilience import IDEMPOTENT_METHODS
from meshgen.runtime.tables import (
    Cluster,
    Fault,
    HeaderMatch,
    Match,
    RateLimit,
    RetryPolicy,
    Route,
    Target,
)

from .envoy_clusters import mirror_name, routed_name
from .envoy_syntax import (
    Json,
    any_of,
    duration,
    fraction,
    header_options,
    runtime_fraction,
    string_match,
    typed,
)

FAULT = "envoy.filters.http.fault"
ROUTE_LIMIT = "envoy.filters.http.local_ratelimit"
SERVICE_LIMIT = "meshgen.service_ratelimit"
RBAC = "envoy.filters.http.rbac"
LIMIT_TYPE = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
}
MIN_BACKOFF_S = 0.001  # Envoy requires a positive base interval
GRPC_CONTENT_TYPE = {  # policy/grpc.py's is_grpc, as an RE2 full match
    "name": "content-type",
    "string_match": {"safe_regex": {"regex": "(?i)application/grpc([+;].*)?"}},
}
_NOT_RE2 = re.compile(r"\(\?(?:[=!]|<[=!]|>|\(|P=)|\\[1-9]")
"""Python-only regex syntax: lookaround, atomic groups, conditionals, backreferences."""


class Access(Protocol):
    """A listener's access control as route entries need it (:mod:`.envoy_access`)."""

    @property
    def mode(self) -> str: ...

    def per_route(self, r: Route) -> Json: ...


def re2_compatible(pattern: str) -> bool:
    """Whether RE2 (Envoy's ``safe_regex``) can run ``pattern`` as Python's ``re`` does."""
    return _NOT_RE2.search(pattern) is None


def expressible(r: Route) -> bool:
    """Whether Envoy can match ``r`` (its regexes are RE2); others are left out (a gap)."""
    m = r.match
    patterns = [m.path] if m.path_kind == "regex" else []
    patterns += [h.value for h in m.headers if h.kind == "regex"]
    return all(re2_compatible(p) for p in patterns)


def live(r: Route) -> list[Target]:
    return [t for t in r.to if t.weight > 0]


def policy_target(r: Route) -> Target | None:
    """The target whose timeout, idle timeout and retries the Envoy route carries."""
    targets = live(r)
    return max(targets, key=lambda t: t.weight) if targets else None


def policy(t: Target) -> tuple[float, float, RetryPolicy | None]:
    return (t.timeout_s, t.idle_timeout_s, t.retries)


def path_match(m: Match) -> Json:
    if m.path_kind == "exact":
        return {"path": m.path}
    if m.path_kind == "regex":
        return {"safe_regex": {"regex": m.path}}
    return {"prefix": m.path or "/"}


def header_match(h: HeaderMatch) -> Json:
    if h.kind == "present":
        return {"name": h.name, "present_match": True}
    return {"name": h.name, "string_match": string_match(h.kind, h.value)}


def method_match(methods: list[str] | tuple[str, ...]) -> Json:
    if len(methods) == 1:
        return {"name": ":method", "string_match": {"exact": methods[0]}}
    return {"name": ":method", "string_match": {"safe_regex": {"regex": any_of(methods)}}}


def route_match(m: Match, methods: list[str] | tuple[str, ...]) -> Json:
    out = path_match(m)
    headers = [header_match(h) for h in m.headers]
    if methods:
        headers.insert(0, method_match(methods))
    if headers:
        out["headers"] = headers
    return out


@functools.lru_cache(maxsize=1024)  # shared by the routes with the same policy (not mutated)
def retry_policy(p: RetryPolicy) -> Json:
    """Envoy retries any method: ``idempotent_only`` retries only requests whose method is one
    of the runtime's idempotent ones (``retriable_request_headers``)."""
    out: Json = {
        "retry_on": ",".join(p.on),
        "num_retries": p.attempts,
        "per_try_timeout": duration(p.per_try_timeout_s),
        "retry_back_off": {
            "base_interval": duration(max(MIN_BACKOFF_S, p.backoff_base_s)),
            "max_interval": duration(max(MIN_BACKOFF_S, p.backoff_max_s)),
        },
        "retry_host_predicate": [PREVIOUS_HOSTS],
        "host_selection_retry_max_attempts": 3,
    }
    if p.idempotent_only:  # (any one of them makes a request retriable)
        out["retriable_request_headers"] = [
            method_match(sorted(IDEMPOTENT_METHODS)),
            GRPC_CONTENT_TYPE,
        ]
    return out


def hash_policy(c: Cluster) -> Json | None:
    lb = c.load_balancer
    if lb.policy not in ("ring_hash", "maglev"):
        return None
    if lb.hash_header is not None:
        return {"header": {"header_name": lb.hash_header}}
    if lb.hash_cookie is not None:
        return {"cookie": {"name": lb.hash_cookie}}
    return {"connection_properties": {"source_ip": True}}


def token_bucket(rl: RateLimit) -> tuple[Json, int]:
    """(``TokenBucket``, Retry-After seconds): ``burst`` tokens, refilled at the rate in steps
    of at least 50 ms (Envoy's minimum fill interval)."""
    tokens = max(1, round(rl.requests_per_second / 10))
    interval = tokens / rl.requests_per_second
    bucket = {
        "max_tokens": rl.burst,
        "tokens_per_fill": tokens,
        "fill_interval": duration(interval),
    }
    return bucket, max(1, math.ceil(interval))


def rate_limit(rl: RateLimit, stat_prefix: str) -> Json:
    """A ``LocalRateLimit`` enforcing ``rl`` on every request it sees (429 + Retry-After)."""
    bucket, retry_after = token_bucket(rl)
    return {
        "stat_prefix": stat_prefix,
        "token_bucket": bucket,
        "filter_enabled": runtime_fraction(100),
        "filter_enforced": runtime_fraction(100),
        "response_headers_to_add": header_options([("retry-after", str(retry_after))]),
        "rate_limited_as_resource_exhausted": True,  # a gRPC caller: RESOURCE_EXHAUSTED
    }


def fault(f: Fault) -> Json | None:
    out: Json = {}
    if f.delay_s > 0 and f.delay_percent > 0:
        out["delay"] = {"fixed_delay": duration(f.delay_s), "percentage": fraction(f.delay_percent)}
    if f.abort_status and f.abort_percent > 0:
        out["abort"] = {"http_status": f.abort_status, "percentage": fraction(f.abort_percent)}
    return typed("envoy.extensions.filters.http.fault.v3.HTTPFault", out) if out else None


class RouteBuilder:
    """Route entries of the mesh's routes, built once per route and access mode."""

    def __init__(self, clusters: dict[str, Cluster]):
        self.clusters = clusters
        self._cache: dict[tuple[str, str], list[Json]] = {}

    def cluster_of(self, t: Target) -> str:
        return routed_name(t.service, t.subset, self.clusters)

    def action(self, r: Route, t: Target) -> Json:
        """The ``RouteAction``: cluster(s), policy of ``t``, hashing, mirror, rewrites."""
        targets = live(r)
        out: Json = {}
        if len(targets) == 1:
            out["cluster"] = self.cluster_of(t)
        else:
            weighted = [{"name": self.cluster_of(x), "weight": x.weight} for x in targets]
            out["weighted_clusters"] = {"clusters": weighted}
        out["timeout"] = duration(t.timeout_s)
        out["idle_timeout"] = duration(t.idle_timeout_s)
        if any(self.clusters[x.service].protocol in HTTP2_PROTOCOLS for x in targets):
            out["max_stream_duration"] = {"grpc_timeout_header_max": duration(t.timeout_s)}
        if t.retries is not None:
            out["retry_policy"] = retry_policy(t.retries)
        hashes = [h for x in targets if (h := hash_policy(self.clusters[x.service]))]
        if hashes:
            out["hash_policy"] = [h for i, h in enumerate(hashes) if h not in hashes[:i]]
        if r.mirror is not None:
            m = r.mirror
            name = mirror_name(m.service, m.subset) if m.subset else m.service
            out["request_mirror_policies"] = [
                {"cluster": name, "runtime_fraction": runtime_fraction(m.percent)}
            ]
        rw = r.rewrite
        if rw is not None and rw.path_prefix is not None and r.match.path_kind == "prefix":
            if rw.path_prefix.endswith("/"):  # as the runtime: slashes after the prefix merge
                out["regex_rewrite"] = {
                    "pattern": {"regex": "^" + re.escape(r.match.path) + "/*"},
                    "substitution": rw.path_prefix,
                }
            else:
                out["prefix_rewrite"] = rw.path_prefix
        if rw is not None and rw.host is not None:
            out["host_rewrite_literal"] = rw.host
        return out

    def filters(self, r: Route, rbac: Json | None) -> Json:
        out: Json = {}
        if rbac is not None:
            out[RBAC] = rbac
        if r.redirect is not None:
            return out
        if r.rate_limit is not None:
            out[ROUTE_LIMIT] = typed(LIMIT_TYPE, rate_limit(r.rate_limit, f"route_{r.name}"))
        f = fault(r.fault) if r.fault is not None else None
        if f is not None:
            out[FAULT] = f
        return out

    def entries(self, r: Route, access: Access | None) -> list[Json]:
        """The route's entry (none when Envoy cannot match it); cached per access mode."""
        key = (r.name, access.mode if access is not None else "")
        cached = self._cache.get(key)
        if cached is None:
            rbac = access.per_route(r) if access is not None else None
            cached = [self.entry(r, rbac)] if expressible(r) else []
            self._cache[key] = cached
        return cached

    def entry(self, r: Route, rbac: Json | None) -> Json:
        base: Json = {"name": r.name}
        filters = self.filters(r, rbac)
        if filters:
            base["typed_per_filter_config"] = filters
        if r.redirect is not None:
            base["match"] = route_match(r.match, r.match.methods)
            base["direct_response"] = {"status": r.redirect.status}
            base["response_headers_to_add"] = header_options([("location", r.redirect.location)])
            return base
        ops = (r.request_headers, r.response_headers)
        if ops[0].set:
            base["request_headers_to_add"] = header_options(ops[0].set)
        if ops[0].remove:
            base["request_headers_to_remove"] = list(ops[0].remove)
        if ops[1].set:
            base["response_headers_to_add"] = header_options(ops[1].set)
        if ops[1].remove:
            base["response_headers_to_remove"] = list(ops[1].remove)
        t = policy_target(r)
        assert t is not None, "a route without a redirect has a live target"
        base["match"] = route_match(r.match, r.match.methods)
        base["route"] = self.action(r, t)
        return base


def catch_all_404(rbac_off: Json) -> Json:
    """The last entry of a virtual host on a listener that checks access: no route is 404
    (Envoy's RBAC would otherwise answer 403 before the router's own 404)."""
    return {
        "name": "no-route",
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": "no route\n"}},
        "typed_per_filter_config": {RBAC: rbac_off},
    }
