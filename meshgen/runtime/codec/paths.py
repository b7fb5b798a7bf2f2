"""Request-target normalisation shared by the router and access control.

Theory of operation: routing and authorization must agree on what path a request names, or an
attacker picks the spelling one side understands differently (``/admin`` vs ``/%61dmin`` vs
``/x/../admin``). Both therefore match on :func:`normalize_path`, and the proxy forwards that
same normalised path upstream, so the backend also sees what was matched.

Normalisation (RFC 3986 section 6.2.2, as Envoy's ``normalize_path`` + ``merge_slashes``):

* the query (and a fragment, which clients should not send) is split off;
* an absolute-form target (``http://host/p``) is reduced to its path;
* percent-encoded *unreserved* characters are decoded (``%7E`` -> ``~``, ``%2E`` -> ``.``), other
  percent-encodings are kept with upper-case hex (``%2f`` -> ``%2F``: an encoded slash stays data);
* runs of ``/`` collapse to one; ``.`` and ``..`` segments are resolved (never above ``/``).

Invalid targets return ``None`` (the proxy answers 400): not origin- or absolute-form, bytes
outside printable ASCII, a ``%`` not followed by two hex digits, or an encoded NUL.

:func:`valid_host` checks a Host value (or an absolute-form target's authority) against RFC 9112
section 3.2's ``uri-host [ ":" port ]`` (a port above 65535 is invalid too);
:func:`target_authority` extracts that authority, which routes an absolute-form request instead
of the Host header (RFC 9112 section 3.2.2).
"""

from __future__ import annotations

import re

_PATH_CHARS = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_QUERY_CHARS = re.compile(r"[\x21-\x7e]*")
# Paths that need no work: no percent sign, no "//", no dot segment.
_NEEDS_WORK = re.compile(r"%|//|/\.\.?(?:/|$)")
_PCT = re.compile(r"%(.?.?)")
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")
# RFC 3986 host (IP-literal, IPv4address or reg-name) and an optional port.
_HOST = re.compile(
    r"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
    r"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::(?P<port>[0-9]*))?"
)


def valid_host(host: str) -> bool:
    """Whether ``host`` is a valid Host value (empty is valid syntax; a port is 0..65535)."""
    found = _HOST.fullmatch(host)
    if found is None:
        return False
    port = found.group("port")
    return not port or int(port) <= 65535


def target_authority(raw_target: bytes) -> str | None:
    """The authority of an absolute-form target (``http://web:80/x`` -> ``web:80``); None for
    any other form. Userinfo (``user@``) is kept, so :func:`valid_host` rejects it."""
    if raw_target[:1] == b"/":
        return None
    try:
        absolute = _ABSOLUTE.match(raw_target.decode("ascii"))
    except UnicodeDecodeError:
        return None
    return None if absolute is None else absolute.group(1)


def _decode(match: re.Match[str]) -> str:
    code = match.group(1)
    if len(code) != 2 or code[0] not in _HEX or code[1] not in _HEX:
        raise ValueError("bad percent-encoding")
    char = chr(int(code, 16))
    if char == "\x00":
        raise ValueError("encoded NUL")
    return char if char in _UNRESERVED else "%" + code.upper()


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")
    for seg in segments[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg not in (".", ""):
            out.append(seg)
    trailing = segments[-1] in ("", ".", "..") and len(out) > 0
    return "/" + "/".join(out) + ("/" if trailing else "")


def split_target(raw_target: bytes | str) -> tuple[str, str] | None:
    """Return ``(normalised path, query including its '?' or '')``, or ``None`` if invalid."""
    if isinstance(raw_target, bytes):
        try:
            target = raw_target.decode("ascii")
        except UnicodeDecodeError:
            return None
    else:
        target = raw_target
    if target[:1] != "/":
        absolute = _ABSOLUTE.match(target)
        if absolute is None:
            return None
        target = target[absolute.end() :] or "/"
        if target[0] == "?":
            target = "/" + target
    cut = target.find("#")
    if cut >= 0:
        target = target[:cut]
    q = target.find("?")
    if q >= 0:
        path, query = target[:q], target[q:]
        if _QUERY_CHARS.fullmatch(query) is None:
            return None
    else:
        path, query = target, ""
    if _PATH_CHARS.fullmatch(path) is None:
        return None
    if _NEEDS_WORK.search(path) is None:
        return path, query
    if "%" in path:
        try:
            path = _PCT.sub(_decode, path)
        except ValueError:
            return None
    return _remove_dot_segments(path), query


def normalize_path(raw_target: bytes | str) -> str | None:
    """The normalised path of a request target (query removed); ``None`` means answer 400."""
    split = split_target(raw_target)
    return None if split is None else split[0]
