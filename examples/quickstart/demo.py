"""Quickstart demo: two tiny backends, a build of mesh.yaml, and the mesh running in front.

    python examples/quickstart/demo.py            # Ctrl-C stops everything

Starts two standard-library HTTP backends on 127.0.0.1:9081 and :9082 (the endpoints in
mesh.yaml), runs ``meshgen build`` into examples/quickstart/dist and then ``python dist``,
and prints curl commands to try. Every answer says which backend served it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
BACKENDS = (("backend-1", 9081), ("backend-2", 9082))


def backend(name: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering every GET with its own name."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello from {name} ({self.path})\n".encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop like Ctrl-C: clean up below
    servers = [backend(name, port) for name, port in BACKENDS]
    print("backends: " + ", ".join(f"{n} on 127.0.0.1:{p}" for n, p in BACKENDS))
    dist = HERE / "dist"
    build = [sys.executable, "-m", "meshgen", "build", str(HERE / "mesh.yaml"), "-o", str(dist)]
    if subprocess.run(build, check=False).returncode != 0:
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        mesh = subprocess.Popen([sys.executable, str(dist), "--ready-file", str(ready)])
        try:
            deadline = time.monotonic() + 15
            while not ready.exists() and mesh.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not ready.exists():
                print("the mesh did not start; see its output above", file=sys.stderr)
                return 1
            print(f"mesh is up: {json.loads(ready.read_text())}")
            print("try (answers alternate between the two backends):")
            print("  curl -s http://127.0.0.1:15001/")
            print("  curl -s http://127.0.0.1:15001/")
            print("  curl -s http://127.0.0.1:15000/metrics | grep meshgen_requests_total")
            print("Ctrl-C stops the mesh and the backends.")
            mesh.wait()
        except KeyboardInterrupt:
            pass
        finally:
            mesh.terminate()
            mesh.wait(5)
            for server in servers:
                server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
