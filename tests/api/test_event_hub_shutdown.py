"""A worker's shutdown never waits without bound on its events listener: a
loaded test run once had the listener's cancellation held in the database
driver (a probe connection's close waiting for the server to confirm a
cancel) for more than 30 s, and the migration lock's release waited behind it.
The probe's connection is now dropped at once when cancelled, and the wait for
the listener is bounded whatever holds it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.engine import URL

from service.api.sdk.event_hub import LISTENER_STOP_WAIT, running_hub


async def test_a_listener_that_outlives_its_cancellation_does_not_hold_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()
    released = False

    async def stuck() -> None:
        """Stands for a driver call that swallows the cancellation."""
        started.set()
        while not released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue

    # Nothing connects: the listener never gets past `listen_after`.
    url = URL.create("postgresql+asyncpg", host="127.0.0.1", port=9, database="none")
    caplog.set_level(logging.WARNING, logger="service.api.events")
    try:
        async with asyncio.timeout(LISTENER_STOP_WAIT + 30):
            async with running_hub(url, 1.0, 10, listen_after=stuck):
                await started.wait()
    finally:
        released = True
        for task in asyncio.all_tasks():
            if task.get_name() == "config events listener":
                await asyncio.gather(task, return_exceptions=True)
    assert "the listener did not stop within" in caplog.text
