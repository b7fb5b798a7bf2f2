"""The HTTP/2 client codec's pure parts: the HTTP/1.1-form head as HTTP/2 fields, and a client
connection that goes on receiving the streams a GOAWAY still lets finish (sans-IO, no sockets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.codec import h2lib
from meshgen.runtime.codec.h2_client import request_fields

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
VALUE = (
    st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/.+", min_size=1, max_size=20)
    .map(str.strip)
    .filter(bool)
)
SPECIAL = {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
           "keep-alive", "proxy-connection", "content-type"}  # fmt: skip


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.lists(TOKEN, max_size=4).map(lambda p: "/" + "/".join(p)),
    host=TOKEN,
    fields=st.lists(st.tuples(TOKEN.filter(lambda n: n not in SPECIAL), VALUE), max_size=8),
    hop=st.lists(st.sampled_from(["connection: close", "te: trailers", "upgrade: ws",
                                  "transfer-encoding: chunked", "keep-alive: 5"]), max_size=3),
    grpc=st.booleans(),
    body=st.none() | st.binary(max_size=64),
)  # fmt: skip
def test_a_head_becomes_http2_fields(
    method: str,
    path: str,
    host: str,
    fields: list[tuple[str, str]],
    hop: list[str],
    grpc: bool,
    body: bytes | None,
) -> None:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"] + [f"{k}: {v}" for k, v in fields]
    lines += hop
    if grpc:
        lines.append("content-type: application/grpc+proto")
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    got, length, rest = request_fields(head, b"https")

    assert got[:4] == [(b":method", method.encode()), (b":scheme", b"https"),
                       (b":authority", host.encode()), (b":path", path.encode())]  # fmt: skip
    names = [k for k, _ in got[4:]]
    assert not {b"host", b"connection", b"upgrade", b"transfer-encoding", b"keep-alive"} & set(
        names
    )
    assert [(k, v) for k, v in got[4:] if k.decode() not in SPECIAL] == [
        (k.encode(), v.encode()) for k, v in fields
    ]
    # exactly one te, whatever the head said: trailers reach every caller
    assert [(k, v) for k, v in got if k == b"te"] == [(b"te", b"trailers")]
    if grpc:
        assert (b"content-type", b"application/grpc+proto") in got
    assert (length, rest) == ((len(body), body) if body is not None else (-1, b""))


def test_streams_below_a_goaway_still_finish() -> None:
    """A server that goes away with stream 1 as its last processed one answers it after the
    GOAWAY; the client connection receives the answer instead of a protocol error."""
    client = h2lib.connection.H2Connection(h2lib.config.H2Configuration(client_side=True))
    assert h2lib.finish_after_goaway(client)
    server = h2lib.connection.H2Connection(h2lib.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    head = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")]
    client.send_headers(1, head, end_stream=True)
    client.send_headers(3, head, end_stream=True)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the SETTINGS acknowledgements

    server.close_connection(last_stream_id=1)
    goaway = server.data_to_send()
    server.state_machine.state = h2lib.connection.ConnectionState.SERVER_OPEN  # a real server's
    server.send_headers(1, [(":status", "200")])
    server.send_data(1, b"done", end_stream=True)
    events = client.receive_data(goaway + server.data_to_send())

    kinds = [type(e) for e in events]
    assert h2lib.events.ConnectionTerminated in kinds
    assert kinds[-3:] == [h2lib.events.ResponseReceived, h2lib.events.DataReceived,
                          h2lib.events.StreamEnded]  # fmt: skip
    terminated = next(e for e in events if isinstance(e, h2lib.events.ConnectionTerminated))
    assert terminated.last_stream_id == 1


def test_without_it_h2_refuses_what_follows_a_goaway() -> None:
    """Why ``finish_after_goaway`` exists: plain ``h2`` ends the connection at GOAWAY."""
    client = h2lib.connection.H2Connection(h2lib.config.H2Configuration(client_side=True))
    server = h2lib.connection.H2Connection(h2lib.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                            (":authority", "a")], end_stream=True)  # fmt: skip
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.close_connection(last_stream_id=1)
    goaway = server.data_to_send()
    server.state_machine.state = h2lib.connection.ConnectionState.SERVER_OPEN
    server.send_headers(1, [(":status", "200")], end_stream=True)
    try:
        client.receive_data(goaway + server.data_to_send())
    except h2lib.exceptions.ProtocolError:
        return
    raise AssertionError("h2 accepted frames after GOAWAY: finish_after_goaway may go")
