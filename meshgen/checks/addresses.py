"""E403-E405, E407-E409, E413, W401-W402, W404: discovery, subsets, zones and bind addresses.

``port`` with SRV discovery is an error (E413), not a warning: an SRV record names the port of
each target, and a build that silently drops the written port would send traffic somewhere the
spec does not say (Envoy and Istio have no such override either). Deleting the line is the whole
fix. The same static address listed twice in one service (W404) is legal but doubles its share
of traffic and its health probes under two endpoint names; a weight says that on purpose.

Bind clashes compare what each host stands for, without DNS: ``localhost`` is 127.0.0.1 and
::1 (the runtime binds every address it resolves to), IP literals are compared in canonical
form (``[0:0::1]`` is ``[::1]``), ``0.0.0.0`` takes every IPv4 address and ``::`` every
address of both families (HAProxy binds it dual-stack). Another name may resolve to anything,
so it clashes with the same name and with the wildcards.
"""

from __future__ import annotations

import ipaddress
from functools import cache

from meshgen.checks.context import Context
from meshgen.ip_literals import is_dotted_quad
from meshgen.model import DnsDiscovery, Endpoint, PathKey, Service

SRV_PORT = "E413"
DUPLICATE_ENDPOINT = "W404"

Bound = frozenset[tuple[int, str]]  # (IP version, address or "*" for every address)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "localhost.localdomain"})


def check(ctx: Context) -> None:
    for service in ctx.mesh.services.values():
        if isinstance(service.discovery, DnsDiscovery):
            _dns(ctx, service, service.discovery)
        else:
            _static(ctx, service)
    _binds(ctx)


def _dns(ctx: Context, service: Service, dns: DnsDiscovery) -> None:
    where = service.path
    if service.subsets:
        ctx.error(
            "E403",
            f"service '{service.name}' finds endpoints by DNS but defines subsets",
            (*where, "subsets"),
            "DNS endpoints carry no labels; use static endpoints or drop the subsets",
            key=True,
        )
    if service.failover.zones:
        ctx.error(
            "E404",
            f"service '{service.name}' finds endpoints by DNS but sets failover.zones",
            (*service.failover.path, "zones"),
            "DNS endpoints carry no zone; use static endpoints or drop the zones",
            key=True,
        )
    if dns.record_type != "SRV" and dns.port is None:
        ctx.error(
            "E405",
            f"DNS {dns.record_type} discovery of service '{service.name}' has no port",
            dns.path,
            f"{dns.record_type} records carry no port: add 'port: 8080' (SRV records do)",
        )
    if dns.record_type == "SRV" and dns.port is not None:
        ctx.error(
            SRV_PORT,
            f"DNS SRV discovery of service '{service.name}' sets port {dns.port}, which SRV "
            "would ignore",
            (*dns.path, "port"),
            "SRV records carry the port of each target; remove 'port', or use type: A or "
            "AAAA to connect to this port",
            key=True,
        )
    if "." not in dns.name and not ctx.mesh.domain:
        ctx.error(
            "E409",
            f"DNS name '{dns.name}' of service '{service.name}' has no dot and mesh.domain is "
            "not set",
            (*dns.path, "name"),
            "set mesh.domain, or write the fully qualified name",
        )


def _static(ctx: Context, service: Service) -> None:
    assert not isinstance(service.discovery, DnsDiscovery)
    endpoints = service.discovery.endpoints
    _duplicates(ctx, service, endpoints)
    for subset in service.subsets:
        wanted = set(subset.labels)
        if wanted and not any(wanted <= set(e.labels) for e in endpoints):
            shown = ", ".join(f"{k}={v}" for k, v in subset.labels)
            ctx.warning(
                "W401",
                f"subset '{subset.name}' of service '{service.name}' selects no endpoint ({shown})",
                (*subset.path, "labels"),
                "requests routed to this subset get 503; check the endpoint labels",
            )
    zones = {e.zone for e in endpoints}
    for index, zone in enumerate(service.failover.zones):
        if zone not in zones:
            ctx.warning(
                "W402",
                f"failover zone '{zone}' of service '{service.name}' has no endpoint",
                (*service.failover.path, "zones", index),
                "known zones: " + ", ".join(sorted(z for z in zones if z)) if any(zones) else None,
            )


def _duplicates(ctx: Context, service: Service, endpoints: tuple[Endpoint, ...]) -> None:
    """W404: one address (compared in canonical IP form) listed twice in a service."""
    first: dict[tuple[str, int], Endpoint] = {}
    for endpoint in endpoints:
        key = (_canonical(endpoint.host), endpoint.port)
        earlier = first.setdefault(key, endpoint)
        if earlier is endpoint:
            continue
        alias = f" (as {earlier.address})" if earlier.address != endpoint.address else ""
        ctx.warning(
            DUPLICATE_ENDPOINT,
            f"endpoint {endpoint.address} of service '{service.name}' is listed twice{alias}",
            (*endpoint.path, "address"),
            "it gets twice the traffic and two health checks; list it once and set "
            f"'weight: {earlier.weight + endpoint.weight}' if the double share is meant",
            related=[((*earlier.path, "address"), "first listed here")],
        )


def _canonical(host: str) -> str:
    if is_dotted_quad(host):  # the common case, canonical as written
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _binds(ctx: Context) -> None:
    mesh = ctx.mesh
    binds: list[tuple[str, str, int, PathKey]] = []
    names: dict[str, PathKey] = {}
    for listener in mesh.listeners:
        if listener.name in names:
            ctx.error(
                "E408",
                f"listener name '{listener.name}' is used twice",
                (*listener.path, "name"),
                related=[(names[listener.name], "first used here")],
            )
        names.setdefault(listener.name, (*listener.path, "name"))
        address_path = (*listener.path, "address") if listener.path else ()
        binds.append((f"listener '{listener.name}'", listener.host, listener.port, address_path))
    binds.append(("the admin server", mesh.admin_host, mesh.admin_port, mesh.admin_path or ()))
    for later, (what, host, port, path) in enumerate(binds):
        for other, other_host, other_port, other_path in binds[:later]:
            if port != 0 and port == other_port and _overlap(host, other_host):
                ours, theirs = f"{_show(host)}:{port}", f"{_show(other_host)}:{port}"
                same = host == other_host
                ctx.error(
                    "E407",
                    f"{what} and {other} both bind {ours}"
                    if same
                    else f"{what} binds {ours}, which overlaps {theirs} of {other}",
                    path,
                    "give each listener and the admin server its own address (port 0 picks a "
                    "free port)"
                    if same
                    else "'localhost' is 127.0.0.1 and ::1, 0.0.0.0 takes every IPv4 address "
                    "and :: every address; give each its own port (0 picks a free one)",
                    related=[(other_path, f"{other} binds it here")],
                )
                break


def _overlap(a: str, b: str) -> bool:
    """Whether binding both hosts on one port clashes."""
    if a == b:
        return True
    return any(
        family == other_family and (address == other_address or "*" in (address, other_address))
        for family, address in _bound(a)
        for other_family, other_address in _bound(b)
    )


@cache
def _bound(host: str) -> Bound:
    """The (IP version, address) pairs binding ``host`` takes; "*" is every address."""
    if host in LOOPBACK_NAMES:
        return frozenset({(4, "127.0.0.1"), (6, "::1")})
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return frozenset({(4, host), (6, host)})
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return frozenset({(4, "*"), (6, "*")}) if ip.version == 6 else frozenset({(4, "*")})
    return frozenset({(ip.version, str(ip))})


def _show(host: str) -> str:
    return f"[{host}]" if ":" in host else host
