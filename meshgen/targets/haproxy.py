"""HAProxy target: ``DIST/haproxy/haproxy.cfg``, the same mesh for HAProxy 2.6+.

Theory of operation (docs/haproxy.md has the full mapping and what is approximated):

* one ``frontend`` per listener. Routes are tried in file order by setting ``txn.mg_route`` on
  the first route whose ACLs match; every later rule (404, 403, redirect, rate limits, faults,
  header ops, rewrites, ``use_backend``) is conditioned on that variable, so first-match-wins
  holds however many routes match.
* one ``backend`` per *pool*: (service, subset, zone, per-request policy). The pool
  ``<service>`` (every endpoint, the service's own policy) always exists and runs the health
  checks; every other pool's servers ``track`` it, so an endpoint has one health state.
* failover (zones with panic threshold, the backup chain, subset-has-no-healthy -> 503) is a
  chain of ``use_backend ... if { nbsrv(pool) ... }`` lines, tried in the runtime's order.
* user strings become single-quoted config words; log-format arguments get ``%`` doubled.
* ``http2`` and ``grpc`` services: ``proto h2`` (and ``alpn h2`` with TLS) on their servers;
  TLS binds offer ``alpn h2,http/1.1`` (clear binds take HTTP/2 with prior knowledge by
  themselves). When a mesh has such services, the frontend's own 404, 403 and 429 answers to
  a gRPC request (``mg.grpc``, its content-type) are trailers-only gRPC answers (UNIMPLEMENTED,
  PERMISSION_DENIED, RESOURCE_EXHAUSTED), as the runtime's (``policy/grpc.py``).

Nothing here reads the file system; relative certificate paths stay relative (HAProxy is run
from the folder that holds mesh.yaml, as the runtime's ``--root``).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from meshgen.protocols import HTTP2_PROTOCOLS
from meshgen.runtime.policy import grpc
from meshgen.runtime.tables import (
    AccessRule,
    Cluster,
    DnsDiscovery,
    Endpoint,
    Limits,
    Listener,
    Route,
    Tables,
    Target,
)

from . import RenderContext, haproxy_tcp
from .haproxy_syntax import (
    acl_value,
    balance,
    bind_address,
    chance,
    check_options,
    duration,
    fmt,
    scaled_weights,
    section,
    server_name,
    word,
)

DNS_SLOTS = 16  # server-template slots per DNS-discovered pool
_DEFAULT_LIMITS = Limits()
_ROUTE_VAR = "var(txn.mg_route)"
RETRY_ON = {
    "connect-failure": ("conn-failure",),
    "reset": ("empty-response", "junk-response"),
    "5xx": ("conn-failure", "empty-response", "response-timeout", "500", "501", "502", "503",
            "504"),
    "gateway-error": ("conn-failure", "response-timeout", "502", "503", "504"),
    "retriable-4xx": (),  # 409 is not a status HAProxy can retry on
    # HAProxy 2.6 cannot retry on a refused HTTP/2 stream or on a gRPC status
    "refused-stream": (), "cancelled": (), "deadline-exceeded": (), "internal": (),
    "resource-exhausted": (), "unavailable": (),
}  # fmt: skip


Policy = tuple[float, float, object]  # (timeout, idle timeout, RetryPolicy | None)
GRPC_CONTENT_TYPE = "^application/grpc([+;]|$)"  # policy/grpc.py's is_grpc


@dataclass(frozen=True)
class Pool:
    """One backend: a service's endpoints filtered by subset and zone, with one policy."""

    name: str
    cluster: Cluster
    subset: str | None
    zone: str | None
    policy: Policy


