"""A real dnsmasq on 127.0.0.1 for discovery tests (see ../shared/components.md).

A/AAAA records live in a hosts file inside ``--hostsdir`` that ``set_hosts`` replaces atomically
(live in ~1 ms); SRV records come from flags, so ``restart(srv)`` stops and starts dnsmasq on the
same port. Readiness is "answers a query", polled with a deadline.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
from conftest import Process, free_port, require_binary, start_process


@dataclass(frozen=True)
class Srv:
    name: str  # fully qualified, e.g. _http._tcp.pay.mesh.test
    target: str
    port: int
    priority: int = 10
    weight: int = 10


class Dnsmasq:
    """One dnsmasq serving zone ``mesh.test`` with TTL ``ttl``; stop() by PID."""

    def __init__(self, workdir: Path, ttl: int = 1) -> None:
        self.binary = require_binary("dnsmasq")
        self.workdir = workdir
        self.hostsdir = workdir / "hosts"
        self.hostsdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(socket.SOCK_DGRAM)
        self.ttl = ttl
        self.proc: Process | None = None
        self._starts = 0

    def set_hosts(self, entries: dict[str, list[str]]) -> None:
        """Replace the hosts file atomically: ``{name: [ip, ...]}``."""
        lines = [f"{ip} {name}" for name, ips in entries.items() for ip in ips]
        tmp = self.workdir / "hosts.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hostsdir / "mesh.hosts")

    def start(self, srv: list[Srv]) -> None:
        argv = [
            self.binary,
            "--keep-in-foreground",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--local=/mesh.test/",
            "--pid-file=",
            "--user=root",
            "--log-facility=-",
            f"--local-ttl={self.ttl}",
            f"--hostsdir={self.hostsdir}",
        ]
        argv += [f"--srv-host={s.name},{s.target},{s.port},{s.priority},{s.weight}" for s in srv]
        self._starts += 1
        self.proc = start_process(argv, self.workdir / f"dnsmasq-{self._starts}.log")
        self.proc.wait_until(self.answers, timeout=10.0, what="dnsmasq")

    def answers(self) -> bool:
        query = dns.message.make_query("ready.mesh.test", "A")
        try:
            dns.query.udp(query, "127.0.0.1", timeout=0.2, port=self.port)
        except (dns.exception.Timeout, OSError):
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self, srv: list[Srv]) -> None:
        self.stop()
        self.start(srv)
