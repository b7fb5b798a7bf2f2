"""The request state machine on an `access: audit` listener: denied, counted, forwarded."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

from meshgen.runtime.forward import attempt as A
from meshgen.runtime.forward.generation import Generation
from tests.unit.test_attempt import World


def _audited(world: World) -> None:
    """Switch the world's listener to `access: audit` (a new table generation)."""
    (listener,) = world.tables.listeners
    world.tables = dataclasses.replace(
        world.tables, listeners=(dataclasses.replace(listener, access="audit"),)
    )
    world.gen = Generation(
        world.tables, world.upstreams, world.metrics, None, random.Random(7), world.clock
    )


def test_a_denied_request_is_counted_logged_and_tried(caplog: pytest.LogCaptureFixture) -> None:
    world = World(enforce=True)
    _audited(world)
    att = world.attempt(caller="intruder")
    with caplog.at_level(logging.WARNING, logger="meshgen.proxy"):
        assert att.step(A.START) == A.TRY  # not LOCAL 403: forwarded
    labels = {"listener": "edge", "from": "intruder", "mode": "audit"}
    assert world.counted("meshgen_denied_total", **labels) == 1
    assert world.counted("meshgen_denied_total", mode="enforce") == 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert "forwarded GET '/items' from caller 'intruder' on route r; verdict: deny" in line


def test_enforce_counts_mode_enforce() -> None:
    world = World(enforce=True)
    att = world.attempt(caller="intruder")
    assert att.step(A.START) == A.LOCAL and att.answer == A.DENIED
    assert world.counted("meshgen_denied_total", mode="enforce", **{"from": "intruder"}) == 1
