"""gRPC over the mesh: which requests are gRPC, their deadline, the proxy's own answers, and
what a ``grpc-status`` means for retries, metrics and error rates. Written once: the request
machine, the metrics, the alert evaluator and the Prometheus rules all read this module.

Theory of operation
-------------------
A request is gRPC when its ``content-type`` is ``application/grpc`` or ``application/grpc+X``
/ ``application/grpc;params`` (gRPC's HTTP/2 protocol spec); gRPC-Web
(``application/grpc-web*``) is another protocol and is not (Envoy treats it with a filter of
its own). Which service it goes to does not matter: a ``grpc`` service only says its
endpoints speak HTTP/2.

``grpc-timeout`` is ``1*8DIGIT`` and a unit (``H M S m u n``). A malformed value is ignored,
as Envoy does (the route timeout alone applies), rather than refused: a proxy should not be
stricter than the servers behind it. The caller's value caps the route timeout; the value
passed on is what is left when the try is sent, in the finest unit that fits 8 digits,
rounded up (grpc-go's encoding), so the server never sees less time than the proxy allows.

The proxy's own answers to a gRPC request (no route, access denied, rate limited, no healthy
endpoint, timeout, ...) are *trailers-only* responses: HTTP 200, ``content-type:
application/grpc``, ``grpc-status`` and a percent-encoded ``grpc-message``, no body, so a gRPC
client reports a gRPC status and not a protocol error. The status is gRPC's HTTP-to-gRPC
mapping (``doc/http-grpc-status-mapping.md``, also Envoy's ``httpToGrpcStatus``) except that a
rate limit is RESOURCE_EXHAUSTED and a timeout DEADLINE_EXCEEDED, which say more.

Retries: a trailers-only response (the ``grpc-status`` arrived with the head, so nothing has
reached the caller) meets the ``retries.on`` condition named after its status
(:data:`RETRY_ON`, Envoy's ``retry_grpc_on``). For error rates and SLOs a gRPC request is an
error when its ``grpc-status`` is in :data:`ERROR_STATUSES` (an HTTP 5xx always is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from ..tables import RetryCondition

CONTENT_TYPE: Final = b"application/grpc"
OK, CANCELLED, UNKNOWN, DEADLINE_EXCEEDED = 0, 1, 2, 4
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 7, 8, 12, 13, 14
UNAUTHENTICATED: Final = 16

RETRY_ON: Final[Mapping[int, RetryCondition]] = {
    CANCELLED: "cancelled",
    DEADLINE_EXCEEDED: "deadline-exceeded",
    RESOURCE_EXHAUSTED: "resource-exhausted",
    INTERNAL: "internal",
    UNAVAILABLE: "unavailable",
}
"""The ``retries.on`` condition a trailers-only ``grpc-status`` meets."""

ERROR_STATUSES: Final = (2, 4, 12, 13, 14, 15)
"""UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS: the statuses
that count as errors in ``error_rate`` and SLOs (the server failed, not the caller)."""

ERROR_LABELS: Final = frozenset(str(s) for s in ERROR_STATUSES)
ERROR_REGEX: Final = "|".join(str(s) for s in ERROR_STATUSES)
"""The same set as a PromQL regular expression on the ``grpc_status`` label."""

# gRPC's HTTP-to-gRPC mapping, with the two statuses the proxy knows better (module docstring).
_FROM_HTTP: Final[Mapping[int, int]] = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    429: RESOURCE_EXHAUSTED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

_UNITS: Final[Mapping[int, int]] = {
    ord("H"): 3_600_000_000_000,
    ord("M"): 60_000_000_000,
    ord("S"): 1_000_000_000,
    ord("m"): 1_000_000,
    ord("u"): 1_000,
    ord("n"): 1,
}
_ENCODE_UNITS: Final = ((b"n", 1), (b"u", 1_000), (b"m", 1_000_000), (b"S", 1_000_000_000),
                        (b"M", 60_000_000_000), (b"H", 3_600_000_000_000))  # fmt: skip
MAX_TIMEOUT_VALUE: Final = 99_999_999  # 8 digits
HTTP1_VERSIONS: Final = ("1.0", "1.1")
"""A request's ``version`` when it came over HTTP/1.x: a gRPC request then gets INTERNAL at
once (gRPC needs trailers); an HTTP/2 request's ``version`` is ``"2"``."""


