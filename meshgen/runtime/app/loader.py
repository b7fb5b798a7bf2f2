"""Load the generated tables of a DIST folder into one :class:`Tables` value.

``DIST/mesh/routing.py`` defines ``MESH``, ``CLUSTERS``, ``ROUTES`` and ``LISTENERS``;
``health.py`` defines ``HEALTH_CHECKS`` and ``OUTLIER_DETECTION``; ``tls.py`` defines
``CLIENT_TLS`` and ``ACCESS``; ``monitoring.py`` defines ``ALERTS`` and ``SLOS``.
Each file is executed in a fresh namespace, so loading a second DIST (reload) never sees
the first one's modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from ..tables import Tables

TABLE_FILES: Final = ("routing", "health", "tls", "monitoring")


class TablesError(Exception):
    """A DIST whose tables are missing or do not load; the message says which file and why."""


def _exec_table_file(path: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"meshgen_tables_{path.stem}", "__file__": str(path)}
    try:
        code = compile(path.read_bytes(), str(path), "exec")
        exec(code, namespace)  # generated, data-only tables written by meshgen build
    except (OSError, SyntaxError, ImportError, NameError, TypeError) as exc:
        raise TablesError(f"{path}: {exc}") from exc
    return namespace


def load_tables(dist: Path) -> Tables:
    """Read ``dist/mesh/*.py``; raise :class:`TablesError` naming the first file that fails."""
    ns: dict[str, Any] = {}
    for stem in TABLE_FILES:
        ns.update(_exec_table_file(Path(dist) / "mesh" / f"{stem}.py"))
    return tables_from(ns, dist)


def tables_from(ns: dict[str, Any], dist: Path) -> Tables:
    """The :class:`Tables` of the names the table files of ``dist`` defined."""
    try:
        return Tables(
            mesh=ns["MESH"],
            clusters=ns["CLUSTERS"],
            routes=ns["ROUTES"],
            listeners=ns["LISTENERS"],
            health_checks=ns["HEALTH_CHECKS"],
            outlier_detection=ns["OUTLIER_DETECTION"],
            client_tls=ns["CLIENT_TLS"],
            access=ns["ACCESS"],
            alerts=ns["ALERTS"],
            slos=ns["SLOS"],
        )
    except KeyError as exc:
        raise TablesError(f"{dist}/mesh: table {exc.args[0]} is missing") from exc
