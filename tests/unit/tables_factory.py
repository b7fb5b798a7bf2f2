"""Hand-built :class:`Tables` values for target and emit tests (no compiler stages needed)."""

from __future__ import annotations

from meshgen.runtime.tables import (
    AccessRule,
    Alert,
    BurnWindow,
    ClientTls,
    Cluster,
    DnsDiscovery,
    Endpoint,
    Failover,
    Fault,
    HeaderMatch,
    HeaderOps,
    HealthCheck,
    Listener,
    LoadBalancer,
    Match,
    MeshInfo,
    Mirror,
    OutlierDetection,
    RateLimit,
    Redirect,
    RetryPolicy,
    Rewrite,
    Route,
    ServerTls,
    Slo,
    StaticDiscovery,
    Subset,
    Tables,
    Target,
)

HOSTILE = 'it\'s "quoted"\n\t\\ \'\'\' """ ); import os; ( \u00e9\u2014\U0001f600 {{ x }} {% y %}'


def make_tables(text: str = "v1") -> Tables:
    """A mesh touching every table type; ``text`` lands in labels, headers and summaries."""
    retries = RetryPolicy(attempts=2, per_try_timeout_s=0.5, on=("5xx", "reset"))
    reviews = Cluster(
        name="reviews",
        discovery=StaticDiscovery(
            (
                Endpoint("127.0.0.1", 9081, zone="a", labels=(("version", text),)),
                Endpoint("::1", 9082, weight=3, zone="b", labels=(("version", "v2"),)),
            )
        ),
        subsets=(Subset("v1", (("version", text),)), Subset("v2", (("version", "v2"),))),
        load_balancer=LoadBalancer(policy="ring_hash", hash_header="x-user"),
        retries=retries,
        rate_limit=RateLimit(100.0, 200),
        failover=Failover(zones=("a", "b"), panic_threshold=40.0, backup="ratings"),
    )
    ratings = Cluster("ratings", DnsDiscovery("_http._tcp.ratings.mesh.test", refresh_s=5.0))
    split = Route(
        name="reviews-split",
        match=Match(
            hosts=("reviews", "reviews.mesh.test"),
            path_kind="prefix",
            path="/api/",
            methods=("GET",),
            headers=(HeaderMatch("end-user", "exact", text),),
        ),
        to=(
            Target("reviews", "v1", 90, 15.0, 60.0, retries),
            Target("reviews", "v2", 10, 15.0, 60.0, None),
        ),
        fault=Fault(delay_s=0.25, delay_percent=10.0),
        mirror=Mirror("ratings", None, 5.0),
        rewrite=Rewrite(path_prefix="/", host="reviews.internal"),
        request_headers=HeaderOps(set=(("x-env", text),), remove=("x-debug",)),
    )
    moved = Route("moved", Match(path_kind="exact", path="/old"), redirect=Redirect("/new", 308))
    return Tables(
        mesh=MeshInfo("shop", "mesh.test", admin_port=0, alertmanager="http://127.0.0.1:9093"),
        clusters=(reviews, ratings),
        routes=(split, moved),
        listeners=(
            Listener("edge", "127.0.0.1", 0, ("reviews-split", "moved")),
            Listener(
                "mtls",
                "::1",
                15443,
                ("reviews-split",),
                ServerTls("certs/edge.pem", "certs/edge-key.pem", "certs/ca.pem", "required"),
            ),
        ),
        health_checks={
            "reviews": HealthCheck("http", "/healthz", (200, 204), 1.0, 0.5, 1, 2),
            "ratings": HealthCheck("tcp"),
        },
        outlier_detection={"reviews": OutlierDetection(consecutive_5xx=3)},
        client_tls={
            "reviews": ClientTls(
                "mutual",
                "certs/ca.pem",
                "certs/c.pem",
                "certs/c-key.pem",
                "reviews.mesh.test",
                ("spiffe://shop/reviews",),
                "1.3",
            )
        },
        access=(
            AccessRule("frontend", "reviews", ("GET",), ("/api/",)),
            AccessRule("*", "ratings"),
        ),
        alerts=(Alert("reviews-errors", "reviews", "error_rate", ">", 0.05, 120.0, "page", text),),
        slos=(
            Slo(
                "reviews-availability",
                "reviews",
                99.9,
                2592000.0,
                (BurnWindow(3600.0, 300.0, 14.4), BurnWindow(21600.0, 1800.0, 6.0)),
                (BurnWindow(86400.0, 7200.0, 3.0), BurnWindow(259200.0, 21600.0, 1.0)),
            ),
        ),
    )
