"""One worker's side of the config event streams: a listener and its streams.

Each worker process holds one direct connection (EVENTS_DATABASE_URL, by
default MIGRATION_DATABASE_URL: a transaction-pooling PgBouncer cannot carry
LISTEN) listening on the channel every config write notifies
(service/configs/events.py), and hands each notification to the open
streams of its account. No stream holds a database connection.

The listening connection proves it receives notifications when it opens (a
probe sent from a second connection must arrive): a transaction-pooling
pooler accepts LISTEN and delivers nothing. Until it has, and whenever it is
lost, the worker refuses new streams (503) instead of serving silent ones.

The SDK cannot resume a stream (it ignores `id:` and sends no
Last-Event-ID): when the listening connection was lost, notifications may
have been missed, so every stream is told `configs_changed` and `flags_changed` once listening
again, and its client refetches the whole list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import asyncpg
from alembic_lockstep import describe_error, is_unreachable
from sqlalchemy.engine import URL

from service.configs.events import KEYS_REVOKED, MANY_CHANGED, parse
from service.db.engines import application_name
from service.db.tls import tls_options
from service.flags.events import CHANNEL, FLAGS_CHANGED

logger = logging.getLogger("service.api.events")

# Events one stream may have waiting; a client that reads slower than that
# gets one `configs_changed` and one `flags_changed` in their place.
QUEUE_SIZE = 100
# Streams one API key, and one account, may hold open on one worker process.
MAX_STREAMS_PER_KEY = 10
MAX_STREAMS_PER_ACCOUNT = 100
# How often the listening connection is checked with a round trip, in seconds.
LISTENER_CHECK_INTERVAL = 15.0
LISTENER_RETRY_MAX = 10.0
# How long the worker's shutdown waits for the cancelled listener to end.
LISTENER_STOP_WAIT = 5.0
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What losing or failing to open the listening connection raises.
# asyncpg's InternalClientError: a connection whose server session was
# terminated mid-operation may say "cannot switch to state ...; another
# operation is in progress" instead of InterfaceError.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


# What a stream is told when it may have missed events: refetch configs and flags.
EVERYTHING_CHANGED = (Event(MANY_CHANGED, {}), Event(FLAGS_CHANGED, {}))
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
            for missed in EVERYTHING_CHANGED:
                self.queue.put_nowait(missed)

    def end(self) -> None:
        _drain(self.queue)
        self.queue.put_nowait(CLOSED)


def _drain(queue: asyncio.Queue[Event]) -> None:
    while not queue.empty():
        queue.get_nowait()


class TooManyStreams(Exception):
    """The key already has its allowed number of streams on this worker."""


class NotListening(Exception):
    """This worker receives no notifications now: live updates are off."""


class _ProbeLost(Exception):
    """The listening connection did not receive its own probe."""


class EventHub:
    def __init__(self, url: URL, connect_timeout: float, max_streams: int) -> None:
        self.url, self.connect_timeout = url, connect_timeout
        # Streams of this worker in all: the rest of its connections stay for requests.
        self.max_streams = max_streams
        self.streams: dict[uuid.UUID, set[Stream]] = {}
        self.closed = False
        # Why no notification would reach a stream now; None while listening.
        self.not_listening: str | None = "not listening yet"
        self._listening = asyncio.Event()
        self._probes: dict[str, asyncio.Future[None]] = {}

    async def open(self, account_id: uuid.UUID, key_id: uuid.UUID) -> Stream:
        """A new stream of the account's events (TooManyStreams over the cap,
        NotListening when this worker receives no events and does not again
        within a moment: its start, or a reconnection)."""
        if self.closed:
            raise TooManyStreams("the service is shutting down")
        if self.not_listening is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._listening.wait(), self.connect_timeout)
        if self.not_listening is not None:
            raise NotListening(self.not_listening)
        of_account = self.streams.get(account_id, set())
        open_for_key = sum(stream.key_id == key_id for stream in of_account)
        if open_for_key >= MAX_STREAMS_PER_KEY:
            raise TooManyStreams(
                f"this API key already has {open_for_key} event streams open on this worker"
            )
        if len(of_account) >= MAX_STREAMS_PER_ACCOUNT:
            raise TooManyStreams(
                f"this account already has {len(of_account)} event streams open on this worker"
            )
        if sum(map(len, self.streams.values())) >= self.max_streams:
            raise TooManyStreams(f"this worker already has {self.max_streams} event streams open")
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
        """Hand a notification to the streams of its account: only an event
        `announce` would send (service.configs.events.parse), or a listener's probe.
        An account with a stream here exists: its key was checked to open it."""
        event = parse(payload)
        if event is None:
            if not self._is_probe(payload):
                logger.warning("ignored a config event notification the service did not send")
            return
        if event.name == KEYS_REVOKED:
            self._end_streams_of(event.account_id, event.revoked_keys)
            return
        data = {} if event.key is None else {"id": event.key}
        for stream in self.streams.get(event.account_id, ()):
            stream.put(Event(event.name, data))

    def _is_probe(self, payload: str) -> bool:
        try:
            message = json.loads(payload)
        except ValueError:
            return False
        if not (isinstance(message, dict) and set(message) == {"probe"}):
            return False
        self._answer_probe(str(message["probe"]))
        return True

    def _end_streams_of(self, account_id: uuid.UUID, key_ids: frozenset[uuid.UUID]) -> None:
        """End the streams of revoked keys and free their slots now."""
        for stream in list(self.streams.get(account_id, ())):
            if stream.key_id in key_ids:
                stream.end()
                self.forget(stream)

    def _answer_probe(self, probe: str) -> None:
        waiting = self._probes.get(probe)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def listen(self) -> None:
        """Listen until cancelled, reconnecting with backoff; after a lost
        connection, tell every stream that anything may have changed."""
        attempt, listened_before = 0, False
        while not self.closed:
            try:
                connection = await self._connect()
            except _CONNECTION_ERRORS as error:
                attempt += 1
                await self._pause(attempt, error)
                continue
            try:
                await connection.add_listener(CHANNEL, self._deliver)
                await self._prove(connection)
                attempt, self.not_listening = 0, None
                self._listening.set()
                if listened_before:
                    # Its loss was logged: so is its return.
                    logger.warning("config events: listening again; live updates are back")
                    for missed in EVERYTHING_CHANGED:
                        self._broadcast(missed)
                listened_before = True
                await self._watch(connection)
            except Exception as error:
                # Whatever ended it (an error not named above included: the
                # listener must never stop for good while the worker serves).
                self._listening.clear()
                self.not_listening = f"the listening connection was lost ({type(error).__name__})"
                if isinstance(error, (*_CONNECTION_ERRORS, _ProbeLost)):
                    logger.warning("config events: %s", self.not_listening)
                else:
                    logger.exception("config events: %s", self.not_listening)
                attempt += 1
                # Reconnect at once after losing a connection that listened;
                # else wait (a probe that never arrives, or a server refusing
                # the probe's connection, would otherwise spin).
                if isinstance(error, _ProbeLost) or attempt > 1:
                    await self._pause(attempt, error)
            finally:
                connection.terminate()

    async def _pause(self, attempt: int, error: BaseException) -> None:
        """Wait before the next attempt to listen, saying why listening failed:
        an error no retry cures by itself (a wrong password, a pooler) as an error."""
        delay = min(0.5 * 2**attempt, LISTENER_RETRY_MAX)
        if isinstance(error, _ProbeLost):
            self.not_listening = str(error)
        else:
            self.not_listening = f"cannot connect to listen ({describe_error(error)})"
        log = logger.warning if is_unreachable(error) else logger.error
        log("config events: %s; live updates are off; retrying in %.1fs", self.not_listening, delay)
        await asyncio.sleep(delay)

    async def _prove(self, listening: asyncpg.Connection) -> None:
        """Send a probe on the channel from a second connection; it must reach
        the listening one (_ProbeLost otherwise)."""
        probe = uuid.uuid4().hex
        arrived = self._probes[probe] = asyncio.get_running_loop().create_future()
        try:
            sender = await self._connect()
            try:
                await sender.execute(
                    "SELECT pg_notify($1, $2)", CHANNEL, json.dumps({"probe": probe})
                )
            except BaseException:
                # Cancelled (the worker stopping) or failed mid-statement: a
                # graceful close would wait for the server to confirm asyncpg's
                # cancel request, without bound (a shutdown held past 30 s in
                # a loaded test run). Nothing is left to say to this session.
                sender.terminate()
                raise
            await sender.close(timeout=self.connect_timeout)
            try:
                await asyncio.wait_for(arrived, self.connect_timeout)
            except TimeoutError:
                if listening.is_closed():
                    # Lost while the probe was on its way: not a pooler.
                    raise asyncpg.InterfaceError("the listening connection was closed") from None
                raise _ProbeLost(
                    "the listening connection receives no notifications: EVENTS_DATABASE_URL "
                    "must reach PostgreSQL directly, not through a transaction-pooling pooler"
                ) from None
        finally:
            self._probes.pop(probe, None)

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
            # Unnamed statements only: through a transaction-pooling pooler
            # (the misconfiguration the probe finds) a named one may meet
            # another client's of the same name on a shared server session
            # (42P05), which hid the probe's own finding behind that error.
            statement_cache_size=0,
            **tls,
        )

    async def _watch(self, connection: asyncpg.Connection) -> None:
        """Return when the connection stops answering."""
        while not connection.is_closed():
            await asyncio.sleep(LISTENER_CHECK_INTERVAL)
            await connection.fetchval("SELECT 1", timeout=self.connect_timeout)


@asynccontextmanager
async def running_hub(
    url: URL,
    connect_timeout: float,
    max_connections: int,
    listen_after: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[EventHub]:
    """A hub listening for the life of the worker, from when `listen_after`
    returns (the schema at head: before that no stream is served, and the
    listening connection would take a slot the migrator may need). Its streams
    end as soon as the worker is told to stop (SIGTERM, SIGINT), not when the
    server's graceful shutdown gives up on them: the server's own handlers are
    wrapped so that they also close the hub."""
    hub = EventHub(url, connect_timeout, max_streams=max(1, max_connections // 2))

    async def listen() -> None:
        if listen_after is not None:
            await listen_after()
        await hub.listen()

    listener = asyncio.create_task(listen(), name="config events listener")
    restore = _close_on_exit_signals(hub, asyncio.get_running_loop())
    try:
        yield hub
    finally:
        restore()
        hub.close()
        listener.cancel()
        # Bounded: the worker's shutdown (and the migration lock's release
        # after it) never waits on a listener stuck in its driver.
        done, _ = await asyncio.wait({listener}, timeout=LISTENER_STOP_WAIT)
        if not done:
            logger.warning(
                "config events: the listener did not stop within %.0fs of the shutdown; "
                "left behind",
                LISTENER_STOP_WAIT,
            )
        elif not listener.cancelled() and (error := listener.exception()) is not None:
            logger.warning("config events: the listener ended with %s", describe_error(error))


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
