"""DNS discovery against huge and hostile answers, on a real `python DIST`.

dnsmasq serves a name with 3,000 A records (an answer of 48 KiB: truncated over UDP, whole over
TCP); a small DNS server written here (``HOSTILE_DNS``, dnspython on UDP) answers an SRV query
with targets whose own lookups it never answers, and another name only with truncated answers
on a server that has no TCP. Each case must end in a clear state within a bound: every endpoint
of the huge answer, or the discovery error on ``/config``'s neighbour ``/status`` and a 503,
never a runtime that hangs at start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns_server import Dnsmasq
from runtime_harness import Runtime, build_dist, run_dist, script_backend, spec
from test_proxy_semantics import samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

HOSTILE_DNS = """
import socket, sys
import dns.flags, dns.message, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65535)
    query = dns.message.from_wire(data)
    name = query.question[0].name.to_text()
    answer = dns.message.make_response(query)
    if name.startswith("_http._tcp.unresolved."):  # 20 targets, never answered below
        records = [f"10 10 {8000 + i} t{i}.unresolved.mesh.test." for i in range(20)]
        answer.answer.append(dns.rrset.from_text(name, 5, "IN", "SRV", *records))
    elif name.startswith("truncated."):
        answer.flags |= dns.flags.TC  # and no TCP to retry on
    else:
        continue  # silence: the resolver's lifetime ends the wait
    s.sendto(answer.to_wire(), peer)
"""


def rss_and_cpu(pid: int) -> tuple[int, float]:
    """(VmRSS in KiB, user+system CPU seconds) of ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / 100


@pytest.fixture(scope="module")
def big_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path_factory.mktemp("dns"), ttl=1)
    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(1, 3001)]
    server.set_hosts({"big.mesh.test": ips})
    server.start([])
    try:
        yield server
    finally:
        server.stop()


def test_a_huge_answer_gives_every_endpoint_at_a_bounded_cost(
    big_dns: Dnsmasq, tmp_path: Path
) -> None:
    """3,000 A records, refreshed every second (TTL 1): all 3,000 become endpoints, and over
    the next 3 s of refreshes the runtime uses less than half a core and its memory stays
    within 32 MiB (the answer is read whole, over TCP, as dnspython retries a truncated one)."""
    text = spec(
        """
        services:
          big: {discovery: {dns: {name: big, type: A, port: 8080, refresh: 1s}}}
        routes:
          - {name: big, match: {host: big}, to: [{service: big}]}
        """
    )
    dist = build_dist(tmp_path / "dist", text)
    with run_dist(dist, "--dns-server", f"127.0.0.1:{big_dns.port}") as rt:
        assert endpoints(rt, "big") == 3000
        rss, cpu = rss_and_cpu(rt.proc.pid)
        time.sleep(3)
        rss_after, cpu_after = rss_and_cpu(rt.proc.pid)
        assert endpoints(rt, "big") == 3000
    assert cpu_after - cpu < 1.5, cpu_after - cpu
    assert rss_after - rss < 32 * 1024, (rss, rss_after)


def endpoints(rt: Runtime, service: str) -> int:
    return sum(1 for lab, _ in samples(rt, "meshgen_endpoint_healthy") if lab["service"] == service)


@pytest.fixture(scope="module")
def hostile_dns() -> Iterator[str]:
    with script_backend(HOSTILE_DNS) as (address, _):
        yield address


ERRORS = {
    "unresolved": "Timeout: the resolution took over 5 s",
    "truncated": "Connection refused",  # dnspython retried over TCP, as it should
}


@pytest.mark.parametrize("service", sorted(ERRORS))
def test_a_hostile_answer_is_a_visible_failure_within_a_bound(
    hostile_dns: str, tmp_path: Path, service: str
) -> None:
    """SRV targets whose lookups are never answered (20 of them, 2 s each if waited for one
    after another: 80 s before this was fixed), or only truncated answers with no TCP to retry
    on: the runtime is serving within 10 s of start, the service answers 503, and ``/status``
    shows why."""
    kind = "SRV" if service == "unresolved" else "A, port: 8080"
    text = spec(
        f"""
        services:
          {service}: {{discovery: {{dns: {{name: {service}, type: {kind}}}}}}}
        routes:
          - {{name: {service}, match: {{host: {service}}}, to: [{{service: {service}}}]}}
        """
    )
    dist = build_dist(tmp_path / "dist", text)
    started = time.monotonic()
    with run_dist(dist, "--dns-server", hostile_dns, timeout=30) as rt:
        assert time.monotonic() - started < 10
        status, _, _ = rt.request("GET", "/", service)
        assert status == 503
        page = rt.admin("/status")
        assert f'data-service="{service}" data-serving="0"' in page
        assert ERRORS[service] in page, page[page.find("discovery dns") :][:400]
