"""Tests of service/observability: metrics and logs."""
