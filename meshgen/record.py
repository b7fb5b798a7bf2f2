"""``Record``: :class:`typing.NamedTuple`'s class syntax at about two thirds of its cost.

Every command imports meshgen's value types (:mod:`meshgen.model` alone has 35), and
``typing.NamedTuple`` costs ~0.9 M instructions to make one: ~0.6 M for
:func:`collections.namedtuple`, the rest for evaluating each field's annotation and checking
that it is a type, which mypy does anyway. A ``Record`` class is the same
``collections.namedtuple`` class (fields, defaults, docstring and methods as written in its
body) made without that typing work, and its annotations may be text (``from __future__ import
annotations``): nothing reads them at run time. mypy sees ``typing.NamedTuple`` itself, so it
checks every field, constructor call and unpacking as before. (A tuple class with a generic
``__new__`` would cost still less to make, but its keyword calls run ~3x slower, and ``lower``
makes ~110,000 values by keyword at 10,000 services: BENCHMARKS.md, Compile.)
"""

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

__all__ = ["Record"]

# mypy reads a namedtuple() call as a class definition, which needs literal arguments
_namedtuple: Callable[..., type] = collections.namedtuple


class RecordType(type):
    """The metaclass of :class:`Record`: makes each subclass with ``collections.namedtuple``."""

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        fields = tuple(namespace.get("__annotations__", ()))
        if not fields:  # Record itself
            return super().__new__(mcls, name, bases, namespace)
        defaulted = [field for field in fields if field in namespace]
        if fields[len(fields) - len(defaulted) :] != tuple(defaulted):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        defaults = [namespace.pop(field) for field in defaulted]
        made = _namedtuple(name, fields, defaults=defaults, module=namespace.pop("__module__"))
        for key, value in namespace.items():  # docstring, annotations, methods
            setattr(made, key, value)
        return made


if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:

    class Record(metaclass=RecordType):
        """Subclass with annotated fields, as you would ``typing.NamedTuple``."""
