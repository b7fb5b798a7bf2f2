"""Envoy target: the same mesh for Envoy 1.36+ (v3 API), checked with ``envoy --mode validate``.

Files (docs/envoy.md has the mapping table, the deploy step and the differences):

* ``envoy/envoy.json``: a bootstrap with static resources (admin on the mesh's admin address,
  listeners, clusters). Run it from the folder that holds mesh.yaml, so relative certificate
  paths resolve as for the runtime: ``envoy -c dist/envoy/envoy.json``.
* ``envoy/cds.json`` / ``envoy/lds.json``: the same clusters and listeners as file-based
  dynamic resources, and ``envoy/dynamic.json``, a bootstrap that watches
  ``envoy-live/cds.json`` and ``envoy-live/lds.json``: moving a new build's files there
  (atomic ``mv``, clusters first) reconfigures a running Envoy without a restart.
* ``DIST/envoy/GAPS.txt`` (written by the pipeline from :mod:`.envoy_gaps`).
* ``prometheus/rules.envoy.yml`` and ``grafana/dashboard.envoy.json``: the alerts, SLOs and
  dashboard on Envoy's metric names (counted per try; :mod:`.metric_names`).

JSON is written with sorted keys and one resource per line (:func:`.envoy_syntax.document`),
so diffs stay readable and a 10,000-service config is written at C-encoder speed.
"""

from __future__ import annotations

from meshgen.runtime.tables import Cluster, Tables

from . import RenderContext, grafana, prometheus
from .envoy_clusters import clusters
from .envoy_listeners import listeners
from .envoy_routes import RouteBuilder
from .envoy_syntax import TYPE_PREFIX, Json, Lines, document, resource, socket_address, typed
from .metric_names import ENVOY

LIVE = "envoy-live"
"""Folder (relative to Envoy's working directory) that dynamic.json watches."""
CLUSTER_TYPE = "envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "envoy.config.listener.v3.Listener"


def common(tables: Tables) -> Json:
    """What both bootstraps hold: the admin server, the node and the connection limit."""
    total = sum(lst.limits.max_connections for lst in tables.listeners)
    monitor = typed(
        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
        {"max_active_downstream_connections": max(1, total)},
    )
    mesh = tables.mesh
    return {
        "admin": {"address": socket_address(mesh.admin_host, mesh.admin_port)},
        "node": {"id": mesh.name, "cluster": mesh.name},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": monitor,
                }
            ]
        },
    }


def live_source(name: str) -> Json:
    return {"path_config_source": {"path": f"{LIVE}/{name}"}, "resource_api_version": "V3"}


def render(tables: Tables, ctx: RenderContext) -> dict[str, str]:
    """``envoy/envoy.json``, ``envoy/cds.json``, ``envoy/lds.json`` and ``envoy/dynamic.json``."""
    by_name: dict[str, Cluster] = {c.name: c for c in tables.clusters}
    builder = RouteBuilder(by_name)
    lds = listeners(tables, builder)
    base = common(tables)
    static = {"clusters": Lines(clusters(tables)), "listeners": Lines(map(resource, lds))}
    dynamic = {"cds_config": live_source("cds.json"), "lds_config": live_source("lds.json")}
    return {
        "envoy/envoy.json": document({**base, "static_resources": static}),
        "envoy/cds.json": document({"resources": typed_lines(static["clusters"], CLUSTER_TYPE)}),
        "envoy/lds.json": document({"resources": typed_lines(static["listeners"], LISTENER_TYPE)}),
        "envoy/dynamic.json": document({**base, "dynamic_resources": dynamic}),
        "prometheus/rules.envoy.yml": prometheus.rules_text(tables, ctx, ENVOY),
        "grafana/dashboard.envoy.json": grafana.dashboard_text(tables, ENVOY),
    }


def typed_lines(lines: Lines, message: str) -> Lines:
    """Encoded resources as ``Any`` of ``message`` (``"@type"`` sorts first: a prefix)."""
    at = f'{{"@type":"{TYPE_PREFIX}{message}",'
    return Lines(at + line[1:] for line in lines)
