"""The request log's lines are written in batches (service/observability/logs.py
`RequestLineBatches`): one write to the stream for many requests, each line at
most BATCH_SECONDS late, any other line at once and after those waiting, and
what waits at exit written by the logging module's shutdown."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.observability.logs import (
    BATCH_CHARACTERS,
    BATCH_SECONDS,
    REQUEST_LOGGER,
    RequestLineBatches,
)


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


@pytest.fixture
def stream() -> Writes:
    return Writes()


def _record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


def _handler(stream: Writes) -> RequestLineBatches:
    handler = RequestLineBatches(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    return handler


async def test_request_lines_of_a_burst_are_written_together_soon_after(stream: Writes) -> None:
    handler = _handler(stream)
    for n in range(5):
        handler.handle(_record(REQUEST_LOGGER, f"GET /v1/configs/{n} 200"))
    assert stream.writes == []
    await asyncio.sleep(BATCH_SECONDS * 3)
    assert stream.writes == [
        "".join(f"{REQUEST_LOGGER} GET /v1/configs/{n} 200\n" for n in range(5))
    ]
    # The next burst waits on a timer of its own.
    handler.handle(_record(REQUEST_LOGGER, "GET /v1/users 200"))
    await asyncio.sleep(BATCH_SECONDS * 3)
    assert stream.writes[1:] == [f"{REQUEST_LOGGER} GET /v1/users 200\n"]


async def test_any_other_line_is_written_at_once_after_the_waiting_ones(stream: Writes) -> None:
    handler = _handler(stream)
    handler.handle(_record(REQUEST_LOGGER, "GET /v1/configs 200"))
    handler.handle(_record(REQUEST_LOGGER, "GET /v1/users 200"))
    handler.handle(_record("service.db", "a statement connection was closed"))
    assert stream.writes == [
        f"{REQUEST_LOGGER} GET /v1/configs 200\n"
        f"{REQUEST_LOGGER} GET /v1/users 200\n"
        "service.db a statement connection was closed\n"
    ]
    await asyncio.sleep(BATCH_SECONDS * 3)
    assert len(stream.writes) == 1


async def test_a_full_batch_is_written_without_waiting(stream: Writes) -> None:
    handler = _handler(stream)
    line = "GET /v1/configs/" + "x" * 1000
    # The line that takes the batch to BATCH_CHARACTERS sends it.
    count = -(-BATCH_CHARACTERS // len(f"{REQUEST_LOGGER} {line}"))
    for _ in range(count):
        handler.handle(_record(REQUEST_LOGGER, line))
    assert len(stream.writes) == 1
    assert stream.writes[0].count("\n") == count


def test_without_an_event_loop_a_request_line_is_written_at_once(stream: Writes) -> None:
    handler = _handler(stream)
    handler.handle(_record(REQUEST_LOGGER, "GET /v1/configs 200"))
    assert stream.writes == [f"{REQUEST_LOGGER} GET /v1/configs 200\n"]


def test_a_batch_left_on_a_loop_that_ended_goes_out_with_the_next_line(stream: Writes) -> None:
    handler = _handler(stream)

    async def one_request() -> None:
        handler.handle(_record(REQUEST_LOGGER, "GET /v1/configs 200"))

    asyncio.run(one_request())  # the loop closes before the batch's timer fires
    assert stream.writes == []

    async def another() -> None:
        handler.handle(_record(REQUEST_LOGGER, "GET /v1/users 200"))
        await asyncio.sleep(BATCH_SECONDS * 3)

    asyncio.run(another())
    assert stream.writes == [
        f"{REQUEST_LOGGER} GET /v1/configs 200\n{REQUEST_LOGGER} GET /v1/users 200\n"
    ]


@pytest.mark.processes
def test_the_lines_waiting_at_exit_are_written(tmp_path: Path) -> None:
    script = tmp_path / "exits.py"
    script.write_text(
        "import asyncio, logging\n"
        "from service.observability.logs import configure_logging\n"
        "configure_logging('INFO', 'json')\n"
        "async def main():\n"
        "    for n in range(3):\n"
        "        logging.getLogger('service.requests').info('GET /v1/configs/%d 200', n)\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert [line.split('"message":"')[1].split('"')[0] for line in done.stderr.splitlines()] == [
        f"GET /v1/configs/{n} 200" for n in range(3)
    ]
