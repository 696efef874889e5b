"""Tests of service/db: engines, the embedded server, TLS, roles, poolers."""
