"""Forwarding: one request's life (:mod:`.attempt`), its upstream head (:mod:`.heads`), drivers."""
