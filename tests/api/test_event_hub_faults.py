"""A worker's listener for config events never stops for good: its sessions
terminated over and over at every point (connecting, proving, watching), it
listens again once they are left alone."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy.engine import URL

from service.api.sdk import event_hub
from service.api.sdk.event_hub import EventHub
from tests.support.postgres import connect

# Terminated this long, a few times each 50 ms, at random points.
FAULTS_FOR = 4.0
# Listening again within this bound once the faults stop (backoff at most
# LISTENER_RETRY_MAX, then a connect and a probe).
BACK_WITHIN = event_hub.LISTENER_RETRY_MAX + 20


async def test_the_listener_survives_its_sessions_terminated_at_any_point(
    migrated_database: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its liveness check every 20 ms, so that terminations land mid-check too.
    monkeypatch.setattr(event_hub, "LISTENER_CHECK_INTERVAL", 0.02)
    hub = EventHub(migrated_database, 5.0, 10)
    listener = asyncio.create_task(hub.listen())
    killer = await connect(migrated_database)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + FAULTS_FOR
        while loop.time() < until:
            await asyncio.sleep(random.uniform(0, 0.05))
            await killer.execute(
                # Only this test's database: other tests' workers listen too.
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database()"
                " AND application_name LIKE '%events%' AND pid <> pg_backend_pid()"
                " AND random() < 0.5"
            )
            assert not listener.done(), listener.exception()
        back_by = loop.time() + BACK_WITHIN
        while hub.not_listening is not None or hub.closed:
            assert not listener.done(), listener.exception()
            assert loop.time() < back_by, hub.not_listening
            await asyncio.sleep(0.1)
        # Listening for real: its session is there.
        sessions = await killer.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE '%events%'"
        )
        assert sessions == 1
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await killer.close()
