"""How one worker process shares its connections between client addresses,
and how it logs a flood of refusals (service/http_protocol.py uses both).

One address may hold at most HTTP_MAX_CONNECTIONS_PER_ADDRESS connections of
a worker; near HTTP_MAX_CONNECTIONS, idle connections (nothing of a request
received, nothing being answered) are closed, the most crowded address's
first, so that a new client is served instead of answered 503. A flood is
logged as its first refusal and then a count per LOG_INTERVAL, not one line
per socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol
from weakref import WeakKeyDictionary

from uvicorn.server import ServerState

logger = logging.getLogger("service.http")
# Seconds between two summaries of refused or closed connections.
LOG_INTERVAL = 10.0
# Idle connections are closed once a worker holds NEAR_CAP of its connection
# cap, down to BELOW_CAP of it (so a flood does not scan them on every connection).
NEAR_CAP = 0.9
BELOW_CAP = 0.8
# Addresses named in a summary line: the most frequent ones.
ADDRESSES_NAMED = 3


class SharedConnection(Protocol):
    """What the sharing needs of a connection."""

    address: str
    idle_since: float

    def idle(self) -> bool: ...

    def close_idle(self) -> None: ...


@dataclass
class FloodLog:
    """One line for the first event of a kind, then one count per interval."""

    loop: asyncio.AbstractEventLoop
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    log: logging.Logger = logger

    def note(self, what: str, address: str) -> None:
        """`what` happened to a connection from `address` ("refused ... over X"),
        or to a request for a route."""
        if what not in self.counts:
            self.counts[what] = Counter()
            self.log.warning("%s (%s); a count follows every %gs", what, address, LOG_INTERVAL)
        else:
            self.counts[what][address] += 1
        if self.timer is None:
            self.timer = self.loop.call_later(LOG_INTERVAL, self.summarise)

    def summarise(self) -> None:
        self.timer = None
        counts, self.counts = self.counts, {}
        for what, by_address in counts.items():
            if not by_address:
                continue
            named = ", ".join(
                f"{address}: {count}" for address, count in by_address.most_common(ADDRESSES_NAMED)
            )
            self.log.warning(
                "%d more in the last %gs: %s (%s)", by_address.total(), LOG_INTERVAL, what, named
            )
        if counts:
            # Quiet for a whole interval before the next first line is logged again.
            self.counts = {what: Counter() for what in counts if counts[what]}
            if self.counts:
                self.timer = self.loop.call_later(LOG_INTERVAL, self.summarise)


@dataclass
class Crowd:
    """One worker's open connections by client address."""

    log: FloodLog
    by_address: Counter[str] = field(default_factory=Counter)

    def arrived(self, address: str) -> int:
        """Count a new connection; how many the address holds now."""
        self.by_address[address] += 1
        return self.by_address[address]

    def left(self, address: str) -> None:
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]

    def make_room(
        self, connections: Collection[object], newcomer: SharedConnection, cap: int
    ) -> int:
        """Near `cap`, close idle connections other than the newcomer, those
        of the most crowded address first, then the longest idle; how many
        were closed. Below it, this costs one comparison."""
        if len(connections) <= max(1, int(cap * NEAR_CAP)):
            return 0
        excess = len(connections) - int(cap * BELOW_CAP)
        idle = sorted(
            (
                connection
                for connection in connections
                if isinstance(connection, type(newcomer))
                and connection is not newcomer
                and connection.idle()
            ),
            key=lambda connection: (-self.by_address[connection.address], connection.idle_since),
        )
        for connection in idle[:excess]:
            connection.close_idle()
            self.log.note(
                "closed idle connections: the worker is near HTTP_MAX_CONNECTIONS",
                connection.address,
            )
        return min(excess, len(idle))


_CROWDS: WeakKeyDictionary[ServerState, Crowd] = WeakKeyDictionary()


def crowd_of(server_state: ServerState, loop: asyncio.AbstractEventLoop) -> Crowd:
    """The worker's crowd (one uvicorn server per worker process)."""
    crowd = _CROWDS.get(server_state)
    if crowd is None:
        crowd = _CROWDS[server_state] = Crowd(FloodLog(loop))
    return crowd
