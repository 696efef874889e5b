"""Prometheus metrics of one worker process, served at GET /metrics.

Each worker keeps its own registry: a scrape answers for the worker that
served it (the migration metrics are the same in every worker that ran or
waited for the migration; request counts are per worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic_lockstep import MigrationStatus, Phase
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _MigrationCollector(Collector):
    """Reads the migration state at scrape time, so the bootstrap needs no hooks."""

    def __init__(self, status: MigrationStatus):
        self.status = status

    def collect(self) -> Iterable[Metric]:
        phase = GaugeMetricFamily(
            "migration_phase", "1 for the bootstrap's current phase", labels=["phase"]
        )
        for candidate in Phase:
            phase.add_metric([candidate.value], 1.0 if candidate is self.status.phase else 0.0)
        yield phase
        durations = GaugeMetricFamily(
            "migration_revision_duration_seconds",
            "How long each revision this process applied took",
            labels=["revision"],
        )
        for revision, seconds in self.status.revision_seconds.items():
            durations.add_metric([revision], seconds)
        yield durations
        yield GaugeMetricFamily(
            "migration_lock_wait_seconds",
            "How long this process waited for the migration lock",
            value=self.status.lock_wait_seconds,
        )
        yield GaugeMetricFamily(
            "migration_lock_timeout_retries",
            "Revisions retried after hitting lock_timeout",
            value=self.status.lock_timeout_retries,
        )


class Metrics:
    def __init__(self, status: MigrationStatus):
        self.registry = CollectorRegistry()
        self.registry.register(_MigrationCollector(status))
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The children of each (method, route, status) seen: `labels()` checks
        # and looks them up under a lock on every call. Bounded: the routes'
        # templates (or "unmatched"), the methods the HTTP parser accepts, and
        # the statuses the service answers.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = self._children[method, route, status] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
