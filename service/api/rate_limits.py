"""Rate limits: requests per API key (and for the operator token), failed
authentications per client address, each a moving window: a request is
allowed while fewer than the limit's amount were allowed in the window's last
seconds.

By default each worker process counts in its own memory (`MovingWindow`): with
W workers in R replicas a key may then make W x R times its limit, and a
restart forgets.
With RATE_LIMIT_STORAGE_URL (a Redis server) every process of the fleet counts
in one place, through the `limits` package's moving window. When that Redis
does not answer, or fails in any other way, each process counts on its own
again (one warning), and
tries Redis again every RETRY_SHARED_SECONDS: a limit always holds, per
process at worst, and no request fails for it. That shared counting lives in
service/api/shared_rate_limits.py, imported only when RATE_LIMIT_STORAGE_URL
is set: `limits` and what it imports cost a worker 1.7 MiB of memory it has
no use for otherwise (docs/benchmarks/api.notes.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from service.api.shared_rate_limits import SharedWindows

logger = logging.getLogger("service.rate_limits")

# How long a request waits for Redis before counting in this process instead,
# and how long this process then counts alone before asking Redis again.
SHARED_TIMEOUT_SECONDS = 0.5
RETRY_SHARED_SECONDS = 5.0


class Limit(NamedTuple):
    """A moving window's limit: `amount` requests in the last `seconds`, for
    the identifiers of `namespace` (their keys' prefix in a shared Redis)."""

    amount: int
    seconds: int
    namespace: str


def moving_window(per_second: float, burst_seconds: int, namespace: str) -> Limit | None:
    """`per_second` on average, at most `per_second * burst_seconds` at once:
    a whole number of requests in a window of whole seconds (what the moving
    window counts), as near as those allow; None for no limit (0)."""
    if per_second <= 0:
        return None
    amount = max(1, round(per_second * burst_seconds))
    return Limit(amount, max(1, round(amount / per_second)), namespace)


class RateLimits:
    """The limits of one worker process, counted locally or in a shared Redis."""

    def __init__(
        self, per_key: float, failures_per_minute: float, storage_url: str | None = None
    ) -> None:
        # RATE_LIMIT_PER_KEY a second, in bursts of up to twice as many;
        # RATE_LIMIT_AUTH_FAILURES a minute, all at once at most.
        self.key_limit = moving_window(per_key, 2, "key")
        self.failure_limit = moving_window(failures_per_minute / 60, 60, "failures")
        # Counted in this process: alone, or while the shared Redis does not answer.
        self._keys = _local(self.key_limit)
        self._failures = _local(self.failure_limit)
        self._shared = None if storage_url is None else _shared(storage_url)
        self._alone_until = 0.0
        self._alone = False

    async def take_key(self, key: str) -> float:
        """Spend one request of an API key (its digest, hex) or of the operator:
        0 when allowed, else the seconds until it would be."""
        return await self._take(self.key_limit, self._keys, key)

    async def take_failure(self, address: str) -> float:
        """Count a failed authentication of a client address: 0 while it is
        within its limit, else the seconds until it would be."""
        return await self._take(self.failure_limit, self._failures, address)

    async def _take(
        self, limit: Limit | None, local: MovingWindow | None, identifier: str
    ) -> float:
        if limit is None or local is None:
            return 0.0
        shared = self._shared
        if shared is not None and time.monotonic() >= self._alone_until:
            try:
                async with asyncio.timeout(SHARED_TIMEOUT_SECONDS):
                    wait = await shared.take(limit, identifier)
            except Exception as error:
                # Any error, not only Redis's: no request fails for the shared
                # store. What the settings can see of its URL is refused at
                # startup instead (settings.py).
                self._count_alone(shared.trouble(error))
            else:
                if self._alone:
                    self._alone = False
                    logger.warning("rate limits: shared through RATE_LIMIT_STORAGE_URL again")
                return wait
        return local.take(identifier)

    def _count_alone(self, trouble: str) -> None:
        self._alone_until = time.monotonic() + RETRY_SHARED_SECONDS
        if not self._alone:
            self._alone = True
            logger.warning(
                "rate limits: the Redis of RATE_LIMIT_STORAGE_URL %s; this process counts "
                "alone until it serves again (limits per process, asking again every %gs)",
                trouble,
                RETRY_SHARED_SECONDS,
            )


class MovingWindow:
    """One limit's moving windows in this process's memory: `take` allows a
    request while fewer than `amount` were allowed in the last `seconds`, as
    the `limits` package's moving window counts (exactly, not approximately:
    a limit of one request in 100 s never lets a second through).

    `limits`' own memory storage counts the same, but keeps its windows clean
    with a thread it starts anew every 10 ms while requests come: a worker's
    CPU time for a point read was 0.07 ms more with it
    (docs/benchmarks/api.notes.md). Here a window drops its expired requests
    when it is next counted, and every `seconds` the windows of clients that
    sent nothing for that long are forgotten, so memory holds at most the
    clients of one window, each at most `amount` times."""

    __slots__ = ("_amount", "_clock", "_seconds", "_swept", "_windows")

    def __init__(
        self, amount: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._amount = amount
        self._seconds = seconds
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._swept = clock()

    def take(self, identifier: str) -> float:
        """Count one request of `identifier`: 0 when allowed, else the seconds
        until its oldest request in the window leaves it."""
        now = self._clock()
        if now - self._swept >= self._seconds:
            self._sweep(now)
        window = self._windows.get(identifier)
        if window is None:
            window = self._windows[identifier] = deque()
        start = now - self._seconds
        while window and window[0] <= start:
            window.popleft()
        if len(window) < self._amount:
            window.append(now)
            return 0.0
        return window[0] - start

    def __len__(self) -> int:
        """How many clients' windows are kept."""
        return len(self._windows)

    def _sweep(self, now: float) -> None:
        start = now - self._seconds
        self._windows = {
            identifier: window
            for identifier, window in self._windows.items()
            if window and window[-1] > start
        }
        self._swept = now


def _local(limit: Limit | None) -> MovingWindow | None:
    return None if limit is None else MovingWindow(limit.amount, limit.seconds)


def _shared(storage_url: str) -> SharedWindows:
    """The fleet's windows in the Redis at `storage_url`; imported here, so
    a worker without RATE_LIMIT_STORAGE_URL never loads `limits` or Redis."""
    from service.api.shared_rate_limits import SharedWindows

    return SharedWindows(storage_url)


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
