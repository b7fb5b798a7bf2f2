"""meshgen: a declarative service-mesh config compiler."""

__version__ = "0.1.0"
