"""Request smuggling and desync: hostile request framing sent to `python DIST` with nginx behind.

Two case sets, each request sent alone on a fresh connection:

- **http-desync-guardian** (``tests/data/http-desync-guardian``, Apache-2.0, see its README):
  158 request heads with the verdict HTTP Desync Guardian gives them. Each head is followed by
  ``0\\r\\n\\r\\nGET /smuggled ...``, a body that ends a chunked message and then starts another
  request. Every ``Ambiguous`` or ``Severe`` case must get 400 (or 501 for a transfer-coding the
  proxy does not implement) and a closed connection, and nothing may reach the backend.
- **Mutations in the style of defparam/smuggler** (:func:`mutations`, written here): CL.TE and
  TE.CL payloads whose Transfer-Encoding header is obfuscated in one of the ways smuggler tries
  (spacing, case, control characters, duplicate and comma-joined values, look-alike names).
  Each carries a second request that only a front and a back end disagreeing on the framing
  would split off. All must be refused with 400/501 and a closed connection.

For every case, the requests nginx logs must be exactly the requests the proxy sent it
(``meshgen_upstream_requests_total``): a desync would show as an extra request or a garbage 400
in nginx's log.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Process, free_port, require_binary, start_process
from polling import eventually
from runtime_harness import Runtime, build_dist, run_dist, spec
from test_proxy_semantics import samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DATA = Path(__file__).resolve().parents[1] / "data" / "http-desync-guardian"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: desync\r\n\r\n"
REFUSED = (400, 501)

NGINX = """daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err;
events {{ worker_connections 256; }}
http {{ log_format desync '$status $request'; access_log {d}/access.log desync;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "nginx $request_uri\\n"; }} }} }}
"""


@dataclass
class Stack:
    """`python DIST` in front of nginx, and nginx's access log."""

    proxy: Runtime
    nginx_log: Path

    def forwarded(self) -> float:
        return sum(v for _, v in samples(self.proxy, "meshgen_upstream_requests_total"))

    def logged(self) -> list[str]:
        return self.nginx_log.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("desync")
    port = free_port()
    (folder / "nginx.conf").write_text(NGINX.format(d=folder, port=port))
    nginx: Process = start_process(
        [require_binary("nginx"), "-c", folder / "nginx.conf"], folder / "nginx.out"
    )
    try:
        nginx.wait_until(lambda: _accepts(port), what="nginx")
        text = spec(
            f"""
            services:
              echo: {{discovery: {{static: [{{address: "127.0.0.1:{port}"}}]}}}}
            routes:
              - {{name: echo, match: {{path_prefix: /}}, to: [{{service: echo}}]}}
            """
        )
        with run_dist(build_dist(folder / "dist", text)) as rt:
            yield Stack(rt, folder / "access.log")
    finally:
        nginx.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def exchange(rt: Runtime, raw: bytes, quiet: float = 0.3) -> tuple[list[int], bool]:
    """Send ``raw`` on a fresh connection; the statuses that came back and whether the proxy
    closed the connection (else nothing more came for ``quiet`` seconds)."""
    out, closed = rt.converse(raw, quiet)
    return [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)], closed


def check(stack: Stack, raw: bytes, must_refuse: bool) -> None:
    """One case: refused with a closed connection when it must be, and nginx logged exactly
    what the proxy sent it."""
    forwarded, logged = stack.forwarded(), len(stack.logged())
    statuses, closed = exchange(stack.proxy, raw)
    if must_refuse:
        assert statuses[:1] and statuses[0] in REFUSED and closed, (statuses, closed, raw)

    def agree() -> list[str]:
        sent, seen = stack.forwarded() - forwarded, stack.logged()[logged:]
        assert sent == len(seen), f"proxy sent {sent}, nginx saw {seen}: {raw!r}"
        return seen or ["(nothing)"]

    seen = eventually(agree, timeout=2, what="nginx to log what the proxy sent")
    if must_refuse:
        assert seen == ["(nothing)"], seen


# --- http-desync-guardian ---------------------------------------------------------------------


