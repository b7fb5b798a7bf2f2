"""HAProxy config syntax: quoting user strings as config words, time units, weights, and the
small per-backend option lines. Pure functions over table values; no config structure here.
"""

from __future__ import annotations

import functools
import re

from meshgen.runtime.tables import Cluster, Endpoint, OutlierDetection

MAX_WEIGHT = 256  # HAProxy server weights are 0..256
_SAFE = re.compile(r"[A-Za-z0-9_./:,=+~@*-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NOT_IN_SERVER_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def word(text: str) -> str:
    """One config word: as is when plain, else single-quoted (``'`` written as ``'\\''``).

    The schema keeps control characters out of every spec string; a line break here would
    end the config line, so it is refused outright rather than trusted to be absent.
    """
    if _CONTROL.search(text):
        raise ValueError(f"control character in HAProxy config word {text!r}")
    if _SAFE.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def fmt(text: str) -> str:
    """A log-format argument (header values, locations): ``%`` is literal, then quoted."""
    return word(text.replace("%", "%%"))


@functools.lru_cache(maxsize=4096)  # a mesh has few distinct durations, written many times
def duration(seconds: float) -> str:
    """``1.5`` -> ``1500ms``, ``5.0`` -> ``5s`` (HAProxy time units)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scaled_weights(endpoints: tuple[Endpoint, ...]) -> list[int]:
    """Endpoint weights 1..65535 -> HAProxy 1..256, proportionally when the largest is > 256."""
    top = max((e.weight for e in endpoints), default=1)
    if top <= MAX_WEIGHT:
        return [e.weight for e in endpoints]
    return [max(1, round(e.weight * MAX_WEIGHT / top)) for e in endpoints]


def server_name(endpoint: Endpoint) -> str:
    return _NOT_IN_SERVER_NAME.sub("_", endpoint.address)


def bind_address(host: str, port: int, name: str) -> str:
    """``host:port``; port 0 ("any free port") reads ``${MESHGEN_PORT_<NAME>}`` instead."""
    shown = f"[{host}]" if ":" in host else host
    if port:
        return word(f"{shown}:{port}")
    return f'"{shown}:${{MESHGEN_PORT_{name.upper().replace("-", "_")}}}"'


def acl_value(text: str) -> str:
    """An ACL pattern: ``--`` first when it starts with ``-`` so it is not read as a flag."""
    return ("-- " if text.startswith("-") else "") + word(text)


def chance(percent: float) -> str:
    if percent >= 100:
        return ""
    return f" {{ rand(10000) lt {round(percent * 100)} }}"


def balance(c: Cluster) -> list[str]:
    lb = c.load_balancer
    if lb.policy == "round_robin":
        return ["balance roundrobin"]
    if lb.policy == "random":
        return ["balance random(1)"]
    if lb.policy == "least_request":
        return [f"balance random({lb.choice_count})"]
    if lb.hash_header is not None:
        key = f"hdr({lb.hash_header})"
    elif lb.hash_cookie is not None:
        key = f"hash req.cook({lb.hash_cookie})"
    else:
        key = "source"
    return [f"balance {key}", "hash-type consistent"]


def check_options(od: OutlierDetection | None, layer: int = 7, port: int | None = None) -> str:
    """A server's ``check`` options: the health port, and what outlier detection observes
    (``layer`` 7: HTTP statuses; 4: connection errors, for tcp services)."""
    text = " check" + (f" port {port}" if port is not None else "")
    if od is not None:
        text += f" observe layer{layer} error-limit {od.consecutive_5xx} on-error mark-down"
    return text


def section(lines: list[str]) -> str:
    """A section's body, one indented line each (joined here: 1.6M template loop steps at 10k)."""
    return "    " + "\n    ".join(lines) + "\n" if lines else ""
