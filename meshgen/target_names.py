"""What ``meshgen build --target`` accepts, in build order.

Its own module so the command line knows the names without importing any target
(``meshgen --version`` stays fast); :func:`meshgen.targets.registered` follows this order.
"""

NAMES = ("runtime", "prometheus", "grafana", "haproxy", "envoy")
