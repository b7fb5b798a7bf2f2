"""The two upstreams of the mtls example, over mutual TLS (development only, stdlib only).

``payments`` and ``catalog`` each present their own certificate from ``certs/`` (made by
``meshgen certs``) and require a client certificate from the mesh CA, as a real mesh
workload would: only the sidecar, with ``certs/frontend.pem``, can call them. Each request is
answered ``200 <service>: <METHOD> <path>`` and printed on stdout with the caller's SPIFFE ID,
so you can watch that denied requests never arrive.

    python backends.py [--certs DIR] [--payments 127.0.0.1:9443] [--catalog 127.0.0.1:9444]
                       [--ready-file PATH]

``--ready-file`` gets ``{"payments": "host:port", "catalog": "host:port"}`` once both listen
(use port 0 for any free port). Stop with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent


class TlsServer(ThreadingHTTPServer):
    """Handshakes in the request thread, so one slow or failing client blocks nobody."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], name: str, context: ssl.SSLContext) -> None:
        super().__init__(address, Handler)
        self.name = name
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            print(f"{self.name}: handshake failed: {exc}", flush=True)
            return
        try:
            Handler(tls, client_address, self)
        finally:
            tls.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TlsServer

    def _reply(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        caller = _caller(self.connection)
        print(f"{self.server.name}: {self.command} {self.path} from {caller}", flush=True)
        body = f"{self.server.name}: {self.command} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _reply

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _caller(conn: Any) -> str:
    cert = conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None
    names: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ()) if cert else ()  # type: ignore[assignment]
    uris = [value for kind, value in names if kind == "URI"]
    return uris[0] if uris else "-"


def _context(certs: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certs / f"{name}.pem", certs / f"{name}-key.pem")
    ctx.load_verify_locations(certs / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--certs", type=Path, default=HERE / "certs")
    parser.add_argument("--payments", default="127.0.0.1:9443")
    parser.add_argument("--catalog", default="127.0.0.1:9444")
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    servers = [
        TlsServer(_address(args.payments), "payments", _context(args.certs, "payments")),
        TlsServer(_address(args.catalog), "catalog", _context(args.certs, "catalog")),
    ]
    bound = {}
    for server in servers:
        host, port = str(server.server_address[0]), int(server.server_address[1])
        bound[server.name] = f"{host}:{port}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"{server.name} listening on https://{host}:{port}", flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps(bound))
        os.replace(tmp, args.ready_file)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
