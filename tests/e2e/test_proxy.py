"""`python DIST` as a proxy: routing, headers, local answers and smuggling inputs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from runtime_harness import Runtime, build_dist, run_dist, spec
from werkzeug import Request, Response

pytestmark = pytest.mark.e2e


def echo(request: Request) -> Response:
    body = f"{request.method} {request.full_path.rstrip('?')}\n".encode() + request.get_data()
    resp = Response(body, status=int(request.headers.get("x-status", "200")))
    for k in (
        "x-forwarded-for",
        "via",
        "x-request-id",
        "traceparent",
        "tracestate",
        "host",
        "x-env",
        "x-debug",
        "connection",
    ):
        if k in request.headers:
            resp.headers["echo-" + k] = request.headers[k]
    resp.headers["server"] = "backend"
    return resp


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    a, b = HTTPServer(host="127.0.0.1", port=0), HTTPServer(host="127.0.0.1", port=0)
    for s in (a, b):
        s.start()
        s.expect_request("").respond_with_handler(echo)
    yield a, b
    for s in (a, b):
        s.clear()
        s.stop()


HEADERS = """
            headers:
              request: {set: {x-env: prod}, remove: [x-debug]}
              response: {set: {x-served-by: meshgen}, remove: [server]}"""  # at route indent


@pytest.fixture(scope="module")
def proxy(
    servers: tuple[HTTPServer, HTTPServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    a, b = servers
    text = spec(
        f"""
        services:
          reviews:
            discovery: {{static: [{{address: "127.0.0.1:{a.port}"}}]}}
          ratings:
            discovery: {{static: [{{address: "127.0.0.1:{b.port}"}}]}}
          ghost:  # its only subset selects no endpoint: 503
            discovery: {{static: [{{address: "127.0.0.1:{a.port}", labels: {{v: "1"}}}}]}}
            subsets: {{gone: {{labels: {{v: "9"}}}}}}
        routes:
          - name: jason
            match: {{host: reviews, headers: {{end-user: {{exact: jason}}}}}}
            to: [{{service: ratings}}]
          - name: v2
            match: {{host: reviews, path_prefix: /v2/}}
            to: [{{service: reviews}}]
            rewrite: {{path_prefix: /api/, host: reviews.internal}}
          - name: moved
            match: {{host: reviews, path_exact: /old}}
            redirect: {{location: "https://new.example/", status: 301}}
          - name: abort
            match: {{host: reviews, path_prefix: /fault}}
            to: [{{service: reviews}}]
            fault: {{abort: {{status: 418, percent: 100}}}}
          - name: limited
            match: {{host: reviews, path_prefix: /limited}}
            to: [{{service: reviews}}]
            rate_limit: {{requests_per_second: 0.001, burst: 2}}
          - name: reviews
            match: {{host: reviews}}
            to: [{{service: reviews}}]{HEADERS}
          - name: reviews-fq
            match: {{host: reviews.mesh.test}}
            to: [{{service: reviews}}]{HEADERS}
          - name: nobody
            match: {{host: nobody}}
            to: [{{service: ghost, subset: gone}}]
        """
    )
    dist = build_dist(tmp_path_factory.mktemp("proxy") / "dist", text)
    with run_dist(dist) as rt:
        yield rt


def test_host_routing_and_headers(proxy: Runtime) -> None:
    """Host match ignores case/port/dot; XFF, Via, x-request-id added; trace headers untouched."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, hdrs, body = proxy.request(
        "GET",
        "/a/./b/../c?q=1",
        "Reviews.Mesh.Test.:99",
        {"traceparent": tp, "x-debug": "1", "X-Forwarded-For": "10.0.0.1"},
    )
    assert status == 200
    assert body == b"GET /a/c?q=1\n"
    assert hdrs["echo-traceparent"] == tp
    assert hdrs["echo-x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert "meshgen" in hdrs["echo-via"]
    assert hdrs["echo-x-request-id"]
    assert hdrs["echo-x-env"] == "prod"
    assert "echo-x-debug" not in hdrs
    assert hdrs["x-served-by"] == "meshgen"
    assert "server" not in hdrs


def test_request_id_kept(proxy: Runtime) -> None:
    """A client's x-request-id passes through unchanged."""
    _, hdrs, _ = proxy.request("GET", "/", "reviews", {"x-request-id": "abc-123"})
    assert hdrs["echo-x-request-id"] == "abc-123"


def test_header_match_routes_elsewhere(
    proxy: Runtime, servers: tuple[HTTPServer, HTTPServer]
) -> None:
    """A header-matched route wins over the later catch-all for the same host."""
    before = len(servers[1].log)
    status, _, _ = proxy.request("GET", "/x", "reviews", {"end-user": "jason"})
    assert status == 200 and len(servers[1].log) == before + 1


def test_rewrite_prefix_and_host(proxy: Runtime) -> None:
    """rewrite.path_prefix replaces the matched prefix; rewrite.host replaces Host."""
    _, hdrs, body = proxy.request("GET", "/v2/items?x", "reviews")
    assert body == b"GET /api/items?x\n"
    assert hdrs["echo-host"] == "reviews.internal"


def test_local_answers(proxy: Runtime) -> None:
    """No route 404 names the host; redirect; fault abort; no endpoint 503; rate limit 429."""
    status, _, body = proxy.request("GET", "/", "unknown.example")
    assert status == 404 and b"unknown.example" in body
    status, hdrs, _ = proxy.request("GET", "/old", "reviews")
    assert status == 301 and hdrs["location"] == "https://new.example/"
    assert proxy.request("GET", "/fault", "reviews")[0] == 418
    assert proxy.request("GET", "/", "nobody")[0] == 503
    codes = [proxy.request("GET", "/limited", "reviews")[:2] for _ in range(4)]
    assert [c for c, _ in codes][:2] == [200, 200]
    assert codes[-1][0] == 429 and int(codes[-1][1]["retry-after"]) >= 1


def test_post_body_and_chunked(proxy: Runtime) -> None:
    """Bodies pass through, with Content-Length and chunked framing."""
    status, _, body = proxy.request("POST", "/p", "reviews", body=b"hello")
    assert status == 200 and body == b"POST /p\nhello"
    raw = proxy.raw(
        b"POST /c HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"POST /c\nhello world")


def test_keep_alive_many_requests(proxy: Runtime) -> None:
    """Several requests on one downstream connection, all answered in order."""
    req = b"GET /k%d HTTP/1.1\r\nHost: reviews\r\n\r\n"
    data = (
        b"".join(req % i for i in range(5))
        + b"GET /last HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n"
    )
    out = proxy.raw(data)
    assert out.count(b"HTTP/1.1 200") == 6
    assert out.index(b"GET /k0") < out.index(b"GET /k4") < out.index(b"GET /last")


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: reviews\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: reviews\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: reviews\r\nHost: other\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=["cl-and-te", "two-cl", "bad-chunk", "space-in-path", "bad-escape", "two-hosts", "no-host"],
)
def test_smuggling_inputs_rejected(proxy: Runtime, raw: bytes) -> None:
    """Ambiguous framing and invalid targets get 400 and the connection is closed."""
    out = proxy.raw(raw + b"GET /second HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert b"/second" not in out
