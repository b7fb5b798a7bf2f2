"""Python literals for generated files; in table files, values that repeat are written once.

A literal is the ``repr`` of scalars, tuples, key-sorted dicts and keyword-argument constructor
calls of the table types (fields equal to their default left out), wrapped at 100 columns
(:func:`py_literal`, the ``py`` template filter). :class:`SharedLiterals` walks a file's values
twice:

1. *Scan*: every table instance and every tuple holding non-scalars that is short enough
   (:data:`SHARE_MAX` characters on one line) gets its one-line text as a key, and each key's
   occurrences are counted. A key that occurs :data:`MIN_REPEATS` times becomes a module-level
   constant when its text is longer than its name; occurrences inside another constant's value
   count once (that value is written once), so no constant is used by just one other constant.
2. *Layout*: values are laid out as the ``py`` filter does (keyword-argument constructor calls,
   defaults left out, wrapped at 100 columns), writing a constant's name wherever its value
   occurs.

Both passes run once per value of a table file (~430,000 at 10,000 services), so each value's
fields are fetched by one C call (:class:`_Spec`) and a tuple of scalars other than floats is
written by ``repr`` in C.

Names are the type (or the field the tuple first sits in) and a hash of the value's text, e.g.
``_RetryPolicy_1a2b3c4d``: a name changes only when its value does, so adding a service does not
rename anything in the diff. Constants are defined before use (values that use no constant
first), then by name. The output is still data only: literals, constructor calls and names.
At 10,000 services this takes ``mesh/routing.py`` from 780k to 620k lines, and ``compile()``
of it (emit's check, the runtime's load) from ~3.4 s to ~2 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from meshgen.record import Record

WIDTH = 100
TABLES_MODULE = "meshgen.runtime.tables"
SHARE_MAX = 200
"""Longest one-line text a shared value may have (longer values are unique in practice)."""
MIN_REPEATS = 3
"""Fewest occurrences that make a constant: two equal targets of one service's two routes are a
coincidence better read in place; a policy or label set used by many services is not."""


def py_literal(value: Any, prefix: int = 0) -> str:
    """A Python literal for ``value`` that fits 100 columns after ``prefix`` columns if it can."""
    return _layout(value, 0, prefix, {})


class SharedLiterals:
    """The constants and laid-out values of one generated module."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.classes: set[str] = set()
        self._text: dict[int, str] = {}  # id of a shareable value -> its one-line text
        self._count: dict[str, int] = {}
        self._kids: dict[str, list[str]] = {}  # shareable values directly inside, with repeats
        self._first: dict[str, tuple[Any, str]] = {}  # text -> (value, name prefix)
        self._values = values
        for value in values.values():
            if type(value) not in _SCALARS:
                self._scan(value, "")
        self._names = self._choose()
        self._refs = {id_: self._names[t] for id_, t in self._text.items() if t in self._names}

    # -- pass 1 ----------------------------------------------------------------------------

    def _scan(self, value: Any, label: str) -> str | None:
        """One-line text of ``value`` (None when not shareable and not part of a shared value).

        The hot loop of a build at 10,000 services: scalars are written inline.
        """
        cls = type(value)
        if cls is tuple and _of_plain_scalars(value):
            text = repr(value)
            return text if len(text) <= SHARE_MAX else None
        opening, closing, children = _items(value)
        table_type = cls in _SPECS
        if table_type:
            self.classes.add(cls.__name__)
        elif cls is not tuple:  # dict or list: never shared, nor anything holding one
            for child_label, child in children:
                if type(child) not in _SCALARS:
                    self._scan(child, child_label)
            return None
        texts: list[str] | None = []
        kids: list[str] = []
        nested = False
        for child_label, child in children:
            child_cls = type(child)
            if child_cls in _SCALARS:
                if texts is not None:
                    text = repr(child) if child_cls is not float else _scalar(child)
                    texts.append(child_label + text)
                continue
            # walked even when this value is not shareable: the values inside it are counted
            child_text = self._scan(child, child_label)
            if child_text is None or texts is None:
                texts = None
                continue
            texts.append(child_label + child_text)
            nested = True
            if id(child) in self._text:
                kids.append(child_text)
        if texts is None:
            return None
        text = _join(opening, texts, closing, cls)
        if len(text) > SHARE_MAX:
            return None
        if not table_type and not nested:
            return text  # a tuple of scalars: written inside shared values, never shared itself
        self._text[id(value)] = text
        seen = self._count.get(text, 0)
        self._count[text] = seen + 1
        if not seen:
            self._kids[text] = kids
            field = label[:-1] if label.endswith("=") else "tuple"
            self._first[text] = (value, cls.__name__ if table_type else field)
        return text

    def _choose(self) -> dict[str, str]:
        """Name the values that repeat enough once repeats inside shared values count once."""
        repeated = [t for t, n in self._count.items() if n >= MIN_REPEATS]
        candidates = sorted(repeated, key=lambda t: (-len(t), t))
        removed: dict[str, int] = {}
        names: dict[str, str] = {}
        taken: set[str] = set()
        for text in candidates:  # every value before the values inside it (they are shorter)
            gone = removed.get(text, 0)
            left = self._count[text] - gone
            name = _name(self._first[text][1], text, taken)
            if left >= MIN_REPEATS and len(text) > len(name):
                names[text] = name
                taken.add(name)
                gone += left - 1
            if gone:
                for kid in self._kids[text]:
                    removed[kid] = removed.get(kid, 0) + gone
        return names

    # -- pass 2 ----------------------------------------------------------------------------

    def constants(self) -> list[tuple[str, str]]:
        """``(name, literal)`` of every constant, each after the constants its value uses."""
        ranks: dict[str, int] = {}
        order = sorted(self._names, key=lambda t: (self._rank(t, ranks), self._names[t]))
        out = []
        for text in order:
            name = self._names[text]
            value = self._first[text][0]
            out.append((name, _layout(value, 0, len(name) + 3, self._refs, top=True)))
        return out

    def _rank(self, text: str, ranks: dict[str, int]) -> int:
        """How deep constants nest inside ``text``'s value (0: it uses none), memoised in ``ranks``.

        A method rather than a recursive closure: such a closure is a reference cycle that would
        keep this object, and every table value it holds, alive until the collector runs (a
        build pauses it, so that was after the build, at 10,000 services ~1.5 s of scanning).
        """
        if text not in ranks:
            below = [self._rank(k, ranks) + (k in self._names) for k in self._kids[text]]
            ranks[text] = max(below, default=0)
        return ranks[text]

    def literal(self, key: str) -> str:
        """The value named ``key`` laid out after ``KEY = ``."""
        return _layout(self._values[key], 0, len(key) + 3, self._refs)


