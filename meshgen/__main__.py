"""``python -m meshgen`` is the ``meshgen`` command."""

from meshgen.cli import main

raise SystemExit(main())
