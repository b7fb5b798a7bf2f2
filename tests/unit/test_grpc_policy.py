"""gRPC decisions (``policy/grpc.py``): content-type, grpc-timeout, local answers, statuses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.policy import grpc
from meshgen.runtime.policy.resilience import retryable
from meshgen.runtime.tables import RetryPolicy

UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc+json", True),
        ("application/grpc;charset=utf-8", True),
        ("Application/GRPC", True),
        (b"application/grpc", True),
        ("application/grpc-web", False),  # gRPC-Web is another protocol
        ("application/grpc-web+proto", False),
        ("application/grpcx", False),
        ("application/json", False),
        ("text/plain; application/grpc", False),
        ("", False),
        (None, False),
    ],
)
def test_a_request_is_grpc_by_its_content_type(
    content_type: str | bytes | None, expected: bool
) -> None:
    assert grpc.is_grpc(content_type) is expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600.0), ("2M", 120.0), ("3S", 3.0), ("250m", 0.25), ("10u", 1e-5),
     ("7n", 7e-9), ("99999999S", 99999999.0), ("0m", 0.0), (b"5S", 5.0)],
)  # fmt: skip
def test_grpc_timeout_units(value: str | bytes, seconds: float) -> None:
    assert grpc.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", None, "5", "S", "123456789S", "1.5S", "-1S", " 1S", "1s", "1x", "1SS", "\u0661S", "+1S"],
)
def test_a_malformed_grpc_timeout_is_ignored(value: str | None) -> None:
    assert grpc.parse_timeout(value) is None


@given(st.floats(min_value=0, max_value=3600 * 99_999_999, allow_nan=False))
def test_the_passed_on_timeout_parses_back_never_shorter_and_close(seconds: float) -> None:
    """What the proxy sends is valid grpc-timeout, at least the time left, within one unit of
    the finest unit that fits 8 digits."""
    text = grpc.format_timeout(seconds)
    assert re.fullmatch(rb"[0-9]{1,8}[HMSmun]", text)
    back = grpc.parse_timeout(text)
    assert back is not None and back >= seconds * (1 - 1e-12) - 1e-9
    assert back - seconds <= max(1e-9, UNITS[chr(text[-1])]) + seconds * 1e-12


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12))
def test_any_other_text_is_valid_only_in_the_grammar(text: str) -> None:
    ok = re.fullmatch(r"[0-9]{1,8}[HMSmun]", text) is not None
    assert (grpc.parse_timeout(text) is not None) is ok


def test_with_timeout_replaces_or_adds_the_line() -> None:
    head = b"POST /a.B/C HTTP/1.1\r\nhost: x\r\ngrpc-timeout: 5S\r\nte: trailers\r\n\r\n"
    assert grpc.with_timeout(head, 1.5) == head.replace(b"5S", b"1500000u")
    bare = b"POST /a.B/C HTTP/1.1\r\nhost: x\r\n\r\n"
    assert grpc.with_timeout(bare, 2.0) == (
        b"POST /a.B/C HTTP/1.1\r\ngrpc-timeout: 2000000u\r\nhost: x\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("http", "status"),
    [(403, 7), (404, 12), (429, 8), (503, 14), (504, 4), (502, 14), (400, 13), (401, 16),
     (408, 2), (500, 2)],
)  # fmt: skip
def test_local_answers_map_to_grpc_statuses(http: int, status: int) -> None:
    """403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE,
    504 DEADLINE_EXCEEDED; the rest as gRPC's HTTP mapping."""
    assert grpc.status_for_http(http) == status


def test_a_trailers_only_answer_carries_status_and_an_encoded_message() -> None:
    headers = dict(grpc.trailers_only(14, b"no healthy endpoint: 100% gone \xc3\xa9\n"))
    assert headers == {
        b"content-type": b"application/grpc",
        b"grpc-status": b"14",
        b"grpc-message": b"no healthy endpoint: 100%25 gone %C3%A9",
    }


@given(st.binary(max_size=64))
def test_grpc_message_encoding_is_printable_and_reversible(raw: bytes) -> None:
    text = grpc.encode_message(raw)
    assert all(0x20 <= b <= 0x7E for b in text)
    decoded = re.sub(rb"%([0-9A-F]{2})", lambda m: bytes((int(m.group(1), 16),)), text)
    assert decoded == raw


@pytest.mark.parametrize(
    ("headers", "status"),
    [([(b"grpc-status", b"14")], 14), ([(b"grpc-status", b"0")], 0), ([], None),
     ([(b"grpc-status", b"x")], None), ([(b"grpc-status", b"99999")], None)],
)  # fmt: skip
def test_status_of_reads_grpc_status(headers: list[tuple[bytes, bytes]], status: int) -> None:
    assert grpc.status_of(headers) == status


@pytest.mark.parametrize(
    ("code", "on", "expected"),
    [(14, ("unavailable",), True), (14, ("5xx",), False), (1, ("cancelled",), True),
     (4, ("deadline-exceeded",), True), (8, ("resource-exhausted",), True),
     (13, ("internal",), True), (13, ("unavailable",), False), (0, ("unavailable",), False),
     (7, ("unavailable", "internal", "cancelled"), False)],
)  # fmt: skip
def test_trailers_only_statuses_meet_their_conditions(
    code: int, on: tuple[str, ...], expected: bool
) -> None:
    policy = RetryPolicy(attempts=2, per_try_timeout_s=1.0, on=on)  # type: ignore[arg-type]
    assert retryable(policy, "POST", 200, grpc=True, grpc_status=code) is expected


def test_idempotent_only_does_not_apply_to_grpc() -> None:
    policy = RetryPolicy(attempts=1, per_try_timeout_s=1.0, on=("5xx",), idempotent_only=True)
    assert not retryable(policy, "POST", 503)
    assert retryable(policy, "POST", 503, grpc=True)


@pytest.mark.parametrize(
    ("on", "expected"),
    [(("refused-stream",), True), (("reset",), True), (("5xx",), True),
     (("connect-failure",), False), (("gateway-error",), False)],
)  # fmt: skip
def test_a_refused_stream_meets_refused_stream_reset_and_5xx(
    on: tuple[str, ...], expected: bool
) -> None:
    policy = RetryPolicy(attempts=1, per_try_timeout_s=1.0, on=on)  # type: ignore[arg-type]
    assert retryable(policy, "GET", "refused-stream") is expected


@given(
    code=st.sampled_from(["200", "404", "500", "503", "599", "5\n0", "50", ""]),
    status=st.sampled_from(["", *(str(s) for s in range(17))]),
)
def test_is_error_is_the_promql_selectors_union(code: str, status: str) -> None:
    """The embedded evaluator's error test is the rules' `code=~"5.."` or
    `grpc_status=~"2|4|12|13|14|15"` (RE2, fully anchored, `.` not matching newline)."""
    by_code = re.fullmatch(r"5..", code) is not None
    by_status = re.fullmatch(grpc.ERROR_REGEX, status) is not None
    assert grpc.is_error(code, status) is (by_code or by_status)


@pytest.mark.parametrize(
    ("http", "status", "label"),
    [(200, 0, "0"), (200, 14, "14"), (200, -1, ""), (503, -1, "14"), (500, -1, "2")],
)  # fmt: skip
def test_status_label(http: int, status: int, label: str) -> None:
    assert grpc.status_label(http, status) == label
