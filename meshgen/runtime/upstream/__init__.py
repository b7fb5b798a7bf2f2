"""Endpoints: pools, balancers, health (machine and prober), discovery, the upstreams facade."""
