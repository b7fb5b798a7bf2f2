"""A tcp listener's forwarding decision (policy/tcp_route.py): the weighted target of ``to``,
the ``sni`` service of a server name, and every service a connection can reach."""

from __future__ import annotations

import random
from collections import Counter

from meshgen.runtime.policy.tcp_route import TcpPick, TcpRoute
from meshgen.runtime.tables import (
    Cluster,
    Failover,
    Listener,
    SniRoute,
    StaticDiscovery,
    TcpTarget,
)


def _cluster(name: str, backup: str | None = None) -> Cluster:
    return Cluster(name, StaticDiscovery(()), protocol="tcp", failover=Failover(backup=backup))


CLUSTERS = {c.name: c for c in (_cluster("a", backup="dr"), _cluster("b"), _cluster("dr"))}


def _listener(**kw: object) -> Listener:
    return Listener("l", "127.0.0.1", 0, (), protocol="tcp", **kw)  # type: ignore[arg-type]


def test_weighted_targets_by_a_seeded_draw() -> None:
    """30/70 over 10,000 draws lands within 4 sigma (sigma ~ 46); weight 0 is never drawn."""
    targets = (TcpTarget("a", None, 30), TcpTarget("b", "v2", 70), TcpTarget("dr", None, 0))
    route = TcpRoute(_listener(to=targets), CLUSTERS, random.Random(5))
    drawn = Counter(route.pick() for _ in range(10_000))
    assert set(drawn) == {TcpPick("a"), TcpPick("b", "v2")}
    assert abs(drawn[TcpPick("a")] - 3000) < 4 * 46
    assert not route.reads_hello


def test_one_target_needs_no_draw() -> None:
    rng = random.Random(1)
    route = TcpRoute(_listener(to=(TcpTarget("b", None, 100),)), CLUSTERS, rng)
    state = rng.getstate()
    assert route.pick() == TcpPick("b")
    assert rng.getstate() == state


def test_sni_names_pick_services_and_nothing_else_goes() -> None:
    sni = (SniRoute("*.internal.test", "b"), SniRoute("api.example.com", "a"))
    route = TcpRoute(_listener(sni=sni), CLUSTERS, random.Random(1))
    assert route.reads_hello
    assert route.pick("API.example.com") == TcpPick("a")
    assert route.pick("x.internal.test") == TcpPick("b")
    assert route.pick("example.com") is None
    assert route.pick(None) is None


def test_services_include_failover_backups() -> None:
    """Access must admit a caller to every service a connection may reach."""
    route = TcpRoute(_listener(to=(TcpTarget("a", None, 100),)), CLUSTERS, random.Random(1))
    assert route.services == ("a", "dr")
