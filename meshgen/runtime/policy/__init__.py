"""Policy: pure decisions over the tables (routing, resilience, access, TLS, server names)."""
