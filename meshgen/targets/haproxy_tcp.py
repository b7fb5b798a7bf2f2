"""HAProxy target, tcp part: ``mode tcp`` frontends for tcp listeners and backends for tcp
services (docs/haproxy.md, "tcp listeners and services").

Theory of operation: a tcp listener is a ``mode tcp`` frontend. With ``to`` it picks a target
with one ``rand(100)`` per connection, as routes do per request, and goes down the same
failover ``use_backend`` chain (:meth:`Config.failover_chain`). With ``sni`` it waits up to
:data:`HELLO_WAIT` (``tcp-request inspect-delay``) for a TLS ClientHello whose server name
(``req.ssl_sni``) matches a pattern, and rejects the connection otherwise; the ``use_backend``
lines follow the runtime's precedence (:func:`meshgen.runtime.policy.sni.precedence`). The
backend of a tcp service forwards bytes: ``timeout server`` and ``timeout tunnel`` are its
idle timeout, ``retries`` are connect attempts, the servers' ``maxconn`` share
``circuit_breaker.max_connections``, and outlier detection watches layer 4 (connect errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgen.runtime.codec.sni import HELLO_WAIT
from meshgen.runtime.policy.sni import WILDCARD, precedence
from meshgen.runtime.tables import Listener, Target, TcpTarget

from .haproxy_syntax import acl_value, balance, duration

if TYPE_CHECKING:
    from .haproxy import Config, Pool


def _as_target(cfg: Config, t: TcpTarget) -> Target:
    """A tcp target as a route target with its service's own policy (its own backend)."""
    c = cfg.clusters[t.service]
    return Target(t.service, t.subset, t.weight, c.timeout_s, c.idle_timeout_s, c.retries)


def frontend(cfg: Config, lst: Listener) -> list[str]:
    services = [t.service for t in lst.to] + [r.service for r in lst.sni]
    idle = max(cfg.clusters[s].idle_timeout_s for s in services) if services else 3600.0
    lines = ["mode tcp", cfg.bind(lst), f"maxconn {lst.limits.max_connections}",
             f"timeout client {duration(idle)}"]  # fmt: skip
    if lst.tls is not None and lst.tls.client_certificates != "none" and cfg.t.access:
        lines += _access(cfg, services)
    if lst.sni:
        return lines + _sni(cfg, lst)
    live = [t for t in lst.to if t.weight > 0]
    if len(live) > 1:
        lines.append("tcp-request content set-var(sess.mg_pick) rand(100)")
    low = 0
    for i, t in enumerate(live):
        cond = []
        if low:
            cond.append(f"{{ var(sess.mg_pick) -m int ge {low} }}")
        low += t.weight
        if i < len(live) - 1:
            cond.append(f"{{ var(sess.mg_pick) -m int lt {low} }}")
        lines += _uses(cfg, _as_target(cfg, t), " ".join(cond))
    return lines


def _uses(cfg: Config, target: Target, cond: str) -> list[str]:
    out = []
    for backend, extra in cfg.failover_chain(target):
        both = " ".join(c for c in (cond, extra) if c)
        out.append(f"use_backend {backend}" + (f" if {both}" if both else ""))
    return out


def _sni(cfg: Config, lst: Listener) -> list[str]:
    lines = [f"tcp-request inspect-delay {duration(HELLO_WAIT)}"]
    ordered = precedence(lst.sni)
    for i, r in enumerate(ordered):
        if r.pattern.startswith(WILDCARD):
            lines.append(f"acl mg.sni{i} req.ssl_sni,lower -m end {acl_value(r.pattern[1:])}")
        else:
            lines.append(f"acl mg.sni{i} req.ssl_sni,lower -m str {acl_value(r.pattern)}")
    known = " || ".join(f"mg.hello mg.sni{i}" for i in range(len(ordered)))
    lines += ["acl mg.hello req.ssl_hello_type 1",
              f"tcp-request content accept if {known}",
              "# no ClientHello within the delay, or no pattern matches: closed",
              "tcp-request content reject"]  # fmt: skip
    for i, r in enumerate(ordered):
        lines += _uses(cfg, _as_target(cfg, TcpTarget(r.service, None, 100)), f"mg.sni{i}")
    return lines


def _access(cfg: Config, services: list[str]) -> list[str]:
    """Identity rules: only ``from: "*"`` is expressible (HAProxy 2.6 cannot read a URI SAN;
    a gap), so a listener whose services not all allow ``*`` refuses every connection."""
    anyone = all(any(r.source == "*" for r in cfg.rules.get(s, ())) for s in services)
    if anyone:
        return ["tcp-request content reject unless { ssl_c_used } { ssl_c_verify 0 }"]
    return ["tcp-request content reject"]


def backend(cfg: Config, pool: Pool) -> list[str]:
    c = pool.cluster
    lines = [f"# service {c.name} (tcp)" + (f" subset {pool.subset}" if pool.subset else "")
             + (f" zone {pool.zone}" if pool.zone else ""), "mode tcp"]  # fmt: skip
    lb = balance(c)
    lines += lb if not lb[0].startswith(("balance hdr", "balance hash")) else ["balance source"]
    idle = duration(c.idle_timeout_s)
    connect = duration(c.connect_timeout_s)
    lines += [f"timeout connect {connect}", f"timeout server {idle}", f"timeout tunnel {idle}",
              f"timeout queue {connect}"]  # fmt: skip
    attempts = c.retries.attempts if c.retries is not None else 0
    lines.append(f"retries {attempts}")
    if attempts:
        lines.append("option redispatch 1")
    limits = f" maxconn {cfg.per_server(c, c.circuit_breaker.max_connections)}"
    return lines + cfg.servers(pool, limits, layer=4)
