"""Which series the Prometheus rules and the Grafana dashboard read: the runtime's or Envoy's.

A :class:`Metrics` holds selector templates; ``{sel}`` is the label matcher that picks the
service (``service="reviews"`` in a rule, ``service=~"$service"`` in a dashboard), so rules
and panels share one set of names per engine. Envoy's cluster counters count every try
(:attr:`Metrics.counts` says so wherever they are used); the runtime's count requests after
retries. Envoy counts a route's traffic to a subset on the subset's cluster (``reviews~v1``):
the traffic series match those too (:meth:`Metrics.matchers`), the endpoint gauges only the
service's own cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meshgen.runtime.policy.grpc import ERROR_REGEX


@dataclass(frozen=True)
class Metrics:
    """Series templates; each ``{sel}`` is replaced by the service matcher."""

    label: str  # the label naming the service
    responses: str  # counter of responses by status
    errors: str  # its 5xx part
    code: str  # the label holding the status (class)
    requests: str  # counter for request_rate
    buckets: str  # latency histogram buckets
    seconds: str  # appended to a quantile to make seconds (" / 1000" for milliseconds)
    healthy: str  # healthy-endpoint gauge
    total: str  # endpoint gauge the healthy share divides by ("" : average of ``healthy``)
    cert_expiry: str  # certificate notAfter as a Unix time
    counts: str = ""  # what the traffic counters count, when it is not requests after retries
    engine: str = ""  # the proxy whose series these are, when it is not the runtime
    grpc_errors: str = ""  # gRPC requests that failed with a server-side grpc-status ("": none)
    parts: str = ""  # regex after a service name matching its subsets' own series ("": none)

    def matchers(self, service: str, op: str = "=") -> tuple[str, str]:
        """(endpoint matcher, traffic matcher) for ``service`` (with ``op`` ``=~``, a regex
        such as a dashboard variable): the traffic one also matches the service's parts."""
        own = f"{self.label}{op}{json.dumps(service)}"
        if not self.parts:
            return own, own
        return own, f"{self.label}=~{json.dumps(service + self.parts)}"

    def error_sum(self, sel: str, window: str) -> str:
        """The summed rate of errors: the 5xx series, and (where the engine counts them) the
        gRPC errors; ``or`` keeps a series in both (a 503 with grpc_status 14) counted once."""
        rates = f"rate({self.errors.format(sel=sel)}[{window}])"
        if self.grpc_errors:
            rates += f" or rate({self.grpc_errors.format(sel=sel)}[{window}])"
        return f"sum({rates})"

    def healthy_ratio(self, sel: str) -> str:
        healthy = self.healthy.format(sel=sel)
        if not self.total:
            return f"avg({healthy})"
        return f"sum({healthy}) / (sum({self.total.format(sel=sel)}) > 0)"


RUNTIME = Metrics(
    label="service",
    responses="meshgen_requests_total{{{sel}}}",
    errors='meshgen_requests_total{{{sel},code=~"5.."}}',
    grpc_errors=f'meshgen_requests_total{{{{{{sel}},grpc_status=~"{ERROR_REGEX}"}}}}',
    code="code",
    requests="meshgen_requests_total{{{sel}}}",
    buckets="meshgen_request_duration_seconds_bucket{{{sel}}}",
    seconds="",
    healthy="meshgen_endpoint_healthy{{{sel}}}",
    total="",
    cert_expiry="meshgen_cert_expiry_timestamp_seconds{{{sel}}}",
)
ENVOY = Metrics(
    label="envoy_cluster_name",
    responses="envoy_cluster_upstream_rq_xx{{{sel}}}",
    errors='envoy_cluster_upstream_rq_xx{{{sel},envoy_response_code_class="5"}}',
    code="envoy_response_code_class",
    requests="envoy_cluster_upstream_rq_total{{{sel}}}",
    buckets="envoy_cluster_upstream_rq_time_bucket{{{sel}}}",
    seconds=" / 1000",
    healthy="envoy_cluster_membership_healthy{{{sel}}}",
    total="envoy_cluster_membership_total{{{sel}}}",
    cert_expiry="envoy_cluster_ssl_certificate_expiration_unix_time_seconds{{{sel}}}",
    counts=(
        "every try: Envoy's cluster counters count each upstream request, retries included "
        "(the runtime's meshgen_requests_total counts requests after retries)"
    ),
    engine="Envoy",
    parts="(~[a-z0-9-]+)?",  # envoy_clusters.subset_name: <service>~<subset>
)
