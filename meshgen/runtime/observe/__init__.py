"""Metrics, alert evaluation and push, the admin server and its status page."""
