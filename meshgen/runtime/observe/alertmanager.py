"""Alertmanager v2 client: the ``PostableAlert`` bodies and the POST to ``/api/v2/alerts``.

Like Prometheus, the evaluator sends newly firing and resolved alerts at once and firing ones
again every ``RESEND_S``, with ``endsAt`` four resend intervals ahead so Alertmanager resolves
them by itself if the runtime goes away; resolved ones carry the resolution time as
``endsAt`` and are resent for ``RESOLVED_RETENTION_S``. A failed POST is logged, never raised:
the next resend delivers the alert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from datetime import UTC, datetime
from typing import Any, Final

log = logging.getLogger("meshgen.alerts")

RESEND_S: Final = 60.0
RESOLVED_RETENTION_S: Final = 900.0


def iso(ts: float) -> str:
    """RFC 3339 UTC time with milliseconds, as Alertmanager and Prometheus write it."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def postable(
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at: float,
    resolved_at: float | None,
    now: float,
) -> dict[str, Any]:
    """The ``PostableAlert`` for an alert firing since ``starts_at`` (or resolved at)."""
    ends = resolved_at if resolved_at is not None else now + 4 * RESEND_S
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso(starts_at),
        "endsAt": iso(ends),
        "generatorURL": "",
    }


async def post_alerts(base_url: str, alerts: list[dict[str, Any]], timeout_s: float = 5.0) -> bool:
    """POST to ``BASE/api/v2/alerts``; failures are logged, never raised (retried on resend)."""
    url = base_url.rstrip("/") + "/api/v2/alerts"
    body = json.dumps(alerts).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )

    def send() -> int:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)

    try:
        status = await asyncio.to_thread(send)
    except OSError as exc:
        log.warning("alertmanager %s: %s", url, exc)
        return False
    return 200 <= status < 300
