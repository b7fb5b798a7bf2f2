"""The audit log of `access: audit` listeners: one line per denied request, rate limited."""

from __future__ import annotations

import logging

import pytest

from meshgen.runtime.policy.audit import AuditLog


def test_lines_name_the_request_and_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A burst beyond the limit is left out and summed up in the next line that is logged."""
    now = [0.0]
    audit = AuditLog(logging.getLogger("test.audit"), lambda: now[0], rate=1.0, burst=2)
    with caplog.at_level(logging.WARNING, logger="test.audit"):
        for _ in range(5):
            audit.denied("edge", "frontend", "GET", "/charge", "pay", "payments")
        now[0] = 1.0
        audit.denied("edge", None, "POST", "/x\nforged line", "pay", "payments")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0] == (
        "access audit: listener edge forwarded GET '/charge' from caller 'frontend' on route "
        "pay; verdict: deny (no access rule lets it call service payments)"
    )
    assert lines[2].endswith("(3 more not logged)")
    assert "'/x\\nforged line' from a caller without a certificate" in lines[2]
    assert "\n" not in lines[2]
