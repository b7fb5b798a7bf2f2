"""The ClientHello server-name reader (codec/sni.py): any bytes in, a name, None or NEED_MORE
out, never an exception; the answer never changes once given, and never waits past MAX_INPUT.

Real ClientHellos come from CPython's ssl module writing into a memory BIO (TLS 1.2 and 1.3
clients), so the reader is tested on what clients actually send, whole, cut at every byte,
re-split into tiny records and mutated by hypothesis.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.runtime.codec.sni import MAX_HELLO, MAX_INPUT, NEED_MORE, server_name


def client_hello(name: str | None, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The first flight a real TLS client sends to ``name`` (None: no SNI)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def records(message: bytes, size: int) -> bytes:
    """A handshake message in records of at most ``size`` bytes."""
    out = b""
    for i in range(0, len(message), size):
        chunk = message[i : i + size]
        out += bytes([22, 3, 1]) + len(chunk).to_bytes(2) + chunk
    return out


def extensions_at(hello: bytes) -> int:
    """Where the extensions block of a one-record hello starts."""
    pos = 5 + 4 + 2 + 32
    pos += 1 + hello[pos]  # session id
    pos += 2 + int.from_bytes(hello[pos : pos + 2])  # cipher suites
    return pos + 1 + hello[pos]  # compression methods


HELLO = client_hello("api.example.com")
MESSAGE = HELLO[5:]  # one record: the handshake message


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_real_client_hellos(maximum: ssl.TLSVersion) -> None:
    assert server_name(client_hello("api.example.com", maximum)) == "api.example.com"
    assert server_name(client_hello("Db.Internal.TEST", maximum)) == "db.internal.test"
    assert server_name(client_hello(None, maximum)) is None  # no server_name extension
    assert server_name(client_hello("127.0.0.1", maximum)) is None  # IPs are never sent


def test_every_prefix_waits_until_the_name_is_in() -> None:
    """NEED_MORE until the extension is complete, the name from then on (not the whole hello)."""
    answers = [server_name(HELLO[:n]) for n in range(len(HELLO) + 1)]
    first = answers.index("api.example.com")
    assert set(answers[:first]) == {NEED_MORE}
    assert set(answers[first:]) == {"api.example.com"}
    assert first < len(HELLO)


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_a_hello_split_over_tiny_records(size: int) -> None:
    split = records(MESSAGE, size)
    assert server_name(split) == "api.example.com"
    last = MESSAGE.index(b"api.example.com") + len("api.example.com") - 1  # its last byte
    at = (last // size) * (size + 5) + 5 + last % size  # where it lies in ``split``
    assert server_name(split[:at]) is NEED_MORE
    assert server_name(split[: at + 1]) == "api.example.com"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", NEED_MORE),
        (b"\x16", NEED_MORE),
        (b"\x16\x03\x01\x00", NEED_MORE),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),  # not TLS
        (b"\x17\x03\x03\x00\x10", None),  # application data first
        (b"\x16\x02\x00\x00\x10", None),  # record version 2.x
        (b"\x16\x03\x01\x00\x00", None),  # empty record
        (b"\x16\x03\x01\x40\x01", None),  # record above 2^14
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", None),  # a ServerHello
        (b"\x80\x2e\x01\x00\x02", None),  # SSLv2-style hello
    ],
)
def test_not_a_client_hello(data: bytes, expected: object) -> None:
    assert server_name(data) is expected


def _with_name(raw: bytes) -> bytes:
    """HELLO with its host name replaced by ``raw``, every enclosing length fixed up."""
    old = b"api.example.com"
    at = HELLO.index(old)
    grow = len(raw) - len(old)
    extensions = extensions_at(HELLO)
    out = bytearray(HELLO[:at] + raw + HELLO[at + len(old) :])
    # record, handshake, extensions block, extension, name list, host name
    for offset, size in ((3, 2), (6, 3), (extensions, 2), (at - 7, 2), (at - 5, 2), (at - 2, 2)):
        value = int.from_bytes(out[offset : offset + size]) + grow
        out[offset : offset + size] = value.to_bytes(size)
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"a.b", "a.b"),
        (b"x" * 63 + b".test", "x" * 63 + ".test"),
        (b"x" * 64 + b".test", None),  # label longer than 63
        (b"api.example.com.", None),  # trailing dot (RFC 6066)
        (b"a..b", None),
        (b"-a.b", None),
        (b"a b", None),
        (b"caf\xc3\xa9.test", None),  # not ASCII
        (b"a\x00.test", None),
    ],
)
def test_host_name_must_be_a_dns_name(name: bytes, expected: str | None) -> None:
    assert server_name(_with_name(name)) == expected


def test_a_huge_hello_is_refused_without_waiting_for_it() -> None:
    header = b"\x01" + (MAX_HELLO + 1).to_bytes(3)
    assert server_name(b"\x16\x03\x01\x00\x04" + header) is None


def test_tiny_records_cannot_stretch_the_buffer() -> None:
    """A largest-allowed hello whose name would come last, in one-byte records: NEED_MORE
    up to MAX_INPUT bytes, then refused."""
    prefix = HELLO[9 : extensions_at(HELLO)]
    pad = MAX_HELLO - len(prefix) - 2 - 4
    body = prefix + (pad + 4).to_bytes(2) + b"\x00\x15" + pad.to_bytes(2) + b"\x00" * pad
    split = records(b"\x01" + len(body).to_bytes(3) + body, 1)
    assert len(split) > MAX_INPUT
    assert server_name(split[: MAX_INPUT - 1]) is NEED_MORE
    assert server_name(split[:MAX_INPUT]) is None


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_any_bytes_give_an_answer(data: bytes) -> None:
    result = server_name(data)
    assert result is None or result is NEED_MORE or isinstance(result, str)


def _mutations() -> st.SearchStrategy[bytes]:
    """A real hello with a few bytes overwritten, cut short or extended."""
    edits = st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=4)
    return st.tuples(edits, st.integers(0, len(HELLO)), st.binary(max_size=64)).map(
        lambda t: _apply(*t)
    )


def _apply(edits: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    out = bytearray(HELLO)
    for at, value in edits:
        out[at] = value
    return bytes(out[:cut]) + tail


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=600), _mutations()), st.data())
def test_an_answer_never_changes_as_more_bytes_arrive(data: bytes, draw: st.DataObject) -> None:
    """For every prefix: NEED_MORE, or exactly the answer the whole input gets."""
    whole = server_name(data)
    cut = draw.draw(st.integers(0, len(data)))
    early = server_name(data[:cut])
    assert early is NEED_MORE or early == whole
    if len(data) >= MAX_INPUT:
        assert whole is not NEED_MORE
