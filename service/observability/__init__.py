"""Logs, metrics and the per-request middleware."""