class Config:
    """Builds the sections of haproxy.cfg; ``pools`` grow as frontends refer to them."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables
        self.clusters = {c.name: c for c in tables.clusters}
        self.pools: dict[tuple[str, str | None, str | None, Policy], Pool] = {}
        self.policies: dict[str, list[Policy]] = {}
        self.index = {c.name: i for i, c in enumerate(tables.clusters)}
        self.rules: dict[str, list[AccessRule]] = {}
        for rule in tables.access:
            self.rules.setdefault(rule.service, []).append(rule)
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}  # by pool name
        self.grpc = any(c.protocol in HTTP2_PROTOCOLS for c in tables.clusters)
        self._servers: dict[str, tuple[int, dict[int, tuple[str, str]]]] = {}  # by service
        self._limits: dict[str, str] = {}  # by service: its servers' maxconn and maxqueue
        self._options: dict[str, str] = {}  # by service: its servers' TLS and protocol options
        for c in tables.clusters:
            self.pool(c.name, None, None, self.own_policy(c))

    @staticmethod
    def own_policy(c: Cluster) -> Policy:
        return (c.timeout_s, c.idle_timeout_s, c.retries)

    def pool(self, service: str, subset: str | None, zone: str | None, policy: Policy) -> Pool:
        if self.clusters[service].protocol == "tcp":  # its own policy, whoever fails over
            policy = self.own_policy(self.clusters[service])
        key = (service, subset, zone, policy)
        got = self.pools.get(key)  # one lookup: hashing a key hashes its retry policy's fields
        if got is None:
            c = self.clusters[service]
            name = service + (f".{subset}" if subset else "")
            if zone is not None:
                name += f".z{c.failover.zones.index(zone)}"
            known = self.policies.setdefault(service, [self.own_policy(c)])
            if policy not in known:
                known.append(policy)
            if known.index(policy):
                name += f".p{known.index(policy)}"
            got = self.pools[key] = Pool(name, c, subset, zone, policy)
        return got

    def endpoints(self, pool: Pool) -> tuple[Endpoint, ...]:
        """The pool's endpoints (none for DNS discovery); computed once per pool."""
        try:
            return self._endpoints[pool.name]
        except KeyError:
            pass
        d = pool.cluster.discovery
        if isinstance(d, DnsDiscovery):
            return ()
        labels: tuple[tuple[str, str], ...] = ()
        for s in pool.cluster.subsets:
            if s.name == pool.subset:
                labels = s.labels
        wanted = set(labels)
        out = tuple(
            e for e in d.endpoints
            if wanted <= set(e.labels) and (pool.zone is None or e.zone == pool.zone)
        )  # fmt: skip
        self._endpoints[pool.name] = out
        return out

    # -- frontends ---------------------------------------------------------------------------

    def frontend(self, lst: Listener) -> list[str]:
        if lst.protocol == "tcp":
            return haproxy_tcp.frontend(self, lst)
        names = set(lst.routes)
        routes = [r for r in self.t.routes if r.name in names]
        lines = [self.bind(lst), f"timeout client {duration(self.client_timeout())}",
                 *self.limits(lst), "option forwardfor"]  # fmt: skip
        lines += [
            "# paths are matched normalised, as the runtime does (docs/reference.md, Routes)",
            "http-request normalize-uri percent-decode-unreserved",
            "http-request normalize-uri percent-to-uppercase",
            "http-request normalize-uri path-merge-slashes",
            "http-request normalize-uri path-strip-dot",
            "http-request normalize-uri path-strip-dotdot full",
            "# Host: case-insensitive, port and trailing dot ignored",
            "http-request set-var(txn.mg_host) req.hdr(host),lower,regsub(:[0-9]+$,),regsub([.]$,)",
            f"acl mg.routed {_ROUTE_VAR} -m found",
        ]
        if self.grpc:
            lines.append(f"acl mg.grpc req.hdr(content-type) -i -m reg {GRPC_CONTENT_TYPE}")
        for r in routes:
            lines += self.route_acls(r)
        for r in routes:
            conds = " ".join(["!mg.routed", *self.match_acls(r)])
            lines.append(f"http-request set-var(txn.mg_route) str({r.name}) if {conds}")
        lines += self.grpc_answer(grpc.UNIMPLEMENTED, "no route", "!mg.routed")
        lines.append("http-request return status 404 content-type text/plain string 'no route' "
                     "if !mg.routed")  # fmt: skip
        if lst.tls is not None and lst.tls.client_certificates != "none" and self.t.access:
            lines += self.access(routes, lst.access == "audit")
        lines += self.route_actions(routes)
        return lines

    @staticmethod
    def limits(lst: Listener) -> list[str]:
        """The listener's limits HAProxy has per frontend, where they differ from the defaults
        (which ``defaults`` already says). Head bytes and header count are global in HAProxy
        (``tune.bufsize``, ``tune.http.maxhdr``; docs/reliability.md)."""
        limits, base = lst.limits, _DEFAULT_LIMITS
        lines = []
        if limits.request_head_timeout_s != base.request_head_timeout_s:
            lines.append(f"timeout http-request {duration(limits.request_head_timeout_s)}")
        if limits.client_idle_timeout_s != base.client_idle_timeout_s:
            lines.append(f"timeout http-keep-alive {duration(limits.client_idle_timeout_s)}")
        if limits.max_connections != base.max_connections:
            lines.append(f"maxconn {limits.max_connections}")
        return lines

    @staticmethod
    def bind(lst: Listener) -> str:
        text = f"bind {bind_address(lst.host, lst.port, lst.name)}"
        tls = lst.tls
        if tls is not None:
            text += f" ssl crt {word(tls.cert)} ssl-min-ver TLSv{tls.min_version}"
            if tls.ca is not None:
                text += f" ca-file {word(tls.ca)}"
            text += f" verify {tls.client_certificates}"
            text += " alpn h2,http/1.1"  # HTTP/1.1 and HTTP/2 on one port, as the runtime
        return text

    def client_timeout(self) -> float:
        """An http frontend's: the longest idle timeout of the HTTP services."""
        idle = [c.idle_timeout_s for c in self.t.clusters if c.protocol != "tcp"]
        return max(idle or [60.0])

    @staticmethod
    def route_acls(r: Route) -> list[str]:
        m, n = r.match, r.name
        out = [f"acl {n}.matched {_ROUTE_VAR} -m str {n}"]
        if m.hosts:
            out.append(f"acl {n}.host var(txn.mg_host) -m str " + " ".join(map(word, m.hosts)))
        if m.path_kind == "exact":
            out.append(f"acl {n}.path path -m str {acl_value(m.path)}")
        elif m.path_kind == "regex":
            out.append(f"acl {n}.path path -m reg {acl_value('^(?:' + m.path + ')$')}")
        elif m.path not in ("", "/"):
            out.append(f"acl {n}.path path -m beg {acl_value(m.path)}")
        if m.methods:
            out.append(f"acl {n}.method method " + " ".join(m.methods))
        for i, h in enumerate(m.headers):
            fetch = f"req.fhdr({h.name},1)"
            if h.kind == "present":
                out.append(f"acl {n}.h{i} {fetch} -m found")
            elif h.kind == "regex":
                out.append(f"acl {n}.h{i} {fetch} -m reg {acl_value('^(?:' + h.value + ')$')}")
            else:
                op = "str" if h.kind == "exact" else "beg"
                out.append(f"acl {n}.h{i} {fetch} -m {op} {acl_value(h.value)}")
        return out

    @staticmethod
    def match_acls(r: Route) -> list[str]:
        m, n = r.match, r.name
        names = [f"{n}.host"] if m.hosts else []
        if m.path_kind != "prefix" or m.path not in ("", "/"):
            names.append(f"{n}.path")
        if m.methods:
            names.append(f"{n}.method")
        names += [f"{n}.h{i}" for i in range(len(m.headers))]
        return names

    def access(self, routes: list[Route], audit: bool) -> list[str]:
        """403 unless a ``from: "*"`` rule allows every destination (named callers are a gap:
        HAProxy 2.6 cannot read a URI SAN, so what only they allow is denied).

        On an ``access: audit`` listener nothing is refused: the verdict is captured for the
        request log instead (HAProxy has no meshgen_denied_total)."""
        lines = ["acl mg.cert ssl_c_used", "acl mg.cert_ok ssl_c_verify 0"]
        index = self.index
        services = sorted({t.service for r in routes for t in r.to}, key=index.__getitem__)
        for s in services:
            for rule in self.rules.get(s, ()):
                if rule.source != "*":
                    continue
                conds = ["mg.cert", "mg.cert_ok"]
                if rule.methods:
                    conds.append("{ method " + " ".join(rule.methods) + " }")
                if rule.paths:
                    conds.append("{ path -m beg " + " ".join(map(acl_value, rule.paths)) + " }")
                lines.append(f"http-request set-var(txn.mg_allow{index[s]}) bool(1) if "
                             + " ".join(conds))  # fmt: skip
        if audit:
            lines += ["# access: audit -- what the rules deny is forwarded; the verdict",
                      "# is in the request log as a capture ({deny}) with logging"]  # fmt: skip
        for r in routes:
            dests = sorted({t.service for t in r.to}, key=index.__getitem__)
            if dests:
                alts = " || ".join(f"{r.name}.matched !{{ var(txn.mg_allow{index[d]}) -m bool }}"
                                   for d in dests)  # fmt: skip
                if audit:
                    lines.append(f"http-request set-var(txn.mg_audit) str(deny) if {alts}")
                else:
                    lines += self.grpc_answer(grpc.PERMISSION_DENIED, "access denied", alts)
                    lines.append("http-request deny deny_status 403 content-type text/plain "
                                 f"string 'access denied' if {alts}")  # fmt: skip
        if audit:
            lines.append("http-request capture var(txn.mg_audit) len 4")
        return lines

    def route_actions(self, routes: list[Route]) -> list[str]:
        """Per matched route, in the runtime's order (proxy.py): redirect, limits, fault, split."""
        out: list[str] = []
        for r in routes:
            if r.redirect is not None:
                out.append(f"http-request redirect location {fmt(r.redirect.location)} "
                           f"code {r.redirect.status} if {r.name}.matched")  # fmt: skip
        for r in routes:
            if r.rate_limit is not None:
                out.append(f"http-request track-sc0 str({r.name}) table ratelimit:route:{r.name} "
                           f"if {r.name}.matched")  # fmt: skip
                limited = f"{r.name}.matched {{ sc_http_req_rate(0) gt {r.rate_limit.burst} }}"
                out += self.grpc_answer(grpc.RESOURCE_EXHAUSTED, "rate limited", limited)
                out.append(f"http-request deny deny_status 429 hdr retry-after 1 if {limited}")
        for r in routes:
            f = r.fault  # fault.delay and mirror: haproxy_gaps.py
            if f is not None and f.abort_status:
                odds = chance(f.abort_percent)
                out.append(f"http-request return status {f.abort_status} content-type text/plain"
                           f" string 'fault injected' if {r.name}.matched{odds}")  # fmt: skip
        if any(len([t for t in r.to if t.weight > 0]) > 1 for r in routes):
            out.append("http-request set-var(txn.mg_pick) rand(100)")
        uses: list[str] = []
        for r in routes:
            for t, cond in _target_conditions(r):
                c = self.clusters[t.service]
                if c.rate_limit is not None:
                    out.append(f"http-request track-sc1 str({t.service}) table "
                               f"ratelimit:service:{t.service} if {cond}")  # fmt: skip
                    limited = f"{cond} {{ sc_http_req_rate(1) gt {c.rate_limit.burst} }}"
                    out += self.grpc_answer(grpc.RESOURCE_EXHAUSTED, "rate limited", limited)
                    out.append(f"http-request deny deny_status 429 hdr retry-after 1 if {limited}")
                uses += [f"use_backend {b} if {cond}{' ' + x if x else ''}"
                         for b, x in self.failover_chain(t)]  # fmt: skip
            out += self.header_ops(r)
        return out + uses

    def grpc_answer(self, status: int, message: str, cond: str) -> list[str]:
        """A trailers-only gRPC answer to a gRPC request meeting ``cond`` (none when the mesh
        has no HTTP/2 service), before the HTTP answer to everyone else."""
        if not self.grpc:
            return []
        if "||" in cond:  # `mg.grpc` must hold for every alternative
            cond = " || ".join(f"mg.grpc {alt.strip()}" for alt in cond.split("||"))
        else:
            cond = f"mg.grpc {cond}"
        return [f"http-request return status 200 hdr grpc-status "
                f"{status} hdr grpc-message {word(message)} if {cond}"]  # fmt: skip

    @staticmethod
    def header_ops(r: Route) -> list[str]:
        out: list[str] = []
        for phase, ops in (("request", r.request_headers), ("response", r.response_headers)):
            out += [f"http-{phase} del-header {word(h)} if {r.name}.matched" for h in ops.remove]
            out += [f"http-{phase} set-header {word(h)} {fmt(v)} if {r.name}.matched"
                    for h, v in ops.set]  # fmt: skip
        rw = r.rewrite
        if rw is not None and rw.path_prefix is not None and r.match.path_kind == "prefix":
            slash = "/*" if rw.path_prefix.endswith("/") else ""
            regex = "^" + re.escape(r.match.path) + slash + "(.*)$"
            replacement = word(rw.path_prefix.replace("%", "%%") + "\\1")
            out.append(f"http-request replace-path {word(regex)} {replacement} "
                       f"if {r.name}.matched")  # fmt: skip
        if rw is not None and rw.host is not None:
            out.append(f"http-request set-header host {fmt(rw.host)} if {r.name}.matched")
        return out

    def failover_chain(self, t: Target) -> list[tuple[str, str]]:
        """(backend, extra condition) pairs in the runtime's pick order (upstreams.py)."""
        policy: Policy = (t.timeout_s, t.idle_timeout_s, t.retries)
        out: list[tuple[str, str]] = []
        service, subset, seen = t.service, t.subset, set[str]()
        while service not in seen and service in self.clusters:
            seen.add(service)
            c = self.clusters[service]
            main = self.pool(service, subset, None, policy)
            for zone in c.failover.zones:
                zp = self.pool(service, subset, zone, policy)
                size = len(self.endpoints(zp))
                if size:
                    need = max(1, math.ceil(size * c.failover.panic_threshold / 100 - 1e-9))
                    out.append((zp.name, f"{{ nbsrv({zp.name}) ge {need} }}"))
            whole = self.pool(service, None, None, self.own_policy(c)).name
            out.append((main.name, f"{{ nbsrv({whole}) gt 0 }}"))
            if c.failover.backup is None:
                break
            service, subset = c.failover.backup, None
        first = self.pool(t.service, t.subset, None, policy).name
        while out and out[-1][0] == first:
            out.pop()  # the unconditional fallback below covers it
        return [*out, (first, "")]

    # -- backends ----------------------------------------------------------------------------

    def backend(self, pool: Pool) -> list[str]:
        c, (timeout, idle, retries) = pool.cluster, pool.policy
        if c.protocol == "tcp":
            return haproxy_tcp.backend(self, pool)
        lines = [f"# service {c.name}" + (f" subset {pool.subset}" if pool.subset else "")
                 + (f" zone {pool.zone}" if pool.zone else "")]  # fmt: skip
        lines += balance(c)
        per_try = retries.per_try_timeout_s if retries is not None else timeout  # type: ignore[attr-defined]
        lines += [f"timeout connect {duration(c.connect_timeout_s)}",
                  f"timeout server {duration(min(per_try, timeout))}",
                  f"timeout tunnel {duration(idle)}",
                  f"timeout queue {duration(timeout)}"]  # fmt: skip
        # circuit breaker: beyond max_pending_requests waiting, refuse at once (runtime, Envoy)
        pending = c.circuit_breaker.max_pending_requests
        lines.append("http-request return status 503 content-type text/plain string overloaded "
                     f"hdr x-meshgen-overloaded true if {{ queue() ge {pending} }}")  # fmt: skip
        if retries is not None and retries.attempts > 0:  # type: ignore[attr-defined]
            lines.append(f"retries {retries.attempts}")  # type: ignore[attr-defined]
            lines.append(retry_on(retries.on))  # type: ignore[attr-defined]
            lines.append("option redispatch 1")
        else:
            lines.append("retries 0")
        return lines + self.servers(pool, self.limits_of(c))

    def limits_of(self, c: Cluster) -> str:
        """The ``maxconn`` and ``maxqueue`` options of every server of an HTTP service."""
        try:
            return self._limits[c.name]
        except KeyError:
            pass
        cb = c.circuit_breaker
        got = self._limits[c.name] = (
            f" maxconn {self.per_server(c, min(cb.max_requests, cb.max_connections))}"
            f" maxqueue {self.per_server(c, cb.max_pending_requests)}"
        )
        return got

    def per_server(self, c: Cluster, total: int) -> int:
        """A service-wide limit shared by its servers (DNS: by its server-template slots)."""
        return math.ceil(total / (self.server_heads(c)[0] or DNS_SLOTS))

    def server_heads(self, c: Cluster) -> tuple[int, dict[int, tuple[str, str]]]:
        """How many endpoints the service has, and by each one's identity its server name and
        the start of its ``server`` line (name, address, HAProxy weight): made once per service,
        as an endpoint is a server of several pools (hashing frozen endpoints per pool was
        0.2 s at 10,000 services)."""
        try:
            return self._servers[c.name]
        except KeyError:
            pass
        everyone = self.endpoints(self.pool(c.name, None, None, self.own_policy(c)))
        heads = {}
        for e, w in zip(everyone, scaled_weights(everyone), strict=True):
            name = server_name(e)
            heads[id(e)] = name, f"server {name} {word(e.address)} weight {w}"
        got = self._servers[c.name] = len(everyone), heads
        return got

    def servers(self, pool: Pool, limits: str, layer: int = 7) -> list[str]:
        """A pool's health-check options and server lines; ``layer`` is what outlier
        detection observes (7: HTTP statuses, 4: connect errors)."""
        c = pool.cluster
        own = pool.name == c.name
        lines: list[str] = []
        hc = self.t.health_checks.get(c.name)
        od = self.t.outlier_detection.get(c.name)
        checked = hc is not None or od is not None
        if own and hc is not None and hc.kind == "http":
            lines.append(f"option httpchk GET {word(hc.path)}")
            codes = hc.expected_statuses
            alternatives = "|".join(map(str, codes))
            lines.append(f"http-check expect status {codes[0]}" if len(codes) == 1 else
                         f"http-check expect rstatus ^({alternatives})$")  # fmt: skip
        if own and checked:
            inter = hc.interval_s if hc is not None else od.interval_s  # type: ignore[union-attr]
            lines.append(f"timeout check {duration(hc.timeout_s if hc else c.connect_timeout_s)}")
            rise, fall = (hc.healthy_threshold, hc.unhealthy_threshold) if hc else (1, 1)
            lines.append(f"default-server inter {duration(inter)} rise {rise} fall {fall}")
        port = hc.port if hc is not None else None
        tls = self.server_options(c)
        if isinstance(c.discovery, DnsDiscovery):
            d = c.discovery
            target = d.query_name if d.record_type == "SRV" else f"{d.query_name}:{d.port}"
            prefer = "ipv6" if d.record_type == "AAAA" else "ipv4"
            check = check_options(od, layer, port) if checked else ""
            lines.append(f"server-template ep {DNS_SLOTS} {target} resolvers dns.{c.name} "
                         f"resolve-prefer {prefer} init-addr none{limits}{tls}{check}")  # fmt: skip
            return lines
        heads = self.server_heads(c)[1]
        for e in self.endpoints(pool):
            name, head = heads[id(e)]
            state = check_options(od, layer, port) if own else f" track {c.name}/{name}"
            state = state if checked else ""
            lines.append(f"{head}{limits}{tls}{state}")
        return lines

    def server_options(self, c: Cluster) -> str:
        """TLS and protocol options of every server of ``c``, made once per service (at 10,000
        services, three pools each, making them per pool was ~5 % of this target)."""
        try:
            return self._options[c.name]
        except KeyError:
            pass
        got = self._options[c.name] = self.tls_options(c.name) + self.proto(c)
        return got

    def proto(self, c: Cluster) -> str:
        """HTTP/2 to the servers of an ``http2``/``grpc`` service (ALPN ``h2`` with TLS), its
        HTTP health check too when it probes the traffic port."""
        if c.protocol not in HTTP2_PROTOCOLS:
            return ""
        tls = self.tls_options(c.name) != ""
        text = (" alpn h2" if tls else "") + " proto h2"
        hc = self.t.health_checks.get(c.name)
        if hc is not None and hc.kind == "http" and hc.port is None:
            text += (" check-alpn h2" if tls else "") + " check-proto h2"
        return text

    def tls_options(self, service: str) -> str:
        ct = self.t.client_tls.get(service)
        if ct is None or ct.mode == "disable":
            return ""
        text = f" ssl ssl-min-ver TLSv{ct.min_version}"
        if ct.verify:
            text += f" verify required ca-file {word(ct.ca) if ct.ca else '@system-ca'}"
        else:
            text += " verify none"
        if ct.mode == "mutual" and ct.cert:
            text += f" crt {word(ct.cert)}"
        if ct.sni:  # sent whether or not the certificate is verified
            text += f" sni str({word(ct.sni)})"
        if not ct.verify:
            return text
        dns = [n for n in ct.subject_alt_names if "://" not in n]
        if dns:
            text += f" verifyhost {word(dns[0])}"
        return text


