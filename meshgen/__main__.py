"""``python -m meshgen`` is the ``meshgen`` command."""

from meshgen.cli import entry

entry()
