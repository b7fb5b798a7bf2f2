"""Unit tests for the runtime's discovery: SRV selection, refresh delays, failure state."""

from __future__ import annotations

import asyncio
import socket

from meshgen.runtime.tables import DnsDiscovery, Endpoint, StaticDiscovery
from meshgen.runtime.upstream.discovery import (
    DnsSource,
    SrvRecord,
    StaticSource,
    make_source,
    refresh_delay,
    srv_endpoints,
)


def test_srv_uses_lowest_priority_group_and_weights() -> None:
    """Only priority 10 records count; weight 0 becomes 1; every address of a target is used."""
    records = [
        SrvRecord(10, 5, 8080, "b1.pay.mesh.test"),
        SrvRecord(10, 0, 8081, "b2.pay.mesh.test"),
        SrvRecord(20, 100, 9090, "standby.pay.mesh.test"),
    ]
    addresses = {
        "b1.pay.mesh.test": ["127.0.0.2", "::1"],
        "b2.pay.mesh.test": ["127.0.0.3"],
        "standby.pay.mesh.test": ["127.0.0.9"],
    }
    got = srv_endpoints(records, addresses)
    assert got == (
        Endpoint("127.0.0.2", 8080, weight=5),
        Endpoint("127.0.0.3", 8081, weight=1),
        Endpoint("::1", 8080, weight=5),
    )
    assert got[2].address == "[::1]:8080"


def test_srv_target_without_address_gives_nothing() -> None:
    """A target that does not resolve contributes no endpoint; no records -> empty."""
    assert srv_endpoints([SrvRecord(1, 1, 80, "gone.mesh.test")], {}) == ()
    assert srv_endpoints([], {}) == ()


def test_refresh_delay_is_bounded_by_ttl_and_one_second() -> None:
    """max(1 s, min(refresh, TTL)): TTL 0 -> 1 s; long TTL -> refresh."""
    assert refresh_delay(30.0, 0.0) == 1.0
    assert refresh_delay(30.0, 5.0) == 5.0
    assert refresh_delay(30.0, 3600.0) == 30.0
    assert refresh_delay(0.2, None) == 1.0


def test_static_source_is_ok_and_never_refreshes() -> None:
    """Static endpoints are known at once."""
    spec = StaticDiscovery((Endpoint("127.0.0.1", 1),))
    src = make_source(spec, None, 53)
    assert isinstance(src, StaticSource)
    assert src.endpoints == spec.endpoints and src.status.ok
    assert asyncio.run(src.refresh()) is None


def dead_dns_port() -> int:
    """A UDP port with nothing listening (queries time out or are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dns_failure_before_any_answer_is_a_visible_error_state() -> None:
    """No server: no endpoints, not ok, failure counted with a reason, retry within 5 s."""
    spec = DnsDiscovery("_http._tcp.pay.mesh.test", "SRV", refresh_s=30.0)
    src = make_source(spec, ["127.0.0.1"], dead_dns_port())
    assert isinstance(src, DnsSource)
    src._resolver.lifetime = 0.3
    delay = asyncio.run(src.refresh())
    assert src.endpoints == ()
    assert not src.status.ok and src.status.failures == 1
    assert src.status.last_error
    assert delay == 5.0