@functools.lru_cache(maxsize=256)  # a mesh has few distinct lists, and a backend per pool
def retry_on(conditions: tuple[str, ...]) -> str:
    """The ``retry-on`` line for a retry policy's ``on`` conditions."""
    on = dict.fromkeys(k for cond in conditions for k in RETRY_ON[cond])
    return "retry-on " + (" ".join(on) or "none")


def _target_conditions(r: Route) -> list[tuple[Target, str]]:
    """Each weighted target with its condition: the route, and a ``txn.mg_pick`` range."""
    live = [t for t in r.to if t.weight > 0]
    if len(live) == 1:
        return [(live[0], f"{r.name}.matched")]
    out, low = [], 0
    for i, t in enumerate(live):
        high = low + t.weight
        cond = f"{r.name}.matched"
        if low:
            cond += f" {{ var(txn.mg_pick) -m int ge {low} }}"
        if i < len(live) - 1:
            cond += f" {{ var(txn.mg_pick) -m int lt {high} }}"
        out.append((t, cond))
        low = high
    return out


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """``{"haproxy/haproxy.cfg": text}`` for HAProxy 2.6+ (check: ``haproxy -dW -c -f``)."""
    cfg = Config(tables)
    frontends = [(lst.name, section(cfg.frontend(lst))) for lst in tables.listeners]
    backends = [(p.name, section(cfg.backend(p))) for p in cfg.pools.values()]
    tables_ = [(f"ratelimit:route:{r.name}", r.rate_limit) for r in tables.routes if r.rate_limit]
    tables_ += [(f"ratelimit:service:{c.name}", c.rate_limit) for c in tables.clusters
                if c.rate_limit]  # fmt: skip
    limits = [(name, duration(rl.burst / rl.requests_per_second)) for name, rl in tables_
              if rl is not None]  # fmt: skip
    resolvers = [(c.name, duration(max(1.0, c.discovery.refresh_s))) for c in tables.clusters
                 if isinstance(c.discovery, DnsDiscovery)]  # fmt: skip
    template = ctx.env.get_template("haproxy/haproxy.cfg.j2")
    text = template.render(
        header=ctx.header, frontends=frontends, backends=backends, limits=limits,
        resolvers=resolvers,
        admin=bind_address(tables.mesh.admin_host, tables.mesh.admin_port, "admin"),
    )  # fmt: skip
    return {"haproxy/haproxy.cfg": text}