def _layout(value: Any, indent: int, used: int, refs: Mapping[int, str], top: bool = False) -> str:
    """Lay out ``value`` whose first line starts at column ``used`` (continuations at ``indent``).

    A value whose id is in ``refs`` is written as that constant's name (except at the ``top``).
    Children are rendered first, each as it would sit in the multi-line form; when all of them
    came out on one line and joining them fits the width, the result is one line too.
    """
    cls = type(value)
    if cls in _SCALARS:
        return _scalar(value)
    if not top and refs:
        name = refs.get(id(value))
        if name is not None:
            return name
    inner = indent + 4
    if cls is tuple and _of_plain_scalars(value):
        one_line = repr(value)
        if used + len(one_line) < WIDTH:
            return one_line
        opening, closing, texts = "(", ")", list(map(repr, value))
    else:
        opening, closing, children = _items(value)
        texts = [
            label + (repr(child) if type(child) in _REPR else
                     _layout(child, inner, inner + len(label), refs))
            for label, child in children
        ]  # fmt: skip
        if used + sum(map(len, texts)) < WIDTH:  # else too long for one line: not joined
            one_line = _join(opening, texts, closing, cls)
            if used + len(one_line) < WIDTH and "\n" not in one_line:  # no repr holds a "\n"
                return one_line
    pad = "\n" + " " * inner  # one child a line, each followed by a comma
    body = f"{pad}{(',' + pad).join(texts)}," if texts else ""
    return f"{opening}{body}\n{' ' * indent}{closing}"


def _of_plain_scalars(value: tuple[Any, ...]) -> bool:
    """Whether ``repr(value)`` is the tuple's one-line literal: every item is a scalar other than a
    float (whose literal is checked to be finite). ``repr`` writes it in C."""
    return _REPR.issuperset(map(type, value))


def _join(opening: str, texts: list[str], closing: str, cls: type) -> str:
    body = ", ".join(texts)
    if cls is tuple and len(texts) == 1:
        body += ","
    return opening + body + closing


def _name(prefix: str, text: str, taken: set[str]) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    size = 8
    while f"_{prefix}_{digest[:size]}" in taken:  # a collision of 8 hex digits: lengthen
        size += 1
    return f"_{prefix}_{digest[:size]}"


_SCALARS = frozenset({str, int, float, bool, type(None)})
_REPR = _SCALARS - {float}
"""Scalars whose ``repr`` is their literal (a float must be finite)."""
_NO_DEFAULT = object()


class _Spec(Record):
    """How a table type is written: its constructor's name, and its init fields."""

    opening: str
    values: Callable[[Any], tuple[Any, ...]]
    """The init fields' values, fetched in C by one :func:`operator.attrgetter` call."""
    fields: tuple[tuple[str, Any, type], ...]
    """(``name=``, default or _NO_DEFAULT, the default's type) of each init field."""


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    """The table type ``cls``'s :class:`_Spec` (made once per type)."""
    if cls.__module__ != TABLES_MODULE:
        raise TypeError(f"{cls.__name__} is not a table type of {TABLES_MODULE}")
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:  # derived fields (Endpoint.address) are computed, never written
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = _NO_DEFAULT
        fields.append((f.name + "=", default, type(default)))
    names = [label[:-1] for label, _, _ in fields]
    get = operator.attrgetter(*names)
    values = get if len(names) > 1 else lambda value: (get(value),)
    spec = _SPECS[cls] = _Spec(cls.__name__ + "(", values, tuple(fields))
    return spec


def _scalar(value: Any) -> str:
    cls = type(value)
    if cls is float:
        if not math.isfinite(value):
            raise ValueError(f"cannot write the non-finite float {value!r} as a literal")
        return repr(value)
    if cls in _SCALARS:
        return repr(value)
    raise _refused(cls)


def _items(value: Any) -> tuple[str, str, list[tuple[str, Any]]]:
    """(opening, closing, [(label, child)]) of a container (not a scalar).

    Fields equal to their default are left out; dict items are sorted by key.
    """
    cls = type(value)
    if cls is tuple:
        return "(", ")", [("", item) for item in value]
    spec = _SPECS.get(cls) or (_spec(cls) if dataclasses.is_dataclass(cls) else None)
    if spec is not None:
        pairs = zip(spec.fields, spec.values(value), strict=True)
        children = [
            (label, item)
            for (label, default, default_type), item in pairs
            if default is _NO_DEFAULT or type(item) is not default_type or item != default
        ]
        return spec.opening, ")", children
    if cls is list:
        return "[", "]", [("", item) for item in value]
    if cls is dict:
        return "{", "}", [(_scalar(k) + ": ", value[k]) for k in sorted(value)]
    raise _refused(cls)


def _refused(cls: type) -> TypeError:
    return TypeError(f"cannot write a {cls.__name__} as a Python literal")
