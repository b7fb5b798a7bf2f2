"""Wire formats: what the runtime reads from peers, with the limits of each (no I/O here)."""
