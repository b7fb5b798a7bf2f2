"""E403-E409, W401-W402: discovery, subsets, zones, bind addresses and backup cycles."""

from __future__ import annotations

import pytest

from tests.unit.h2_mesh import ONE_SERVICE, codes, diagnose

DNS = "services:\n  pay:\n    discovery: {dns: {name: pay}}\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", []),
        ("    subsets: {v1: {labels: {version: v1}}}\n", ["E403"]),
        ("    failover: {zones: [a]}\n", ["W405", "E404"]),
    ],
)
def test_dns_services_have_no_labels_or_zones(extra: str, expected: list[str]) -> None:
    """Subsets and zones need static endpoints."""
    assert codes(DNS + extra) == expected


@pytest.mark.parametrize(
    ("dns", "expected"),
    [
        ("{name: pay, type: A, port: 80}", []),
        ("{name: pay, type: A}", ["E405"]),
        ("{name: pay.example.com, type: AAAA}", ["E405"]),
        ("{name: pay}", []),
    ],
)
def test_address_records_need_a_port(dns: str, expected: list[str]) -> None:
    """A/AAAA records carry no port; SRV records do."""
    assert codes(f"services:\n  pay:\n    discovery: {{dns: {dns}}}\n") == expected


def test_dotless_dns_name_needs_a_domain() -> None:
    """E409 without mesh.domain; a dotted name is fine."""
    head = "version: 1\nmesh: {name: shop}\n"
    assert codes(head + DNS) == ["E409"]
    assert codes(head + "services:\n  pay: {discovery: {dns: {name: pay.example.com}}}\n") == []


STATIC = """
services:
  reviews:
    discovery:
      static:
        - {address: 127.0.0.1:9081, zone: a, labels: {version: v1}}
        - {address: 127.0.0.1:9082, zone: b, labels: {version: v2, track: canary}}
"""


@pytest.mark.parametrize(
    ("subsets", "expected"),
    [
        ("{v1: {labels: {version: v1}}, all: {labels: {}}}", []),
        ("{c: {labels: {version: v2, track: canary}}}", []),
        ("{v3: {labels: {version: v3}}}", ["W401"]),
        ("{x: {labels: {version: v1, track: canary}}}", ["W401"]),
    ],
)
def test_subsets_should_select_an_endpoint(subsets: str, expected: list[str]) -> None:
    """A subset whose labels no static endpoint has is a warning."""
    assert codes(STATIC + f"    subsets: {subsets}\n") == expected


def test_failover_zone_without_endpoints_warns() -> None:
    """W402 for a zone no endpoint is in."""
    diags = diagnose(STATIC + "    failover: {zones: [a, c]}\n    outlier_detection: {}\n")
    assert [d.code for d in diags] == ["W402"]
    assert diags[0].hint == "known zones: a, b"


@pytest.mark.parametrize(
    ("listeners", "admin", "expected"),
    [
        (["127.0.0.1:8001", "127.0.0.1:8002"], "127.0.0.1:8003", []),
        (["127.0.0.1:0", "127.0.0.1:0"], "127.0.0.1:0", []),
        (["127.0.0.1:8001", "127.0.0.2:8001"], None, []),
        (["127.0.0.1:8001", "127.0.0.1:8001"], None, ["E407"]),
        (["0.0.0.0:8001", "127.0.0.1:8001"], None, ["E407"]),
        (["127.0.0.1:15000"], None, ["E407"]),
        (["[::1]:8001"], "[::1]:8001", ["E407"]),
        (["localhost:8001", "127.0.0.1:8001"], None, ["E407"]),
        (["[::1]:8001", "localhost:8001"], None, ["E407"]),
        (["0.0.0.0:8001", "localhost:8001"], None, ["E407"]),
        (["[::]:8001", "127.0.0.1:8001"], None, ["E407"]),
        (["[::]:8001", "[::1]:8001"], None, ["E407"]),
        (["[0:0:0:0:0:0:0:1]:8001", "[::1]:8001"], None, ["E407"]),
        (["[::ffff:127.0.0.1]:8001", "127.0.0.1:8001"], None, ["E407"]),
        (["LocalHost:8001"], "127.0.0.1:8001", ["E407"]),
        (["myhost:8001", "0.0.0.0:8001"], None, ["E407"]),
        (["myhost:8001", "127.0.0.1:8001"], None, []),
        (["localhost:8001", "127.0.0.2:8001"], None, []),
        (["0.0.0.0:8001", "[::1]:8001"], None, []),
        (["localhost:8001", "localhost:8002"], None, []),
    ],
)
def test_bind_addresses_must_differ(
    listeners: list[str], admin: str | None, expected: list[str]
) -> None:
    """Two listeners, or a listener and the admin server, cannot bind the same address."""
    spec = (
        ONE_SERVICE
        + "listeners:\n"
        + "".join(f"  - {{name: l{i}, address: '{a}'}}\n" for i, a in enumerate(listeners))
    )
    if admin is not None:
        spec += f"admin: '{admin}'\n"
    assert codes(spec) == expected