def is_grpc(content_type: str | bytes | None) -> bool:
    """Whether a request with this ``content-type`` is gRPC (module docstring)."""
    if not content_type:
        return False
    ct = (
        content_type.encode("latin-1", "replace") if isinstance(content_type, str) else content_type
    )
    n = len(CONTENT_TYPE)
    return ct[:n].lower() == CONTENT_TYPE and (len(ct) == n or ct[n : n + 1] in (b"+", b";"))


def parse_timeout(value: str | bytes | None) -> float | None:
    """``grpc-timeout`` in seconds, or None when absent or malformed (then ignored)."""
    if not value:
        return None
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    digits, unit = raw[:-1], _UNITS.get(raw[-1])
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        return None
    return int(digits) * unit / 1e9


def format_timeout(seconds: float) -> bytes:
    """``seconds`` as a ``grpc-timeout`` value: the finest unit that fits, rounded up."""
    ns = max(0, int(-(-seconds * 1e9 // 1)))
    for unit, size in _ENCODE_UNITS:
        value = -(-ns // size)
        if value <= MAX_TIMEOUT_VALUE:
            return b"%d%s" % (value, unit)
    return b"%dH" % MAX_TIMEOUT_VALUE


def with_timeout(head: bytes, seconds: float) -> bytes:
    """An upstream request head (built by ``forward/heads.py``, one ``name: value`` line per
    header, lower-case names) with its ``grpc-timeout`` line set to ``seconds``."""
    start = head.find(b"\r\ngrpc-timeout:")
    line = b"\r\ngrpc-timeout: " + format_timeout(seconds)
    if start < 0:
        end = head.index(b"\r\n")
        return head[:end] + line + head[end:]
    end = head.index(b"\r\n", start + 2)
    return head[:start] + line + head[end:]


def status_for_http(status: int) -> int:
    """The ``grpc-status`` a gRPC caller is told for what would be HTTP ``status``."""
    return _FROM_HTTP.get(status, UNKNOWN)


def encode_message(text: bytes) -> bytes:
    """``grpc-message`` percent-encoding: bytes outside printable ASCII, and ``%``."""
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text)


def trailers_only(status: int, message: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a trailers-only answer with ``status`` (HTTP status 200, no body)."""
    return (
        (b"content-type", CONTENT_TYPE),
        (b"grpc-status", b"%d" % status),
        (b"grpc-message", encode_message(message.strip())),
    )


def status_of(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``grpc-status`` in a response head or trailers, or None (absent or not a number)."""
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() and len(value) <= 3 else None
    return None


def retry_conditions(grpc_status: int) -> frozenset[RetryCondition]:
    """The ``retries.on`` conditions a trailers-only response with ``grpc_status`` meets."""
    condition = RETRY_ON.get(grpc_status)
    return frozenset() if condition is None else frozenset((condition,))


def status_label(http_status: int, grpc_status: int) -> str:
    """The ``grpc_status`` metric label of a gRPC request (other requests: ""): the status the
    caller got (-1: none came; then what the HTTP status maps to, and "" for a 200)."""
    if grpc_status >= 0:
        return str(grpc_status)
    return "" if http_status == 200 else str(status_for_http(http_status))


def is_error(code: str, grpc_status: str) -> bool:
    """Whether a request counted with these ``code`` and ``grpc_status`` labels is an error
    for ``error_rate`` and SLOs (the PromQL rules select the same series)."""
    return (len(code) == 3 and code[0] == "5" and "\n" not in code) or grpc_status in ERROR_LABELS
