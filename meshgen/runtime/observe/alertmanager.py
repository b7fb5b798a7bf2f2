"""Alertmanager v2 client: the ``PostableAlert`` bodies and the POST to ``/api/v2/alerts``.

Like Prometheus, the evaluator sends newly firing and resolved alerts at once and firing ones
again every ``RESEND_S``, with ``endsAt`` four resend intervals ahead so Alertmanager resolves
them by itself if the runtime goes away; resolved ones carry the resolution time as
``endsAt`` and are resent for ``RESOLVED_RETENTION_S``. A failed POST is logged, never raised:
the next resend delivers the alert.

A POST runs on a daemon thread of its own (``urllib`` blocks) and is waited for ``timeout_s``
in all, so an Alertmanager that answers slowly, trickles its answer or sends no HTTP holds the
evaluator for at most that long. urllib's timeout bounds each read, not the answer, so a
trickling receiver can hold the thread longer: while it does, later POSTs are skipped (the
resend delivers them) instead of queued, so a stuck receiver holds one thread, never more,
and never the loop's default executor (which resolves host names).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import threading
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


class _Sender:
    """Whether the last POST's thread is still at it (all evaluators of a process share it)."""

    def __init__(self) -> None:
        self.busy = False


_SENDER = _Sender()


async def post_alerts(base_url: str, alerts: list[dict[str, Any]], timeout_s: float = 5.0) -> bool:
    """POST to ``BASE/api/v2/alerts``; failures are logged, never raised (retried on resend)."""
    url = base_url.rstrip("/") + "/api/v2/alerts"
    if _SENDER.busy:
        log.warning("alertmanager %s: the last POST has not ended; %d alert(s) wait for the "
                    "next resend", url, len(alerts))  # fmt: skip
        return False
    body = json.dumps(alerts).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()

    def settle(status: int | None, exc: BaseException | None) -> None:
        if answer.done():
            return  # the caller gave up waiting
        if exc is not None:
            answer.set_exception(exc)
        else:
            answer.set_result(status or 0)

    def send() -> None:
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                status, exc = int(response.status), None
        except BaseException as failure:  # handed to the caller's loop
            status, exc = None, failure
        _SENDER.busy = False
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(settle, status, exc)

    _SENDER.busy = True
    try:
        threading.Thread(target=send, name="meshgen-alertmanager", daemon=True).start()
    except RuntimeError as exc:  # no thread to be had
        _SENDER.busy = False
        log.warning("alertmanager %s: %s", url, exc)
        return False
    try:
        status = await asyncio.wait_for(answer, timeout_s)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # TimeoutError: OSError
        log.warning("alertmanager %s: %s", url, exc or type(exc).__name__)
        return False
    return 200 <= status < 300
