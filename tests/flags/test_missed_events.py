"""A stream that may have missed events is told to refetch flags as well as
configs: the SDK's flags client listens for `flags_changed` only."""

from __future__ import annotations

import uuid

from service.api.sdk.event_hub import QUEUE_SIZE, Event, Stream


async def test_a_stream_that_falls_behind_refetches_configs_and_flags() -> None:
    stream = Stream(uuid.uuid4(), uuid.uuid4())
    for number in range(QUEUE_SIZE + 1):
        stream.put(Event("flag_changed", {"id": f"flag-{number}"}))
    waiting = []
    while not stream.queue.empty():
        waiting.append(stream.queue.get_nowait())
    assert waiting == [Event("configs_changed", {}), Event("flags_changed", {})]
