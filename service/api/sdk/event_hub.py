"""One worker's side of the config event streams: a listener and its streams.

Each worker process holds one direct connection (EVENTS_DATABASE_URL, by
default MIGRATION_DATABASE_URL: a transaction-pooling PgBouncer cannot carry
LISTEN) listening on the channel every config write notifies
(service/api/config_events.py), and hands each notification to the open
streams of its account. No stream holds a database connection.

The SDK cannot resume a stream (it ignores `id:` and sends no
Last-Event-ID): when the listening connection was lost, notifications may
have been missed, so every stream is told `configs_changed` once listening
again, and its client refetches the whole list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from service.api.config_events import CHANNEL, MANY_CHANGED
from service.db.engines import application_name
from service.db.tls import tls_options

logger = logging.getLogger("service.api.events")

# Events one stream may have waiting; a client that reads slower than that
# gets one `configs_changed` in their place.
QUEUE_SIZE = 100
# How often the listening connection is checked with a round trip, in seconds.
LISTENER_CHECK_INTERVAL = 15.0
LISTENER_RETRY_MAX = 10.0
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What losing or failing to open the listening connection raises.
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


# Put in a stream's queue when the worker shuts down: the stream ends.
CLOSED = Event("", {})


@dataclass(eq=False)
class Stream:
    account_id: uuid.UUID
    key_id: uuid.UUID
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            _drain(self.queue)
            self.queue.put_nowait(Event(MANY_CHANGED, {}))

    def end(self) -> None:
        _drain(self.queue)
        self.queue.put_nowait(CLOSED)


def _drain(queue: asyncio.Queue[Event]) -> None:
    while not queue.empty():
        queue.get_nowait()


class TooManyStreams(Exception):
    """The key already has its allowed number of streams on this worker."""


class EventHub:
    def __init__(self, url: URL, connect_timeout: float, max_streams_per_key: int) -> None:
        self.url, self.connect_timeout = url, connect_timeout
        self.max_streams_per_key = max_streams_per_key
        self.streams: dict[uuid.UUID, set[Stream]] = {}
        self.closed = False

    def open(self, account_id: uuid.UUID, key_id: uuid.UUID) -> Stream:
        """A new stream of the account's events (TooManyStreams over the cap)."""
        if self.closed:
            raise TooManyStreams("the service is shutting down")
        open_for_key = sum(stream.key_id == key_id for stream in self.streams.get(account_id, ()))
        if open_for_key >= self.max_streams_per_key:
            raise TooManyStreams(
                f"this API key already has {open_for_key} event streams open on this worker"
            )
        stream = Stream(account_id, key_id)
        self.streams.setdefault(account_id, set()).add(stream)
        return stream

    def forget(self, stream: Stream) -> None:
        streams = self.streams.get(stream.account_id, set())
        streams.discard(stream)
        if not streams:
            self.streams.pop(stream.account_id, None)

    def close(self) -> None:
        """End every stream (the worker is shutting down); refuse new ones."""
        self.closed = True
        for streams in self.streams.values():
            for stream in streams:
                stream.end()

    def _broadcast(self, event: Event) -> None:
        for streams in self.streams.values():
            for stream in streams:
                stream.put(event)

    def _deliver(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            account_id = uuid.UUID(message["account"])
            data = {"id": message["id"]} if "id" in message else {}
            event = Event(str(message["event"]), data)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed config event notification")
            return
        for stream in self.streams.get(account_id, ()):
            stream.put(event)

    async def listen(self) -> None:
        """Listen until cancelled, reconnecting with backoff; after a lost
        connection, tell every stream that anything may have changed."""
        attempt, listened_before = 0, False
        while not self.closed:
            try:
                connection = await self._connect()
            except _CONNECTION_ERRORS as error:
                attempt += 1
                delay = min(0.5 * 2**attempt, LISTENER_RETRY_MAX)
                logger.warning(
                    "config events: cannot listen (%s); retrying in %.1fs",
                    type(error).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            try:
                await connection.add_listener(CHANNEL, self._deliver)
                if listened_before:
                    self._broadcast(Event(MANY_CHANGED, {}))
                listened_before = True
                await self._watch(connection)
            except _CONNECTION_ERRORS as error:
                logger.warning(
                    "config events: listening connection lost (%s)", type(error).__name__
                )
            finally:
                connection.terminate()

    async def _connect(self) -> asyncpg.Connection:
        url, tls = tls_options(self.url)
        return await asyncpg.connect(
            host=url.host or url.query.get("host"),
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=self.connect_timeout,
            server_settings={"application_name": application_name("events")},
            **tls,
        )

    async def _watch(self, connection: asyncpg.Connection) -> None:
        """Return when the connection stops answering."""
        while not connection.is_closed():
            await asyncio.sleep(LISTENER_CHECK_INTERVAL)
            await connection.fetchval("SELECT 1", timeout=self.connect_timeout)


# Streams one API key may hold open on one worker process.
MAX_STREAMS_PER_KEY = 10


@asynccontextmanager
async def running_hub(url: URL, connect_timeout: float) -> AsyncIterator[EventHub]:
    """A hub listening for the life of the worker. Its streams end as soon as
    the worker is told to stop (SIGTERM, SIGINT), not when the server's
    graceful shutdown gives up on them: the server's own handlers are wrapped
    so that they also close the hub."""
    hub = EventHub(url, connect_timeout, MAX_STREAMS_PER_KEY)
    listener = asyncio.create_task(hub.listen(), name="config events listener")
    restore = _close_on_exit_signals(hub, asyncio.get_running_loop())
    try:
        yield hub
    finally:
        restore()
        hub.close()
        listener.cancel()
        with suppress(asyncio.CancelledError):
            await listener


def _close_on_exit_signals(hub: EventHub, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Wrap the handlers of SIGTERM and SIGINT; the function that puts them back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {number: signal.getsignal(number) for number in EXIT_SIGNALS}

    def handler(number: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(hub.close)
        handled = previous[signal.Signals(number)]
        if callable(handled):
            handled(number, frame)
        elif handled == signal.SIG_DFL:
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)

    for number in EXIT_SIGNALS:
        signal.signal(number, handler)

    def restore() -> None:
        for number, handled in previous.items():
            signal.signal(number, handled)

    return restore
