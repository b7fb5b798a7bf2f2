"""meshgen.record.Record makes the class typing.NamedTuple would, for the class bodies meshgen
writes (fields with and without defaults, a docstring, methods, a property)."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from meshgen.record import Record


def _point(base: Any) -> Any:
    """The same class body made with ``base``."""

    class Point(base):  # type: ignore[misc]
        """A point, with a label."""

        x: int
        y: int
        label: str = ""
        tags: tuple[str, ...] = ()

        def moved(self, dx: int) -> Any:
            return self._replace(x=self.x + dx)

        @property
        def norm(self) -> int:
            return abs(self.x) + abs(self.y)

    return Point


Plain = _point(NamedTuple)
Recorded = _point(Record)


def test_a_record_is_the_named_tuple_typing_would_make() -> None:
    plain = Plain(1, -2, tags=("a",))
    recorded = Recorded(1, -2, tags=("a",))
    assert Recorded._fields == Plain._fields and Recorded._field_defaults == Plain._field_defaults
    assert repr(recorded) == repr(plain)
    assert (recorded.moved(2), recorded.norm) == ((3, -2, "", ("a",)), 3)
    assert type(recorded.moved(2)) is Recorded
    assert (Recorded.__doc__, Recorded.__module__, Recorded.__qualname__) == (
        Plain.__doc__,
        Plain.__module__,
        Plain.__qualname__,
    )
    with pytest.raises(TypeError):
        Recorded(1)
    with pytest.raises(AttributeError):
        recorded.x = 2
    assert recorded == plain and hash(recorded) == hash(plain)
    assert recorded == (1, -2, "", ("a",))


def test_a_field_without_a_default_after_one_with_a_default_is_an_error() -> None:
    with pytest.raises(TypeError, match="without a default follows"):

        class Wrong(Record):  # mypy: "Non-default NamedTuple fields cannot follow default fields"
            x: int = 0
            y: int  # type: ignore[misc]