def _cases() -> list[Any]:
    cases = []
    for path in sorted(DATA.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8")):
            cases.append(pytest.param(case, id=f"{path.stem}:{case['name']}"))
    return cases


def guardian_request(case: dict[str, Any]) -> bytes:
    """The case's head, then the smuggling body."""
    version = str(case.get("version") or "")
    line = f"{case['method']} {case['uri']}" + (f" {version}" if version else "")
    head = [line]
    for header in case.get("headers") or ():
        head.append(f"{header['name']}: {header['value']}")
    has_host = any(str(h["name"]).lower() == "host" for h in case.get("headers") or ())
    if version == "HTTP/1.1" and not has_host:
        head.insert(1, "Host: desync")
    return b"".join(map(_wire, head)) + b"\r\n0\r\n\r\n" + SMUGGLED


def _wire(line: str) -> bytes:
    """A head line as bytes: ``\\xNN`` escapes of the YAML as single bytes, other characters
    (a long s or a horizontal bar in a name) in UTF-8."""
    try:
        return line.encode("latin-1") + b"\r\n"
    except UnicodeEncodeError:
        return line.encode("utf-8") + b"\r\n"


@pytest.mark.parametrize("case", _cases())
def test_desync_guardian_case(stack: Stack, case: dict[str, Any]) -> None:
    tier = case["expected"]["tier"]
    check(stack, guardian_request(case), must_refuse=tier in ("Ambiguous", "Severe"))


# --- smuggler-style mutations -----------------------------------------------------------------

TE_MUTATIONS: dict[str, bytes] = {
    "plain": b"Transfer-Encoding: chunked",
    "no-space": b"Transfer-Encoding:chunked",
    "space-before-colon": b"Transfer-Encoding : chunked",
    "tab-before-colon": b"Transfer-Encoding\t: chunked",
    "tab-value": b"Transfer-Encoding:\tchunked",
    "vtab-value": b"Transfer-Encoding:\x0bchunked",
    "formfeed-value": b"Transfer-Encoding:\x0cchunked",
    "cr-value": b"Transfer-Encoding:\rchunked",
    "trailing-vtab": b"Transfer-Encoding: chunked\x0b",
    "trailing-nul": b"Transfer-Encoding: chunked\x00",
    "leading-space-name": b" Transfer-Encoding: chunked",
    "folded-into-previous": b"X-Filler: x\r\n Transfer-Encoding: chunked",
    "folded-value": b"Transfer-Encoding:\r\n chunked",
    "bare-lf": b"Transfer-Encoding: chunked\nX-Filler: x",
    "upper-case": b"TRANSFER-ENCODING: CHUNKED",
    "mixed-case-value": b"Transfer-Encoding: cHuNkEd",
    "xchunked": b"Transfer-Encoding: xchunked",
    "chunked-suffix": b"Transfer-Encoding: chunkedx",
    "quoted": b'Transfer-Encoding: "chunked"',
    "parameter": b"Transfer-Encoding: chunked;x=1",
    "identity-first": b"Transfer-Encoding: identity, chunked",
    "identity-last": b"Transfer-Encoding: chunked, identity",
    "empty-first": b"Transfer-Encoding: , chunked",
    "twice-second-bogus": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
    "twice-first-bogus": b"Transfer-Encoding: x\r\nTransfer-Encoding: chunked",
    "underscore-name": b"Transfer_Encoding: chunked",
    "dot-name": b"Transfer.Encoding: chunked",
    "joined-name": b"TransferEncoding: chunked",
    "nul-in-name": b"Transfer-\x00Encoding: chunked",
    "dotless-i-name": "Transfer-Encod\u0131ng: chunked".encode(),
    "long-s-name": "Tran\u017ffer-Encoding: chunked".encode(),
}


def mutations() -> list[Any]:
    """CL.TE, TE.CL and CL.CL payloads, each smuggling :data:`SMUGGLED` past one reading."""
    head = b"POST /mutation HTTP/1.1\r\nHost: desync\r\n"
    cases = []
    for name, te in TE_MUTATIONS.items():
        # CL.TE: by Content-Length the smuggled request is body; by Transfer-Encoding it follows
        # an empty chunked body.
        body = b"0\r\n\r\n" + SMUGGLED
        raw = head + b"Content-Length: %d\r\n%s\r\n\r\n%s" % (len(body), te, body)
        cases.append(pytest.param(raw, id=f"CL.TE-{name}"))
        # TE.CL: by Transfer-Encoding the smuggled request is chunk data; by Content-Length
        # (the chunk-size line) it follows the body.
        size = b"%x\r\n" % len(SMUGGLED)
        raw = head + b"Content-Length: %d\r\n%s\r\n\r\n%s%s\r\n0\r\n\r\n" % (
            len(size),
            te,
            size,
            SMUGGLED,
        )
        cases.append(pytest.param(raw, id=f"TE.CL-{name}"))
    for name, lengths in {"differing": (6, 5), "comma-joined": None}.items():
        body = b"0\r\n\r\n" + SMUGGLED
        cl = (
            b"Content-Length: %d\r\nContent-Length: %d" % lengths
            if lengths
            else b"Content-Length: %d, 5" % len(body)
        )
        cases.append(pytest.param(head + cl + b"\r\n\r\n" + body, id=f"CL.CL-{name}"))
    return cases


@pytest.mark.parametrize("raw", mutations())
def test_smuggler_mutation(stack: Stack, raw: bytes) -> None:
    check(stack, raw, must_refuse=True)