def test_default_edge_clashes_with_admin() -> None:
    """The implied edge listener (15001) counts too."""
    diags = diagnose(ONE_SERVICE + "admin: 127.0.0.1:15001\n")
    assert [d.code for d in diags] == ["E407"]
    assert diags[0].message == "the admin server and listener 'edge' both bind 127.0.0.1:15001"


def test_alias_clash_names_both_spellings() -> None:
    """An alias clash shows both addresses and explains what the names stand for."""
    diags = diagnose(
        ONE_SERVICE + "listeners:\n  - {name: edge, address: 127.0.0.1:8001}\n"
        "  - {name: local, address: localhost:8001}\n"
    )
    assert [d.code for d in diags] == ["E407"]
    assert diags[0].message == (
        "listener 'local' binds localhost:8001, which overlaps 127.0.0.1:8001 of listener 'edge'"
    )
    assert diags[0].hint is not None and "'localhost' is 127.0.0.1 and ::1" in diags[0].hint


def test_duplicate_listener_names() -> None:
    """E408 at the second listener's name."""
    spec = (
        ONE_SERVICE
        + "listeners:\n  - {name: l, address: 127.0.0.1:0}\n  - {name: l, address: 127.0.0.1:0}\n"
    )
    assert codes(spec) == ["E408"]


CYCLE = """
services:
  a: {discovery: {static: [{address: 127.0.0.1:1}]}, failover: {backup: b}, outlier_detection: {}}
  b: {discovery: {static: [{address: 127.0.0.1:2}]}, failover: {backup: c}, outlier_detection: {}}
  c: {discovery: {static: [{address: 127.0.0.1:3}]}, failover: {backup: a}, outlier_detection: {}}
  d: {discovery: {static: [{address: 127.0.0.1:4}]}, failover: {backup: a}, outlier_detection: {}}
  e: {discovery: {static: [{address: 127.0.0.1:5}]}, failover: {backup: e}, outlier_detection: {}}
"""


def test_backup_cycles_name_every_member() -> None:
    """One error per cycle, at its first member, with the others as related spans."""
    diags = diagnose(CYCLE)
    assert [d.code for d in diags] == ["E406", "E406"]
    three, self_loop = diags
    assert three.message == "failover backups form a cycle: a -> b -> c -> a"
    assert three.span.line == 5
    assert [(r.span.line, r.message) for r in three.related] == [
        (6, "'b' fails over to 'c'"),
        (7, "'c' fails over to 'a'"),
    ]
    assert self_loop.message == "failover backups form a cycle: e -> e"


def test_backup_chain_without_cycle_is_fine() -> None:
    """A chain that ends is allowed."""
    assert (
        codes(
            CYCLE.replace(
                "backup: a}, outlier_detection: {}}\n  d", "backup: d}, outlier_detection: {}}\n  d"
            )
            .replace("{backup: a}, outlier_detection: {}}\n  e", "{}}\n  e")
            .replace("{backup: e}", "{}")
        )
        == []
    )


def test_srv_discovery_with_a_port_is_an_error() -> None:
    """E413: SRV records carry the port, so a written port would be silently ignored."""
    text = "services:\n  pay:\n    discovery: {dns: {name: pay, port: 8080}}\n"
    (diag,) = diagnose(text)
    assert diag.code == "E413" and "sets port 8080" in diag.message
    assert diag.span.line == 5  # the `port` key, after the two HEAD lines
    assert codes(text.replace("name: pay,", "name: pay, type: A,")) == []


def test_duplicate_static_endpoint_warns() -> None:
    """W404 on the second listing (IPs compared canonically), pointing at the first."""
    text = (
        "services:\n  pay:\n    discovery:\n      static:\n"
        "        - {address: '[::1]:80'}\n        - {address: 127.0.0.1:80}\n"
        "        - {address: '[0:0::1]:80', weight: 3}\n"
    )
    (diag,) = diagnose(text)
    assert diag.code == "W404" and diag.severity == "warning"
    assert diag.message == "endpoint [0:0::1]:80 of service 'pay' is listed twice (as [::1]:80)"
    assert diag.span.line == 9 and diag.related[0].span.line == 7
    assert diag.hint is not None and "'weight: 4'" in diag.hint


def test_same_address_in_two_services_is_fine() -> None:
    text = (
        "services:\n  a:\n    discovery: {static: [{address: 127.0.0.1:80}]}\n"
        "  b:\n    discovery: {static: [{address: 127.0.0.1:80}]}\n"
    )
    assert codes(text) == []
